"""Scenario 7, feedback endpoint: `POST /v1/feedback` under `wrk` on loopback.

Starts `python -m stream api` (one process) in a private namespace with one API key and the
per-key rate limit off (`TRACEWATCH_API_KEY_RATE_LIMIT=0`: the figure is the endpoint's
capacity, not the configured limit), checks one request gets 202, then runs `wrk` (one
thread, 32 connections) with `bench/feedback.lua`: fresh trace id and user per request.
Every 202 means Kafka acknowledged the event. If the API is not importable yet the row says
"pending"; if `wrk` is missing the bench tries `apt-get install -y wrk` once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from typing import Any

import httpx

from bench._context import Context
from bench._infra import REPO, Namespace, free_port

__all__ = ["run"]

API_KEY = "bench-key"
CONNECTIONS = 32


def _api_available() -> str | None:
    """None when `python -m stream api` can run, else why not."""
    for module in ("stream.api._app", "stream.cli._api"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} does not exist yet"
        except ImportError as exc:
            return f"{module}: {exc}"
    check = subprocess.run([sys.executable, "-m", "stream", "api", "--help"], cwd=REPO,
                           capture_output=True, text=True)
    if check.returncode != 0:
        return f"`python -m stream api --help` failed: {(check.stderr or check.stdout).strip()[-300:]}"
    return None


def _ensure_wrk(ctx: Context) -> str | None:
    path = shutil.which("wrk")
    if path:
        return path
    with ctx.task("feedback: apt-get install wrk", None):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, text=True)
    return shutil.which("wrk")


async def _run(ctx: Context) -> dict[str, Any]:
    why = _api_available()
    if why is not None:
        return {"status": "pending", "reason": why}
    wrk = _ensure_wrk(ctx)
    if wrk is None:
        return {"status": "unavailable", "reason": "wrk is not installed and `apt-get install wrk` failed"}
    seconds = 10 if ctx.quick else 20
    ns = Namespace("feedback")
    await ns.create(partitions=4)
    port = free_port()
    env = ns.env(TRACEWATCH_API_KEYS=API_KEY, TRACEWATCH_API_KEY_RATE_LIMIT="0", BENCH_API_KEY=API_KEY)
    log = open(ctx.log_dir / "api.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "stream", "api", "--port", str(port), "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"connections": CONNECTIONS, "seconds": seconds}
    try:
        with ctx.task("feedback: API start", None) as update:
            async with httpx.AsyncClient(timeout=10) as client:
                deadline = time.perf_counter() + 60
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"`stream api` exited with {proc.returncode} (see logs/api.log)")
                    try:
                        if (await client.get(f"{base}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.perf_counter() > deadline:
                        raise TimeoutError("the API did not answer /healthz within 60 s")
                    await asyncio.sleep(0.2)
                probe = await client.post(
                    f"{base}/v1/feedback",
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    json={"trace_id": "tr-" + "ab" * 16, "name": "user_satisfaction", "value": True,
                          "source": {"type": "HUMAN", "id": "bench"}},
                )
                if probe.status_code != 202:
                    raise RuntimeError(f"probe POST /v1/feedback got {probe.status_code}: {probe.text[:300]}")
            update(note="probe 202")
        with ctx.task(f"feedback: wrk -c{CONNECTIONS} for {seconds}s", seconds) as update:
            meter = ctx.meter(api=proc.pid)
            wrk_proc = await asyncio.create_subprocess_exec(
                wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s",
                str(REPO / "bench" / "feedback.lua"), f"{base}/v1/feedback",
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            t0 = time.perf_counter()
            communicate = asyncio.ensure_future(wrk_proc.communicate())
            while not communicate.done():
                update(completed=min(seconds, time.perf_counter() - t0))
                await asyncio.wait({communicate}, timeout=0.5)
            stdout, stderr = communicate.result()
            out.update(meter.stop())
            text = stdout.decode()
            (ctx.log_dir / "wrk.txt").write_text(text + stderr.decode())
            line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_JSON ")), None)
            if line is None:
                raise RuntimeError(f"wrk printed no summary: {text[-500:]} {stderr.decode()[-500:]}")
            res = json.loads(line.removeprefix("BENCH_JSON "))
            duration = res["duration_us"] / 1e6
            out.update(
                rate=(res["requests"] - res["non2xx"]) / duration,
                requests=res["requests"],
                non_2xx=res["non2xx"],
                socket_errors=res["connect_errors"] + res["read_errors"] + res["write_errors"] + res["timeouts"],
                p50_ms=res["p50_us"] / 1000,
                p90_ms=res["p90_us"] / 1000,
                p99_ms=res["p99_us"] / 1000,
                max_ms=res["max_us"] / 1000,
            )
            update(note=f"{out['rate']:,.0f} req/s, p99 {out['p99_ms']:.1f} ms")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        out["cleanup"] = await ns.cleanup()
    return out


def run(ctx: Context) -> dict[str, Any]:
    return asyncio.run(_run(ctx))
