"""`Worker.run` with fakes at its boundaries: a consumer replaying in-memory partition logs, an
outbox that records what was made durable, a Redis stand-in for re-runs. No broker, no Redis.

What is checked is the commit contract: every committed offset covers only messages whose
results were made durable, commits of a partition only move forward, in order, and a
rebalance in the middle of a batch cannot break either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from scorers import Scorer
from sinks import Metrics
from stream._config import Settings
from stream._events import FeedbackEvent
from stream.registry._budget import HourlyBudget
from stream.registry._scorer_set import ActiveScorer, ScorerSet
from stream.worker._checkpoint import Entry
from stream.worker._loop import Worker, WorkerOptions
from stream.worker._rerun import compress_trace
from tests.helpers import synth_traces

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mlflow"
TRACES = "tw.traces"
FEEDBACK = "tw.feedback"
TP0, TP1 = TopicPartition(TRACES, 0), TopicPartition(TRACES, 1)
FB0 = TopicPartition(FEEDBACK, 0)


@dataclass(slots=True)
class Msg:
    offset: int
    value: bytes | None
    key: bytes | None = None


class LogConsumer:
    """Partitions as in-memory logs; fetches from a position that a reassignment resets to the
    committed offset, as the group protocol does. Records every commit, and every commit that
    covered a message the outbox had not made durable (`unsafe`)."""

    def __init__(self, logs: dict[TopicPartition, list[bytes]], durable: dict[TopicPartition, set[int]]) -> None:
        self.logs = logs
        self.durable = durable
        self.assigned = set(logs)
        self.position = dict.fromkeys(logs, 0)
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.unsafe: list[tuple[TopicPartition, int]] = []

    def reassign(self, tps: set[TopicPartition]) -> None:
        self.assigned = set(tps)
        for tp in tps:
            self.position[tp] = self.committed.get(tp, 0)

    def append(self, tp: TopicPartition, value: bytes) -> None:
        self.logs.setdefault(tp, []).append(value)
        self.position.setdefault(tp, 0)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.logs[tp])

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Msg]]:
        out: dict[TopicPartition, list[Msg]] = {}
        for tp in sorted(self.assigned):
            start = self.position[tp]
            values = self.logs[tp][start : start + max_records]
            if values:
                out[tp] = [Msg(start + i, v) for i, v in enumerate(values)]
                self.position[tp] = start + len(values)
        await asyncio.sleep(0 if out else min(timeout_ms, 5) / 1000)
        return out

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await asyncio.sleep(0)
        for tp, offset in offsets.items():
            assert tp in self.assigned
            missing = [o for o in range(offset) if o not in self.durable.get(tp, set())]
            if missing:
                self.unsafe.append((tp, missing[0]))
            assert offset >= self.committed.get(tp, 0), "a commit went backwards"
            self.committed[tp] = offset
        self.commits.append(dict(offsets))


class RecordingOutbox:
    """Durable means written here; keeps the entries for their pairs."""

    def __init__(self, durable: dict[TopicPartition, set[int]], topic: str = TRACES) -> None:
        self.redis: Any = None
        self.stopping: asyncio.Event | None = None
        self.durable = durable
        self.topic = topic
        self.entries: list[Entry] = []

    async def write(self, entries: Sequence[Entry], *, after: Awaitable[None] | None = None) -> None:
        await asyncio.sleep(0)
        if after is not None:
            await after
        for e in entries:
            self.durable.setdefault(TopicPartition(self.topic, e.partition), set()).add(e.offset)
        self.entries.extend(entries)


class StoredTraces:
    """The two reads a re-run makes of Redis."""

    def __init__(self, raw: dict[str, bytes]) -> None:
        self.raw = raw

    async def trace_raw(self, trace_id: str) -> bytes | None:
        return self.raw.get(trace_id)

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        return {}


def traces(n: int, seed: int = 3) -> list[tuple[str, bytes]]:
    fixtures = [p.read_bytes() for p in sorted(FIXTURES.glob("mlflow_trace_*.json"))]
    assert fixtures, f"no MLflow fixtures in {FIXTURES}"
    return list(synth_traces(fixtures, n, seed=seed))


def make_worker(
    logs: dict[TopicPartition, list[bytes]],
    scorers: list[ActiveScorer],
    *,
    judge_max_in_flight: int = 64,
    topic: str = TRACES,
) -> tuple[Worker, LogConsumer, RecordingOutbox]:
    durable: dict[TopicPartition, set[int]] = {}
    consumer = LogConsumer(logs, durable)
    outbox = RecordingOutbox(durable, topic)
    snapshot = ScorerSet.of(scorers)
    opts = WorkerOptions(poll_interval=0.005, judge_max_in_flight=judge_max_in_flight, shutdown_timeout=1.0)
    worker = Worker(
        Settings(topic_prefix="tw."), consumer, outbox, Metrics(CollectorRegistry()),  # type: ignore[arg-type]
        lambda: snapshot, options=opts,
    )
    return worker, consumer, outbox


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.002)


class GatedJudge:
    """An async judge whose call on a trace returns only when the test opens that trace's gate."""

    def __init__(self, *, one_gate: bool = False) -> None:
        self.calls: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.shared = asyncio.Event() if one_gate else None

    def gate(self, tid: str) -> asyncio.Event:
        if self.shared is not None:
            return self.shared
        return self.gates.setdefault(tid, asyncio.Event())

    def active(self) -> ActiveScorer:
        async def judged(trace: Any) -> bool:
            self.calls.append(trace.info.trace_id)
            await self.gate(trace.info.trace_id).wait()
            return True

        return ActiveScorer(Scorer(judged, name="gated", is_judge=True), "gated")


