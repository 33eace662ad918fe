"""Scenario 4, peers: the same three scorers in `mlflow.genai.evaluate` and in a faust agent.

(a) mlflow: the project's MLflow venv (`tests/mlflow_venv.py`: MLflow pinned, built on first
use under the cache folder, shared with the tests) runs `bench/mlflow_run.py` on a sample of the corpus (200 traces,
throughput extrapolated), tracking into a throw-away SQLite store. If the venv cannot be
built, the row says "unavailable" and why.

(b) faust: `python -m bench.faust_app worker` (faust-streaming) on its own copy of the
topic, consume-decode-sample-score-write-to-Redis, drained and timed exactly like the
tracewatch worker: prefilled topic, time from the first result to the last pair counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench._context import Context
from bench._infra import (
    CODE_SCORERS,
    REPO,
    CpuMeter,
    Namespace,
    proc_status_kb,
    wait_for_pairs,
    wait_redis_quiet,
)

__all__ = ["run"]

def ensure_mlflow_venv(ctx: Context) -> tuple[Path | None, str]:
    """The MLflow venv's python and MLflow's version, or (None, why).

    The one MLflow venv of the project (`tests/mlflow_venv.py`, pinned, shared with the parity
    and integration tests), built on first use.
    """
    from tests.mlflow_venv import MLFLOW_VERSION, VENV, mlflow_python

    with ctx.task(f"peers: MLflow venv {VENV} (built on first use)", None):
        try:
            py = mlflow_python()
        except subprocess.CalledProcessError as exc:
            return None, f"building the MLflow venv failed: {exc}"
    if py is None:
        return None, "mlflow does not import in the MLflow venv (python3 tests/mlflow_venv.py)"
    return py, MLFLOW_VERSION


def run_mlflow(ctx: Context, sample: int) -> dict[str, Any]:
    py, version = ensure_mlflow_venv(ctx)
    if py is None:
        return {"status": "unavailable", "reason": version}
    data = ctx.corpus.data[:sample]
    with ctx.task(f"peers: mlflow.genai.evaluate on {len(data)} traces", None) as update, \
            tempfile.TemporaryDirectory(prefix="tw-bench-mlflow-") as tmp:
        path = Path(tmp) / "traces.jsonl"
        path.write_bytes(b"\n".join(data) + b"\n")
        update(note=f"mlflow {version}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHONPATH"))}
        t0 = time.perf_counter()
        done = subprocess.run([str(py), str(REPO / "bench" / "mlflow_run.py"), str(path), tmp],
                              capture_output=True, text=True, env=env, cwd=tmp, timeout=1800)
        wall = time.perf_counter() - t0
        (ctx.log_dir / "mlflow.log").write_text(done.stdout[-20000:] + "\n--- stderr ---\n" + done.stderr[-20000:])
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode != 0 or not lines:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            return {"status": "unavailable", "reason": f"mlflow run failed ({done.returncode}): {reason}"}
        res = json.loads(lines[-1])
        update(note=f"{res['traces_per_s']:.1f} traces/s (mlflow {version})")
    return {
        "rate": res["traces_per_s"],
        "traces": res["traces"],
        "evaluate_s": res["seconds"],
        "process_wall_s": wall,
        "peak_rss_mb": res["peak_rss_mb"],
        "mlflow_version": res["mlflow_version"],
        "means": res.get("metrics", {}),
    }


async def run_faust(ctx: Context, n: int) -> dict[str, Any]:
    corpus = ctx.corpus
    ns = Namespace("faust")
    topic = f"{ns.settings.topic_prefix}traces"
    prefix = ns.settings.redis_prefix
    await ns.create(partitions=4)
    out: dict[str, Any] = {"traces": n, "partitions": 4}
    datadir = tempfile.mkdtemp(prefix="tw-bench-faust-")
    client = aioredis.Redis.from_url(ns.settings.redis_url)
    proc: subprocess.Popen[bytes] | None = None
    try:
        with ctx.task("peers: faust topic prefill", n) as update:
            await ns.prefill([(corpus.ids[i], corpus.data[i]) for i in range(n)], topic=topic,
                             on_progress=lambda k: update(advance=k))
        env = ns.env(
            BENCH_FAUST_BROKER=ns.settings.kafka_bootstrap,
            BENCH_FAUST_TOPIC=topic,
            BENCH_FAUST_PREFIX=prefix,
            BENCH_FAUST_REDIS_URL=ns.settings.redis_url,
            BENCH_FAUST_APP_ID=f"{ns.settings.topic_prefix}app",
            BENCH_FAUST_DATADIR=datadir,
        )
        out["waited_for_redis_s"] = round(await wait_redis_quiet(ns.settings.redis_url), 1)
        log = open(ctx.log_dir / "faust.log", "wb")  # noqa: SIM115
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "bench.faust_app", "worker", "-l", "warn"],
                                env=env, cwd=REPO, stdout=log, stderr=log)
        want = n * len(CODE_SCORERS)

        meter: CpuMeter | None = None

        async def count() -> int:
            nonlocal meter
            total = 0
            for name in CODE_SCORERS:
                c = await client.hgetall(f"{prefix}cov:{name}")
                total += sum(int(v) for v in c.values())
            if total and meter is None and proc is not None:
                meter = ctx.meter(faust=proc.pid)
            return total

        with ctx.task("peers: faust agent draining", want) as update:
            timing = await wait_for_pairs(count, want, timeout=900, started=started,
                                          on_progress=lambda k: update(completed=k),
                                          alive=lambda: proc is not None and proc.poll() is None)
            rate = timing.steady_rate(want) / len(CODE_SCORERS)
            update(note=f"{rate:,.0f} traces/s")
        out["rate"] = rate
        if meter is not None:
            out["cpu"] = meter.stop()
            out["faust_cores"] = out["cpu"]["faust_cores"]
            out["cpu_us_per_trace"] = out["faust_cores"] / rate * 1e6 if rate else None
        out["wall_rate"] = timing.wall_rate(n)
        out["startup_s"] = (timing.first_seen or started) - started
        out["peak_rss_mb"] = (proc_status_kb(proc.pid, "VmHWM") or 0) / 1024
        out["faust_version"] = _faust_version()
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        await client.aclose()
        shutil.rmtree(datadir, ignore_errors=True)
        out["cleanup"] = await ns.cleanup()  # faust's own topics start with its app id: same prefix
    return out


def _faust_version() -> str:
    from importlib.metadata import version

    return version("faust-streaming")


async def _run_faust(ctx: Context) -> dict[str, Any]:
    n = len(ctx.corpus) if not ctx.quick else min(len(ctx.corpus), 20_000)
    return await run_faust(ctx, n)


def run(ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        out["mlflow"] = run_mlflow(ctx, 200)
    except Exception as exc:  # a peer failing must not cost the rest of the run
        out["mlflow"] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    try:
        out["faust"] = asyncio.run(_run_faust(ctx))
    except Exception as exc:
        out["faust"] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    return out
