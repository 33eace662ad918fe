"""The worker's flush-then-commit chain with a fake consumer and outbox (no broker).

Break 4 of issue 11: a commit refused after a rebalance failed its flush task, the next flush
awaited that task, re-raised, and the worker exited. A refused commit is normal in a group;
only a failed durable write may stop later commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, GroupAuthorizationFailedError, IllegalStateError
from prometheus_client import CollectorRegistry

from sinks import Metrics
from stream._config import Settings
from stream._exceptions import CommitError, KafkaUnavailableError
from stream.registry._scorer_set import ScorerSet
from stream.worker._checkpoint import Entry
from stream.worker._loop import Worker

TP0 = TopicPartition("tw.traces", 0)
TP1 = TopicPartition("tw.traces", 1)


class FakeConsumer:
    """Commits into `committed` unless an error is queued; checks assignment like aiokafka."""

    def __init__(self, assigned: set[TopicPartition]) -> None:
        self.assigned = set(assigned)
        self.committed: list[dict[TopicPartition, int]] = []
        self.errors: list[Exception] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await asyncio.sleep(0)
        if self.errors:
            raise self.errors.pop(0)
        for tp in offsets:
            if tp not in self.assigned:
                raise IllegalStateError(f"Partition {tp} is not assigned")
        self.committed.append(dict(offsets))


class FakeOutbox:
    """Records what was made durable; `fail` makes the next write raise, `gate` holds writes."""

    def __init__(self) -> None:
        self.redis: Any = None
        self.stopping: asyncio.Event | None = None
        self.written: list[list[int]] = []
        self.fail: Exception | None = None
        self.gates: list[asyncio.Event] = []

    async def write(self, entries: Sequence[Entry], *, after: Awaitable[None] | None = None) -> None:
        if self.gates:
            await self.gates.pop(0).wait()
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        if after is not None:
            await after  # the previous batch's Redis writes, as the real outbox does
        self.written.append([e.offset for e in entries])


def make_worker(assigned: set[TopicPartition]) -> tuple[Worker, FakeConsumer, FakeOutbox]:
    consumer = FakeConsumer(assigned)
    outbox = FakeOutbox()
    empty = ScorerSet.of([])
    worker = Worker(
        Settings(topic_prefix="tw."), consumer, outbox, Metrics(CollectorRegistry()), lambda: empty  # type: ignore[arg-type]
    )
    return worker, consumer, outbox


def finished(worker: Worker, tp: TopicPartition, *offsets: int) -> None:
    for o in offsets:
        worker.checkpoint.add(tp, Entry(o, tp.partition))


async def test_commit_refused_after_rebalance_does_not_stop_later_commits() -> None:
    worker, consumer, outbox = make_worker({TP0, TP1})
    consumer.errors.append(CommitFailedError("group rebalanced"))
    finished(worker, TP0, 0, 1, 2)
    await worker._flush()
    await worker._on_revoked([TP0])  # the listener drains the failed commit, drops TP0
    consumer.assigned = {TP1}
    finished(worker, TP1, 10, 11)
    await worker._flush()
    await worker._drain_flushes()  # raised CommitError before the fix
    assert outbox.written == [[0, 1, 2], [10, 11]]
    assert consumer.committed == [{TP1: 12}]
    assert not worker.stopping.is_set()


async def test_commit_refused_outside_the_listener_does_not_fail_the_next_flush() -> None:
    """On SIGCONT the loop can flush (and be refused) before the listener runs at all."""
    worker, consumer, _ = make_worker({TP0})
    consumer.errors.append(CommitFailedError("group rebalanced"))
    finished(worker, TP0, 0)
    await worker._flush()
    await worker._drain_flushes()
    finished(worker, TP0, 1)
    await worker._drain_flushes()
    assert consumer.committed == [{TP0: 2}]  # durable before, so committing past 0 is safe


async def test_revoked_partitions_are_left_out_of_a_commit() -> None:
    worker, consumer, outbox = make_worker({TP0, TP1})
    finished(worker, TP0, 5)
    finished(worker, TP1, 7)
    consumer.assigned = {TP1}  # TP0 moved away while its flush was queued
    await worker._drain_flushes()
    assert outbox.written == [[5, 7]]
    assert consumer.committed == [{TP1: 8}]


async def test_a_failed_durable_write_stops_every_later_commit() -> None:
    worker, consumer, outbox = make_worker({TP0})
    outbox.fail = KafkaUnavailableError("produce not acknowledged")
    finished(worker, TP0, 0)
    await worker._flush()
    await worker._on_revoked([])  # the drain sees the failure: the worker stops
    assert worker.stopping.is_set()
    finished(worker, TP0, 1)
    with pytest.raises(KafkaUnavailableError):
        await worker._drain_flushes()
    assert consumer.committed == []


async def test_other_commit_errors_still_raise() -> None:
    worker, consumer, _ = make_worker({TP0})
    consumer.errors.append(GroupAuthorizationFailedError())
    finished(worker, TP0, 0)
    with pytest.raises(CommitError):
        await worker._drain_flushes()


async def test_commits_stay_in_order_when_a_later_write_finishes_first() -> None:
    worker, consumer, outbox = make_worker({TP0})
    first = asyncio.Event()
    outbox.gates = [first, asyncio.Event()]
    outbox.gates[1].set()
    finished(worker, TP0, 0)
    await worker._flush()
    finished(worker, TP0, 1)
    await worker._flush()
    await asyncio.sleep(0.01)
    assert consumer.committed == []  # the second is durable but waits for the first
    first.set()
    await worker._drain_flushes()
    assert consumer.committed == [{TP0: 1}, {TP0: 2}]
