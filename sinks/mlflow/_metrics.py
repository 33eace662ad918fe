"""Prometheus metrics of the MLflow sink, registered on a registry the caller owns.

tracewatch_mlflow_sink_written_total{kind}            kind: score|vote|expectation
tracewatch_mlflow_sink_duplicates_total{kind}         replays found already in MLflow
tracewatch_mlflow_sink_skipped_total{reason}          trace_not_in_mlflow, trace_not_stored, not_scored, superseded
tracewatch_mlflow_sink_failed_total{reason}           mlflow_rejected, upload_rejected, bad_record (all dead-lettered)
tracewatch_mlflow_sink_retries_total{reason}          http_429, http_5xx, transport, redis, trace_not_in_mlflow
tracewatch_mlflow_request_duration_seconds{operation} MLflow latency
tracewatch_mlflow_sink_lag{topic,partition}           messages not yet committed by the sink
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SinkMetrics"]


class SinkMetrics:
    """The sink's counters, histogram and lag gauge on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter(
            "tracewatch_mlflow_sink_written_total",
            "Results written to MLflow as assessments",
            ["kind"],
            registry=registry,
        )
        self.duplicates = Counter(
            "tracewatch_mlflow_sink_duplicates_total",
            "Redelivered results found already written (not written again)",
            ["kind"],
            registry=registry,
        )
        self.skipped = Counter(
            "tracewatch_mlflow_sink_skipped_total", "Results not written, by reason", ["reason"], registry=registry
        )
        self.failed = Counter(
            "tracewatch_mlflow_sink_failed_total", "Results dead-lettered, by reason", ["reason"], registry=registry
        )
        self.retries = Counter(
            "tracewatch_mlflow_sink_retries_total",
            "MLflow or Redis calls retried, by reason",
            ["reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "tracewatch_mlflow_request_duration_seconds",
            "MLflow REST request latency",
            ["operation"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.lag = Gauge(
            "tracewatch_mlflow_sink_lag",
            "Messages on the topic not yet committed by the MLflow sink",
            ["topic", "partition"],
            registry=registry,
        )
        for kind in ("score", "vote", "expectation"):
            self.written.labels(kind)
            self.duplicates.labels(kind)
        for reason in ("trace_not_in_mlflow", "trace_not_stored", "not_scored", "superseded"):
            self.skipped.labels(reason)
        for reason in ("mlflow_rejected", "upload_rejected", "bad_record"):
            self.failed.labels(reason)
        for reason in ("http_429", "http_5xx", "transport", "redis", "trace_not_in_mlflow"):
            self.retries.labels(reason)

    def observe(self, operation: str, seconds: float) -> None:
        """The `observe` hook of `MlflowRest`."""
        self.latency.labels(operation).observe(seconds)
