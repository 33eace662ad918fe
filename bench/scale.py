"""Scenario 6, scale and memory.

Scale: `tracewatch worker --processes 2` (two processes, one consumer group) drains the same
prefilled 4-partition topic as the single worker of scenario 3; the ratio of the two drain
rates is the scaling on this machine (2 cores shared with Kafka, Redis and the bench).

Memory: one worker consumes `--long-traces` traces (default 1,000,000) fed while it runs
(the corpus cycled under fresh ids, so every trace is new to Redis). The bench samples the
worker's `VmRSS` every half second and reports it when 100k traces are done (10% of the
run when it is shorter, as with `--quick`) and at the end: growth = end / at-mark - 1.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench._context import Context
from bench._infra import CODE_SCORERS, Namespace, WorkerProc, coverage_totals, wait_for_pairs, wait_redis_quiet
from bench.worker import drain

__all__ = ["run"]


async def _rss_run(ctx: Context, n: int) -> dict[str, Any]:
    corpus = ctx.corpus
    ns = Namespace("rss")
    await ns.create(partitions=4)
    out: dict[str, Any] = {"traces": n}
    sink = ns.sink()
    await wait_redis_quiet(ns.settings.redis_url)
    worker = WorkerProc(ns, log_path=ctx.log_dir / "rss.log")
    samples: list[tuple[float, int, float]] = []  # (t, traces done, rss MB)
    feeder: asyncio.Task[int] | None = None
    try:
        t0 = time.perf_counter()
        with ctx.task("memory: feeding traces", n) as feed_update:
            feeder = asyncio.create_task(ns.prefill(corpus.cycle(n, seed=3), on_progress=lambda k: feed_update(
                advance=k)))
            with ctx.task("memory: worker scoring", n) as update:
                async def count() -> int:
                    done = min((await coverage_totals(sink, corpus.experiments, CODE_SCORERS)).values())
                    samples.append((time.perf_counter() - t0, done, worker.rss_mb()))
                    if len(samples) % 4 == 0:
                        update(note=f"RSS {samples[-1][2]:.0f} MB")
                    return done

                await wait_for_pairs(count, n, timeout=1800, interval=0.5,
                                     on_progress=lambda k: update(completed=k), alive=worker.alive)
                out["published"] = await feeder
        elapsed = time.perf_counter() - t0
        mark = min(100_000, n // 10)  # 100k in a full run; 10% of a shorter one
        at_mark = next((s for s in samples if s[1] >= mark), samples[-1])
        # Settle a moment, then read RSS after the last batch (the worker is idle, nothing freed yet).
        await asyncio.sleep(1.0)
        end_rss = worker.rss_mb()
        out.update(
            elapsed_s=elapsed,
            rate=n / elapsed,
            mark_traces=mark,
            rss_mb_at_mark=at_mark[2],
            rss_mb_end=end_rss,
            rss_mb_max=max(s[2] for s in samples),
            peak_rss_mb=worker.peak_rss_mb(),
            growth=end_rss / at_mark[2] - 1 if at_mark[2] else None,
            series=[(round(t, 1), d, round(r, 1)) for t, d, r in samples[:: max(1, len(samples) // 60)]],
        )
    finally:
        if feeder is not None and not feeder.done():
            feeder.cancel()
        worker.stop()
        await sink.aclose()
        with ctx.task("memory: cleaning up Redis keys and topics", None):
            out["cleanup"] = await ns.cleanup()
    return out


async def _run(ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    one = ctx.results.get("worker")
    if one is None or one.get("status") == "failed" or "rate" not in one:
        one = await drain(ctx, "scale1", processes=1)
    keys = ("rate", "traces", "peak_rss_mb", "cpu", "cpu_us_per_trace", "startup_s")
    out["one_worker"] = {k: one[k] for k in keys if k in one}
    two = await drain(ctx, "scale2", processes=2)
    out["two_workers"] = {k: two[k] for k in keys if k in two}
    out["ratio"] = two["rate"] / one["rate"] if one.get("rate") else None
    out["memory"] = await _rss_run(ctx, ctx.long_traces)
    return out


def run(ctx: Context) -> dict[str, Any]:
    return asyncio.run(_run(ctx))
