"""The worker's side of the feedback join: events become sink records without losing who voted."""

from __future__ import annotations

from stream._events import FeedbackEvent
from stream.worker._rerun import to_record


def test_separators_are_kept_so_users_and_names_stay_apart() -> None:
    """Replacing `\\x1f` by `_` made user `a\\x1fb` overwrite the vote of user `a_b`; the sink encodes instead."""
    a = to_record(FeedbackEvent("feedback", "tr-1", "n\x1fx", True, source_id="a\x1fb"))
    b = to_record(FeedbackEvent("feedback", "tr-1", "n_x", True, source_id="a_b"))
    assert (a.name, a.user) == ("n\x1fx", "a\x1fb") and (b.name, b.user) == ("n_x", "a_b")
    assert a.thumb == b.thumb == "up"
