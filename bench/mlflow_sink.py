"""Assessments written per second to one local MLflow tracking server: `tracewatch sink mlflow`
(one process) against MLflow's own `mlflow.log_feedback` in a Python loop.

    python -m bench.mlflow_sink [--results N] [--max-in-flight 32]
    python -m bench --only mlflow_sink        (a scenario of the full run; --quick: 300 results)

Both write the same N results (one `Feedback` per trace, same name, value, rationale, source
and metadata) to the same `mlflow server` (SQLite store, 1 worker, loopback), started here
from the MLflow venv (`tests/mlflow_venv.py`), onto traces uploaded to it beforehand. The
MLflow loop runs first (the baseline, timed inside its own process, imports excluded), then
the sink drains the same results from a prefilled assessments topic; its rate is timed from
its first write to its last (start-up and the consumer-group join excluded), read from its
own `/metrics`. Needs the local stack (Kafka and Redis) for the sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench._infra import REPO, Namespace, free_port
from scorers import Assessment, AssessmentSource
from sinks.mlflow import trace_to_otlp_json
from stream.traffic import build_corpus

NAME = "bench_quality"


def _server(root: Path) -> Any:
    """The MLflow peer of the integration tests (a real `mlflow server` from the MLflow venv)."""
    sys.path.insert(0, str(REPO))
    from tests.mlflow_sink.mlflow_peer import MlflowServer

    return MlflowServer(root)


async def _upload_traces(uri: str, experiment: str, corpus: Any, n: int) -> list[str]:
    """Upload n corpus traces to MLflow over its OTLP endpoint (as an app's export would)."""
    sem = asyncio.Semaphore(8)
    ids: list[str] = []

    async def one(http: httpx.AsyncClient, data: bytes) -> None:
        d = json.loads(data)
        d["info"]["trace_location"] = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}}
        async with sem:
            r = await http.post("/v1/traces", content=trace_to_otlp_json(d),
                                headers={"Content-Type": "application/json", "x-mlflow-experiment-id": experiment})
        r.raise_for_status()
        ids.append(d["info"]["trace_id"])

    async with httpx.AsyncClient(base_url=uri, timeout=60) as http:
        await asyncio.gather(*(one(http, corpus.data[i]) for i in range(n)))
    return sorted(ids)


def _results(ids: list[str], experiment: str) -> list[Assessment]:
    now = int(time.time() * 1000)
    return [
        Assessment(trace_id=t, experiment_id=experiment, scorer=NAME, name=NAME, scorer_version=1,
                   value=i % 3 != 0, rationale=f"bench rationale {i}", source=AssessmentSource("CODE", NAME),
                   created_ms=now, metadata={"bench": "1"})
        for i, t in enumerate(ids)
    ]


def _log_feedback_items(results: list[Assessment]) -> list[dict[str, Any]]:
    """The same results as `mlflow.log_feedback` arguments (source id as the sink writes it)."""
    return [{"trace_id": a.trace_id, "name": a.name, "value": a.value, "rationale": a.rationale,
             "source_id": f"{a.scorer}@v{a.scorer_version}", "metadata": dict(a.metadata or {})} for a in results]


def _written(port: int) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "tracewatch_mlflow_sink_written_total")


