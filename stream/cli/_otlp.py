"""`tracewatch otlp`: the OTLP receiver (OTLP/HTTP and OTLP/gRPC -> the spans topic).

Like `tracewatch api`, it refuses to start without API keys: an open receiver would let
anyone write traces that get scored and stored.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from stream._exceptions import ConfigError, StreamError
from stream.cli._common import BootstrapOpt, fail, settings_for

__all__ = ["OTLP_USES", "otlp_command"]

OTLP_USES = frozenset(
    {
        "kafka_bootstrap",
        "topic_prefix",
        "compression",
        "max_trace_bytes",
        "metrics_host",
        "api_keys",
        "otlp_host",
        "otlp_grpc_port",
        "otlp_http_port",
        "otlp_max_body_bytes",
        "otlp_max_span_bytes",
        "otlp_max_in_flight",
        "otlp_ack_timeout",
        "otlp_default_experiment",
        "otlp_metrics_port",
    }
)


def otlp_command(
    host: Annotated[str | None, typer.Option(help="Address to bind [env TRACEWATCH_OTLP_HOST: 127.0.0.1]")] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="OTLP/gRPC port; -1 disables [env TRACEWATCH_OTLP_GRPC_PORT: 4317]")
    ] = None,
    http_port: Annotated[
        int | None, typer.Option(help="OTLP/HTTP port (/v1/traces); -1 disables [env TRACEWATCH_OTLP_HTTP_PORT: 4318]")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Port of /metrics; -1 disables [env TRACEWATCH_OTLP_METRICS_PORT: 9111]")
    ] = None,
    default_experiment: Annotated[
        str | None,
        typer.Option(
            help="Experiment of spans with no x-mlflow-experiment-id header and no mlflow.experimentId "
            "resource attribute [env TRACEWATCH_OTLP_DEFAULT_EXPERIMENT: 0]"
        ),
    ] = None,
    bootstrap: BootstrapOpt = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Receive OpenTelemetry traces over OTLP and write their spans to <prefix>spans.

    Point any OTLP exporter here and change no code, e.g. for MLflow or an OpenTelemetry SDK app:

    \b
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4318/v1/traces
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf   (or grpc with http://127.0.0.1:4317)
      OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<key>,x-mlflow-experiment-id=<id>

    An export is answered with success only once Kafka acknowledged its spans; rejected
    spans (bad ids, too large) are reported in the OTLP partial_success. Overload answers
    429 / RESOURCE_EXHAUSTED, Kafka down 503 / UNAVAILABLE, so exporters retry. `tracewatch
    assemble` turns the spans into traces. Needs TRACEWATCH_API_KEYS; limits:
    TRACEWATCH_OTLP_MAX_BODY_BYTES (8 MiB), _MAX_SPAN_BYTES, _MAX_IN_FLIGHT, _ACK_TIMEOUT.
    Runs until SIGTERM/SIGINT.
    """
    import logging

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_for(
        OTLP_USES,
        otlp_host=("--host", host),
        otlp_grpc_port=("--grpc-port", grpc_port),
        otlp_http_port=("--http-port", http_port),
        otlp_metrics_port=("--metrics-port", metrics_port),
        otlp_default_experiment=("--default-experiment", default_experiment),
        kafka_bootstrap=("--bootstrap", bootstrap),
    )
    if not settings.api_keys:
        fail(
            str(
                ConfigError(
                    "no API keys configured: set TRACEWATCH_API_KEYS (exporters send one with "
                    "OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<key>); the receiver does not run "
                    "without authentication"
                )
            ),
            2,
        )
    if settings.otlp_grpc_port < 0 and settings.otlp_http_port < 0:
        fail("--grpc-port and --http-port are both disabled: nothing to serve", 2)
    from stream.otlp import run_receiver

    try:
        asyncio.run(run_receiver(settings))
    except StreamError as exc:
        fail(f"error: {exc}", 1)
    except OSError as exc:
        fail(f"error: cannot listen: {exc}", 1)
