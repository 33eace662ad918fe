"""OTLP protobuf -> MLflow span dicts: the only module that touches `opentelemetry-proto`.

A spans-topic message value is a serialized `TracesData` (the receiver's contract, DESIGN.md
`<prefix>spans`). Each OTLP span becomes a `SpanRecord`: the span as MLflow's `Span.to_dict()`
writes it (ids in **base64** of the raw bytes, as in `fixtures/mlflow`, which our decoder reads;
times in int nanoseconds; attribute values JSON strings, see `_translate`), plus the few facts
the assembler needs without re-reading the dict (hex ids, parent, end, status, resource).

The conversion reads only the span and its Resource/InstrumentationScope, never the clock or
the message's receive time, so the same bytes always give the same record (replays are identical).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError as ProtoDecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status, TracesData

from stream._exceptions import StreamError
from stream.assembler._translate import encode_attributes, translate_attributes

__all__ = ["SpanDecodeError", "SpanRecord", "any_value", "decode_traces_data", "spans_of"]

_STATUS = {Status.STATUS_CODE_OK: "STATUS_CODE_OK", Status.STATUS_CODE_ERROR: "STATUS_CODE_ERROR"}


class SpanDecodeError(StreamError, ValueError):
    """A spans message that is not a usable `TracesData`; `reason` goes to the DLQ header."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class SpanRecord:
    """One OTLP span, converted. `span` is the MLflow span dict that goes into the trace JSON."""

    trace_hex: str
    span_hex: str
    parent_hex: str | None
    start_ns: int
    end_ns: int
    error: bool
    span: dict[str, Any]
    resource: dict[str, Any]


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a Python value (arrays -> lists, kvlists -> dicts, unset -> None)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _from_mlflow(attrs: dict[str, Any], scope_name: str) -> bool:
    """MLflow's exporter JSON-encodes every value; its spans carry `mlflow.traceRequestId`."""
    return scope_name.startswith("mlflow") or "mlflow.traceRequestId" in attrs


def span_record(span: ProtoSpan, resource: dict[str, Any], scope_name: str) -> SpanRecord:
    """Convert one protobuf span (see the module docstring).

    Raises:
        SpanDecodeError: `bad_id` when the trace id is not 16 bytes or the span id not 8.
    """
    if len(span.trace_id) != 16 or len(span.span_id) != 8:
        raise SpanDecodeError("bad_id", "a span's trace_id must be 16 bytes and span_id 8 bytes")
    parent = span.parent_span_id if len(span.parent_span_id) == 8 and any(span.parent_span_id) else None
    attrs = {kv.key: any_value(kv.value) for kv in span.attributes}
    trace_hex = span.trace_id.hex()
    encoded = encode_attributes(attrs, from_mlflow=_from_mlflow(attrs, scope_name))
    events = [
        {
            "name": e.name,
            "time_unix_nano": e.time_unix_nano,
            "attributes": {kv.key: any_value(kv.value) for kv in e.attributes},
        }
        for e in span.events
    ]
    translate_attributes(encoded, events)
    # MLflow's server derives the request id from the OTLP trace id rather than trusting the client.
    encoded["mlflow.traceRequestId"] = f'"tr-{trace_hex}"'
    mlflow_span: dict[str, Any] = {
        "trace_id": _b64(span.trace_id),
        "span_id": _b64(span.span_id),
        "parent_span_id": _b64(parent) if parent else None,
        "name": span.name,
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano or None,
        "events": events,
        "status": {"code": _STATUS.get(span.status.code, "STATUS_CODE_UNSET"), "message": span.status.message},
        "attributes": dict(sorted(encoded.items())),
        "links": [
            {
                "trace_id": _b64(link.trace_id),
                "span_id": _b64(link.span_id),
                "attributes": {kv.key: any_value(kv.value) for kv in link.attributes},
            }
            for link in span.links
        ],
    }
    return SpanRecord(
        trace_hex=trace_hex,
        span_hex=span.span_id.hex(),
        parent_hex=parent.hex() if parent else None,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        error=span.status.code == Status.STATUS_CODE_ERROR,
        span=mlflow_span,
        resource=resource,
    )


def spans_of(data: TracesData) -> list[SpanRecord]:
    """Every span of a parsed `TracesData`, with its resource's attributes."""
    out: list[SpanRecord] = []
    for rs in data.resource_spans:
        resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            scope_name = ss.scope.name
            for span in ss.spans:
                out.append(span_record(span, resource, scope_name))
    return out


def decode_traces_data(value: bytes) -> list[SpanRecord]:
    """Parse a spans-topic message value.

    Raises:
        SpanDecodeError: `not_protobuf` (not a `TracesData`), `no_spans` or `bad_id`.
    """
    data = TracesData()
    try:
        data.ParseFromString(value)
    except (ProtoDecodeError, ValueError) as exc:
        raise SpanDecodeError("not_protobuf", f"not an OTLP TracesData: {exc}") from None
    records = spans_of(data)
    if not records:
        raise SpanDecodeError("no_spans", "the TracesData holds no spans")
    return records
