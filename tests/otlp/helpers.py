"""Builders for OTLP requests and a fake producer that records what the receiver sends."""

from __future__ import annotations

import asyncio
import os

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData

from stream.otlp import KeyCheck, Receiver, ReceiverMetrics, SpanLimits


def span(trace_id: bytes, span_id: bytes | None = None, parent: bytes = b"", name: str = "s", attrs=None) -> Span:
    s = Span(trace_id=trace_id, span_id=span_id or os.urandom(8), parent_span_id=parent, name=name)
    s.start_time_unix_nano = 1_700_000_000_000_000_000
    s.end_time_unix_nano = s.start_time_unix_nano + 1000
    for k, v in (attrs or {}).items():
        s.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
    return s


def request(
    *groups: list[Span], resource: dict[str, str] | None = None, scope: str = "test"
) -> ExportTraceServiceRequest:
    """One ResourceSpans per group (each with one scope), in order."""
    req = ExportTraceServiceRequest()
    for spans in groups:
        rs = req.resource_spans.add()
        for k, v in (resource or {"service.name": "svc"}).items():
            rs.resource.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
        ss = rs.scope_spans.add()
        ss.scope.name = scope
        ss.spans.extend(spans)
    return req


def spans_in(value: bytes) -> list[Span]:
    data = TracesData()
    data.ParseFromString(value)
    return [s for rs in data.resource_spans for ss in rs.scope_spans for s in ss.spans]


class FakeProducer:
    """Records sends; `fail` makes acks raise, `hang` makes them never come."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, dict[str, bytes]]] = []
        self.fail: Exception | None = None
        self.hang = False

    async def send(self, topic, value, *, key, headers):
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.hang:
            return fut
        if self.fail is not None:
            fut.set_exception(self.fail)
            return fut
        self.sent.append((topic, key, value, dict(headers)))
        fut.set_result(None)
        return fut


def make_receiver(producer=None, *, keys=(), max_in_flight=8, ack_timeout=0.5, limits=None, metrics=None):
    return Receiver(
        producer or FakeProducer(),  # type: ignore[arg-type]
        "t.spans",
        keys=KeyCheck(keys),
        limits=limits or SpanLimits(),
        default_experiment="0",
        max_in_flight=max_in_flight,
        ack_timeout=ack_timeout,
        metrics=metrics or ReceiverMetrics(),
    )