async def test_commits_only_finished_prefixes_in_order() -> None:
    """Judges finish in a shuffled order; every commit stops at the first unfinished message."""
    judge = GatedJudge()
    items = traces(10)
    tids = [t for t, _ in items]
    logs = {TP0: [d for _, d in items[:6]], TP1: [d for _, d in items[6:]]}
    worker, consumer, outbox = make_worker(logs, [judge.active()])
    run = asyncio.create_task(worker.run())
    await until(lambda: len(judge.calls) == 10, "every judge call to start")
    steps = [(2, None), (0, 1), (1, 3), (5, None), (3, 4), (4, 6)]  # (TP0 trace released, commit expected)
    for i, want in steps:
        judge.gate(tids[i]).set()
        if want is None:
            await asyncio.sleep(0.05)
        else:
            await until(lambda w=want: consumer.committed.get(TP0) == w, f"TP0 commit {want}")  # type: ignore[misc]
    assert [c[TP0] for c in consumer.commits if TP0 in c] == [1, 3, 4, 6]
    assert TP1 not in consumer.committed  # none of its judges has finished
    for tid in tids[6:][::-1]:
        judge.gate(tid).set()
    await until(lambda: consumer.committed.get(TP1) == 4, "TP1 commit 4")
    worker.stop()
    await run
    assert consumer.unsafe == []
    assert sorted(e.offset for e in outbox.entries if e.partition == 0) == list(range(6))
    assert all(len(e.pairs) == 1 and e.pairs[0][0].state == "scored" for e in outbox.entries)


async def test_a_partition_revoked_during_a_judge_wait_is_not_committed_past_its_gap() -> None:
    """The race: `_process` waits for a judge slot, the partition is revoked and assigned back.

    Before the fix, the rest of the stale batch (offsets 1, 2) went into the checkpoint after
    its reset: offset 0 was dropped, 1 and 2 finished, and the worker committed 3 with offset 0
    never made durable (or, refetching 0, failed on an offset going backwards).
    """
    judge = GatedJudge(one_gate=True)
    items = traces(3, seed=5)
    worker, consumer, outbox = make_worker({TP0: [d for _, d in items]}, [judge.active()], judge_max_in_flight=1)
    run = asyncio.create_task(worker.run())
    await until(lambda: len(judge.calls) == 1, "the first judge call")
    await asyncio.sleep(0.02)  # the loop now waits for the only slot, to score offset 1
    await worker._on_revoked([TP0])  # the rebalance listener: offset 0 dropped, its judge cancelled
    consumer.reassign({TP0})  # ... and the partition comes straight back, from committed offset 0
    judge.shared.set()  # type: ignore[union-attr]
    await until(lambda: consumer.committed.get(TP0) == 3 or run.done(), "TP0 commit 3")
    worker.stop()
    await run
    assert consumer.unsafe == []
    assert consumer.committed == {TP0: 3}
    assert {e.offset for e in outbox.entries} == {0, 1, 2}


