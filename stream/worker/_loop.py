"""The stream worker: consume traces, sample, score, write results, then commit.

Delivery is at-least-once with exactly-once effects in Redis: an offset is committed only
after every result of every message before it is acknowledged by Kafka and written to
Redis, and the Redis writes are guarded per (trace, scorer version), so redelivery after a
crash changes nothing already counted.

Code scorers run inline on the event loop (they are microseconds); judges run as tasks under
a global cap. When the cap is reached the loop stops fetching until a judge finishes, so
memory stays bounded however slow the judge is.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

from scorers import DecodeError, decode_trace
from sinks import Metrics
from stream._config import Settings
from stream._events import FeedbackEvent
from stream._exceptions import CommitError
from stream._kafka import REBALANCED_ERRORS, AIOKafkaConsumer, KafkaError
from stream.registry._scorer_set import ActiveScorer, ScorerSet
from stream.worker._checkpoint import Checkpoint, DeadLetter, Entry
from stream.worker._outbox import Outbox
from stream.worker._rerun import compress_trace, needs_raw, rerun_with_expectations, to_record
from stream.worker._scoring import Scoring

__all__ = ["Worker", "WorkerOptions"]

log = logging.getLogger("tracewatch.worker")


@dataclass(slots=True)
class WorkerOptions:
    """Tuning knobs of the loop; defaults suit a 2-core machine."""

    max_records: int = 2000
    poll_interval: float = 0.1
    judge_max_in_flight: int | None = None  # None: Settings.judge_max_in_flight (one default)
    max_uncommitted: int = 20_000
    max_flushes: int = 2
    shutdown_timeout: float = 10.0


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._worker._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))


class Worker:
    """One worker process's loop. Several workers in one group split the partitions."""

    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        outbox: Outbox,
        metrics: Metrics,
        scorers: Callable[[], ScorerSet],
        *,
        options: WorkerOptions | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.outbox = outbox
        self.metrics = metrics
        self._scorers = scorers
        self.opts = options or WorkerOptions()
        self.checkpoint = Checkpoint()
        self.stopping = asyncio.Event()
        self.outbox.stopping = self.stopping
        self._tasks: set[asyncio.Task[None]] = set()
        cap = settings.judge_max_in_flight if self.opts.judge_max_in_flight is None else self.opts.judge_max_in_flight
        if cap < 1:
            raise ValueError(f"judge_max_in_flight must be >= 1, got {cap}")
        self.scoring = Scoring(cap, self._tasks)
        self._traces_topic = settings.topics.traces
        self._feedback_topic = settings.topics.feedback
        self._flushes: deque[asyncio.Task[None]] = deque()
        self._last_flush: asyncio.Task[None] | None = None
        self._last_written: asyncio.Future[None] | None = None  # the last flush's Redis writes
        self.processed = 0

    # -- lifecycle -------------------------------------------------------------------------

    def subscribe(self) -> None:
        topics = [self._traces_topic, self._feedback_topic]
        self.consumer.subscribe(topics, listener=_Listener(self))

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    def stop(self) -> None:
        """Ask the loop to finish: in-flight work gets `shutdown_timeout` to end, then commit."""
        if not self.stopping.is_set():
            log.info("stopping: finishing in-flight work")
            self.stopping.set()

    async def run(self) -> None:
        """Consume until `stop()`; always leaves committed offsets behind only durable results."""
        consumer = self.consumer
        opts = self.opts
        max_records = opts.max_records
        poll_ms = int(opts.poll_interval * 1000)
        try:
            while not self.stopping.is_set():
                if self.checkpoint.size >= opts.max_uncommitted:
                    await self._wait_some()
                    await self._flush()
                    continue
                timeout = 5 if self._tasks else poll_ms
                batch = await consumer.getmany(timeout_ms=timeout, max_records=max_records)
                if batch:
                    t0 = time.perf_counter()
                    # Read before any await: a revoke while this batch is scored makes it stale.
                    gens = {tp: self.checkpoint.generation(tp) for tp in batch}
                    for tp, msgs in batch.items():
                        await self._process(tp, msgs, gens[tp])
                        self.metrics.set_lag(tp.topic, tp.partition, _lag(consumer, tp, msgs[-1].offset))
                    self.metrics.batch_done(time.perf_counter() - t0)
                await self._flush()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.opts.shutdown_timeout)
            for t in pending:
                t.cancel()
            if pending:
                log.warning("abandoned %d unfinished judge calls: their traces will be redelivered", len(pending))
        try:
            await self._drain_flushes()
        except Exception:
            log.exception("final flush failed: unflushed messages will be redelivered")

    # -- the hot path ----------------------------------------------------------------------

    async def _process(self, tp: TopicPartition, msgs: list[Any], gen: int | None = None) -> None:
        """Decode, score and track one partition's messages of a batch fetched at generation `gen`.

        Scoring may wait for a judge slot, and a rebalance can revoke `tp` meanwhile: then the
        checkpoint refuses the rest of the batch (see `Checkpoint.add`) and it is abandoned,
        to be redone by the partition's owner, even when that is this worker again.
        """
        checkpoint = self.checkpoint
        if gen is None:
            gen = checkpoint.generation(tp)
        elif gen != checkpoint.generation(tp):
            return  # revoked while an earlier partition of the batch was scored
        active = self._scorers().scorers
        if tp.topic == self._feedback_topic:
            self._process_feedback(tp, msgs, active, gen)
            return
        keep_raw = needs_raw(active)
        add = checkpoint.add
        score = self.scoring.score
        max_bytes = self.settings.max_trace_bytes
        received: dict[str, int] = {}
        for msg in msgs:
            entry = Entry(msg.offset, tp.partition)
            value = msg.value
            try:
                if value is None:
                    raise DecodeError("not_json", "message has no value (tombstone)")
                trace = decode_trace(value, max_bytes=max_bytes)
            except DecodeError as exc:
                entry.dead = DeadLetter(msg.key, value, exc.reason, exc.message, tp.topic, tp.partition, msg.offset)
                add(tp, entry, gen)
                continue
            exp = trace.info.experiment_id
            received[exp] = received.get(exp, 0) + 1
            if active:
                await score(trace, entry, active)
                if (keep_raw and entry.pairs) or entry.pending:
                    entry.raw = (trace.info.trace_id, compress_trace(value)) if keep_raw else None
            if not add(tp, entry, gen):
                self._abandon(tp, entry)
                return
        self.processed += len(msgs)
        for exp, n in received.items():
            self.metrics.trace_received(exp, n)

    def _process_feedback(
        self, tp: TopicPartition, msgs: list[Any], active: tuple[ActiveScorer, ...], gen: int
    ) -> None:
        """Feedback and expectation events: stored and joined in Redis; expectations re-run scorers.

        Never awaits (re-runs are tasks), so the batch cannot go stale half-way through.
        """
        add = self.checkpoint.add
        for msg in msgs:
            entry = Entry(msg.offset, tp.partition)
            try:
                event = FeedbackEvent.from_json(msg.value or b"")
            except (DecodeError, ValueError) as exc:
                # An over-long id or an out-of-range time has its own reason (`bad_id`, `bad_value`).
                reason = exc.reason if isinstance(exc, DecodeError) else "bad_feedback"
                detail = exc.message if isinstance(exc, DecodeError) else str(exc)
                entry.dead = DeadLetter(msg.key, msg.value, reason, detail, tp.topic, tp.partition, msg.offset)
                add(tp, entry, gen)
                continue
            entry.events.append(to_record(event))
            if event.kind == "expectation" and needs_raw(active):
                entry.pending += 1
                task = asyncio.create_task(self._rerun(event, entry, active))
                entry.tasks.append(task)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            add(tp, entry, gen)
        self.processed += len(msgs)

    async def _rerun(self, event: FeedbackEvent, entry: Entry, active: tuple[ActiveScorer, ...]) -> None:
        try:
            await rerun_with_expectations(event, self.outbox.redis, active, self.scoring, entry)
        except asyncio.CancelledError:
            raise
        except Exception:  # e.g. Redis down: keep the message uncommitted and let it come back
            log.exception("re-run on expectation for %s failed; stopping so it is redelivered", event.trace_id)
            self.stop()
            return  # pending stays > 0: this offset is never committed by this process
        entry.pending -= 1

    def _abandon(self, tp: TopicPartition, entry: Entry) -> None:
        """Drop a message scored for an assignment that was revoked meanwhile (its judges too)."""
        for t in entry.tasks:
            t.cancel()
        log.info("%s[%d] was revoked while offset %d was scored: abandoning the rest of the batch",
                 tp.topic, tp.partition, entry.offset)

    async def _wait_some(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0, return_when=asyncio.FIRST_COMPLETED)

    async def _flush(self) -> None:
        """Hand every finished prefix to a flush task, keeping at most `max_flushes` in flight.

        Flushes overlap with scoring the next batch (Redis and Kafka round trips are the
        slow part), but commit strictly in order: each waits for its predecessor to commit
        first, and a failed durable write makes every later flush fail too, so no offset is
        ever committed past a result that is not durable. A commit the group refuses after a
        rebalance does not fail its flush (see `_commit`). Their Redis writes happen in order
        too: a flush writes Redis only after its predecessor did, because a user's later vote
        replaces the earlier one, so applying them out of order would keep the older vote.
        """
        entries, offsets = self.checkpoint.take_ready()
        if entries:
            prev, prev_written = self._last_flush, self._last_written
            written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._write_and_commit(entries, offsets, prev, prev_written, written))
            self._last_flush, self._last_written = task, written
            self._flushes.append(task)
        while self._flushes and (self._flushes[0].done() or len(self._flushes) > self.opts.max_flushes):
            await self._flushes.popleft()  # re-raises a failed flush: the worker stops

    async def _drain_flushes(self) -> None:
        await self._flush()
        while self._flushes:
            await self._flushes.popleft()

    async def _write_and_commit(
        self,
        entries: list[Entry],
        offsets: dict[Any, int],
        prev: asyncio.Task[None] | None,
        prev_written: asyncio.Future[None] | None = None,
        written: asyncio.Future[None] | None = None,
    ) -> None:
        try:
            await self.outbox.write(entries, after=prev_written)
        except asyncio.CancelledError:
            if written is not None:
                written.cancel()
            raise
        except BaseException as exc:
            if written is not None:
                written.set_exception(exc)
                written.exception()  # the flush task re-raises it; successors see it when they wait
            raise
        if written is not None:
            written.set_result(None)
        if prev is not None:
            await prev  # raises if an earlier durable write failed: then we must not commit either
        await self._commit(offsets)

    async def _commit(self, offsets: dict[Any, int]) -> None:
        """Commit `offsets` of the partitions still assigned; a refusal after a rebalance is normal.

        The results before these offsets are durable (the outbox wrote them), so a commit
        that does not happen only means redelivery to whoever owns the partition now, and
        idempotent writes absorb it. A paused or slow worker loses its partitions this way
        (session timeout): its commits fail with CommitFailedError and friends, the revoke
        listener drops those partitions, and the worker goes on with what it is assigned
        next. Any other commit failure raises.

        Raises:
            CommitError: the broker refused the commit for a reason other than a rebalance.
        """
        assigned = self.consumer.assignment()
        mine = {tp: o for tp, o in offsets.items() if tp in assigned}
        if len(mine) < len(offsets):
            gone = sorted(f"{tp.topic}[{tp.partition}]" for tp in offsets if tp not in assigned)
            log.info("not committing revoked partitions %s: their new owner redoes what is uncommitted", gone)
        if not mine:
            return
        try:
            await self.consumer.commit(mine)
        except REBALANCED_ERRORS as exc:
            log.warning("commit of %s refused after a rebalance (%s: %s): the new owner redoes those messages",
                        mine, type(exc).__name__, exc)
        except KafkaError as exc:
            # The results are durable and idempotent; the uncommitted messages get redelivered.
            raise CommitError(f"commit of {mine} failed: {exc}") from exc

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what is finished before the partitions move; abandon the rest (redelivered).

        Commits refused because the group already moved on do not fail the drain (see
        `_commit`). A failed durable write does: then the worker stops, and `_last_flush`
        keeps the failed flush so that no later flush commits past it.
        """
        try:
            await self._drain_flushes()
        except Exception:
            log.exception("flush on revoke failed: stopping; those messages will be redelivered")
            self.stop()
        else:
            self._last_flush = None  # every flush is done and committed (or refused as revoked)
            self._last_written = None
        dropped = self.checkpoint.reset(revoked)
        for e in dropped:
            for t in e.tasks:
                t.cancel()
        if dropped:
            log.info("revoked with %d unfinished messages; the new owner will redo them", len(dropped))


def _lag(consumer: AIOKafkaConsumer, tp: TopicPartition, last_offset: int) -> int:
    hw = consumer.highwater(tp)
    return 0 if hw is None else max(hw - last_offset - 1, 0)
