"""`Checkpoint`: only a finished, contiguous prefix of each partition is ever handed out."""

from __future__ import annotations

import pytest

from stream.worker._checkpoint import Checkpoint, Entry

TP0, TP1 = ("t", 0), ("t", 1)


def track(cp: Checkpoint, tp: tuple[str, int], *offsets: int, pending: int = 0) -> list[Entry]:
    entries = [Entry(o, tp[1], pending=pending) for o in offsets]
    for e in entries:
        assert cp.add(tp, e)
    return entries


def test_finished_prefix_is_handed_out_with_the_next_offset_to_commit() -> None:
    cp = Checkpoint()
    track(cp, TP0, 10, 11, 12)
    entries, offsets = cp.take_ready()
    assert [e.offset for e in entries] == [10, 11, 12]
    assert offsets == {TP0: 13}
    assert cp.size == 0
    assert cp.take_ready() == ([], {})


def test_out_of_order_completion_waits_for_the_gap() -> None:
    cp = Checkpoint()
    e0, e1, e2, e3 = track(cp, TP0, 0, 1, 2, 3, pending=1)
    e2.pending = e3.pending = 0  # later judges finish first
    assert cp.take_ready() == ([], {})
    e0.pending = 0
    entries, offsets = cp.take_ready()
    assert [e.offset for e in entries] == [0] and offsets == {TP0: 1}  # 1 still blocks 2 and 3
    e1.pending = 0
    entries, offsets = cp.take_ready()
    assert [e.offset for e in entries] == [1, 2, 3] and offsets == {TP0: 4}
    assert cp.size == 0


def test_partitions_are_independent() -> None:
    cp = Checkpoint()
    (blocked,) = track(cp, TP0, 5, pending=1)
    track(cp, TP1, 7, 8)
    entries, offsets = cp.take_ready()
    assert [e.offset for e in entries] == [7, 8] and offsets == {TP1: 9}
    assert cp.size == 1
    blocked.pending = 0
    assert cp.take_ready()[1] == {TP0: 6}


def test_offsets_must_increase_within_a_partition() -> None:
    cp = Checkpoint()
    track(cp, TP0, 3)
    with pytest.raises(RuntimeError, match="backwards"):
        cp.add(TP0, Entry(3))
    track(cp, TP1, 1)  # another partition has its own order


def test_reset_drops_unfinished_entries_and_allows_a_fresh_start() -> None:
    cp = Checkpoint()
    track(cp, TP0, 0, 1)
    (stuck,) = track(cp, TP0, 2, pending=1)
    track(cp, TP1, 9)
    dropped = cp.reset([TP0])
    assert [e.offset for e in dropped] == [0, 1, 2]
    assert dropped[-1] is stuck
    assert cp.size == 1 and cp.partitions() == [TP1]
    track(cp, TP0, 0)  # redelivered from the committed offset: not "backwards" any more
    assert cp.take_ready()[1] == {TP0: 1, TP1: 10}
    assert cp.reset([("t", 99)]) == []  # unknown partition: nothing to drop


def test_reset_makes_entries_of_an_earlier_assignment_stale() -> None:
    """The race of a revoke during a judge wait: entries fetched before it are refused after it."""
    cp = Checkpoint()
    gen = cp.generation(TP0)
    assert cp.add(TP0, Entry(0), gen)
    cp.reset([TP0])  # revoked (and maybe assigned back) while offset 1 was being scored
    assert not cp.add(TP0, Entry(1), gen)
    assert not cp.add(TP0, Entry(2), gen)
    assert cp.size == 0 and cp.take_ready() == ([], {})
    fresh = cp.generation(TP0)
    assert fresh != gen
    assert cp.add(TP0, Entry(0), fresh)  # the redelivery, fetched under the new assignment
    assert cp.take_ready()[1] == {TP0: 1}
    assert cp.add(TP1, Entry(4), cp.generation(TP1))  # other partitions are not affected
