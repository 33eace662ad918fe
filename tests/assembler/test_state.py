"""Completion, quiet period, max age, caps, late spans and the commit rule (event time, no Kafka)."""

from __future__ import annotations

import random

import orjson

from stream.assembler import INCOMPLETE_TAG, AssemblyLimits, DeadLetterOut, Emission, PartitionState
from tests.assembler.spans import records, span, trace_spans, traces_data

LIMITS = AssemblyLimits(quiet_ms=2000, max_age_ms=60_000, max_open=1000, max_spans=100)
T, ROOT, A, B = "ab" * 16, "01" * 8, "02" * 8, "03" * 8


def msg(*spans, experiment="1"):
    return records(traces_data(list(spans))), experiment


def emissions(out):
    return [o for o in out if isinstance(o, Emission)]


def test_complete_after_quiet_period_out_of_order() -> None:
    st = PartitionState(LIMITS)
    assert st.add(0, 1000, *msg(span(T, B, A, "grandchild", 3, 4))) == []
    assert st.add(1, 1100, *msg(span(T, A, ROOT, "child", 2, 5))) == []
    assert st.add(2, 1200, *msg(span(T, ROOT, None, "root", 1, 6))) == []
    assert st.advance(3199) == []  # quiet period runs from the last span message (1200)
    (e,) = st.advance(3200)
    assert e.incomplete_reason is None and e.span_count == 3
    assert [s["name"] for s in e.trace["data"]["spans"]] == ["root", "child", "grandchild"]
    assert INCOMPLETE_TAG not in e.trace["info"]["tags"]
    assert st.advance(10_000) == [] and not st.open  # exactly once
    assert st.commit_offset() == 3


def test_a_later_message_moves_event_time_like_the_clock() -> None:
    st = PartitionState(LIMITS)
    st.add(0, 1000, *msg(span(T, ROOT, None, "root", 1, 6)))
    other = "cd" * 16
    out = st.add(1, 3000, *msg(span(other, ROOT, None, "root", 1, 6)))
    assert [e.trace_hex for e in emissions(out)] == [T]


def test_missing_parent_waits_for_max_age_then_incomplete() -> None:
    st = PartitionState(LIMITS)
    st.add(0, 1000, *msg(span(T, ROOT, None, "root", 1, 6), span(T, B, A, "orphan", 2, 3)))
    assert st.advance(60_999) == []
    (e,) = st.advance(61_000)
    assert e.incomplete_reason == "max_age"
    assert e.trace["info"]["tags"][INCOMPLETE_TAG] == "true"


def test_root_not_ended_is_not_complete() -> None:
    st = PartitionState(LIMITS)
    st.add(0, 1000, *msg(span(T, ROOT, None, "root", 1, 0)))
    assert st.advance(50_000) == []
    assert emissions(st.advance(61_000))[0].incomplete_reason == "max_age"


def test_late_span_is_dead_lettered_and_counted() -> None:
    st = PartitionState(LIMITS)
    st.add(0, 1000, *msg(span(T, ROOT, None, "root", 1, 6)))
    assert len(st.advance(3000)) == 1
    out = st.add(1, 3500, *msg(span(T, A, ROOT, "late", 2, 3)))
    assert out == [DeadLetterOut(1, "late_span", "1 span(s) of a trace already emitted", 1)]
    assert not st.open


def test_span_cap_emits_incomplete_then_the_rest_is_late() -> None:
    st = PartitionState(AssemblyLimits(max_spans=3))
    first = [span(T, ROOT, None, "root", 1, 9)] + [span(T, f"{i + 2:016x}", ROOT, f"c{i}", 2, 3) for i in range(2)]
    (e,) = emissions(st.add(0, 1000, *msg(*first)))
    assert e.incomplete_reason == "span_cap" and e.span_count == 3
    out = st.add(1, 1001, *msg(span(T, "ff" * 8, ROOT, "more", 2, 3)))
    assert [o.reason for o in out] == ["late_span"]


def test_open_cap_emits_the_oldest_trace_incomplete() -> None:
    st = PartitionState(AssemblyLimits(max_open=2))
    ids = [f"{i + 1:032x}" for i in range(3)]
    st.add(0, 1000, *msg(span(ids[0], B, ROOT, "child", 1, 2)))
    st.add(1, 1001, *msg(span(ids[1], B, ROOT, "child", 1, 2)))
    (e,) = emissions(st.add(2, 1002, *msg(span(ids[2], B, ROOT, "child", 1, 2))))
    assert e.trace_hex == ids[0] and e.incomplete_reason == "open_cap"
    assert len(st.open) == 2


def test_duplicate_span_first_copy_wins() -> None:
    st = PartitionState(LIMITS)
    st.add(0, 1000, *msg(span(T, ROOT, None, "root", 1, 6)))
    st.add(1, 1001, *msg(span(T, ROOT, None, "root-resent", 1, 6)))
    (e,) = st.advance(5000)
    assert e.span_count == 1 and e.trace["data"]["spans"][0]["name"] == "root"


def test_experiment_comes_from_the_roots_message() -> None:
    st = PartitionState(LIMITS)
    st.add(0, 1000, *msg(span(T, A, ROOT, "child", 2, 3), experiment="5"))
    st.add(1, 1001, *msg(span(T, ROOT, None, "root", 1, 6), experiment="9"))
    (e,) = st.advance(5000)
    assert e.experiment_id == "9"
    assert e.trace["info"]["trace_location"]["mlflow_experiment"]["experiment_id"] == "9"


