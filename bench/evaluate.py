"""Scenario 2, evaluate: the offline path, `scorers.evaluate`, on the whole corpus.

In-process first (what a notebook gets), then the CLI, `python -m stream evaluate FILE`,
on the same traces as a JSONL file: its wall time includes interpreter start-up, imports,
reading the file and the summary table; a one-trace run isolates the fixed cost.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._context import Context
from bench._infra import CODE_SCORERS, REPO
from scorers import evaluate, has_retriever_span, latency_under, output_word_count

__all__ = ["run"]


def _cli(path: Path) -> float:
    args = [sys.executable, "-m", "stream", "evaluate", str(path)]
    for name in CODE_SCORERS:
        args += ["--scorer", name]
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"`tracewatch evaluate` failed ({done.returncode}): {done.stderr[-2000:]}")
    return dt


def run(ctx: Context) -> dict[str, Any]:
    data = ctx.corpus.data
    n = len(data)
    out: dict[str, Any] = {"traces": n}
    with ctx.task("evaluate: in-process", n) as update:
        def progress(done: int) -> None:
            if done % 2000 == 0 or done == n:
                update(completed=done)

        result = evaluate(list(data), [output_word_count(), has_retriever_span(), latency_under()],
                          on_progress=progress)
        if result.records != n or result.invalid:
            raise RuntimeError(f"evaluate saw {result.records} records, {len(result.invalid)} invalid")
        out["rate"] = result.traces_per_s
        out["pairs"] = len(result.assessments)
        out["summary"] = {
            f"{s.scorer}": {"scored": s.scored, "skipped": s.skipped, "errors": s.errors,
                            "pass_rate": s.pass_rate, "mean": s.mean}
            for s in result.summary()
        }
        update(note=f"{out['rate']:,.0f}/s")
    with ctx.task("evaluate: CLI (tracewatch evaluate)", 2) as update, \
            tempfile.TemporaryDirectory(prefix="tw-bench-") as tmp:
        corpus_file = Path(tmp) / "traces.jsonl"
        corpus_file.write_bytes(b"\n".join(data) + b"\n")
        one = Path(tmp) / "one.jsonl"
        one.write_bytes(data[0] + b"\n")
        startup = _cli(one)
        update(advance=1)
        wall = _cli(corpus_file)
        update(advance=1)
        out["cli_wall_s"] = wall
        out["cli_startup_s"] = startup
        out["cli_rate"] = n / wall
        out["cli_rate_excl_startup"] = n / max(wall - startup, 1e-9)
        update(note=f"{out['cli_rate']:,.0f}/s incl. {startup:.1f}s start-up")
    return out
