"""The MLflow sink against a real `mlflow server`: exactly one assessment per result, read back by MLflow."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cramjam
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from sinks import RedisSink
from sinks.mlflow import RESULT_ID_KEY, trace_to_otlp_json
from stream import Settings
from stream._events import FeedbackEvent
from stream._kafka import create_topics
from stream.mlflow import SinkHandle, run_mlflow_sink
from tests.helpers import free_port, parse_metrics, synth_traces
from tests.integration.test_metrics_coverage import MLFLOW_SINK_PREFIX, missing_from, named_metrics, scrape
from tests.integration.test_worker import publish, running_worker
from tests.mlflow_sink.mlflow_peer import MlflowServer
from tests.mlflow_venv import mlflow_python

pytestmark = [pytest.mark.integration, pytest.mark.skipif(mlflow_python(build=False) is None, reason="no MLflow venv")]
REFS = ["output_word_count@1.0", "has_retriever_span@0.5"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    server = MlflowServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def stored_results(redis: RedisSink, ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per trace, the non-skipped results Redis holds (name -> assessment dict)."""
    out = {}
    for t in ids:
        got = await redis.get_trace(t)
        out[t] = {n: a for n, a in ((got or {}).get("assessments") or {}).items() if a.get("state") != "skipped"}
    return out