async def test_a_judge_cancelled_before_it_ran_gives_its_slot_back() -> None:
    """A revoke right after a judge task is created cancels it before its first step; the slot
    it holds must come back, or the worker loses judge capacity for good at every rebalance."""
    judge = GatedJudge(one_gate=True)
    judge.shared.set()  # type: ignore[union-attr]
    items = traces(3, seed=8)
    worker, consumer, _ = make_worker({TP0: [d for _, d in items]}, [judge.active()], judge_max_in_flight=1)
    await worker._process(TP0, [Msg(0, items[0][1])])  # the judge task is created, not yet run
    await worker._on_revoked([TP0])
    await asyncio.sleep(0)
    assert judge.calls == []
    consumer.reassign({TP0})
    run = asyncio.create_task(worker.run())
    await until(lambda: consumer.committed.get(TP0) == 3 or run.done(), "TP0 commit 3")
    worker.stop()
    await run
    assert consumer.committed == {TP0: 3}


def expectation_run(
    scorers: list[ActiveScorer], values: list[Any], *, seed: int = 9
) -> tuple[Worker, LogConsumer, RecordingOutbox, str]:
    """A worker on the feedback topic with one stored trace and expectation events for it."""
    ((tid, data),) = traces(1, seed=seed)
    events = [FeedbackEvent("expectation", tid, "expected_response", v, source_id="labeler") for v in values]
    worker, consumer, outbox = make_worker({FB0: [e.to_json() for e in events]}, scorers, topic=FEEDBACK)
    outbox.redis = StoredTraces({tid: compress_trace(data)})
    return worker, consumer, outbox, tid


async def test_a_budgeted_judge_rerun_on_ground_truth_spends_the_budget() -> None:
    calls: list[Any] = []

    async def matches(outputs: Any, expectations: dict[str, Any]) -> bool:
        calls.append(expectations)
        return True

    budget = HourlyBudget(max_calls=1)
    judge = ActiveScorer(Scorer(matches, name="matches", is_judge=True), "matches", budget=budget)
    worker, consumer, outbox, _ = expectation_run([judge], ["first truth", "second truth"])
    run = asyncio.create_task(worker.run())
    await until(lambda: consumer.committed.get(FB0) == 2 or run.done(), "both expectations committed")
    worker.stop()
    await run
    assert budget.calls == 1  # before the fix the re-runs never took the budget (0 here)
    assert len(calls) == 1
    pairs = [p for e in sorted(outbox.entries, key=lambda e: e.offset) for p in e.pairs]
    assert [(p[0].state, p[0].skip_reason) for p in pairs] == [("scored", None), ("skipped", "budget")]
    assert all(p[0].run_id.startswith("e") for p in pairs)
    assert pairs[0][0].run_id != pairs[1][0].run_id  # new ground truth, new run


async def test_a_filter_raising_during_a_rerun_is_an_error_pair_and_the_worker_goes_on() -> None:
    def broken_filter(trace: Any) -> bool:
        raise KeyError("attributes.nope")

    def exact(outputs: Any, expectations: dict[str, Any]) -> bool:
        return bool(outputs == expectations.get("expected_response"))

    scorer = ActiveScorer(Scorer(exact, name="exact"), "exact", predicate=broken_filter)
    worker, consumer, outbox, tid = expectation_run([scorer], ["truth"])
    run = asyncio.create_task(worker.run())
    await until(lambda: consumer.committed.get(FB0) == 1 or run.done(), "the expectation committed")
    assert not worker.stopping.is_set()  # before the fix the re-run raised and stopped the worker
    consumer.append(FB0, FeedbackEvent("feedback", tid, "thumbs", True, source_id="bob").to_json())
    await until(lambda: consumer.committed.get(FB0) == 2 or run.done(), "the next message committed")
    worker.stop()
    await run
    (pair,) = [p for e in outbox.entries for p in e.pairs]
    (a,) = pair
    assert a.state == "error" and a.scorer == "exact" and a.run_id.startswith("e")
    assert a.error is not None and a.error.code == "FILTER_ERROR" and "KeyError" in a.error.error_message


async def test_a_stale_batch_is_dropped_before_its_first_message() -> None:
    """A partition revoked while an earlier partition of the same batch was being scored."""
    items = traces(2, seed=4)
    worker, _, _ = make_worker({TP0: [d for _, d in items]}, [])
    gen = worker.checkpoint.generation(TP0)
    worker.checkpoint.reset([TP0])
    await worker._process(TP0, [Msg(i, d) for i, (_, d) in enumerate(items)], gen)
    assert worker.checkpoint.size == 0 and worker.processed == 0
