"""Worker processes under faults: SIGKILL mid-run, two workers in a group, Redis down for 10 s."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sinks import RedisSink
from stream import Settings
from stream._kafka import create_topics
from tests.helpers import free_port, parse_metrics, synth_traces
from tests.integration.test_worker import REFS, expected_pairs, publish, wait_for_coverage

pytestmark = pytest.mark.integration


def spawn_worker(
    settings: Settings, *, metrics_port: int = -1, redis_url: str | None = None, stderr: Any = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TRACEWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TRACEWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "TRACEWATCH_CONSUMER_GROUP": settings.consumer_group,
        "TRACEWATCH_REDIS_PREFIX": settings.redis_prefix,
        "TRACEWATCH_REDIS_URL": redis_url or settings.redis_url,
    }
    args = [sys.executable, "-m", "stream", "worker", "--metrics-port", str(metrics_port), "--log-level", "WARNING",
            "--max-records", "500"]
    for r in REFS:
        args += ["--scorer", r]
    return subprocess.Popen(args, env=env, stderr=stderr)


async def coverage_total(sink: RedisSink, names: list[str]) -> int:
    total = 0
    for n in names:
        c = await sink.coverage("1", n)
        total += c.get("scored", 0) + c.get("error", 0) + c.get("skipped", 0)
    return total


async def assert_exact(sink: RedisSink, ids: list[str], cov: dict[str, dict[str, int]]) -> None:
    want = expected_pairs(ids)
    for name, c in cov.items():
        assert c.get("scored", 0) + c.get("error", 0) + c.get("skipped", 0) == len(want[name]), (name, c)
    # aggregates over all minutes count each non-skipped assessment exactly once
    minutes = set()
    for tid in ids[:: max(1, len(ids) // 50)]:
        doc = await sink.get_trace(tid)
        assert doc is not None
        for a in doc["assessments"].values():
            minutes.add(a["trace_end_ms"] // 60000)
    lo, hi = min(minutes) - 5, max(minutes) + 5
    for name, c in cov.items():
        agg = await sink.aggregates("1", name, start_minute=lo, end_minute=hi)
        assert agg.count == c.get("scored", 0) + c.get("error", 0), name


async def test_sigkill_twice_loses_nothing_counts_nothing_twice(settings: Settings, fixture_bytes: list[bytes]) -> None:
    await create_topics(settings)
    items = list(synth_traces(fixture_bytes, 50_000, seed=21))
    ids = [t for t, _ in items]
    want = expected_pairs(ids)
    target = sum(len(s) for s in want.values())
    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    await publish(settings, items)
    kills = 0
    proc = spawn_worker(settings)
    try:
        for fraction in (0.2, 0.55):
            deadline = time.monotonic() + 120
            while await coverage_total(sink, list(RATES_NAMES)) < fraction * target:
                assert proc.poll() is None, "worker died by itself"
                assert time.monotonic() < deadline, "worker made no progress"
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            proc = spawn_worker(settings)
        cov = await wait_for_coverage(sink, {n: len(s) for n, s in want.items()}, timeout=180)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert kills == 2
    await assert_exact(sink, ids, cov)
    await sink.aclose()


RATES_NAMES = ("output_word_count", "has_retriever_span", "latency_under")


async def test_two_workers_split_partitions_same_results(settings: Settings, fixture_bytes: list[bytes]) -> None:
    await create_topics(settings, partitions=4)
    items = list(synth_traces(fixture_bytes, 20_000, seed=22))
    ids = [t for t, _ in items]
    want = expected_pairs(ids)
    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    ports = [free_port(), free_port()]
    procs = [spawn_worker(settings, metrics_port=p) for p in ports]
    try:
        await asyncio.sleep(3)  # both join the group before traffic
        await publish(settings, items)
        cov = await wait_for_coverage(sink, {n: len(s) for n, s in want.items()}, timeout=180)
        received = []
        for p in ports:
            m = parse_metrics(httpx.get(f"http://127.0.0.1:{p}/metrics").text)
            received.append(m.get(("tracewatch_traces_received_total", frozenset({("experiment", "1")})), 0.0))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(30) == 0
    assert sum(received) == 20_000
    assert all(r > 0 for r in received), f"one worker got no partition: {received}"
    await assert_exact(sink, ids, cov)
    # and per trace the same results a single in-process computation gives
    from scorers import decode_trace, resolve_scorer

    scorers = {n: resolve_scorer(n) for n in RATES_NAMES}
    for tid, data in items[:: 200]:
        doc = await sink.get_trace(tid)
        trace = decode_trace(data)
        for name in want:
            if tid not in want[name]:
                assert doc is None or name not in doc["assessments"]
                continue
            res = scorers[name].run(trace)
            got = doc["assessments"][name]
            if res.skip_reason:
                assert got["state"] == "skipped" and got["skip_reason"] == res.skip_reason
            else:
                assert got["value"] == res.feedbacks[0].value
    await sink.aclose()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
async def test_redis_down_10s_worker_waits_and_catches_up(settings: Settings, fixture_bytes: list[bytes], tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    conf = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--appendonly", "yes",
            "--appendfsync", "always", "--maxmemory-policy", "noeviction", "--save", ""]

    def start_redis() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["redis-server", *conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return proc
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis did not start")

    redis_proc = start_redis()
    await create_topics(settings)
    items = list(synth_traces(fixture_bytes, 20_000, seed=23))
    ids = [t for t, _ in items]
    want = expected_pairs(ids)
    target = sum(len(s) for s in want.values())
    sink = RedisSink.from_url(url, prefix=settings.redis_prefix)
    mport = free_port()
    worker = spawn_worker(settings, metrics_port=mport, redis_url=url)
    try:
        await asyncio.sleep(2)
        # publish in a background task so traffic keeps arriving while Redis is down
        pub = asyncio.create_task(publish(settings, items))
        while await coverage_total(sink, list(RATES_NAMES)) < 0.1 * target:
            await asyncio.sleep(0.05)
        redis_proc.terminate()
        redis_proc.wait(10)
        await asyncio.sleep(10)
        assert worker.poll() is None, "worker must wait for Redis, not die"
        redis_proc = start_redis()
        await pub
        await sink.aclose()
        sink = RedisSink.from_url(url, prefix=settings.redis_prefix)
        cov = await wait_for_coverage(sink, {n: len(s) for n, s in want.items()}, timeout=120)
        m = parse_metrics(httpx.get(f"http://127.0.0.1:{mport}/metrics").text)
        await assert_exact(sink, ids, cov)
        assert m.get(("tracewatch_redis_retries_total", frozenset()), 0) > 0
        await sink.aclose()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        redis_proc.terminate()
        redis_proc.wait(10)
