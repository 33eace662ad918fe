"""The receiver's Prometheus families, on an injected registry (nothing registers at import).

Labels come from fixed sets: `transport` is http|grpc, `status` is ok|partial|refused,
`reason` is a refusal or rejection reason (bad_id, too_large, not_protobuf, bad_encoding,
bad_json, wrong_schema, content_type, content_encoding, unauthorized, overloaded,
kafka_unavailable, internal).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ReceiverMetrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ReceiverMetrics:
    """Counters of one receiver process: spans in, spans refused, exports and their latency."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else CollectorRegistry()
        self.registry = reg
        self._spans = Counter(
            "tracewatch_otlp_spans_received_total",
            "spans written to the spans topic (acked)",
            ["transport"],
            registry=reg,
        )
        self._refused = Counter(
            "tracewatch_otlp_spans_refused_total",
            "spans not written: rejected one by one (partial success) or with their whole export",
            ["reason"],
            registry=reg,
        )
        self._exports = Counter(
            "tracewatch_otlp_exports_total",
            "export requests answered, by outcome",
            ["transport", "status"],
            registry=reg,
        )
        self._refusals = Counter(
            "tracewatch_otlp_export_refusals_total",
            "export requests refused whole, by reason",
            ["reason"],
            registry=reg,
        )
        self._latency = Histogram(
            "tracewatch_otlp_export_latency_seconds",
            "time from a complete request to its answer (includes Kafka's ack)",
            ["transport"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._in_flight = Gauge("tracewatch_otlp_exports_in_flight", "exports being handled", registry=reg)
        self._messages = Counter(
            "tracewatch_otlp_messages_produced_total", "messages (one per trace id) acked by Kafka", registry=reg
        )

    def exported(self, transport: str, *, spans: int, messages: int, rejected: dict[str, int], seconds: float) -> None:
        self._spans.labels(transport=transport).inc(spans)
        self._messages.inc(messages)
        for reason, n in rejected.items():
            self._refused.labels(reason=reason).inc(n)
        self._exports.labels(transport=transport, status="partial" if rejected else "ok").inc()
        self._latency.labels(transport=transport).observe(seconds)

    def refused(self, transport: str, reason: str, *, spans: int, seconds: float) -> None:
        self._exports.labels(transport=transport, status="refused").inc()
        self._refusals.labels(reason=reason).inc()
        if spans:
            self._refused.labels(reason=reason).inc(spans)
        self._latency.labels(transport=transport).observe(seconds)

    def in_flight(self, n: int) -> None:
        self._in_flight.set(n)
