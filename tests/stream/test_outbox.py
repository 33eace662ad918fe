"""The outbox's dead-letter path against a fake producer whose broker refuses large records."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from sinks import Metrics
from stream._config import Topics
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
