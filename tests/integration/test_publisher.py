"""The publisher against the real broker: every trace acked, intact, in per-key order."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections import defaultdict

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from scorers import DecodeError, decode_trace
from stream import PublishError, Settings, SyncTracePublisher, TracePublisher
from stream._kafka import create_topics, topic_partitions
from tests.helpers import synth_traces

pytestmark = pytest.mark.integration


async def _consume_all(settings: Settings, topic: str, n: int, timeout: float = 60.0) -> list[tuple[bytes, bytes, int, int]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[tuple[bytes, bytes, int, int]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < n and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, msgs in batch.items():
                out.extend((m.key, m.value, tp.partition, m.offset) for m in msgs)
    finally:
        await consumer.stop()
    return out


async def test_topics_create_is_idempotent(settings: Settings) -> None:
    first = await create_topics(settings, partitions=3)
    assert set(first.values()) == {"created"}
    again = await create_topics(settings, partitions=3)
    assert set(again.values()) == {"exists"}
    t = settings.topics
    assert await topic_partitions(settings, t.traces) == 3
    assert await topic_partitions(settings, t.feedback) == 3


async def test_10k_traces_roundtrip_with_per_key_order(settings: Settings, fixture_bytes: list[bytes]) -> None:
    await create_topics(settings, partitions=4)
    # 2,000 trace ids, 5 versions each, so per-key order is observable.
    base = list(synth_traces(fixture_bytes, 2000, seed=1))
    sent: list[tuple[str, bytes]] = []
    for version in range(5):
        for tid, data in base:
            doc = orjson.loads(data)
            doc["info"]["tags"] = {**doc["info"].get("tags", {}), "seq": str(version)}
            sent.append((tid, orjson.dumps(doc)))
    async with TracePublisher(settings=settings) as pub:
        count = await pub.publish_many((d for _, d in sent), window=3000)
        assert count == len(sent) == 10_000
        assert pub.published == 10_000
    got = await _consume_all(settings, settings.topics.traces, len(sent))
    assert len(got) == len(sent)
    assert sorted((k.decode(), v) for k, v, _, _ in got) == sorted(sent)
    by_key: dict[bytes, list[tuple[int, int, str]]] = defaultdict(list)
    for k, v, part, off in got:
        by_key[k].append((part, off, orjson.loads(v)["info"]["tags"]["seq"]))
    for k, rows in by_key.items():
        assert len({p for p, _, _ in rows}) == 1, f"key {k!r} spread over partitions"
        assert [s for _, _, s in sorted(rows)] == ["0", "1", "2", "3", "4"]


async def test_publish_accepts_entity_dict_bytes_and_str(settings: Settings, fixture_bytes: list[bytes]) -> None:
    await create_topics(settings, partitions=1)
    (t1, b1), (t2, b2), (t3, b3), (t4, b4) = synth_traces(fixture_bytes, 4, seed=2)
    async with TracePublisher(settings=settings) as pub:
        await pub.publish(decode_trace(b1))
        await pub.publish(orjson.loads(b2))
        await pub.publish(b3)
        await pub.publish(b4.decode())
        with pytest.raises(DecodeError):
            await pub.publish(b"not json")
        with pytest.raises(TypeError):
            await pub.publish(42)
    got = await _consume_all(settings, settings.topics.traces, 4)
    assert sorted(k.decode() for k, _, _, _ in got) == sorted([t1, t2, t3, t4])
    for _, v, _, _ in got:
        assert decode_trace(v).trace_id in {t1, t2, t3, t4}


def test_sync_publisher(settings: Settings, fixture_bytes: list[bytes]) -> None:
    asyncio.run(create_topics(settings, partitions=2))
    items = list(synth_traces(fixture_bytes, 50, seed=3))
    with SyncTracePublisher(settings=settings) as pub:
        pub.publish(items[0][1])
        assert pub.publish_many(d for _, d in items[1:]) == 49
    got = asyncio.run(_consume_all(settings, settings.topics.traces, 50))
    assert {k.decode() for k, _, _, _ in got} == {t for t, _ in items}


async def test_unreachable_broker_raises() -> None:
    s = Settings(kafka_bootstrap="127.0.0.1:1")
    pub = TracePublisher(settings=s)
    with pytest.raises(PublishError):
        await pub.start()


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")
def test_cli_publish_fixtures_seen_by_kcat(settings: Settings, fixtures_dir, fixture_bytes: list[bytes]) -> None:
    env = {"TRACEWATCH_TOPIC_PREFIX": settings.topic_prefix}
    import os

    run = subprocess.run(
        ["tracewatch", "topics", "create", "--partitions", "2"], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    run = subprocess.run(
        ["tracewatch", "publish", str(fixtures_dir)], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert f"published {len(fixture_bytes)} traces" in run.stdout
    kc = subprocess.run(
        ["kcat", "-b", settings.kafka_bootstrap, "-t", settings.topics.traces, "-C", "-e", "-q", "-f", "%k\t%S\n"],
        capture_output=True, text=True, timeout=60,
    )
    rows = [line.split("\t") for line in kc.stdout.splitlines() if line]
    assert len(rows) == len(fixture_bytes)
    expected = {decode_trace(b).trace_id: len(b) for b in fixture_bytes}
    assert {k: int(size) for k, size in rows} == expected
