"""Writing finished messages out, in the order that makes the following commit safe.

Order: Kafka (dead letters and the assessments topic, waiting for every ack), then Redis
(one pipelined, idempotent write per batch), then Prometheus (only for pairs Redis recorded
for the first time, so metrics agree with Redis under redelivery). Any failure raises before
the caller commits, so the batch is redelivered and the idempotent writes absorb the replay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Sequence
from typing import Any

from scorers import Assessment
from sinks import FeedbackRecord, Metrics, RedisSink, SinkUnavailableError, WriteResult
from stream._config import Topics
from stream._exceptions import KafkaUnavailableError
from stream._kafka import TOO_LARGE_ERRORS, AIOKafkaProducer, KafkaError
from stream.worker._checkpoint import DeadLetter, Entry
from stream.worker._dead_letter import MIN_DEAD_LETTER_BYTES, dead_letter_limit, dead_letter_record

__all__ = ["Outbox"]

log = logging.getLogger("tracewatch.worker")
_NO_HEADERS: list[tuple[str, bytes]] = []  # shared, never mutated (aiokafka wants a list)
_Row = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]
_Sent = list[tuple["asyncio.Future[Any]", int]]  # one future per producer batch, and how many rows it holds
# Kafka's default max.message.bytes: the safe assumption when the DLQ topic's limit is not known.
_DEFAULT_DEAD_LETTER_LIMIT = dead_letter_limit(1024 * 1024, 1024 * 1024 + 12)


class Outbox:
    """The worker's sinks, written together; `write` returns only when all are durable."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topics: Topics,
        redis: RedisSink,
        metrics: Metrics,
        *,
        publish_assessments: bool = True,
        max_retry_interval: float = 5.0,
        dead_letter_limit: int = _DEFAULT_DEAD_LETTER_LIMIT,
    ) -> None:
        """`dead_letter_limit` is the largest DLQ record to send (see `_dead_letter.dead_letter_limit`)."""
        self._producer = producer
        self._topics = topics
        self.redis = redis  # also read by the worker for expectation re-runs
        self._metrics = metrics
        self._publish = publish_assessments
        self._max_retry_interval = max_retry_interval
        self.stopping: asyncio.Event | None = None
        self._n_assessment_partitions: int | None = None
        self.dead_letter_limit = dead_letter_limit  # lowered for good when the broker refuses a size

    async def write(self, entries: Sequence[Entry], *, after: Awaitable[None] | None = None) -> None:
        """Make every result of `entries` durable in Kafka and Redis, then count it.

        Retries Redis until it answers (it may be restarting); stops retrying only when
        `stopping` is set, raising so that nothing is committed. A dead letter the broker
        refuses for its size is sent again, smaller, rather than failing the batch: a bad
        message must never block its partition. With `after` (the previous batch's writes),
        the Redis writes wait for it: feedback must reach Redis in the order of its topic.

        Raises:
            KafkaUnavailableError: a produce was not acknowledged.
            SinkUnavailableError: Redis stayed down while the worker was stopping.
        """
        pairs: list[list[Assessment]] = []
        events: list[FeedbackRecord] = []
        raws: list[tuple[str, bytes]] = []
        dead: list[DeadLetter] = []
        by_partition: dict[int, list[_Row]] = {}
        for e in entries:
            if e.dead is not None:
                dead.append(e.dead)
            if e.events:
                events.extend(e.events)
            if e.raw is not None:
                raws.append(e.raw)
            if e.pairs:
                pairs.extend(e.pairs)
                if self._publish:
                    rows = by_partition.get(e.partition)
                    if rows is None:
                        rows = by_partition[e.partition] = []
                    for pair in e.pairs:
                        for a in pair:
                            rows.append((a.trace_id.encode(), a.to_json(), _NO_HEADERS))
        try:
            limit = self.dead_letter_limit
            letters = [dead_letter_record(d, limit=limit) for d in dead]
            sent_dead = await self._send_batches(self._topics.dlq, 0, letters)
            sent: _Sent = []
            if by_partition:
                n = await self._assessment_partitions()
                for part, rows in by_partition.items():
                    sent += await self._send_batches(self._topics.assessments, part % n, rows)
            if sent_dead or sent:
                # return_exceptions: a dead letter refused for size is retried, not fatal
                results = await asyncio.gather(*(f for f, _ in sent_dead + sent), return_exceptions=True)
                too_large = _too_large(dead, sent_dead, results[: len(sent_dead)])
                for res in results[len(sent_dead) :]:
                    if isinstance(res, BaseException):
                        raise res
                if too_large:
                    await self._resend_smaller(too_large)
        except KafkaError as exc:
            raise KafkaUnavailableError(f"producing results: {exc}") from exc
        m = self._metrics
        for d in dead:
            m.trace_invalid(d.reason)
            m.dead_lettered(d.reason)
        if after is not None:
            await after  # raises if the previous batch failed: then this one must not write either
        if not pairs and not events and not raws:
            return
        result = await self._write_redis(pairs, events, raws)
        fresh = [p for p, n in zip(pairs, result.new, strict=True) if n]
        if fresh:
            m.record_pairs(fresh)
        for exp, name, thumb in result.joins.votes:
            m.feedback(exp, name, thumb)
        for exp, scorer, judge, user in result.joins.agreements:
            m.agreement(exp, scorer, judge, user)
        if result.joins.malformed:
            m.join_malformed(result.joins.malformed)

    async def _resend_smaller(self, dead: list[DeadLetter]) -> None:
        """Send dead letters the broker refused for size again, halving the limit until it takes them.

        The broker's real limit was lower than we knew (the DLQ topic's own
        `max.message.bytes`, unknown at startup), so the smaller limit is kept for later
        letters too. Each letter goes in a batch of its own, so one too-large record cannot
        make its neighbours fail again.

        Raises:
            KafkaError: a produce failed for another reason than size.
            KafkaUnavailableError: still too large at `MIN_DEAD_LETTER_BYTES`.
        """
        topic = self._topics.dlq
        while dead:
            if self.dead_letter_limit <= MIN_DEAD_LETTER_BYTES:
                raise KafkaUnavailableError(f"{topic} refuses even {MIN_DEAD_LETTER_BYTES}-byte dead letters")
            limit = self.dead_letter_limit = max(self.dead_letter_limit // 2, MIN_DEAD_LETTER_BYTES)
            log.warning("%s refused %d dead letters as too large; sending them again cut to %d bytes",
                        topic, len(dead), limit)
            sent: _Sent = []
            for d in dead:
                sent += await self._send_batches(topic, 0, [dead_letter_record(d, limit=limit)])
            results = await asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
            dead = _too_large(dead, sent, results)

    async def _send_batches(self, topic: str, partition: int, rows: Sequence[_Row]) -> _Sent:
        """Append rows to producer batches directly: ~10x cheaper than one `send` per record.

        Returns each batch's future with its row count, in row order, so a caller can tell
        which rows a failed batch held.
        """
        sent: _Sent = []
        if not rows:
            return sent
        producer = self._producer
        batch = producer.create_batch()
        n = 0
        for key, value, headers in rows:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                sent.append((await producer.send_batch(batch, topic, partition=partition), n))
                batch = producer.create_batch()
                n = 0
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    size = len(value or b"")
                    raise KafkaUnavailableError(f"a record of {size} bytes does not fit a batch of {topic}")
            n += 1
        if n:
            sent.append((await producer.send_batch(batch, topic, partition=partition), n))
        return sent

    async def _assessment_partitions(self) -> int:
        """Assessments go to the trace's source partition (mod this count): one trace, one partition."""
        if self._n_assessment_partitions is None:
            parts = await self._producer.partitions_for(self._topics.assessments)
            self._n_assessment_partitions = max(len(parts), 1)
        return self._n_assessment_partitions

    async def _write_redis(
        self, pairs: list[list[Assessment]], events: list[FeedbackRecord], raws: list[tuple[str, bytes]]
    ) -> WriteResult:
        delay = 0.1
        token = os.urandom(8).hex()  # the same token on every retry: landed pairs still count as new
        while True:
            try:
                if raws:
                    await self.redis.store_raw(raws)
                return await self.redis.write_all(pairs, events, token=token)
            except SinkUnavailableError as exc:
                if self.stopping is not None and self.stopping.is_set():
                    raise
                self._metrics.redis_retry()
                log.warning("redis unavailable (%s); retrying in %.1fs, nothing is committed meanwhile", exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self._max_retry_interval)


def _too_large(dead: list[DeadLetter], sent: _Sent, results: Sequence[object]) -> list[DeadLetter]:
    """The dead letters whose batch the broker refused for size; any other failure is raised.

    Raises:
        BaseException: the first failure that is not about size (the batch stays uncommitted).
    """
    refused: list[DeadLetter] = []
    start = 0
    for (_, n), res in zip(sent, results, strict=True):
        if isinstance(res, TOO_LARGE_ERRORS):
            refused.extend(dead[start : start + n])
        elif isinstance(res, BaseException):
            raise res
        start += n
    return refused
