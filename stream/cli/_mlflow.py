"""`tracewatch sink mlflow`: write scores, votes and ground truth to an MLflow tracking server."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from stream._config import Settings

__all__ = ["sink_app"]

sink_app = typer.Typer(help="Downstream sinks that replay the score log into other systems.", no_args_is_help=True)


@sink_app.command("mlflow")
def mlflow_command(
    upload_traces: Annotated[
        bool,
        typer.Option(
            "--upload-traces/--no-upload-traces",
            help="Upload a trace MLflow does not have (from the copy tracewatch keeps) before its results; "
            "default: count it as skipped, reason trace_not_in_mlflow",
        ),
    ] = False,
    max_in_flight: Annotated[
        int | None, typer.Option(min=1, help="results written at once [env TRACEWATCH_MLFLOW_SINK_MAX_IN_FLIGHT]")
    ] = None,
    rate_limit: Annotated[
        float | None,
        typer.Option(min=0, help="MLflow requests per second, 0 = no limit [env TRACEWATCH_MLFLOW_SINK_RATE_LIMIT]"),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="/metrics port, -1 disables [env TRACEWATCH_MLFLOW_SINK_METRICS_PORT]")
    ] = None,
    trace_wait_timeout: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="seconds after a result's creation to keep looking for a trace MLflow does not have yet "
            "(its client exports asynchronously) [env TRACEWATCH_MLFLOW_SINK_TRACE_WAIT_TIMEOUT]",
        ),
    ] = None,
    bootstrap: Annotated[str | None, typer.Option("--bootstrap", "-b", help="Kafka bootstrap servers")] = None,
) -> None:
    """Consume the assessments and feedback topics and log each result on its trace in MLflow.

    The tracking server comes from MLFLOW_TRACKING_URI (with MLFLOW_TRACKING_TOKEN or
    MLFLOW_TRACKING_USERNAME/PASSWORD). Runs until SIGTERM or Ctrl-C.
    """
    from sinks import SinkError
    from stream.mlflow import run_mlflow_sink

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = Settings()
    update = {
        k: v
        for k, v in {
            "kafka_bootstrap": bootstrap,
            "mlflow_sink_max_in_flight": max_in_flight,
            "mlflow_sink_rate_limit": rate_limit,
            "mlflow_sink_metrics_port": metrics_port,
            "mlflow_sink_trace_wait_timeout": trace_wait_timeout,
        }.items()
        if v is not None
    }
    settings = s.model_copy(update=update) if update else s
    try:
        done = asyncio.run(run_mlflow_sink(settings, upload_traces=upload_traces))
    except SinkError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"mlflow sink stopped after {done} messages", err=True)
