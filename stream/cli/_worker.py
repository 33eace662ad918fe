"""`tracewatch worker`: run one worker, or supervise several worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stream._config import Settings
from stream._exceptions import StreamError
from stream.cli._common import WORKER_USES, BootstrapOpt, RedisOpt, console, fail, settings_for

if TYPE_CHECKING:
    from stream.registry._scorer_set import ScorerSet

__all__ = ["env_of", "worker_command"]


def worker_command(
    scorer: Annotated[
        list[str] | None,
        typer.Option(
            "--scorer",
            "-s",
            metavar="REF[@RATE]",
            help="REF[@RATE]: a built-in scorer name or package.module:attr, with a sample rate "
            "(default 1.0). Repeatable. [env TRACEWATCH_SCORERS, comma-separated] "
            "Without any, the worker follows the scorer registry live.",
        ),
    ] = None,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Port of /metrics; 0 picks a free one, -1 disables [env TRACEWATCH_METRICS_PORT: 9108]"),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            help="Address /metrics binds; its exemplars show trace ids, so loopback unless a scraper "
            "elsewhere needs it (0.0.0.0 in containers) [env TRACEWATCH_METRICS_HOST: 127.0.0.1]"
        ),
    ] = None,
    processes: Annotated[
        int, typer.Option(min=1, help="Worker processes to start (one per core); process i serves metrics on port+i.")
    ] = 1,
    max_records: Annotated[int, typer.Option(min=1, help="Max messages per fetched batch.")] = 2000,
    judge_max_in_flight: Annotated[
        int | None,
        typer.Option(help="Judge calls in flight; fetching pauses at the cap [env TRACEWATCH_JUDGE_MAX_IN_FLIGHT: 32]"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Consume traces, sample and score them, write results to Redis, Prometheus and Kafka.

    Runs until SIGTERM/SIGINT, then finishes in-flight work and commits. Start several
    (here or on other machines) with the same consumer group to split the partitions.
    With --processes N, SIGTERM/SIGINT to this process go to every worker process, and it
    exits when they all have.
    """
    import logging

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_for(
        WORKER_USES,
        kafka_bootstrap=("--bootstrap", bootstrap),
        redis_url=("--redis-url", redis_url),
        judge_max_in_flight=("--judge-max-in-flight", judge_max_in_flight),
        metrics_host=("--metrics-host", metrics_host),
        metrics_port=("--metrics-port", metrics_port),
    )
    refs = list(scorer or []) or [r.strip() for r in os.environ.get("TRACEWATCH_SCORERS", "").split(",") if r.strip()]
    if processes > 1:
        args = ["--max-records", str(max_records), "--log-level", log_level]
        for r in refs:
            args += ["--scorer", r]
        raise typer.Exit(supervise(settings, processes, args))

    from stream.worker._loop import WorkerOptions

    try:
        source = _scorer_source(refs) if refs else None
    except (ValueError, ImportError, TypeError) as exc:
        fail(f"bad scorer configuration: {exc}", 2)
    if source is None:
        console.print("no --scorer given: following the scorer registry in Redis (`tracewatch scorers --help`)")
    from stream.worker import _runtime

    opts = WorkerOptions(max_records=max_records, judge_max_in_flight=settings.judge_max_in_flight)
    try:
        n = asyncio.run(_runtime.run_worker(settings, source, options=opts))
    except StreamError as exc:
        fail(f"error: {exc}", 1)
    console.print(f"worker stopped after {n} messages")


def supervise(settings: Settings, processes: int, args: list[str]) -> int:
    """Start `processes` single workers and wait for all; returns the worst exit code.

    SIGTERM and SIGINT are forwarded to every child (a supervisor killed by a service
    manager must not orphan workers that hold partitions and ports); the supervisor then
    waits for them to finish their in-flight work and commit.
    """
    base = settings.metrics_port
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous: dict[int, Callable[..., Any] | int | None] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, forward)
    try:
        for i in range(processes):
            port = base + i if base > 0 else base
            cmd = [sys.executable, "-m", "stream", "worker", "--processes", "1", "--metrics-port", str(port), *args]
            children.append(subprocess.Popen(cmd, env={**os.environ, **env_of(settings)}))
        codes = [child.wait() for child in children]
        # A child killed by a signal exits as a shell reports it: 128 + the signal.
        return max((128 - code if code < 0 else code for code in codes), default=0)
    finally:
        for child in children:  # only if starting one failed, or this process is being torn down
            if child.poll() is None:
                child.terminate()
                child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def env_of(settings: Settings) -> dict[str, str]:
    """The variables that give a child worker this process's settings (flags included)."""
    return {
        "TRACEWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TRACEWATCH_REDIS_URL": settings.redis_url,
        "TRACEWATCH_JUDGE_MAX_IN_FLIGHT": str(settings.judge_max_in_flight),
        "TRACEWATCH_METRICS_HOST": settings.metrics_host,
    }


def _scorer_source(refs: list[str]) -> Callable[[], ScorerSet]:
    """Scorers from the command line (fixed for the process's life)."""
    from scorers import resolve_scorer
    from stream.registry._scorer_set import ScorerSet, parse_scorer_option

    snapshot = ScorerSet.of([parse_scorer_option(r, resolve_scorer) for r in refs])
    return lambda: snapshot