async def wait_for(predicate, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return False


def sample(handle: SinkHandle, name: str, **labels: str) -> float:
    assert handle.registry is not None
    return handle.registry.get_sample_value(name, labels) or 0.0


async def send_events(settings: Settings, events: list[FeedbackEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(settings.topics.feedback, e.to_json(), key=e.trace_id.encode())
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def running_sink(settings: Settings, server: MlflowServer, **kw: Any):
    handle = SinkHandle()
    env = {"MLFLOW_TRACKING_URI": server.uri}
    task = asyncio.create_task(
        run_mlflow_sink(settings, env=env, metrics_port=0, handle=handle, install_signals=False, **kw)
    )
    ready = asyncio.create_task(handle.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield handle
    finally:
        assert handle.loop is not None
        handle.loop.stop()
        await asyncio.wait_for(task, 60)


def check_exactly_once(
    stored: dict[str, dict[str, dict[str, Any]]], seen: dict[str, list[dict[str, Any]] | None]
) -> int:
    """Every stored result is exactly one matching assessment in MLflow; returns how many."""
    n = 0
    for t, results in stored.items():
        got = [a for a in (seen.get(t) or []) if a["source"]["source_type"] != "HUMAN" and a["kind"] == "Feedback"]
        by_name = Counter(a["assessment_name"] for a in got)
        assert by_name == Counter(list(results)), (t, by_name, list(results))
        for a in got:
            want = results[a["assessment_name"]]
            assert a["source"]["source_id"] == f"{want['scorer']}@v{want['scorer_version']}"
            assert a["metadata"][RESULT_ID_KEY]
            if want["error"]:
                assert a["feedback"]["error"]["error_code"] == want["error"]["error_code"]
            else:
                assert a["feedback"]["value"] == want["value"] or float(a["feedback"]["value"]) == want["value"]
            assert a.get("rationale") == want["rationale"]
            n += 1
    return n


async def test_results_votes_expectations_and_missing_traces(settings: Settings, mlflow_server: MlflowServer) -> None:
    settings = settings.model_copy(update={"mlflow_sink_group": settings.consumer_group + "-mlflow"})
    lines = mlflow_server.client("log", "12").strip().splitlines()
    traces = [(json.loads(line)["info"]["trace_id"], line.encode()) for line in lines]
    ids = [t for t, _ in traces]
    # One trace only tracewatch has (the app does not export to MLflow).
    fixture = (Path(os.environ.get("TRACEWATCH_SHARED", "/work/shared")) / "fixtures/mlflow").glob(
        "mlflow_trace_0*.json"
    )
    ((orphan_id, orphan),) = list(synth_traces([next(iter(sorted(fixture))).read_bytes()], 1, seed=5))
    await create_topics(settings)
    redis = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    async with running_worker(settings, REFS):
        await publish(settings, [*traces, (orphan_id, orphan)])
        assert await wait_for(lambda: _all_scored(redis, [*ids, orphan_id]), 60)
    stored = await stored_results(redis, ids)
    a, b = ids[0], ids[1]
    up = FeedbackEvent("feedback", a, "user_satisfaction", True, source_id="u-1", created_ms=1_000)
    down = FeedbackEvent("feedback", a, "user_satisfaction", False, source_id="u-1", created_ms=2_000)
    other = FeedbackEvent("feedback", a, "user_satisfaction", True, source_id="u-2", created_ms=1_500)
    truth = FeedbackEvent("expectation", b, "expected_facts", ["fact one", "fact two"], created_ms=3_000)
    await send_events(settings, [up, other, down, down, truth])  # `down` redelivered

    async with running_sink(settings, mlflow_server) as h:
        total = sum(len(r) for r in stored.values())

        async def caught_up() -> bool:
            return (
                sample(h, "tracewatch_mlflow_sink_written_total", kind="score") >= total
                and sample(h, "tracewatch_mlflow_sink_written_total", kind="expectation") >= 1
                and sample(h, "tracewatch_mlflow_sink_skipped_total", reason="trace_not_in_mlflow") >= 1
                and sample(h, "tracewatch_mlflow_sink_written_total", kind="vote") >= 3
            )

        ok = await wait_for(caught_up, 60)
        assert h.registry is not None
        assert ok, [(m.name, s.labels, s.value) for m in h.registry.collect() for s in m.samples if s.value]
        await asyncio.sleep(1)
        assert sample(h, "tracewatch_mlflow_sink_written_total", kind="vote") == 3
        assert sample(h, "tracewatch_mlflow_sink_duplicates_total", kind="vote") == 1
        # Every `tracewatch_mlflow_*` name the docs, rules and dashboards use is served on the
        # sink's /metrics (tests/integration/test_metrics_coverage.py covers the worker and API).
        served, _ = scrape(f"http://127.0.0.1:{h.metrics_port}/metrics")
        named = {n: f for n, f in named_metrics().items() if n.startswith(MLFLOW_SINK_PREFIX)}
        assert "tracewatch_mlflow_sink_lag" in named and "tracewatch_mlflow_sink_failed_total" in named
        assert not missing_from(named, served), missing_from(named, served)
    seen = mlflow_server.read(ids)
    assert check_exactly_once(stored, seen) == total
    votes = [x for x in seen[a] or [] if x["source"]["source_type"] == "HUMAN"]
    u1 = sorted((x for x in votes if x["source"]["source_id"] == "u-1"), key=lambda x: x["create_time"])
    assert [(x["feedback"]["value"], x["valid"]) for x in u1] == [(True, False), (False, True)]
    assert u1[1]["overrides"] == u1[0]["assessment_id"]
    assert [x["feedback"]["value"] for x in votes if x["source"]["source_id"] == "u-2"] == [True]
    exp = [x for x in seen[b] or [] if x["kind"] == "Expectation"]
    assert len(exp) == 1
    got = exp[0]["expectation"]
    value = json.loads(got["serialized_value"]["value"]) if "serialized_value" in got else got["value"]
    assert value == ["fact one", "fact two"]

    # The option on: the orphan is uploaded from the copy tracewatch keeps, then annotated.
    await redis.store_raw([(orphan_id, bytes(cramjam.lz4.compress_block(orphan)))])
    settings2 = settings.model_copy(update={"mlflow_sink_group": settings.mlflow_sink_group + "-upload"})
    async with running_sink(settings2, mlflow_server, upload_traces=True) as h2:
        assert await wait_for(lambda: _ge(h2, "tracewatch_mlflow_sink_written_total", 1, kind="score"), 60)
        await asyncio.sleep(1)
    orphan_seen = mlflow_server.read([orphan_id])[orphan_id]
    assert orphan_seen is not None and len(orphan_seen) == len((await stored_results(redis, [orphan_id]))[orphan_id])
    await redis.aclose()


async def _ge(h: SinkHandle, name: str, n: float, **labels: str) -> bool:
    return sample(h, name, **labels) >= n


async def _all_scored(redis: RedisSink, ids: list[str]) -> bool:
    for t in ids:
        if not await redis.get_trace(t):
            return False
    return True


# -- crashes and an MLflow outage -------------------------------------------------------------

# The size is TW_MLFLOW_SINK_N=5000 (run by hand: a few minutes at MLflow's ~50-100
# writes/s on a SQLite store); CI's default keeps the test near 2 minutes with the full 30 s outage.
N = int(os.environ.get("TW_MLFLOW_SINK_N", "400"))
DOWN_S = float(os.environ.get("TW_MLFLOW_DOWN_S", "30"))


def start_sink_process(settings: Settings, server: MlflowServer, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": server.uri,
        "TRACEWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TRACEWATCH_REDIS_URL": settings.redis_url,
        "TRACEWATCH_REDIS_PREFIX": settings.redis_prefix,
        "TRACEWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "TRACEWATCH_MLFLOW_SINK_GROUP": settings.mlflow_sink_group,
        "TRACEWATCH_MLFLOW_SINK_METRICS_PORT": str(port),
        "TRACEWATCH_CONSUMER_SESSION_TIMEOUT": "6",
        "TRACEWATCH_CONSUMER_HEARTBEAT_INTERVAL": "1",
        "PYTHONPATH": str(ROOT),
    }
    with open(server.root / "sink.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stream", "sink", "mlflow"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def metric_sum(port: int | None, name: str) -> float:
    """The sum of a metric's samples on a /metrics port (-1 when it does not answer)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return -1
    return sum(v for (n, _), v in parse_metrics(text).items() if n == name)


def written(port: int) -> float:
    return metric_sum(port, "tracewatch_mlflow_sink_written_total")


async def until_written(port: int, n: float, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while written(port) < n:
        assert time.monotonic() < deadline, f"the sink wrote {written(port)} of {n} within {timeout} s"
        await asyncio.sleep(0.2)


async def test_kill_9_twice_and_mlflow_down_exactly_once(
    settings: Settings, mlflow_server: MlflowServer, fixture_bytes: list[bytes]
) -> None:
    """Kill -9 the sink twice, then stop MLflow for 30 s while new traces arrive: the worker
    scores them at once (its lag stays flat), the sink's lag grows, then drains; in the end
    every result is exactly one assessment in MLflow."""
    settings = settings.model_copy(update={"mlflow_sink_group": settings.consumer_group + "-mlflow"})
    exp = mlflow_server.client("experiment", "tracewatch-sink").strip()
    items = list(synth_traces(fixture_bytes, N, seed=21))
    ids = [t for t, _ in items]
    first, second = items[: N // 2], items[N // 2 :]
    async with httpx.AsyncClient(base_url=mlflow_server.uri, timeout=60) as http:  # the app's own export
        sem = asyncio.Semaphore(8)

        async def export(data: bytes) -> None:
            d = json.loads(data)
            d["info"]["trace_location"] = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}}
            async with sem:
                r = await http.post(
                    "/v1/traces",
                    content=trace_to_otlp_json(d),
                    headers={"Content-Type": "application/json", "x-mlflow-experiment-id": exp},
                )
            assert r.status_code == 200, r.text

        await asyncio.gather(*(export(data) for _, data in items))
    await create_topics(settings)
    redis = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    port = free_port()
    async with running_worker(settings, REFS) as worker:
        await publish(settings, first)
        assert await wait_for(lambda: _all_scored(redis, [t for t, _ in first]), 120)
        total1 = sum(len(r) for r in (await stored_results(redis, [t for t, _ in first])).values())
        proc = start_sink_process(settings, mlflow_server, port)
        try:
            for _ in range(2):  # kill -9 twice mid-run (each process counts its own writes)
                await until_written(port, total1 * 0.15)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                proc = start_sink_process(settings, mlflow_server, port)
            await until_written(port, 1)  # the third process has joined and writes

            # MLflow away mid-run while new traces arrive: the worker scores them at once, the
            # sink waits and retries, and its lag grows.
            lag_before = metric_sum(port, "tracewatch_mlflow_sink_lag")
            mlflow_server.stop()
            down_at = time.monotonic()
            await publish(settings, second)
            worker_lag: list[float] = []
            sink_lag: list[float] = []
            while time.monotonic() - down_at < DOWN_S:
                worker_lag.append(metric_sum(worker.metrics_port, "tracewatch_consumer_lag"))
                sink_lag.append(metric_sum(port, "tracewatch_mlflow_sink_lag"))
                await asyncio.sleep(1)
            scored_while_down = await _all_scored(redis, [t for t, _ in second])
            mlflow_server.start()

            deadline = time.monotonic() + 300
            drained: list[float] = []
            last, still = -2.0, 0
            while time.monotonic() < deadline and still < 10:  # until the sink is idle for 5 s
                now = written(port)
                drained.append(metric_sum(port, "tracewatch_mlflow_sink_lag"))
                still = still + 1 if now == last else 0
                last = now
                await asyncio.sleep(0.5)
            await asyncio.sleep(6)  # a last end-offset read and commit
            final_sink_lag = metric_sum(port, "tracewatch_mlflow_sink_lag")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    # Scoring never slowed: every new trace was scored while MLflow was down, and the workers'
    # lag was back to 0 long before MLflow returned.
    assert scored_while_down
    assert worker_lag and max(worker_lag[-5:]) == 0, worker_lag
    # The sink's lag grew while MLflow was down (its results piled up), then drained.
    results2 = sum(len(r) for r in (await stored_results(redis, [t for t, _ in second])).values())
    assert max(sink_lag) >= results2 * 0.9, (sink_lag, results2)
    assert max(sink_lag) > lag_before, (lag_before, sink_lag)
    assert final_sink_lag == 0, (final_sink_lag, drained)
    stored = await stored_results(redis, ids)
    total = sum(len(r) for r in stored.values())
    seen = mlflow_server.search(exp)
    assert check_exactly_once(stored, seen) == total
    await redis.aclose()
