"""Writing finished messages out, in the order that makes the following commit safe.

Order: Kafka (dead letters and the assessments topic, waiting for every ack), then Redis
(one pipelined, idempotent write per batch), then Prometheus (only for pairs Redis recorded
for the first time, so metrics agree with Redis under redelivery). Any failure raises before
the caller commits, so the batch is redelivered and the idempotent writes absorb the replay.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any

from scorers import Assessment
from sinks import Metrics, RedisSink, SinkUnavailableError
from stream._checkpoint import Entry
from stream._config import Topics
from stream._kafka import AIOKafkaProducer, KafkaError
from stream._exceptions import KafkaUnavailableError

__all__ = ["Outbox"]

log = logging.getLogger("tracewatch.worker")


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
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._redis = redis
        self._metrics = metrics
        self._publish = publish_assessments
        self._max_retry_interval = max_retry_interval
        self.stopping: asyncio.Event | None = None

    async def write(self, entries: Sequence[Entry]) -> None:
        """Make every result of `entries` durable in Kafka and Redis, then count it.

        Retries Redis until it answers (it may be restarting); stops retrying only when
        `stopping` is set, raising so that nothing is committed.

        Raises:
            KafkaUnavailableError: a produce was not acknowledged.
            SinkUnavailableError: Redis stayed down while the worker was stopping.
        """
        pairs: list[list[Assessment]] = []
        futures: list[asyncio.Future[Any]] = []
        send = self._producer.send
        dlq = self._topics.dlq
        atopic = self._topics.assessments
        try:
            for e in entries:
                d = e.dead
                if d is not None:
                    headers = [
                        ("tw-reason", d.reason.encode()),
                        ("tw-error", d.error.encode()[:1000]),
                        ("tw-source-topic", d.topic.encode()),
                        ("tw-source-partition", str(d.partition).encode()),
                        ("tw-source-offset", str(d.offset).encode()),
                    ]
                    futures.append(await send(dlq, value=d.value, key=d.key, headers=headers))
                if e.pairs:
                    pairs.extend(e.pairs)
                    if self._publish:
                        for pair in e.pairs:
                            for a in pair:
                                futures.append(await send(atopic, value=a.to_json(), key=a.trace_id.encode()))
            if futures:
                await asyncio.gather(*futures)
        except KafkaError as exc:
            raise KafkaUnavailableError(f"producing results: {exc}") from exc
        for e in entries:
            if e.dead is not None:
                self._metrics.trace_invalid(e.dead.reason)
        if not pairs:
            return
        new = await self._write_redis(pairs)
        fresh = [p for p, n in zip(pairs, new, strict=True) if n]
        if fresh:
            self._metrics.record_pairs(fresh)

    async def _write_redis(self, pairs: list[list[Assessment]]) -> list[bool]:
        delay = 0.1
        while True:
            try:
                return await self._redis.write(pairs)
            except SinkUnavailableError as exc:
                if self.stopping is not None and self.stopping.is_set():
                    raise
                self._metrics.redis_retry()
                log.warning("redis unavailable (%s); retrying in %.1fs, nothing is committed meanwhile", exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self._max_retry_interval)
