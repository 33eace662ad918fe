"""The MLflow sink's consumer loop: results in offset order out, MLflow writes in parallel.

Each message of the assessments and feedback topics becomes one task (capped at
`max_in_flight`); tasks of the same trace run one after another (a changed vote must
follow the vote it overrides), others concurrently. `Checkpoint` (the worker's) holds
each partition's messages in offset order; a message is finished when MLflow acknowledged
it, it was skipped with a reason, or its dead letter is ready. Only the finished prefix of
each partition is committed, after its dead letters are on the DLQ topic: a crash causes
redelivery (which the guards in `MlflowSink` absorb), never loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from scorers import Assessment, DecodeError
from sinks.mlflow import MlflowRejectedError, MlflowSink, SinkMetrics, SinkOutcome, UserEvent
from stream._config import Settings
from stream._events import FeedbackEvent
from stream._exceptions import KafkaUnavailableError
from stream._kafka import REBALANCED_ERRORS, AIOKafkaConsumer, AIOKafkaProducer, kafka_errors
from stream.worker import Checkpoint, DeadLetter, Entry
from stream.worker._dead_letter import dead_letter_record

__all__ = ["MlflowSinkLoop"]

log = logging.getLogger("tracewatch.mlflow_sink")


def _event(e: FeedbackEvent) -> UserEvent:
    return UserEvent(
        kind=e.kind,
        trace_id=e.trace_id,
        name=e.name,
        value=e.value,
        source_type=e.source_type,
        source_id=e.source_id,
        event_id=e.event_id,
        created_ms=e.created_ms,
        rationale=e.rationale,
        metadata=e.metadata,
        error=e.error,
        span_id=e.span_id,
    )


class MlflowSinkLoop:
    """Consume results and feedback, write them with `MlflowSink`, commit finished prefixes.

    Args:
        settings: Topic names.
        consumer: A started group consumer subscribed by `subscribe()`.
        producer: A started producer for dead letters.
        sink: The MLflow writer.
        metrics: Skip/fail counters and the lag gauge.
        max_in_flight: Messages being written at once (the concurrency cap).
        dead_letter_limit: Largest DLQ record.
        commit_interval: Seconds between commits of the finished prefixes.
        lag_interval: Seconds between reads of the partitions' end offsets (for the lag gauge).
    """

    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        sink: MlflowSink,
        metrics: SinkMetrics,
        *,
        max_in_flight: int = 64,
        dead_letter_limit: int = 1024 * 1024,
        commit_interval: float = 0.5,
        lag_interval: float = 5.0,
    ) -> None:
        self._topics = settings.topics
        self._consumer = consumer
        self._producer = producer
        self._sink = sink
        self._m = metrics
        self._cap = max_in_flight
        self._dlq_limit = dead_letter_limit
        self._commit_interval = commit_interval
        self._lag_interval = lag_interval
        self._ends_at = 0.0
        self._checkpoint = Checkpoint()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_of_trace: dict[str, asyncio.Task[None]] = {}
        self._committed: dict[Any, int] = {}
        self._stop = asyncio.Event()
        self.processed = 0

    def stop(self) -> None:
        self._stop.set()

    def subscribe(self) -> None:
        self._consumer.subscribe([self._topics.assessments, self._topics.feedback])

    # -- one message -------------------------------------------------------------------------

    def _job(self, topic: str, value: bytes | None) -> tuple[str, Callable[[], Awaitable[SinkOutcome]]]:
        """(trace id, the write) of one message. Raises DecodeError/ValueError for a bad record."""
        if value is None:
            raise ValueError("empty message")
        if topic == self._topics.feedback:
            event = _event(FeedbackEvent.from_json(value))
            return event.trace_id, lambda: self._sink.write_event(event)
        d = orjson.loads(value)
        if not isinstance(d, dict):
            raise ValueError("assessment must be a JSON object")
        try:
            a = Assessment.from_dict(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an assessment: {type(exc).__name__}: {exc}") from None
        return a.trace_id, lambda: self._sink.write_score(a)

    async def _run_one(self, entry: Entry, msg: Any, prev: asyncio.Task[None] | None, write: Any) -> None:
        if prev is not None:
            with contextlib.suppress(BaseException):
                await prev  # same trace: strictly after the earlier message's write
        try:
            await write()
        except MlflowRejectedError as exc:
            reason = "upload_rejected" if exc.operation == "upload_trace" else "mlflow_rejected"
            self._m.failed.labels(reason).inc()
            entry.dead = DeadLetter(msg.key, msg.value, reason, str(exc), msg.topic, msg.partition, msg.offset)
        entry.pending = 0

    def _add(self, tp: Any, msg: Any) -> None:
        entry = Entry(offset=msg.offset, partition=msg.partition, pending=1)
        self._checkpoint.add(tp, entry)
        try:
            trace_id, write = self._job(msg.topic, msg.value)
        except (DecodeError, ValueError, orjson.JSONDecodeError) as exc:
            self._m.failed.labels("bad_record").inc()
            entry.dead = DeadLetter(
                msg.key, msg.value, "bad_record", str(exc)[:500], msg.topic, msg.partition, msg.offset
            )
            entry.pending = 0
            return
        prev = self._last_of_trace.get(trace_id)
        task = asyncio.create_task(self._run_one(entry, msg, prev, write))
        self._last_of_trace[trace_id] = task
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if self._last_of_trace.get(trace_id) is t:
                del self._last_of_trace[trace_id]

        task.add_done_callback(done)

    # -- commits -------------------------------------------------------------------------------

    async def _commit(self) -> None:
        ready, offsets = self._checkpoint.take_ready()
        dead = [e.dead for e in ready if e.dead is not None]
        if dead:
            with kafka_errors("writing dead letters"):
                sends = [
                    await self._producer.send(self._topics.dlq, key=k, value=v, headers=h)
                    for k, v, h in (dead_letter_record(d, limit=self._dlq_limit) for d in dead)
                ]
                await asyncio.gather(*sends)
        self.processed += len(ready)
        if not offsets:
            return
        try:
            with kafka_errors("committing offsets"):
                await self._consumer.commit(offsets)
        except Exception as exc:  # a rebalance moved the partitions: their new owner redoes them
            if not isinstance(exc.__cause__, REBALANCED_ERRORS):
                raise
            log.warning("commit refused after a rebalance: %s", exc)
            return
        self._committed.update(offsets)

    async def _update_lag(self) -> None:
        """Set the lag gauge: end of each partition minus what the sink committed.

        The end comes from the last fetch, or from Kafka every `lag_interval` seconds: while
        MLflow is down every slot is busy and nothing is fetched, yet the backlog grows and
        the gauge (MlflowSinkLagging watches it) must show it.
        """
        tps = list(self._consumer.assignment())
        ends: dict[Any, int] = {}
        now = time.monotonic()
        if tps and now - self._ends_at >= self._lag_interval:
            self._ends_at = now
            with contextlib.suppress(KafkaUnavailableError), kafka_errors("reading end offsets"):
                ends = await self._consumer.end_offsets(tps)
        for tp in tps:
            high = max(ends.get(tp, 0), self._consumer.highwater(tp) or 0)
            if not high:
                continue
            done = self._committed.get(tp)
            if done is None:
                continue
            self._m.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - done))

    async def _seed_committed(self) -> None:
        for tp in self._consumer.assignment():
            if tp not in self._committed:
                with contextlib.suppress(Exception):
                    pos = await self._consumer.committed(tp)
                    self._committed[tp] = pos or 0

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stop()`; then finish in-flight writes (or give up on them) and commit."""
        consumer = self._consumer
        last_commit = time.monotonic()
        try:
            while not self._stop.is_set():
                room = self._cap - len(self._tasks)
                if room <= 0:
                    await asyncio.wait(set(self._tasks), timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                else:
                    with kafka_errors("fetching"):
                        batch = await consumer.getmany(timeout_ms=200, max_records=room)
                    for tp, msgs in batch.items():
                        for msg in msgs:
                            self._add(tp, msg)
                now = time.monotonic()
                if now - last_commit >= self._commit_interval:
                    await self._commit()
                    await self._seed_committed()
                    await self._update_lag()
                    last_commit = now
        finally:
            if self._tasks:
                _, pending = await asyncio.wait(set(self._tasks), timeout=5.0)
                self._sink.close()  # writes still waiting on MLflow give up: redelivered next time
                if pending:
                    await asyncio.wait(pending, timeout=5.0)
            for t in list(self._tasks):
                t.cancel()
            with contextlib.suppress(Exception):
                await self._commit()