def test_commit_held_at_the_oldest_open_trace() -> None:
    st = PartitionState(LIMITS)
    assert st.commit_offset() is None
    st.add(5, 1000, *msg(span(T, A, ROOT, "child", 2, 3)))
    other = "cd" * 16
    st.add(6, 1001, *msg(span(other, ROOT, None, "root", 1, 6)))
    assert st.commit_offset() == 5


def test_commit_never_cuts_through_an_emitted_trace() -> None:
    """T1 at offsets 0 and 2 straddles T2 (first at 1): emitting T1 must not let C pass 0 while T2 is open."""
    t1, t2 = "aa" * 16, "bb" * 16
    st = PartitionState(LIMITS)
    st.add(0, 1000, *msg(span(t1, A, ROOT, "child", 2, 3)))
    st.add(1, 1000, *msg(span(t2, A, ROOT, "child", 2, 3)))  # t2 stays open (no root)
    st.add(2, 1000, *msg(span(t1, ROOT, None, "root", 1, 6)))
    assert [e.trace_hex for e in st.advance(3000)] == [t1]
    assert st.commit_offset() == 0  # t2 opens at 1, but t1's root (offset 2) is after it
    assert [e.trace_hex for e in st.advance(61_000)] == [t2]
    assert st.commit_offset() == 3


def run(messages, limits, *, crash_at=(), tick_every=7):
    """Feed messages (offset order) through a state; at each crash point restart from the commit offset.

    Returns every emission in order (replays included). Event time advances with the messages
    and a fake clock that ticks only when "caught up" (here: every `tick_every` messages, never
    during a replay), as the runner does. Caught up at wall time W means every message stamped
    before W was read, so a tick goes at most to just before the next message's stamp.
    """
    out: list[Emission] = []
    st = PartitionState(limits)
    i = 0
    crashes = list(crash_at)
    replay_until = -1
    while i < len(messages):
        if crashes and i == crashes[0]:
            crashes.pop(0)
            replay_until = i
            i = st.commit_offset() or 0
            st = PartitionState(limits)
            continue
        ts, recs = messages[i]
        out.extend(emissions(st.add(i, ts, recs, "1")))
        if i % tick_every == 0 and i >= replay_until:
            nxt = messages[i + 1][0] if i + 1 < len(messages) else ts + 500
            out.extend(st.advance(max(ts, nxt - 1)))
        i += 1
    out.extend(st.advance(10**12))
    return out


def workload(n_traces: int, seed: int, max_gap_ms: int = 250):
    rnd = random.Random(seed)
    parts = []
    for i in range(n_traces):
        _, spans = trace_spans(i)
        rnd.shuffle(spans)
        cut = sorted(rnd.sample(range(1, len(spans)), k=rnd.randint(0, 2)))
        chunks = [spans[a:b] for a, b in zip([0, *cut], [*cut, len(spans)], strict=True)]
        start = i * 40 + rnd.randint(0, 30)
        for j, c in enumerate(chunks):
            parts.append((start + j * rnd.randint(0, max_gap_ms), i, c))
    parts.sort(key=lambda p: (p[0], p[1]))
    return [(ts, records(traces_data(c))) for ts, _, c in parts]


def test_replay_after_crashes_emits_each_trace_whole_and_identical() -> None:
    limits = AssemblyLimits(quiet_ms=300, max_age_ms=30_000)
    for seed in range(8):
        messages = workload(120, seed)
        clean = {e.trace_hex: orjson.dumps(e.trace) for e in run(messages, limits)}
        assert len(clean) == 120
        rnd = random.Random(seed)
        crashes = sorted(rnd.sample(range(1, len(messages)), k=3))
        got = run(messages, limits, crash_at=crashes)
        seen: dict[str, bytes] = {}
        for e in got:
            assert e.incomplete_reason is None, (seed, e.trace_hex)
            data = orjson.dumps(e.trace)
            assert seen.setdefault(e.trace_hex, data) == data, "a replay emitted different content"
        assert seen == clean


def test_late_spans_across_a_crash_never_lose_or_change_a_trace() -> None:
    """With stragglers later than the quiet period, the crash run still emits every trace of the
    clean run with the same bytes; the only extra emissions are incomplete orphans of late spans
    whose trace was emitted before the committed offset (documented in `_state`)."""
    limits = AssemblyLimits(quiet_ms=300, max_age_ms=30_000)
    for seed in range(4):
        messages = workload(120, seed, max_gap_ms=700)
        clean = {e.trace_hex: orjson.dumps(e.trace) for e in run(messages, limits)}
        crashes = sorted(random.Random(seed).sample(range(1, len(messages)), k=3))
        complete: dict[str, bytes] = {}
        for e in run(messages, limits, crash_at=crashes):
            if e.incomplete_reason is None:
                data = orjson.dumps(e.trace)
                assert complete.setdefault(e.trace_hex, data) == data
            else:
                assert e.incomplete_reason == "max_age" and e.trace["info"]["state"] == "IN_PROGRESS"
        assert complete == clean
