"""`python -m bench`: run the benchmark scenarios and write a JSON result and a Markdown table.

    python -m bench [--quick] [--only NAME ...] [--traces N] [--long-traces N] [--out bench/results]

Scenarios (in run order): bound, evaluate, worker, peers, judges, scale, feedback, mlflow_sink, otlp.
`--quick` shrinks every size so the whole run takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import bound, evaluate, feedback, judges, mlflow_sink, otlp, peers, scale, worker
from bench._context import Context, make_progress
from bench._corpus import build_corpus
from bench._infra import REPO, ensure_stack, release_stack
from bench._report import render_markdown

SCENARIOS: dict[str, Callable[[Context], Any]] = {
    "bound": bound.run,
    "evaluate": evaluate.run,
    "worker": worker.run,
    "peers": peers.run,
    "judges": judges.run,
    "scale": scale.run,
    "feedback": feedback.run,
    "mlflow_sink": mlflow_sink.run,
    "otlp": otlp.run,
}
NEEDS_STACK = {"worker", "peers", "judges", "scale", "feedback", "mlflow_sink", "otlp"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a few minutes in all")
    ap.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), metavar="NAME",
                    help=f"run only these scenarios ({', '.join(SCENARIOS)})")
    ap.add_argument("--traces", type=int, help="corpus size (default 100,000; --quick 20,000)")
    ap.add_argument("--long-traces", type=int,
                    help="traces fed in the RSS run of `scale` (default 1,000,000; --quick 100,000)")
    ap.add_argument("--e2e-seconds", type=float, help="paced publishing time of the latency run (20; quick 10)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where results go")
    ap.add_argument("--seed", type=int, default=42, help="corpus seed")
    ap.add_argument("--render", type=Path, metavar="RESULT.json",
                    help="only print the Markdown table of an earlier result (runs nothing)")
    return ap.parse_args(argv)


def render(path: Path) -> int:
    """Print the Markdown table of an earlier result; one line on stderr and 2 when it cannot."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        print(f"python -m bench: --render {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        print(f"python -m bench: --render {path}: not a JSON result ({exc})", file=sys.stderr)
        return 2
    try:
        table = render_markdown(doc)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        print(f"python -m bench: --render {path}: not a bench result ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render)
    quick = bool(args.quick)
    names = list(args.only or SCENARIOS)
    console = Console()
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    n = args.traces or (20_000 if quick else 100_000)
    long_n = args.long_traces or (100_000 if quick else 1_000_000)
    meta: dict[str, Any] = {
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "mode": "quick" if quick else "full",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {_cpus()} CPUs",
        "scorers": ["output_word_count@1.0", "has_retriever_span@1.0", "latency_under@1.0"],
        "code": _git_version(),
    }
    _quiet_libraries(out_dir / "logs" / "bench.log")
    progress = make_progress(console)
    stack: dict[str, Any] = {}
    try:
        with progress:
            progress.console.print(f"[bold]tracewatch bench[/] ({meta['mode']}): {', '.join(names)}")
            stack_pids: dict[str, int] = {}
            if NEEDS_STACK & set(names):
                stack = ensure_stack(progress.console.print)
                meta["stack"] = stack["stack"]
                stack_pids = stack["pids"]
            with progress.console.status("building corpus"):
                t0 = time.perf_counter()
                corpus = build_corpus(n, seed=args.seed)
            meta["corpus"] = {"traces": n, "build_s": round(time.perf_counter() - t0, 2), **corpus.sizes}
            progress.console.print(
                f"corpus: {n:,} traces, mean {corpus.sizes['mean_bytes'] / 1024:.1f} KB, "
                f"max {corpus.sizes['max_bytes'] / 1024:.1f} KB, {corpus.sizes['share_over_25kb']:.0%} over 25 KB"
            )
            ctx = Context(
                quick=quick,
                traces=n,
                long_traces=long_n,
                e2e_seconds=args.e2e_seconds or (10.0 if quick else 20.0),
                corpus=corpus,
                out_dir=out_dir,
                console=console,
                progress=progress,
                stack_pids=stack_pids,
            )
            for name in names:
                t0 = time.perf_counter()
                try:
                    fn = SCENARIOS[name]
                    result = asyncio.run(fn(ctx)) if inspect.iscoroutinefunction(fn) else fn(ctx)
                    result.setdefault("status", "ok")
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    progress.console.print(f"[red]{name} failed:[/] {type(exc).__name__}: {exc}")
                    result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                              "traceback": traceback.format_exc(limit=8)}
                result["elapsed_s"] = round(time.perf_counter() - t0, 1)
                ctx.results[name] = result
    finally:
        release_stack(stack, console.print)  # a stack the bench started is stopped; one already up stays up
    meta["runtime_s"] = round(time.perf_counter() - started, 1)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {"meta": meta, "results": ctx.results}
    table = render_markdown(doc)
    (out_dir / f"bench-{meta['mode']}-{stamp}.json").write_text(json.dumps(doc, indent=2, default=str))
    (out_dir / f"bench-{meta['mode']}-{stamp}.md").write_text(table)
    (out_dir / "latest.json").write_text(json.dumps(doc, indent=2, default=str))
    (out_dir / "latest.md").write_text(table)
    print()
    print(table, flush=True)
    console.print(f"\nwritten: {out_dir}/latest.md and latest.json (runtime {meta['runtime_s']:.0f} s)")
    failed = [k for k, v in ctx.results.items() if v.get("status") == "failed"]
    return 1 if failed else 0


def _git_version() -> str:
    """`<commit> (+ uncommitted changes)`: other engineers commit while benchmarks run."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "stream", "scorers",
                                "sinks"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} + uncommitted changes in stream/scorers/sinks" if dirty else head


def _quiet_libraries(path: Path) -> None:
    """Library warnings (aiokafka retrying a produce on a fresh topic, ...) go to a log file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
