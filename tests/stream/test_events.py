"""Feedback-topic events (`stream/_events.py`): ids and names are bounded where messages enter.

Anyone who can write the feedback topic bypasses the API's validation, so the event parser
bounds every id and name that becomes a Redis key or a metric label (`bad_id`) and refuses a
time no sink can hold (`bad_value`); anything else wrong stays a `ValueError` (`bad_feedback`).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorers import MAX_ID_CHARS, MAX_NAME_CHARS, MAX_TIME_MS, DecodeError
from stream._events import FeedbackEvent

TID = "tr-" + "a" * 32


def event(**fields: Any) -> bytes:
    body: dict[str, Any] = {
        "kind": "feedback",
        "event_id": "e-1",
        "trace_id": TID,
        "name": "user_satisfaction",
        "value": True,
        "source": {"source_type": "HUMAN", "source_id": "u-1"},
        "created_ms": 1_790_000_000_000,
    }
    body.update(fields)
    return orjson.dumps(body)


def test_a_good_event_parses_and_round_trips() -> None:
    ev = FeedbackEvent.from_json(event())
    assert (ev.trace_id, ev.name, ev.source_id, ev.event_id) == (TID, "user_satisfaction", "u-1", "e-1")
    assert FeedbackEvent.from_json(ev.to_json()).to_json() == ev.to_json()


@pytest.mark.parametrize(
    "fields",
    [
        {"trace_id": "t" * (MAX_ID_CHARS + 1)},
        {"name": "n" * (MAX_NAME_CHARS + 1)},
        {"name": "\x1e" + "n" * 1_000_000},
        {"source": {"source_type": "HUMAN", "source_id": "u" * (MAX_ID_CHARS + 1)}},
        {"source": {"source_type": "H" * (MAX_NAME_CHARS + 1), "source_id": "u"}},
        {"source": {"source_id": {"nested": "object"}}},
        {"event_id": "e" * (MAX_ID_CHARS + 1)},
        {"event_id": ["a", "list"]},
    ],
)
def test_over_long_ids_and_names_are_bad_id(fields) -> None:
    with pytest.raises(DecodeError) as info:
        FeedbackEvent.from_json(event(**fields))
    assert info.value.reason == "bad_id"


@pytest.mark.parametrize("created", [2**64 - 1, MAX_TIME_MS + 1, -1, True])
def test_created_ms_out_of_range_is_bad_value(created) -> None:
    with pytest.raises(DecodeError) as info:
        FeedbackEvent.from_json(event(created_ms=created))
    assert info.value.reason == "bad_value"


def test_limits_are_inclusive_and_integer_user_ids_are_text() -> None:
    ev = FeedbackEvent.from_json(
        event(trace_id="t" * MAX_ID_CHARS, name="n" * MAX_NAME_CHARS, source={"source_id": 42}, created_ms=MAX_TIME_MS)
    )
    assert len(ev.trace_id) == MAX_ID_CHARS and len(ev.name) == MAX_NAME_CHARS and ev.source_id == "42"
    assert FeedbackEvent.from_json(event(source={"source_id": ""})).source_id == "anonymous"


def test_other_problems_stay_value_errors() -> None:
    for data in (b"nope", b"[]", event(trace_id=""), event(name=7), event(kind="vote")):
        with pytest.raises(ValueError):
            FeedbackEvent.from_json(data)


_ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from([2**64 - 1, -(2**63), "x" * 300, "é" * 129, "\x1f", "\x1e:%{}"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
)
_FIELDS = ["kind", "event_id", "trace_id", "name", "value", "rationale", "source", "metadata", "created_ms"]


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(_FIELDS), value=_ANY, source_id=_ANY)
def test_any_one_mutated_field_parses_or_is_refused(field, value, source_id) -> None:
    """Parsed, re-serialised and parsed again; or a DecodeError/ValueError; never anything else."""
    fields: dict[str, Any] = {field: value}
    if field != "source":
        fields["source"] = {"source_type": "HUMAN", "source_id": source_id}
    try:
        data = event(**fields)
    except TypeError:  # orjson cannot write it (an int past 64 bits): never on the topic
        return
    try:
        ev = FeedbackEvent.from_json(data)
    except DecodeError as exc:
        assert exc.reason in {"bad_id", "bad_value"}
        return
    except ValueError:
        return
    assert len(ev.trace_id) <= MAX_ID_CHARS and len(ev.name) <= MAX_NAME_CHARS
    assert len(ev.source_id) <= MAX_ID_CHARS and len(ev.event_id) <= MAX_ID_CHARS
    assert 0 <= ev.created_ms <= MAX_TIME_MS
    assert FeedbackEvent.from_json(ev.to_json()).to_json() == ev.to_json()
