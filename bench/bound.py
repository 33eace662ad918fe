"""Scenario 1, bound: decode + the three code scorers in a plain loop, no IO at all.

The ceiling for everything else: a worker can only approach it. Measured twice: with the
interpreter's default GC, and with the worker's GC tuning (`run_worker` freezes long-lived
objects and raises the gen-0 threshold), which is the bound the worker is compared with.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from bench._context import Context
from scorers import decode_trace, has_retriever_span, latency_under, output_word_count

__all__ = ["run"]


def _loop(data: list[bytes], tick: Any) -> float:
    scorers = (output_word_count(), has_retriever_span(), latency_under())
    decode = decode_trace
    t0 = time.perf_counter()
    for k, raw in enumerate(data):
        trace = decode(raw)
        for s in scorers:
            s.run(trace)
        if k % 5000 == 4999:
            tick(5000)
    return time.perf_counter() - t0


def run(ctx: Context) -> dict[str, Any]:
    data = ctx.corpus.data
    n = len(data)
    out: dict[str, Any] = {"traces": n}
    with ctx.task("bound: decode + 3 scorers", 2 * n) as update:
        def tick(k: int) -> None:
            update(advance=k)

        _loop(data[: min(n, 2000)], lambda k: None)  # warm up caches and imports
        dt_default = _loop(data, tick)
        thresholds = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        try:
            dt_tuned = _loop(data, tick)
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
        out["rate_default_gc"] = n / dt_default
        out["rate"] = n / dt_tuned
        out["us_per_trace"] = dt_tuned / n * 1e6
        update(note=f"{out['rate']:,.0f}/s (default GC {out['rate_default_gc']:,.0f}/s)")
    return out
