"""`tracewatch`: the command line. Each command is a thin shell over a library call.

Commands live in their own modules and import what they need when they run, so
`tracewatch --help` loads no FastAPI, uvicorn or redis. Help text is plain (no Rich markup),
so `REF[@RATE]`, `[env ...]` and `[default: ...]` show as written.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from stream.cli._common import console, out, settings_for

__all__ = ["app", "main"]

app = typer.Typer(
    name="tracewatch",
    help="Streaming quality monitoring for LLM apps: sample and score MLflow traces from Kafka, "
    "serve results from Redis and Prometheus.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def demo(
    traces: Annotated[int, typer.Option(min=1, help="Traces to replay.")] = 3000,
    duration: Annotated[float, typer.Option(min=0.0, help="Seconds over which to replay them.")] = 90.0,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the worker, API and judge a demo left running.")] = False,
) -> None:
    """Run everything locally: stack, worker, API, scorers, traffic with a regression, feedback.

    Leaves the worker, the API and the (simulated) judge running so you can explore
    /metrics and the API; `tracewatch demo --stop` stops them, `make down` stops Kafka/Redis.
    The worker and API listen on TRACEWATCH_METRICS_PORT and TRACEWATCH_API_PORT.
    """
    from stream.cli._demo import DemoOptions, run_demo, stop_demo

    if stop:
        stop_demo(out)
        return
    settings = settings_for(("api_port", "metrics_port"))
    opts = DemoOptions(
        traces=traces, duration_s=duration, api_port=settings.api_port, metrics_port=settings.metrics_port
    )
    raise typer.Exit(asyncio.run(run_demo(opts, out)))


def bench(ctx: typer.Context) -> None:
    """Run the benchmarks of bench/ (a repository checkout is needed): `tracewatch bench --help`."""
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    if not (repo / "bench" / "__main__.py").exists():
        console.print("bench/ not found: run from a checkout of the tracewatch repository", markup=False)
        raise typer.Exit(2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    raise typer.Exit(subprocess.call([sys.executable, "-m", "bench", *ctx.args], cwd=repo, env=env))


def _register_commands() -> None:
    """Commands written in their own modules (each light to import)."""
    from stream.cli._api import api_command
    from stream.cli._evaluate import evaluate_command
    from stream.cli._judge_command import judge_server_command
    from stream.cli._publish import publish_command
    from stream.cli._scorers import scorers_app
    from stream.cli._topics import topics_app
    from stream.cli._worker import worker_command

    app.command("publish")(publish_command)
    app.add_typer(topics_app, name="topics")
    app.command("worker")(worker_command)
    app.command("demo")(demo)
    extra = {"allow_extra_args": True, "ignore_unknown_options": True}
    app.command("bench", add_help_option=False, context_settings=extra)(bench)
    app.command("evaluate")(evaluate_command)
    app.command("judge-server")(judge_server_command)
    app.command("api")(api_command)
    from stream.cli._assembler import assemble_command

    app.command("assemble")(assemble_command)
    app.command("otlp")(__import__("stream.cli._otlp", fromlist=["otlp_command"]).otlp_command)
    app.add_typer(scorers_app, name="scorers")
    from stream.cli._mlflow import sink_app

    app.add_typer(sink_app, name="sink")


_register_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
