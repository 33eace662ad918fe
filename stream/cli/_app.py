"""`tracewatch`: the command line. Each command is a thin shell over a library call.

Heavy imports happen inside commands so `tracewatch --help` stays instant.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stream._config import Settings
from stream._exceptions import StreamError

__all__ = ["app", "main"]

app = typer.Typer(
    name="tracewatch",
    help="Streaming quality monitoring for LLM apps: sample and score MLflow traces from Kafka, "
    "serve results from Redis and Prometheus.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Create and inspect the Kafka topics of tracewatch.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")

console = Console(stderr=True)
out = Console()

BootstrapOpt = Annotated[
    str | None,
    typer.Option("--bootstrap", "-b", help="Kafka bootstrap servers [env TRACEWATCH_KAFKA_BOOTSTRAP]"),
]


def _settings(**overrides: object) -> Settings:
    s = Settings()
    upd = {k: v for k, v in overrides.items() if v is not None}
    return s.model_copy(update=upd) if upd else s


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.command()
def publish(
    path: Annotated[
        Path,
        typer.Argument(help="A JSONL file (one trace per line), a trace JSON file, or a folder of them.", exists=True),
    ],
    bootstrap: BootstrapOpt = None,
    topic: Annotated[str | None, typer.Option(help="Topic to publish to [default: <prefix>traces]")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Report invalid traces and go on instead of stopping.")] = False,
) -> None:
    """Publish MLflow traces to Kafka, each acknowledged before it counts.

    Invalid traces stop the command with a message naming the file and line, unless
    --skip-invalid is given (they are then listed and counted, never silently dropped).
    In a folder, JSON files that are not traces at all (no `info` object) are listed and ignored.
    """
    from scorers import DecodeError, iter_traces
    from stream.sdk._publisher import TracePublisher, encode_for_wire

    settings = _settings(kafka_bootstrap=bootstrap)
    items = list(iter_traces(path))
    invalid: list[tuple[str, str]] = []
    not_traces: list[str] = []
    good: list[bytes] = []
    for label, data in items:
        try:
            encode_for_wire(data, max_bytes=settings.max_trace_bytes)
            good.append(data)
        except DecodeError as exc:
            if path.is_dir() and label.endswith(".json") and exc.reason in ("missing_info", "not_object"):
                not_traces.append(label)  # a side file in a folder of traces (e.g. an index)
                continue
            if not skip_invalid:
                console.print(f"[red]invalid trace[/] {label}: {exc}")
                raise typer.Exit(2) from None
            invalid.append((label, str(exc)))

    async def run() -> int:
        t0 = time.perf_counter()
        with _progress() as progress:
            task = progress.add_task("publishing", total=len(good), rate="")

            def on_ack(n: int) -> None:
                done = progress.tasks[0].completed + n
                rate = done / max(time.perf_counter() - t0, 1e-9)
                progress.update(task, advance=n, rate=f"{rate:,.0f}/s")

            async with TracePublisher(settings=settings, topic=topic) as pub:
                return await pub.publish_many(good, on_ack=on_ack, window=2000)

    try:
        t0 = time.perf_counter()
        n = asyncio.run(run())
        dt = time.perf_counter() - t0
    except StreamError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    for label, reason in invalid:
        console.print(f"[yellow]skipped invalid[/] {label}: {reason}")
    for label in not_traces:
        console.print(f"[dim]not a trace, ignored:[/] {label}")
    out.print(
        f"published {n} traces to {topic or settings.topics.traces} on {settings.kafka_bootstrap} "
        f"in {dt:.2f}s ({n / max(dt, 1e-9):,.0f}/s); invalid: {len(invalid)}; not traces: {len(not_traces)}"
    )


@topics_app.command("create")
def topics_create(
    bootstrap: BootstrapOpt = None,
    partitions: Annotated[
        int | None,
        typer.Option(help="Partitions of traces/feedback/assessments [env TRACEWATCH_PARTITIONS, default 4]"),
    ] = None,
) -> None:
    """Create the traces, feedback, assessments and DLQ topics (existing ones are kept)."""
    from stream._kafka import create_topics

    settings = _settings(kafka_bootstrap=bootstrap)
    try:
        result = asyncio.run(create_topics(settings, partitions=partitions))
    except StreamError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    table = Table("topic", "status")
    for name, status in result.items():
        table.add_row(name, status)
    out.print(table)


@app.command()
def worker(
    scorer: Annotated[
        list[str] | None,
        typer.Option(
            "--scorer",
            "-s",
            help="REF[@RATE]: a built-in scorer name or package.module:attr, with a sample rate "
            "(default 1.0). Repeatable. [env TRACEWATCH_SCORERS, comma-separated] "
            "Without any, the worker follows the scorer registry live.",
        ),
    ] = None,
    bootstrap: BootstrapOpt = None,
    redis_url: Annotated[str | None, typer.Option(help="[env TRACEWATCH_REDIS_URL]")] = None,
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
        int, typer.Option(help="Worker processes to start (one per core); process i serves metrics on port+i.")
    ] = 1,
    max_records: Annotated[int, typer.Option(help="Max messages per fetched batch.")] = 2000,
    judge_max_in_flight: Annotated[
        int | None,
        typer.Option(help="Judge calls in flight; fetching pauses at the cap [env TRACEWATCH_JUDGE_MAX_IN_FLIGHT]"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Consume traces, sample and score them, write results to Redis, Prometheus and Kafka.

    Runs until SIGTERM/SIGINT, then finishes in-flight work and commits. Start several
    (here or on other machines) with the same consumer group to split the partitions.
    """
    import logging
    import os
    import subprocess

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(
        kafka_bootstrap=bootstrap,
        redis_url=redis_url,
        judge_max_in_flight=judge_max_in_flight,
        metrics_host=metrics_host,
    )
    refs = list(scorer or []) or [r.strip() for r in os.environ.get("TRACEWATCH_SCORERS", "").split(",") if r.strip()]
    if processes > 1:
        base_port = settings.metrics_port if metrics_port is None else metrics_port
        children = []
        for i in range(processes):
            args = [sys.executable, "-m", "stream", "worker", "--processes", "1", "--max-records", str(max_records),
                    "--log-level", log_level]
            args += ["--metrics-port", str(base_port + i if base_port > 0 else base_port)]
            for r in refs:
                args += ["--scorer", r]
            children.append(subprocess.Popen(args, env={**os.environ, **_env_of(settings)}))
        codes = []
        try:
            codes = [c.wait() for c in children]
        except KeyboardInterrupt:
            for c in children:
                c.terminate()
            codes = [c.wait() for c in children]
        raise typer.Exit(max(codes, default=0))

    from stream.worker._loop import WorkerOptions

    try:
        source = _scorer_source(settings, refs) if refs else None
    except (ValueError, ImportError, TypeError) as exc:
        console.print(f"[red]bad scorer configuration:[/] {exc}")
        raise typer.Exit(2) from None
    if source is None:
        console.print("no --scorer given: following the scorer registry in Redis (`tracewatch scorers --help`)")
    from stream.worker._runtime import run_worker

    opts = WorkerOptions(max_records=max_records, judge_max_in_flight=settings.judge_max_in_flight)
    try:
        n = asyncio.run(run_worker(settings, source, options=opts, metrics_port=metrics_port))
    except StreamError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"worker stopped after {n} messages")


