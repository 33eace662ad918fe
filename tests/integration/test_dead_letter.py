"""A message the broker just accepted is dead-lettered, as a truncated copy, and the worker goes on.

Break 2 of issue 11: 4,194,200 incompressible bytes fit the local broker's 4 MiB
`message.max.bytes`, but their DLQ copy (plus headers and framing) did not:
`MessageSizeTooLargeError` failed the flush and every restart died on the same message.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from sinks import RedisSink
from stream import Settings
from stream._kafka import create_topics
from tests.helpers import parse_metrics, synth_traces
from tests.integration.test_worker import expected_pairs, running_worker, wait_for_coverage

pytestmark = pytest.mark.integration

BIG = 4_194_200  # just under deploy/local/stack.py's message.max.bytes=4194304 once framed


async def read_dlq(settings: Settings, want: int, timeout: float = 30) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(settings.topics.dlq, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8_000_000,
                                fetch_max_bytes=64_000_000)
    await consumer.start()
    out: list[tuple[bytes, bytes, dict[str, bytes]]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < want and asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                out += [(m.key, m.value, dict(m.headers)) for m in msgs]
    finally:
        await consumer.stop()
    return out


async def test_message_at_the_broker_max_is_dead_lettered_truncated(settings: Settings, fixture_bytes: list[bytes]) -> None:
    await create_topics(settings)
    good = list(synth_traces(fixture_bytes, 25, seed=31))
    big = os.urandom(BIG)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                max_request_size=8_000_000, compression_type=None)
    await producer.start()
    try:
        for tid, data in good[:5]:
            await producer.send_and_wait(settings.topics.traces, key=tid.encode(), value=data, partition=0)
        await producer.send_and_wait(settings.topics.traces, key=b"big", value=big, partition=0)  # the broker takes it
        for tid, data in good[5:]:
            await producer.send_and_wait(settings.topics.traces, key=tid.encode(), value=data, partition=0)
    finally:
        await producer.stop()
    want = expected_pairs([t for t, _ in good])
    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    try:
        async with running_worker(settings) as handle:
            cov = await wait_for_coverage(sink, {n: len(s) for n, s in want.items()}, timeout=60)
            await asyncio.sleep(1)  # a crash would show now: the flush after the DLQ write
            worker = handle.worker
            assert worker is not None and not worker.stopping.is_set(), "the worker must keep running"
            metrics = parse_metrics(httpx.get(f"http://127.0.0.1:{handle.metrics_port}/metrics").text)
        for name, c in cov.items():
            assert c.get("scored", 0) + c.get("error", 0) + c.get("skipped", 0) == len(want[name]), (name, c)
        dead = await read_dlq(settings, 1)
        assert len(dead) == 1
        key, value, headers = dead[0]
        assert key == b"big"
        assert headers["tw-reason"] == b"too_large"
        assert headers["tw-truncated"] == b"1"
        assert headers["tw-original-size"] == str(BIG).encode()
        assert headers["tw-original-sha256"] == hashlib.sha256(big).hexdigest().encode()
        assert headers["tw-source-offset"] == b"5"
        assert 0 < len(value) < BIG and big.startswith(value)
        assert metrics[("tracewatch_dlq_total", frozenset({("reason", "too_large")}))] == 1
    finally:
        await sink.aclose()
