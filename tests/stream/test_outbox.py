"""The outbox against fakes: dead letters the broker refuses as too large, and the order that
makes a commit safe (Kafka acked, then Redis written, then metrics; any failure raises)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from scorers import Feedback, assessments_for
from sinks import Metrics, SinkUnavailableError, WriteResult
from sinks._join import JoinCounts
from stream._config import Settings, Topics
from stream._exceptions import KafkaUnavailableError
from stream.worker._checkpoint import DeadLetter, Entry
from stream.worker._dead_letter import MIN_DEAD_LETTER_BYTES, record_size
from stream.worker._outbox import Outbox


class FakeBatch:
    def __init__(self, max_size: int) -> None:
        self.rows: list[tuple[Any, Any, Any]] = []
        self.size = 0
        self._max = max_size

    def append(self, *, key: Any, value: Any, timestamp: Any, headers: Any) -> object | None:
        n = record_size(key, value, list(headers))
        if self.rows and self.size + n > self._max:
            return None  # like aiokafka: the first record always goes in
        self.rows.append((key, value, list(headers)))
        self.size += n
        return object()

    def record_count(self) -> int:
        return len(self.rows)


class FakeProducer:
    """Acks a batch unless the 'broker' finds it larger than `broker_max` (or `error` is set)."""

    def __init__(self, broker_max: int, *, error: Exception | None = None) -> None:
        self.broker_max = broker_max
        self.error = error
        self.acked: list[tuple[str, list[tuple[Any, Any, Any]]]] = []
        self.refused = 0

    def create_batch(self) -> FakeBatch:
        return FakeBatch(256 * 1024)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.error is not None:
            fut.set_exception(self.error)
        elif batch.size > self.broker_max:
            self.refused += 1
            fut.set_exception(MessageSizeTooLargeError())
        else:
            self.acked.append((topic, batch.rows))
            fut.set_result(None)
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}


def dead_entry(offset: int, value: bytes, reason: str = "too_large") -> Entry:
    e = Entry(offset, 0)
    e.dead = DeadLetter(f"k{offset}".encode(), value, reason, "bad", "tw.traces", 0, offset)
    return e


def outbox(producer: FakeProducer, limit: int) -> tuple[Outbox, CollectorRegistry]:
    reg = CollectorRegistry()
    box = Outbox(producer, Topics("tw."), redis=None, metrics=Metrics(reg), dead_letter_limit=limit)  # type: ignore[arg-type]
    return box, reg


async def test_dead_letters_refused_for_size_are_resent_smaller_and_counted() -> None:
    """The broker's limit is lower than the outbox believed: it halves until they fit, never raises."""
    producer = FakeProducer(broker_max=300_000)
    box, reg = outbox(producer, limit=4_000_000)
    entries = [dead_entry(1, b"x" * 3_000_000), dead_entry(2, b"{not json", "not_json"), dead_entry(3, b"y" * 900_000)]
    await box.write(entries)
    letters = {row[0]: row for topic, rows in producer.acked for row in rows if topic == "tw.dlq"}
    assert set(letters) == {b"k1", b"k2", b"k3"}
    assert producer.refused > 0
    assert box.dead_letter_limit < 300_000  # learned, kept for the next letters
    for key, size in ((b"k1", 3_000_000), (b"k3", 900_000)):
        h = dict(letters[key][2])
        assert h["tw-truncated"] == b"1" and h["tw-original-size"] == str(size).encode()
    assert letters[b"k2"][1] == b"{not json"
    assert reg.get_sample_value("tracewatch_dlq_total", {"reason": "too_large"}) == 2
    assert reg.get_sample_value("tracewatch_dlq_total", {"reason": "not_json"}) == 1
    assert reg.get_sample_value("tracewatch_traces_invalid_total", {"reason": "too_large"}) == 2


async def test_a_broker_refusing_even_the_smallest_letter_raises() -> None:
    producer = FakeProducer(broker_max=100)
    box, reg = outbox(producer, limit=100_000)
    with pytest.raises(KafkaUnavailableError):
        await box.write([dead_entry(1, b"x" * 50_000)])
    assert box.dead_letter_limit == MIN_DEAD_LETTER_BYTES
    assert reg.get_sample_value("tracewatch_dlq_total", {"reason": "too_large"}) is None


async def test_other_produce_errors_still_fail_the_write() -> None:
    producer = FakeProducer(broker_max=10**9, error=KafkaConnectionError())
    box, reg = outbox(producer, limit=100_000)
    with pytest.raises(KafkaUnavailableError):
        await box.write([dead_entry(1, b"{")])
    assert reg.get_sample_value("tracewatch_dlq_total", {"reason": "too_large"}) is None


