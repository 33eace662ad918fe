"""`tracewatch assemble`: run the OTLP span assembler (spans topic -> complete traces)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from stream._exceptions import StreamError
from stream.cli._common import BootstrapOpt, console, fail, settings_for

__all__ = ["ASSEMBLER_USES", "assemble_command"]

ASSEMBLER_USES = frozenset(
    {
        "kafka_bootstrap",
        "topic_prefix",
        "compression",
        "max_trace_bytes",
        "metrics_host",
        "assembler_group",
        "assembler_quiet_interval",
        "assembler_max_age_timeout",
        "assembler_max_open_traces",
        "assembler_max_spans_per_trace",
        "assembler_metrics_port",
        "consumer_session_timeout",
        "consumer_heartbeat_interval",
        "consumer_max_poll_interval",
    }
)


def assemble_command(
    bootstrap: BootstrapOpt = None,
    quiet: Annotated[
        float | None,
        typer.Option(
            "--quiet",
            help="Seconds after a trace's last span before it is emitted [env TRACEWATCH_ASSEMBLER_QUIET_INTERVAL: 2]",
        ),
    ] = None,
    max_age: Annotated[
        float | None,
        typer.Option(
            "--max-age",
            help="Seconds before an open trace is emitted marked incomplete [env "
            "TRACEWATCH_ASSEMBLER_MAX_AGE_TIMEOUT: 60]",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Port of /metrics; 0 picks a free one, -1 disables [env TRACEWATCH_ASSEMBLER_METRICS_PORT: 9110]"
        ),
    ] = None,
    max_records: Annotated[int, typer.Option(min=1, help="Max messages per fetched batch.")] = 2000,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Assemble OTLP spans (<prefix>spans) into complete MLflow traces on <prefix>traces.

    A trace is emitted once its root span has ended, no parent is missing and the quiet period
    has passed; one still open after --max-age is emitted tagged `tracewatch.incomplete`.
    Late spans go to the DLQ (`late_span`). Offsets are committed only behind acknowledged
    emissions, so a crash or restart loses nothing. Runs until SIGTERM/SIGINT.
    """
    import logging

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_for(
        ASSEMBLER_USES,
        kafka_bootstrap=("--bootstrap", bootstrap),
        assembler_quiet_interval=("--quiet", quiet),
        assembler_max_age_timeout=("--max-age", max_age),
        assembler_metrics_port=("--metrics-port", metrics_port),
    )
    from stream.assembler import AssemblerOptions, run_assembler

    try:
        n = asyncio.run(run_assembler(settings, options=AssemblerOptions(max_records=max_records)))
    except StreamError as exc:
        fail(f"error: {exc}", 1)
    console.print(f"assembler stopped after {n} traces")
