"""The worker on the real broker and Redis: exact results, nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from scorers import resolve_scorer
from sinks import RedisSink
from stream import Settings, TracePublisher, sample_u
from stream._kafka import create_topics
from stream.registry._scorer_set import ScorerSet, parse_scorer_option
from stream.worker._loop import WorkerOptions
from stream.worker._runtime import WorkerHandle, run_worker
from tests.helpers import parse_metrics, synth_traces

pytestmark = pytest.mark.integration

RATES = {"output_word_count": 1.0, "has_retriever_span": 0.5, "latency_under": 0.1}
REFS = [f"{name}@{rate}" for name, rate in RATES.items()]


def scorer_set(refs: list[str] = REFS) -> ScorerSet:
    return ScorerSet.of([parse_scorer_option(r, resolve_scorer) for r in refs])


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, refs: list[str] = REFS, **opts: Any) -> AsyncIterator[WorkerHandle]:
    handle = WorkerHandle()
    snapshot = scorer_set(refs)
    task = asyncio.create_task(
        run_worker(settings, lambda: snapshot, metrics_port=0, handle=handle, install_signals=False,
                   options=WorkerOptions(**opts))
    )
    ready = asyncio.create_task(handle.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield handle
    finally:
        if handle.worker is not None:
            handle.worker.stop()
        await asyncio.wait_for(task, 60)


def expected_pairs(ids: list[str]) -> dict[str, set[str]]:
    return {name: {t for t in ids if sample_u(t) < rate} for name, rate in RATES.items()}


async def wait_for_coverage(sink: RedisSink, want: dict[str, int], exp: str = "1", timeout: float = 120) -> dict[str, dict[str, int]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        cov = {name: await sink.coverage(exp, name) for name in want}
        totals = {n: c.get("scored", 0) + c.get("error", 0) + c.get("skipped", 0) for n, c in cov.items()}
        if totals == want or loop.time() > deadline:
            return cov
        await asyncio.sleep(0.2)


async def publish(settings: Settings, items: list[tuple[str, bytes]]) -> None:
    async with TracePublisher(settings=settings) as pub:
        await pub.publish_many((d for _, d in items), window=5000)


async def test_20k_traces_exact_results(settings: Settings, fixture_bytes: list[bytes]) -> None:
    await create_topics(settings)
    items = list(synth_traces(fixture_bytes, 20_000, seed=11))
    ids = [t for t, _ in items]
    want = expected_pairs(ids)
    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    await publish(settings, items)
    async with running_worker(settings) as handle:
        cov = await wait_for_coverage(sink, {n: len(s) for n, s in want.items()})
        metrics_text = httpx.get(f"http://127.0.0.1:{handle.metrics_port}/metrics").text
    # every sampled pair has exactly one result
    for name, c in cov.items():
        assert c.get("scored", 0) + c.get("error", 0) + c.get("skipped", 0) == len(want[name]), (name, c)
    # sampled sets are nested exactly as the rule says
    assert want["latency_under"] <= want["has_retriever_span"] <= want["output_word_count"]
    found: dict[str, set[str]] = defaultdict(set)
    recomputed: dict[tuple[str, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for tid in ids:
        doc = await sink.get_trace(tid)
        names = set(doc["assessments"]) if doc else set()
        for name in names:
            found[name].add(tid)
            a = doc["assessments"][name]
            if a["state"] == "skipped":
                continue
            minute = a["trace_end_ms"] // 60000
            r = recomputed[(name, minute)]
            r["count"] += 1
            r[a["outcome"]] += 1
            v = a["value"]
            if isinstance(v, bool):
                r["sum"] += float(v)
            elif isinstance(v, (int, float)):
                r["sum"] += v
    for name in RATES:
        assert found[name] == want[name], name
    # word count is skipped on the error trace (no outputs): coverage says so
    assert cov["output_word_count"].get("skipped", 0) == sum(
        1 for i, t in enumerate(ids) if i % len(fixture_bytes) == 3
    )
    # per-minute aggregates equal the recomputation from per-trace results
    for (name, minute), r in recomputed.items():
        agg = await sink.aggregates("1", name, start_minute=minute, end_minute=minute + 1)
        assert agg.count == r["count"], (name, minute)
        assert agg.passed == r["pass"] and agg.failed == r["fail"] and agg.errors == r["error"]
        assert agg.sum == pytest.approx(r["sum"])
    # /metrics agrees with Redis
    m = parse_metrics(metrics_text)
    for name, c in cov.items():
        for state in ("scored", "error", "skipped"):
            key = ("tracewatch_sampled_total", frozenset({("experiment", "1"), ("scorer", name), ("state", state)}))
            assert m.get(key, 0.0) == c.get(state, 0), (name, state)
    assert m[("tracewatch_traces_received_total", frozenset({("experiment", "1")}))] == 20_000
    await sink.aclose()


async def test_malformed_messages_go_to_dlq(settings: Settings, fixture_bytes: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    await create_topics(settings)
    good = list(synth_traces(fixture_bytes, 10_000, seed=12))
    bad_kinds = [
        (b"{not json", "not_json"),
        (b"[1,2,3]", "not_object"),
        (b'{"info": {}}', "missing_trace_id"),
        (b'{"info": {"trace_id": "tr-x"}, "data": {"spans": "nope"}}', "bad_spans"),
        (b'{"info": {"trace_id": "tr-big"}, "pad": "' + b"x" * 1_100_000 + b'"}', "too_large"),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=4_000_000)
    await producer.start()
    bad_sent: dict[bytes, str] = {}
    futs = []
    gi = 0
    for i in range(11_000):
        if i % 11 == 5:
            n = len(bad_sent)
            payload, reason = bad_kinds[n % len(bad_kinds)]
            key = f"bad-{n}".encode()
            bad_sent[key] = reason
            futs.append(await producer.send(settings.topics.traces, key=key, value=payload))
        else:
            tid, data = good[gi]
            gi += 1
            futs.append(await producer.send(settings.topics.traces, key=tid.encode(), value=data))
    await asyncio.gather(*futs)
    await producer.stop()
    assert len(bad_sent) == 1000 and gi == 10_000
    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    want = expected_pairs([t for t, _ in good])
    async with running_worker(settings) as handle:
        cov = await wait_for_coverage(sink, {n: len(s) for n, s in want.items()})
        metrics_text = httpx.get(f"http://127.0.0.1:{handle.metrics_port}/metrics").text
    for name, c in cov.items():
        assert c.get("scored", 0) + c.get("error", 0) + c.get("skipped", 0) == len(want[name])
    consumer = AIOKafkaConsumer(settings.topics.dlq, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8_000_000,
                                fetch_max_bytes=64_000_000)
    await consumer.start()
    dead: dict[bytes, dict[str, bytes]] = {}
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(dead) < 1000 and asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for msg in msgs:
                    dead[msg.key] = {k: v for k, v in msg.headers} | {"_value_len": str(len(msg.value)).encode()}
    finally:
        await consumer.stop()
    assert set(dead) == set(bad_sent)
    for key, headers in dead.items():
        assert headers["tw-reason"].decode() == bad_sent[key]
        assert headers["tw-error"]
        assert headers["tw-source-topic"].decode() == settings.topics.traces
    m = parse_metrics(metrics_text)
    invalid = {dict(lbl)["reason"]: v for (n, lbl), v in m.items() if n == "tracewatch_traces_invalid_total"}
    assert sum(invalid.values()) == 1000
    assert invalid["too_large"] == 200
    await sink.aclose()


async def test_judge_scorer_through_worker_with_judge_server(settings: Settings, fixture_bytes: list[bytes]) -> None:
    """A judge on every trace, the judge server answering slowly with some 429s: all scored, capped."""
    from stream.cli.judge_server import JudgeServer

    await create_topics(settings)
    items = list(synth_traces(fixture_bytes, 300, seed=13))
    with JudgeServer(latency=0.05, rate_429=0.2, retry_after=0) as server:
        s = settings.model_copy(update={"judge_base_url": server.base_url, "judge_max_in_flight": 8})
        sink = RedisSink.from_url(s.redis_url, prefix=s.redis_prefix)
        await publish(s, items)
        async with running_worker(s, ["Safety@1.0"], judge_max_in_flight=16) as handle:
            cov = await wait_for_coverage(sink, {"safety": 300}, timeout=120)
            metrics_text = httpx.get(f"http://127.0.0.1:{handle.metrics_port}/metrics").text
        stats = server.stats()
    no_outputs = sum(1 for i in range(300) if i % len(fixture_bytes) == 3)  # the error fixture
    assert cov["safety"] == {"scored": 300 - no_outputs, "skipped": no_outputs, "skipped:missing_outputs": no_outputs}
    assert stats["max_in_flight"] <= 8  # the client's cap holds
    m = parse_metrics(metrics_text)
    statuses = {dict(lbl)["status"]: v for (n, lbl), v in m.items() if n == "tracewatch_judge_requests_total"}
    assert statuses.get("ok") == 300 - no_outputs and statuses.get("429", 0) > 0
    doc = await sink.get_trace(items[0][0])
    assert doc["assessments"]["safety"]["source"]["source_type"] == "LLM_JUDGE"
    await sink.aclose()
