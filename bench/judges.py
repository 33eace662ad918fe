"""Scenario 5, judges: `Safety` on every trace against a judge that answers after 200 ms.

The fake OpenAI-compatible `JudgeServer` runs on loopback; one worker process scores a
prefilled topic with `Safety@1.0` and `TRACEWATCH_JUDGE_MAX_IN_FLIGHT` = 32, so the most it
can do is 32 / 0.2 s = 160 judge calls/s. Achieved calls/s is read from the server's own
counters over the steady middle of the run (10%..90% of the calls), and the worker's peak
RSS (`VmHWM`) shows whether memory stays bounded while a backlog waits in Kafka.

Then a 429 storm: a fresh topic and worker, the server answering 30% of calls with 429 and
`Retry-After: 1`. Every sampled pair must still end in a final state (no loss); the 429s
show in the server's counts and in `tracewatch_judge_requests_total{status="429"}`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench._context import Context
from bench._infra import Namespace, WorkerProc, coverage_states, metric_samples, wait_for_pairs
from stream.cli.judge_server import JudgeServer

__all__ = ["run"]

LATENCY = 0.2
IN_FLIGHT = 32
REFS = ("Safety@1.0",)


async def _phase(ctx: Context, server: JudgeServer, label: str, n: int) -> dict[str, Any]:
    corpus = ctx.corpus
    ns = Namespace(label)
    await ns.create(partitions=4)
    out: dict[str, Any] = {"traces": n}
    sink = ns.sink()
    worker: WorkerProc | None = None
    try:
        with ctx.task(f"{label}: prefill", n) as update:
            await ns.prefill([(corpus.ids[i], corpus.data[i]) for i in range(n)],
                             on_progress=lambda k: update(advance=k))
        server.reset()
        env = {
            "TRACEWATCH_JUDGE_BASE_URL": server.base_url,
            "TRACEWATCH_JUDGE_API_KEY": "bench",
            "TRACEWATCH_JUDGE_MAX_IN_FLIGHT": str(IN_FLIGHT),
        }
        worker = WorkerProc(ns, REFS, log_path=ctx.log_dir / f"{label}.log", extra_env=env)
        series: list[tuple[float, int]] = []
        rss: list[float] = []  # sampled once judge calls have started

        async def count() -> int:
            series.append((time.perf_counter(), int(server.stats()["requests"])))
            if worker is not None and series[-1][1] > 0:
                rss.append(worker.rss_mb())
            c = await coverage_states(sink, corpus.experiments, "safety")
            return c.get("scored", 0) + c.get("error", 0) + c.get("skipped", 0)

        with ctx.task(f"{label}: Safety on every trace", n) as update:
            meter = ctx.meter(worker=worker.pid)
            t0 = time.perf_counter()
            await wait_for_pairs(count, n, timeout=900, on_progress=lambda k: update(completed=k),
                                 interval=0.25, alive=worker.alive)
            elapsed = time.perf_counter() - t0
            out.update(meter.stop())  # bench_cores: the judge server runs in the bench process
            stats = server.stats()
            ok = int(stats["by_status"].get("200", 0))
            out["calls_ok"] = ok
            out["rate"] = _steady_rate(series, int(stats["requests"]))
            out["bound"] = IN_FLIGHT / LATENCY
            out["share_of_bound"] = out["rate"] / out["bound"]
            update(note=f"{out['rate']:.0f} calls/s = {out['share_of_bound']:.0%} of {out['bound']:.0f}")
        out["elapsed_s"] = elapsed
        out["server"] = {"by_status": stats["by_status"], "max_in_flight": stats["max_in_flight"],
                         "requests": stats["requests"]}
        out["coverage"] = await coverage_states(sink, corpus.experiments, "safety")
        m = metric_samples(await worker.metrics())
        out["metrics_judge_requests"] = {
            dict(labels).get("status", "?"): v for (name, labels), v in m.items()
            if name == "tracewatch_judge_requests_total"
        }
        out["rss_mb_first_call"] = rss[0] if rss else None
        out["rss_mb_max_sampled"] = max(rss) if rss else None
        out["peak_rss_mb"] = worker.peak_rss_mb()
    finally:
        if worker is not None:
            worker.stop()
        await sink.aclose()
        out["cleanup"] = await ns.cleanup()
    return out


def _steady_rate(series: list[tuple[float, int]], total: int) -> float:
    """Calls/s between the samples where 10% and 90% of the calls had completed."""
    lo = next(((t, c) for t, c in series if c >= 0.1 * total), None)
    hi = next(((t, c) for t, c in series if c >= 0.9 * total), None)
    if lo is None or hi is None or hi[0] <= lo[0]:
        return 0.0
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


async def _run(ctx: Context) -> dict[str, Any]:
    n = 1500 if ctx.quick else 4000
    n_storm = 600 if ctx.quick else 1500
    out: dict[str, Any] = {"latency_s": LATENCY, "max_in_flight": IN_FLIGHT}
    with JudgeServer(latency=LATENCY) as server:
        out["steady"] = await _phase(ctx, server, "judges", n)
        server.configure(rate_429=0.3, retry_after=1.0)
        storm = await _phase(ctx, server, "judges429", n_storm)
    no_outputs = storm["coverage"].get("skipped", 0)
    storm["lost"] = n_storm - (storm["coverage"].get("scored", 0) + storm["coverage"].get("error", 0) + no_outputs)
    storm["http_429"] = int(storm["server"]["by_status"].get("429", 0))
    out["storm"] = storm
    out["rate"] = out["steady"]["rate"]
    out["share_of_bound"] = out["steady"]["share_of_bound"]
    return out


def run(ctx: Context) -> dict[str, Any]:
    return asyncio.run(_run(ctx))
