"""Scenario 3, worker: one `tracewatch worker` process on the real Kafka and Redis.

Drain: the corpus is prefilled into a fresh 4-partition topic, then the worker starts; the
rate counts from the first result seen in Redis coverage to the last pair (start-up and
group join are reported apart). Metrics are on (`--metrics-port`), as in production.

End-to-end latency: a fresh worker, then a paced producer publishes at a steady half of the
measured drain rate, in 5 ms ticks (acks=all, idempotent, lz4: the publisher's settings,
without its per-trace validation, so the load generator takes as little of the two cores
as possible). Each trace is stamped to end at its publish moment. For a sample of traces
the bench polls Redis (one pipelined HMGET every 10 ms, less often once results lag by
more than 200 ms) until all three results of the trace are readable, and takes
`found - published`: the latency a dashboard or API reader sees, including Kafka, batching,
the Redis write and the poll resolution (at most +10 ms, so the figures are upper bounds).
The worker's own `tracewatch_end_to_end_seconds` histogram (trace end to Redis written) is
reported next to it as a cross-check. A second, shorter run at a tenth of the drain rate
shows the latency floor when the machine is not busy.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import redis.asyncio as aioredis

from bench._context import Context
from bench._infra import (
    CODE_SCORERS,
    CpuMeter,
    Namespace,
    WorkerProc,
    coverage_totals,
    histogram_delta,
    histogram_quantiles,
    metric_samples,
    redis_command_usec,
    redis_persistence,
    wait_for_pairs,
    wait_redis_quiet,
)
from bench._kafka import produce_paced

__all__ = ["drain", "run"]


async def drain(
    ctx: Context, label: str, *, processes: int = 1, traces: int | None = None
) -> dict[str, Any]:
    """Prefill `traces` corpus traces, start `processes` workers, time until all pairs land."""
    corpus = ctx.corpus
    n = traces or len(corpus)
    items = [(corpus.ids[i], corpus.data[i]) for i in range(n)]
    ns = Namespace(label)
    await ns.create(partitions=4)
    out: dict[str, Any] = {"traces": n, "processes": processes, "partitions": 4}
    try:
        with ctx.task(f"{label}: prefill topic", n) as update:
            t0 = time.perf_counter()
            await ns.prefill(items, on_progress=lambda k: update(advance=k))
            out["prefill_rate"] = n / (time.perf_counter() - t0)
            update(note=f"{out['prefill_rate']:,.0f}/s")
        sink = ns.sink()
        want = n * len(CODE_SCORERS)
        out["waited_for_redis_s"] = round(await wait_redis_quiet(ns.settings.redis_url), 1)
        forks0 = await redis_persistence(ns.settings.redis_url)
        worker = WorkerProc(ns, processes=processes, log_path=ctx.log_dir / f"{label}.log")
        started = time.perf_counter()
        peak = 0.0
        meter: CpuMeter | None = None
        redis0: dict[str, float] = {}
        try:
            with ctx.task(f"{label}: {processes} worker(s) draining", want) as update:
                async def count() -> int:
                    nonlocal peak, meter
                    peak = max(peak, worker.rss_mb())
                    done = sum((await coverage_totals(sink, corpus.experiments, CODE_SCORERS)).values())
                    if done and meter is None:  # steady state starts: CPU accounting too
                        meter = ctx.meter(**{f"worker{i}": p for i, p in enumerate(worker.pids())})
                        redis0.update(await redis_command_usec(ns.settings.redis_url))
                    return done

                timing = await wait_for_pairs(count, want, timeout=600, started=started,
                                              on_progress=lambda k: update(completed=k), alive=worker.alive)
                rate = timing.steady_rate(n * len(CODE_SCORERS)) / len(CODE_SCORERS)
                update(note=f"{rate:,.0f} traces/s")
            out["rate"] = rate
            out["wall_rate"] = timing.wall_rate(n)
            out["startup_s"] = (timing.first_seen or started) - started
            out["drain_s"] = (timing.done or 0) - (timing.first_seen or 0)
            if meter is not None:
                cpu = meter.stop()
                out["cpu"] = cpu
                workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
                out["worker_cores"] = workers
                out["cpu_us_per_trace"] = workers / rate * 1e6 if rate else None
                # Redis main-thread time in commands over the same window (other clients included).
                redis1 = await redis_command_usec(ns.settings.redis_url)
                drained = n - timing.first_count / len(CODE_SCORERS)
                window = max((timing.done or 0) - (timing.first_seen or 0), 1e-9)
                out["redis_busy"] = (redis1["all"] - redis0["all"]) / 1e6 / window
                out["redis_script_us_per_trace"] = (redis1["evalsha"] - redis0["evalsha"]) / max(drained, 1)
            out["redis_forks"] = (await redis_persistence(ns.settings.redis_url))["forks"] - forks0["forks"]
            out["peak_rss_mb"] = max(worker.peak_rss_mb(), peak)
            if processes == 1:
                m = metric_samples(await worker.metrics())
                received = sum(v for (name, _), v in m.items() if name == "tracewatch_traces_received_total")
                out["metrics_traces_received"] = received
        finally:
            worker.stop()
            await sink.aclose()
    finally:
        out["cleanup"] = await ns.cleanup()
    return out


async def _e2e(ctx: Context, rate: float, seconds: float) -> dict[str, Any]:
    corpus = ctx.corpus
    ns = Namespace(f"e2e{int(rate)}")
    await ns.create(partitions=4)
    out: dict[str, Any] = {"target_rate": rate, "seconds": seconds}
    sink = ns.sink()
    keys = ns.keys()
    client = aioredis.Redis.from_url(ns.settings.redis_url)
    fields = [f"a:{name}" for name in CODE_SCORERS]
    worker = WorkerProc(ns, log_path=ctx.log_dir / "e2e.log")
    m = len(corpus)
    total = int(rate * seconds)
    warm_n = 300
    stream = list(corpus.cycle(warm_n + total, seed=7))

    def make(k: int) -> tuple[str, bytes]:
        # Stamped at the send moment: the trace "ends" when it is published.
        tid = stream[k][0]
        i = k % m
        return tid, corpus.with_end_at(i, int(time.time() * 1000)).replace(corpus.ids[i].encode(), tid.encode())

    async def covered() -> int:
        return min((await coverage_totals(sink, corpus.experiments, CODE_SCORERS)).values())

    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []  # (publish time, latency): shows stalls vs steady growth
    try:
        # Warm up: the worker joins its group and scores a few hundred traces first.
        with ctx.task("e2e: worker start + warm-up", warm_n) as update:
            await produce_paced(ns.settings.kafka_bootstrap, ns.topic, make, total=warm_n, rate=1000, partitions=4)
            await wait_for_pairs(covered, warm_n, timeout=120, on_progress=lambda k: update(completed=k),
                                 alive=worker.alive)
        before = await worker.metrics()
        # Start on a quiet Redis: the previous scenario's clean-up may have triggered an AOF rewrite.
        out["waited_for_redis_s"] = round(await wait_redis_quiet(ns.settings.redis_url), 1)
        forks0 = await redis_persistence(ns.settings.redis_url)
        every = max(1, int(rate / 100))  # ~100 sampled traces per second
        published: dict[str, float] = {}
        polls = 0
        publishing = True

        def on_sent(k: int, tid: str, t: float) -> None:
            if k % every == 0:
                published[tid] = t
            if k % 500 == 0:
                update(completed=k - warm_n)

        async def poller() -> None:
            # Poll every 10 ms while results come quickly; when they lag, every 5% of the oldest
            # one's age (at most 100 ms), so a slow worker is not also buried in polls.
            nonlocal polls
            while publishing or published:
                interval = 0.01
                if published:
                    batch = list(published.items())
                    pipe = client.pipeline(transaction=False)
                    for tid, _ in batch:
                        pipe.hmget(keys.trace(tid), fields)
                    rows = await pipe.execute()
                    now = time.perf_counter()
                    polls += 1
                    for (tid, t_pub), row in zip(batch, rows, strict=True):
                        if all(v is not None for v in row):
                            latencies.append(now - t_pub)
                            timeline.append((t_pub, now - t_pub))
                            del published[tid]
                    if published:
                        oldest = now - min(published.values())
                        interval = min(0.1, max(0.01, oldest / 20))
                await asyncio.sleep(interval)

        poll_task = asyncio.create_task(poller())
        meter = ctx.meter(worker=worker.pid)
        with ctx.task(f"e2e: publishing at {rate:,.0f}/s", total) as update:
            offered = await produce_paced(
                ns.settings.kafka_bootstrap, ns.topic, lambda k: make(k + warm_n), total=total, rate=rate,
                partitions=4, on_sent=lambda k, tid, t: on_sent(k + warm_n, tid, t),
            )
            out["offered_rate"] = offered
            update(completed=total, note=f"offered {offered:,.0f}/s")
        out.update(meter.stop())
        forks1 = await redis_persistence(ns.settings.redis_url)
        out["redis_forks"] = forks1["forks"] - forks0["forks"]  # AOF rewrites/saves during the run
        out["redis_fork_ms"] = forks1["latest_fork_usec"] / 1000
        publishing = False
        with ctx.task("e2e: waiting for the last results", total) as update:
            async def count() -> int:
                return await covered() - warm_n

            await wait_for_pairs(count, total, timeout=300, on_progress=lambda k: update(completed=k),
                                 alive=worker.alive)
            await asyncio.wait_for(poll_task, 60)
        after = await worker.metrics()
        out["polls"] = polls
    finally:
        worker.stop()
        await client.aclose()
        await sink.aclose()
        out["cleanup"] = await ns.cleanup()
    latencies.sort()
    if len(latencies) >= 100:
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        out.update(samples=len(latencies), p50_ms=q[49] * 1000, p95_ms=q[94] * 1000, p99_ms=q[98] * 1000,
                   max_ms=latencies[-1] * 1000)
    if timeline:
        # Worst latency per second of publishing: a stall shows as a spike, overload as a ramp.
        t0 = min(t for t, _ in timeline)
        worst: dict[int, float] = {}
        for t, lat in timeline:
            k = int(t - t0)
            worst[k] = max(worst.get(k, 0.0), lat * 1000)
        out["worst_ms_per_second"] = [round(worst[k]) for k in sorted(worst)]
    hist = histogram_quantiles(histogram_delta(before, after, "tracewatch_end_to_end_seconds"),
                               "tracewatch_end_to_end_seconds", (0.5, 0.95, 0.99))
    if hist:
        out["histogram_ms"] = {f"p{round(q * 100)}": v * 1000 for q, v in hist.items()}
    return out


async def run(ctx: Context) -> dict[str, Any]:
    out = await drain(ctx, "drain")
    ctx.results["worker"] = dict(out)  # the e2e load depends on the drain rate
    rate = max(out["rate"] / 2, 100.0)
    out["e2e"] = await _e2e(ctx, rate, ctx.e2e_seconds)
    # The floor: the same at a tenth of the drain rate, where the machine is far from busy.
    out["e2e_low"] = await _e2e(ctx, max(out["rate"] / 10, 50.0), ctx.e2e_seconds / 2)
    return out
