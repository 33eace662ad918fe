"""Poison messages of issue 11 (breaks 1 and 6) through a real worker, Kafka and Redis.

Before the fix, a trace with `request_time` 2**64-1 made every worker crash-loop (its
assessments could not be written), and a 1 MB experiment id was stored as Redis keys that
never expire. Now both are dead-lettered with their reason, and a good trace behind them in
the same partition is scored.
"""

from __future__ import annotations

import asyncio
import copy

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from sinks import RedisSink
from stream import Settings
from stream._kafka import create_topics
from tests.helpers import parse_metrics
from tests.integration.test_worker import running_worker

pytestmark = pytest.mark.integration

EXPERIMENT = ("info", "trace_location", "mlflow_experiment", "experiment_id")


def _trace(template: bytes, trace_id: str, path: tuple[str, ...] | None = None, value: object = None) -> bytes:
    trace = copy.deepcopy(orjson.loads(template))
    trace["info"]["trace_id"] = trace_id
    if path is not None:
        node = trace
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return orjson.dumps(trace)


async def _read_dlq(settings: Settings, want: int, timeout: float = 30) -> dict[bytes, dict[str, bytes]]:
    consumer = AIOKafkaConsumer(settings.topics.dlq, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8_000_000,
                                fetch_max_bytes=64_000_000)
    await consumer.start()
    dead: dict[bytes, dict[str, bytes]] = {}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(dead) < want and loop.time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for msg in msgs:
                    dead[msg.key] = dict(msg.headers)
    finally:
        await consumer.stop()
    return dead


async def test_overflowing_time_and_huge_experiment_id_are_dead_lettered(
    settings: Settings, fixture_bytes: list[bytes]
) -> None:
    await create_topics(settings)
    template = fixture_bytes[0]
    good_id = "tr-" + "9" * 32
    overflow = _trace(template, "tr-overflow", ("info", "request_time"), 2**64 - 1)
    huge_exp = _trace(template, "tr-huge-exp", EXPERIMENT, "e" * 1_000_000)
    assert len(huge_exp) < settings.max_trace_bytes  # refused for its id, not for its size
    long_name = orjson.dumps({"kind": "feedback", "trace_id": good_id, "name": "n" * 100_000, "value": True})
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                compression_type="lz4", max_request_size=4_000_000)
    await producer.start()
    try:
        # One partition, in this order: the good trace is behind both poison messages.
        for key, value in ((b"bad-time", overflow), (b"bad-exp", huge_exp), (good_id.encode(), _trace(template, good_id))):
            await producer.send_and_wait(settings.topics.traces, key=key, value=value, partition=0)
        await producer.send_and_wait(settings.topics.feedback, key=b"bad-name", value=long_name, partition=0)
    finally:
        await producer.stop()

    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    try:
        async with running_worker(settings, ["output_word_count@1.0"]) as handle:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            doc = None
            while loop.time() < deadline:
                doc = await sink.get_trace(good_id)
                if doc and "output_word_count" in doc["assessments"]:
                    break
                await asyncio.sleep(0.2)
            dead = await _read_dlq(settings, 3)
            metrics_text = httpx.get(f"http://127.0.0.1:{handle.metrics_port}/metrics").text
            assert handle.worker is not None and not handle.worker.stopping.is_set()  # still running
        assert doc is not None and doc["assessments"]["output_word_count"]["state"] == "scored"
        assert sorted(dead) == [b"bad-exp", b"bad-name", b"bad-time"]
        assert dead[b"bad-time"]["tw-reason"] == b"bad_value"
        assert dead[b"bad-exp"]["tw-reason"] == b"bad_id"
        assert dead[b"bad-name"]["tw-reason"] == b"bad_id"
        assert dead[b"bad-name"]["tw-source-topic"].decode() == settings.topics.feedback
        m = parse_metrics(metrics_text)
        invalid = {dict(lbl)["reason"]: v for (n, lbl), v in m.items() if n == "tracewatch_traces_invalid_total"}
        assert invalid.get("bad_value") == 1 and invalid.get("bad_id", 0) >= 1
        # Nothing of the huge experiment reached Redis.
        assert "e" * 1_000 not in await sink.experiments()
    finally:
        await sink.aclose()