async def _sink_rate(ns: Namespace, uri: str, results: list[Assessment], max_in_flight: int, log: Path,
                     timeout: float) -> dict[str, Any]:
    await ns.create(partitions=4)
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=ns.settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        sends = [await producer.send(ns.settings.topics.assessments, a.to_json(), key=a.trace_id.encode())
                 for a in results]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    port = free_port()
    env = ns.env(MLFLOW_TRACKING_URI=uri, TRACEWATCH_MLFLOW_SINK_GROUP=f"{ns.settings.consumer_group}-mlflow",
                 TRACEWATCH_MLFLOW_SINK_METRICS_PORT=str(port),
                 TRACEWATCH_MLFLOW_SINK_MAX_IN_FLIGHT=str(max_in_flight))
    n = len(results)
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream", "sink", "mlflow"], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=out)
    try:
        first: tuple[float, float] | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the sink exited {proc.returncode}: {log.read_text()[-1500:]}")
            w = _written(port)
            now = time.perf_counter()
            if w and first is None:
                first = (now, w)
            if w is not None and w >= n and first is not None:
                dt = now - first[0]
                return {"rate": (n - first[1]) / dt if dt > 0 else None, "results": n, "seconds": dt,
                        "max_in_flight": max_in_flight}
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the sink wrote {_written(port)} of {n} within {timeout:.0f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def measure(n: int, *, max_in_flight: int = 32, log_dir: Path | None = None,
                  say: Any = print) -> dict[str, Any]:
    """Both rates and their ratio for n results (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="tw-bench-mlflow-") as tmp:
        root = Path(tmp)
        server = _server(root)
        say(f"starting mlflow server on {server.uri} ...")
        server.start()
        ns = Namespace("mlflowsink")
        try:
            experiment = server.client("experiment", "tracewatch-bench-sink").strip()
            corpus = build_corpus(n, seed=7)
            say(f"uploading {n} traces to MLflow ...")
            ids = await _upload_traces(server.uri, experiment, corpus, n)
            results = _results(ids, experiment)
            say(f"mlflow.log_feedback loop: {n} assessments ...")
            answer = server.client("log_feedback", stdin=_log_feedback_items(results))
            loop = json.loads(answer.strip().splitlines()[-1])
            mlflow_rate = loop["n"] / loop["seconds"]
            say(f"  {mlflow_rate:,.0f} assessments/s")
            say(f"tracewatch sink mlflow: {n} assessments ...")
            sink = await _sink_rate(ns, server.uri, results, max_in_flight, (log_dir or root) / "mlflow-sink.log",
                                    timeout=max(120.0, n / 5))
            say(f"  {sink['rate']:,.0f} assessments/s")
            seen = server.search(experiment)
            per_trace = [sum(1 for a in v if a["assessment_name"] == NAME) for v in seen.values()]
        finally:
            server.stop()
            await ns.cleanup()
    return {
        "results": n,
        "rate": sink["rate"],
        "mlflow_rate": mlflow_rate,
        "ratio": sink["rate"] / mlflow_rate if sink["rate"] and mlflow_rate else None,
        "sink_seconds": sink["seconds"],
        "mlflow_seconds": loop["seconds"],
        "max_in_flight": max_in_flight,
        "assessments_per_trace": sorted(set(per_trace)),  # [2]: one from each writer, none lost or doubled
    }


def run(ctx: Any) -> dict[str, Any]:
    """The `mlflow_sink` scenario of `python -m bench` (300 results with --quick, else 5,000)."""
    from tests.mlflow_venv import mlflow_python

    if mlflow_python(build=False) is None:
        return {"status": "unavailable", "reason": "no MLflow venv (python3 tests/mlflow_venv.py builds it)"}
    n = 300 if ctx.quick else 5_000
    return asyncio.run(measure(n, log_dir=ctx.out_dir / "logs", say=ctx.console.print))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mlflow_sink", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=int, default=300, help="assessments each writer writes (default 300)")
    ap.add_argument("--max-in-flight", type=int, default=32, help="the sink's concurrency cap (default 32)")
    args = ap.parse_args(argv)
    r = asyncio.run(measure(args.results, max_in_flight=args.max_in_flight))
    print(json.dumps(r, indent=2))
    print(f"\ntracewatch sink mlflow: {r['rate']:,.0f} assessments/s; mlflow.log_feedback loop: "
          f"{r['mlflow_rate']:,.0f} assessments/s; ratio {r['ratio']:.1f}x ({r['results']} results, "
          f"max_in_flight {r['max_in_flight']})")
    return 0 if r["assessments_per_trace"] == [2] else 1


if __name__ == "__main__":
    sys.exit(main())
