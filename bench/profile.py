"""Profile a draining worker with py-spy: where its CPU goes, by self time.

    python -m bench.profile [--traces 50000] [--scorer REF@RATE ...] [--judge-latency 0.2]

Prefills a private topic (the bench corpus), starts `python -m stream worker` with the three
code scorers (or the given ones; a judge scorer gets a fake judge server), attaches
`py-spy record --nonblocking` (so the worker is never paused) for the whole drain, then
prints and writes (`bench/results/profile-*.txt`) the top functions by self time and by
total time, plus the collapsed stacks for flame graphs. Needs `py-spy` (`pip install py-spy`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from rich.console import Console

from bench._context import Context, make_progress
from bench._corpus import build_corpus
from bench._infra import CODE_REFS, CODE_SCORERS, REPO, Namespace, WorkerProc, coverage_states, wait_for_pairs

__all__ = ["main", "top_functions"]


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`; keeps functions apart by module."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})"


# Where a sample's leaf frame lives -> the part of the worker it is spent in (first match wins).
_COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("decode (scorers/_decode, _trace)", ("scorers/_decode.py", "scorers/_trace.py")),
    ("scorer functions (scorers/_builtin, _scorer)", ("scorers/_builtin.py", "scorers/_scorer.py")),
    ("assessments: build + JSON (scorers/_assessment)", ("scorers/_assessment.py",)),
    ("Redis sink (sinks/_redis, _keys, redis-py)", ("sinks/_redis.py", "sinks/_keys.py", "redis/")),
    ("Prometheus (sinks/_prometheus, prometheus_client)", ("sinks/_prometheus.py", "prometheus_client/")),
    ("Kafka client (aiokafka: fetch, records, lz4, produce)", ("aiokafka/", "kafka/", "cramjam")),
    ("outbox (stream/worker/_outbox)", ("stream/worker/_outbox.py",)),
    ("worker loop, checkpoint, sampling (stream/)", ("stream/",)),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
    ("start-up (imports)", ("<frozen importlib", "dataclasses.py", "pydantic")),
    ("judge client (httpx, httpcore, scorers/_judge*)", ("httpx/", "httpcore/", "h11/", "anyio/", "scorers/_judge")),
)
_PLUMBING = ("<frozen", "typer/", "_click/", "asyncio/", "stream/__main__.py", "stream/cli/_app.py",
             "stream/worker/_runtime.py")


def _component(frame: str) -> str:
    for name, markers in _COMPONENTS:
        if any(m in frame for m in markers):
            return name
    return "other"


def top_functions(
    raw: str, n: int = 10
) -> tuple[list[tuple[str, float]], list[tuple[str, float]], list[tuple[str, float]], int, float]:
    """From py-spy's raw (collapsed) output recorded with `--idle`: as shares of the busy
    (non-idle) samples, the top-n functions by self time, self time by component of the leaf
    frame, and the top project functions by total time; then the busy sample count and the
    idle share of all samples (the event loop waiting in `select` for Kafka/Redis/HTTP)."""
    self_c: Counter[str] = Counter()
    comp_c: Counter[str] = Counter()
    total_c: Counter[str] = Counter()
    samples = idle = 0
    for line in raw.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        raw_frames = stack.split(";")
        if raw_frames[0].startswith("Thread._bootstrap (threading.py"):
            continue  # the /metrics server thread, idle nearly always: not the worker loop
        if ".select (selectors.py" in raw_frames[-1]:
            idle += count
            continue
        frames = [_frame_name(f) for f in raw_frames]
        samples += count
        self_c[frames[-1]] += count
        comp_c[_component(raw_frames[-1])] += count
        for f in set(frames):
            if f.split(" (")[-1].startswith(("scorers/", "sinks/", "stream/")) and not any(
                    p in f for p in _PLUMBING):
                total_c[f] += count
    s = max(samples, 1)
    return ([(f, c / s) for f, c in self_c.most_common(n)], [(f, c / s) for f, c in comp_c.most_common()],
            [(f, c / s) for f, c in total_c.most_common(n)], samples, idle / max(samples + idle, 1))


async def _profile(ctx: Context, refs: list[str], judge_latency: float, out: Path) -> str:
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    corpus = ctx.corpus
    n = len(corpus)
    ns = Namespace("profile")
    await ns.create(partitions=4)
    judge = None
    env: dict[str, str] = {}
    if any(r[:1].isupper() or "judge" in r for r in refs):
        from stream.cli.judge_server import JudgeServer

        judge = JudgeServer(latency=judge_latency)
        judge.start()
        env = {"TRACEWATCH_JUDGE_BASE_URL": judge.base_url, "TRACEWATCH_JUDGE_API_KEY": "bench"}
    names = [r.split("@")[0] for r in refs]
    scorer_names = list(CODE_SCORERS) if refs == list(CODE_REFS) else [n.split("(")[0].lower() for n in names]
    try:
        with ctx.task("profile: prefill", n) as update:
            await ns.prefill(list(zip(corpus.ids, corpus.data, strict=True)), on_progress=lambda k: update(advance=k))
        worker = WorkerProc(ns, refs, log_path=ctx.log_dir / "profile-worker.log", extra_env=env)
        raw_path = out.with_suffix(".raw")
        sink = ns.sink()
        spy: subprocess.Popen[bytes] | None = None
        try:
            async def count() -> int:
                total = 0
                for name in scorer_names:
                    c = await coverage_states(sink, corpus.experiments, name)
                    total += c.get("scored", 0) + c.get("error", 0) + c.get("skipped", 0)
                return total

            want = n * len(scorer_names)
            # Attach once results flow, so start-up (imports, group join) stays out of the profile.
            await wait_for_pairs(count, 1, timeout=120, interval=0.05, alive=worker.alive)
            spy = subprocess.Popen([pyspy, "record", "--pid", str(worker.pid), "--nonblocking", "--rate", "200",
                                    "--idle", "--format", "raw", "--output", str(raw_path)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cpu0 = worker.cpu_s()
            with ctx.task("profile: worker draining under py-spy", want) as update:
                t0 = time.perf_counter()
                timing = await wait_for_pairs(count, want, timeout=1200, on_progress=lambda k: update(completed=k),
                                              alive=worker.alive)
                rate = timing.steady_rate(want) / len(scorer_names)
                update(note=f"{rate:,.0f} traces/s under py-spy")
            elapsed = time.perf_counter() - t0
            cpu = worker.cpu_s() - cpu0
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(30)
            worker.stop()
            await sink.aclose()
    finally:
        if judge is not None:
            judge.stop()
        await ns.cleanup()
    raw = raw_path.read_text() if raw_path.exists() else ""
    by_self, by_component, by_total, samples, idle = top_functions(raw)
    lines = [
        f"worker profile: {' '.join(refs)}; {n:,} traces; drain {rate:,.0f} traces/s under py-spy "
        f"(200 Hz, nonblocking, attached after the first results); worker CPU {cpu:.1f} s over "
        f"{elapsed:.1f} s = {cpu / max(elapsed, 1e-9):.2f} cores, {cpu / n * 1e6:.0f} µs/trace; "
        f"main thread idle in select() {idle:.0%} of samples; {samples} busy samples",
        "",
        "top 10 functions by self time (share of busy samples):",
        *[f"  {share:6.1%}  {name}" for name, share in by_self],
        "",
        "self time by component (leaf frame):",
        *[f"  {share:6.1%}  {name}" for name, share in by_component],
        "",
        "top project functions by total time (inclusive):",
        *[f"  {share:6.1%}  {name}" for name, share in by_total],
    ]
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=50_000)
    ap.add_argument("--scorer", action="append", help="REF@RATE (default: the three code scorers at 1.0)")
    ap.add_argument("--judge-latency", type=float, default=0.2)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args(argv)
    refs = args.scorer or list(CODE_REFS)
    console = Console()
    args.out.mkdir(parents=True, exist_ok=True)
    label = "code" if refs == list(CODE_REFS) else "-".join(r.split("@")[0].split("(")[0].lower() for r in refs)
    out = args.out / f"profile-{label}.txt"
    progress = make_progress(console)
    with progress:
        ctx = Context(quick=False, traces=args.traces, long_traces=0, e2e_seconds=0,
                      corpus=build_corpus(args.traces), out_dir=args.out, console=console, progress=progress)
        text = asyncio.run(_profile(ctx, refs, args.judge_latency, out))
    print(text)
    print(f"written: {out} (collapsed stacks: {out.with_suffix('.raw')})")


if __name__ == "__main__":
    main()
