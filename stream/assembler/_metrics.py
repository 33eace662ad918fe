"""The assembler's Prometheus families, on an injected registry (nothing registers at import).

Labels are bounded: `state` is complete|incomplete, `reason` comes from fixed sets (incomplete:
max_age|span_cap|open_cap; dead letters: late_span|not_protobuf|no_spans|bad_id|too_large).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AssemblerMetrics"]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 30, 60, 120, 300)


class AssemblerMetrics:
    """Counters and gauges of one assembler process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else CollectorRegistry()
        self.registry = reg
        self._spans = Counter(
            "tracewatch_assembler_spans_received_total", "OTLP spans read from the spans topic", registry=reg
        )
        self._open = Gauge("tracewatch_assembler_open_traces", "traces being assembled (in memory)", registry=reg)
        self._open_spans = Gauge("tracewatch_assembler_open_spans", "spans held by open traces", registry=reg)
        self._emitted = Counter(
            "tracewatch_assembler_traces_emitted_total",
            "traces produced to the traces topic (acked)",
            ["state"],
            registry=reg,
        )
        self._incomplete = Counter(
            "tracewatch_assembler_incomplete_total",
            "traces emitted before they were complete, by reason",
            ["reason"],
            registry=reg,
        )
        self._late = Counter(
            "tracewatch_assembler_late_spans_total",
            "spans that arrived after their trace was emitted (dead-lettered)",
            registry=reg,
        )
        self._dead = Counter(
            "tracewatch_assembler_dead_letters_total", "spans messages sent to the DLQ", ["reason"], registry=reg
        )
        self._latency = Histogram(
            "tracewatch_assembler_latency_seconds",
            "wall time from a trace's last span end to its emission being acked",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._complete_child = self._emitted.labels(state="complete")
        self._incomplete_child = self._emitted.labels(state="incomplete")

    def spans_received(self, n: int) -> None:
        self._spans.inc(n)

    def set_open(self, traces: int, spans: int) -> None:
        self._open.set(traces)
        self._open_spans.set(spans)

    def emitted(self, incomplete_reason: str | None, latency_s: float) -> None:
        if incomplete_reason is None:
            self._complete_child.inc()
        else:
            self._incomplete_child.inc()
            self._incomplete.labels(reason=incomplete_reason).inc()
        self._latency.observe(max(latency_s, 0.0))

    def dead_lettered(self, reason: str, late_spans: int = 0) -> None:
        self._dead.labels(reason=reason).inc()
        if late_spans:
            self._late.inc(late_spans)