def _env_of(settings: Settings) -> dict[str, str]:
    return {
        "TRACEWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TRACEWATCH_REDIS_URL": settings.redis_url,
        "TRACEWATCH_JUDGE_MAX_IN_FLIGHT": str(settings.judge_max_in_flight),
        "TRACEWATCH_METRICS_HOST": settings.metrics_host,
    }


def _scorer_source(settings: Settings, refs: list[str]):  # type: ignore[no-untyped-def]
    """Scorers from the command line (fixed for the process's life)."""
    from scorers import resolve_scorer
    from stream.registry._scorer_set import ScorerSet, parse_scorer_option

    snapshot = ScorerSet.of([parse_scorer_option(r, resolve_scorer) for r in refs])
    return lambda: snapshot


@app.command()
def demo(
    traces: Annotated[int, typer.Option(help="Traces to replay.")] = 3000,
    duration: Annotated[float, typer.Option(help="Seconds over which to replay them.")] = 90.0,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the worker, API and judge a demo left running.")] = False,
) -> None:
    """Run everything locally: stack, worker, API, scorers, traffic with a regression, feedback.

    Leaves the worker, the API and the (simulated) judge running so you can explore
    /metrics and the API; `tracewatch demo --stop` stops them, `make down` stops Kafka/Redis.
    """
    from stream.cli._demo import DemoOptions, run_demo, stop_demo

    if stop:
        stop_demo(out)
        return
    raise typer.Exit(asyncio.run(run_demo(DemoOptions(traces=traces, duration_s=duration), out)))


@app.command(add_help_option=False, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """Run the benchmarks of bench/ (a repository checkout is needed): `tracewatch bench --help`."""
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    if not (repo / "bench" / "__main__.py").exists():
        console.print("[red]bench/ not found:[/] run from a checkout of the tracewatch repository")
        raise typer.Exit(2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    raise typer.Exit(subprocess.call([sys.executable, "-m", "bench", *ctx.args], cwd=repo, env=env))


def _register_optional_commands() -> None:
    """Commands from modules written separately; each registers itself here by name."""
    from stream.cli._evaluate import evaluate_command

    app.command("evaluate")(evaluate_command)
    from stream.cli.judge_server import judge_server_command

    app.command("judge-server")(judge_server_command)
    from stream.cli._api import api_command

    app.command("api")(api_command)
    from stream.cli._scorers import scorers_app

    app.add_typer(scorers_app, name="scorers")


_register_optional_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