# -- what is durable before a commit: Kafka, then Redis, then metrics -------------------------


class FakeRedis:
    """`store_raw`/`write_all` of `RedisSink`; `down` failures first, then every pair is new."""

    def __init__(self, down: int = 0) -> None:
        self.down = down
        self.writes: list[tuple[int, str]] = []  # (pairs, token)

    async def store_raw(self, raws: list[tuple[str, bytes]]) -> None:
        if self.down:
            raise SinkUnavailableError("redis is loading")

    async def write_all(self, pairs: list[Any], events: list[Any], *, token: str) -> WriteResult:
        await asyncio.sleep(0)
        if self.down:
            self.down -= 1
            raise SinkUnavailableError("connection refused")
        self.writes.append((len(pairs), token))
        return WriteResult([True] * len(pairs), [True] * len(events), JoinCounts())


class FakeMetrics:
    """Records which counters were moved."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.calls.append(name)


def scored_entry(offset: int) -> Entry:
    e = Entry(offset, 0)
    e.pairs.append(assessments_for(f"tr-{offset}", "1", "s", feedbacks=[Feedback(True)]))
    return e


def real_outbox(producer: FakeProducer, redis: FakeRedis) -> tuple[Outbox, FakeMetrics]:
    metrics = FakeMetrics()
    box = Outbox(producer, Topics("tw."), redis, metrics, max_retry_interval=0.01)  # type: ignore[arg-type]
    return box, metrics


async def test_a_failed_produce_writes_nothing_to_redis_and_counts_nothing() -> None:
    redis = FakeRedis()
    box, metrics = real_outbox(FakeProducer(broker_max=10**9, error=KafkaConnectionError()), redis)
    with pytest.raises(KafkaUnavailableError):
        await box.write([scored_entry(0), scored_entry(1)])
    assert redis.writes == [] and "record_pairs" not in metrics.calls


async def test_redis_is_retried_with_one_token_and_counted_once_it_answers() -> None:
    producer, redis = FakeProducer(broker_max=10**9), FakeRedis(down=2)
    box, metrics = real_outbox(producer, redis)
    await box.write([scored_entry(0), scored_entry(1)])
    assert [topic for topic, _ in producer.acked] == ["tw.assessments"]  # Kafka acked before Redis
    assert len(redis.writes) == 1 and redis.writes[0][0] == 2
    assert metrics.calls.count("redis_retry") == 2 and metrics.calls.count("record_pairs") == 1


async def test_redis_down_while_stopping_raises_and_counts_nothing() -> None:
    redis = FakeRedis(down=10**6)
    box, metrics = real_outbox(FakeProducer(broker_max=10**9), redis)
    box.stopping = asyncio.Event()
    box.stopping.set()
    with pytest.raises(SinkUnavailableError):
        await box.write([scored_entry(0)])
    assert "record_pairs" not in metrics.calls


@pytest.mark.parametrize("fault", ["kafka", "redis"])
async def test_a_failed_durable_write_stops_every_later_commit_of_the_worker(fault: str) -> None:
    """The real outbox under the worker's flush chain: once a write fails, nothing is committed
    again, even for later batches whose own writes succeed."""
    from aiokafka import TopicPartition

    from stream.registry._scorer_set import ScorerSet
    from stream.worker._loop import Worker
    from tests.stream.test_worker_commit import FakeConsumer

    tp = TopicPartition("tw.traces", 0)
    producer = FakeProducer(broker_max=10**9, error=KafkaConnectionError() if fault == "kafka" else None)
    redis = FakeRedis(down=1 if fault == "redis" else 0)
    box, _ = real_outbox(producer, redis)
    consumer = FakeConsumer({tp})
    empty = ScorerSet.of([])
    worker = Worker(Settings(topic_prefix="tw."), consumer, box, Metrics(CollectorRegistry()), lambda: empty)
    worker.stop()  # Redis is not retried while stopping: the failure is final
    worker.checkpoint.add(tp, scored_entry(0))
    await worker._flush()
    await asyncio.sleep(0.01)  # the first write fails
    producer.error = None  # Kafka and Redis are both healthy for the next batch
    errors: list[Exception] = []
    worker.checkpoint.add(tp, scored_entry(1))
    for step in (worker._flush, worker._drain_flushes, worker._drain_flushes):
        try:
            await step()
        except (KafkaUnavailableError, SinkUnavailableError) as exc:
            errors.append(exc)
    assert errors
    assert consumer.committed == []
    if fault == "redis":
        assert redis.writes == [] or redis.writes[0][0] == 1  # the second batch may be written, never committed
