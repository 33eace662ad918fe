"""OTLP export bodies -> one spans-topic message per trace id (pure: no I/O, no clock).

The spans topic's wire contract (DESIGN.md `<prefix>spans`): key = the trace id as 32
lowercase hex chars, value = a serialized OTLP `TracesData` holding only that trace's spans,
with their Resource and InstrumentationScope. `ExportTraceServiceRequest` and `TracesData`
have the same wire shape (field 1, repeated `ResourceSpans`), so a request whose spans all
belong to one trace is forwarded as the very bytes received: nothing is re-encoded.

Validation is all-or-nothing per span (spec partial success): a span with a trace id that is
not 16 non-zero bytes, a span id that is not 8 non-zero bytes, a parent id that is neither
empty nor 8 bytes, or a size above the cap is rejected and counted; the others are kept. A
request whose every span is rejected is refused whole (`ExportRefused`, 400), so a client
with a systematic bug sees an error rather than a quiet `partial_success`.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtoDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData

from stream._exceptions import StreamError

__all__ = [
    "EXPERIMENT_ATTRIBUTE",
    "ExportRefused",
    "Grouped",
    "RefusalKind",
    "SpanLimits",
    "TraceMessage",
    "group_spans",
    "parse_body",
]

EXPERIMENT_ATTRIBUTE: Final = "mlflow.experimentId"
"""MLflow's experiment attribute (`SpanAttributeKey.EXPERIMENT_ID`), read from the Resource."""

RefusalKind = Literal["bad_request", "too_large", "unsupported", "unauthorized", "overloaded", "unavailable"]

_PROTOBUF: Final = "application/x-protobuf"
_JSON: Final = "application/json"
_ZERO_TRACE: Final = bytes(16)
_ZERO_SPAN: Final = bytes(8)
# Room left in a message for the Resource and scope around the spans.
_ENVELOPE_BYTES: Final = 64 * 1024


class ExportRefused(StreamError):
    """A whole export is refused; transports map `kind` to an HTTP status or a gRPC code.

    Attributes:
        kind: what the client must do (fix the request, slow down, retry later).
        reason: a metric label from a fixed set (`not_protobuf`, `bad_encoding`, `bad_id`, ...).
        retry_after: seconds the client should wait (overload and unavailability only).
        spans: how many spans the refusal covers, when known (for the refused-spans counter).
    """

    def __init__(self, kind: RefusalKind, reason: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind: RefusalKind = kind
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.spans = 0


@dataclass(frozen=True, slots=True)
class SpanLimits:
    """Caps applied while grouping.

    Attributes:
        max_span_bytes: a span larger than this (serialized) is rejected.
        max_message_bytes: a trace's spans are split into several messages (same key) above
            this, so one large trace never exceeds what Kafka accepts.
    """

    max_span_bytes: int = 1024 * 1024
    max_message_bytes: int = 1024 * 1024


@dataclass(slots=True)
class TraceMessage:
    """One spans-topic message: `key` is the 32-hex trace id, `value` a serialized `TracesData`."""

    key: bytes
    value: bytes
    spans: int
    experiment: str | None


@dataclass(slots=True)
class Grouped:
    """The result of grouping one export: messages to write and what was rejected."""

    messages: list[TraceMessage] = field(default_factory=list)
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def rejected_spans(self) -> int:
        return sum(self.rejected.values())

    def message(self) -> str:
        """The `partial_success.error_message` (empty when nothing was rejected)."""
        if not self.rejected:
            return ""
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.rejected.items()))
        return f"rejected {self.rejected_spans} span(s) ({counts}): " + "; ".join(self.errors)


def parse_body(
    body: bytes, *, content_type: str, content_encoding: str | None, max_bytes: int
) -> tuple[ExportTraceServiceRequest, bytes | None]:
    """Decode an OTLP/HTTP body (gzip/deflate, then protobuf or OTLP JSON) into a request.

    Returns the request and, for protobuf, the decompressed bytes it was parsed from (the
    value forwarded unchanged when the export holds one trace; None for JSON).

    Raises:
        ExportRefused: `unsupported` (content type or encoding), `too_large` (the body or its
            decompressed form exceeds `max_bytes`) or `bad_request` (bad gzip, not protobuf,
            not OTLP JSON).
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in (_PROTOBUF, _JSON):
        raise ExportRefused(
            "unsupported", "content_type", f"unsupported Content-Type {content_type!r}: send {_PROTOBUF} or {_JSON}"
        )
    if len(body) > max_bytes:
        raise ExportRefused("too_large", "too_large", f"body is over the {max_bytes}-byte limit")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("gzip", "deflate"):
        body = _decompress(body, encoding, max_bytes)
    elif encoding != "identity":
        raise ExportRefused("unsupported", "content_encoding", f"unsupported Content-Encoding {encoding!r}: use gzip")
    request = ExportTraceServiceRequest()
    if media == _PROTOBUF:
        try:
            request.ParseFromString(body)
        except (ProtoDecodeError, ValueError, RuntimeError) as exc:
            raise ExportRefused(
                "bad_request", "not_protobuf", f"not an OTLP ExportTraceServiceRequest: {exc}"
            ) from None
    else:
        _parse_json(body, request)
    if media == _PROTOBUF and body and not request.resource_spans:
        raise ExportRefused(
            "bad_request", "wrong_schema", "no resourceSpans: the body is not an OTLP ExportTraceServiceRequest"
        )
    return request, body if media == _PROTOBUF else None


def _decompress(body: bytes, encoding: str, max_bytes: int) -> bytes:
    # Stream through a decompressor with a cap, so a gzip bomb stops at `max_bytes`.
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise ExportRefused("bad_request", "bad_encoding", f"body is not valid {encoding}: {exc}") from None
    if len(out) > max_bytes:
        raise ExportRefused("too_large", "too_large", f"decompressed body is over the {max_bytes}-byte limit")
    if not inflater.eof:
        raise ExportRefused("bad_request", "bad_encoding", f"body is not valid {encoding}: truncated stream")
    return out


_ID_FIELDS: Final = ("traceId", "spanId", "parentSpanId")


def _parse_json(body: bytes, request: ExportTraceServiceRequest) -> None:
    """OTLP JSON: like proto3 JSON except that ids are hex, not base64 (the OTLP spec's one change)."""
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError as exc:
        raise ExportRefused("bad_request", "bad_json", f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ExportRefused("bad_request", "wrong_schema", "an OTLP JSON body is an object with resourceSpans")
    if data and "resourceSpans" not in data:
        raise ExportRefused(
            "bad_request", "wrong_schema", f"no resourceSpans in the JSON object (keys: {sorted(data)[:5]})"
        )
    try:
        for rs in data.get("resourceSpans") or ():
            for ss in rs.get("scopeSpans") or ():
                for span in ss.get("spans") or ():
                    _hex_ids_to_base64(span)
                    for link in span.get("links") or ():
                        _hex_ids_to_base64(link)
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise ExportRefused("bad_request", "wrong_schema", f"not OTLP JSON: {exc}") from None


def _hex_ids_to_base64(obj: dict[str, Any]) -> None:
    for name in _ID_FIELDS:
        value = obj.get(name)
        if isinstance(value, str) and value:
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raw = b""  # not hex: an empty id, rejected per span as a bad id
            obj[name] = base64.b64encode(raw).decode()


def _experiment_of(attributes: Any) -> str | None:
    for kv in attributes:
        if kv.key == EXPERIMENT_ATTRIBUTE:
            return _as_experiment(kv.value)
    return None


def _as_experiment(value: AnyValue) -> str | None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value.strip()
        # MLflow JSON-encodes its attribute values (`"\"123\""`).
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1]
        return text or None
    if kind == "int_value":
        return str(value.int_value)
    return None


def _check(span: Span, size_cap: int | None) -> str | None:
    """Why a span is rejected (a fixed reason), or None."""
    tid = span.trace_id
    if len(tid) != 16 or tid == _ZERO_TRACE:
        return "bad_id"
    sid = span.span_id
    if len(sid) != 8 or sid == _ZERO_SPAN:
        return "bad_id"
    if len(span.parent_span_id) not in (0, 8):
        return "bad_id"
    if size_cap is not None and span.ByteSize() > size_cap:
        return "too_large"
    return None


_WHY: Final = {
    "bad_id": "trace_id must be 16 non-zero bytes (32 hex in JSON), span_id 8 non-zero bytes, "
    "parent_span_id empty or 8 bytes",
    "too_large": "a span is over the {cap}-byte limit",
}


def group_spans(
    request: ExportTraceServiceRequest,
    *,
    raw: bytes | None,
    limits: SpanLimits,
    experiment: str | None = None,
    body_size: int | None = None,
) -> Grouped:
    """Split an export into one message per trace id (more for a trace over the message cap).

    Args:
        request: the parsed export.
        raw: the protobuf bytes `request` was parsed from, if any: forwarded unchanged when
            every span is kept and belongs to one trace.
        limits: span and message caps.
        body_size: the decoded body's length (defaults to `len(raw)`); a body under the caps
            spares the per-span size checks.
        experiment: the `x-mlflow-experiment-id` header; when None, each message takes the
            Resource attribute `mlflow.experimentId` of its first span (else the caller's default).

    Raises:
        ExportRefused: `bad_request` when spans were sent and every one was rejected.
    """
    out = Grouped()
    # The byte-size checks cost a pass over each span; skip them when the whole body is
    # already under the cap (no span, and no trace's message, can then exceed it).
    if body_size is None and raw is not None:
        body_size = len(raw)
    whole = body_size is not None and body_size <= min(limits.max_span_bytes, limits.max_message_bytes)
    span_cap = None if whole else min(limits.max_span_bytes, limits.max_message_bytes - _ENVELOPE_BYTES)
    # trace id -> (resource index, scope index) -> spans; dicts keep first-seen order.
    traces: dict[bytes, dict[tuple[int, int], list[Span]]] = {}
    resource_experiment: dict[int, str | None] = {}
    for ri, rs in enumerate(request.resource_spans):
        if experiment is None:
            resource_experiment[ri] = _experiment_of(rs.resource.attributes)
        for si, ss in enumerate(rs.scope_spans):
            for span in ss.spans:
                why = _check(span, span_cap)
                if why is not None:
                    if why not in out.rejected:
                        cap = limits.max_span_bytes if span_cap is None else span_cap
                        out.errors.append(_WHY[why].format(cap=cap))
                    out.rejected[why] = out.rejected.get(why, 0) + 1
                    continue
                out.accepted += 1
                traces.setdefault(span.trace_id, {}).setdefault((ri, si), []).append(span)
    if out.rejected and not out.accepted:
        refused = ExportRefused("bad_request", next(iter(out.rejected)), "every span was rejected: " + out.message())
        refused.spans = out.rejected_spans
        raise refused
    if len(traces) == 1 and not out.rejected and raw is not None and whole:
        ((tid, scopes),) = traces.items()
        exp = experiment if experiment is not None else _first_experiment(scopes, resource_experiment)
        out.messages.append(TraceMessage(tid.hex().encode(), raw, out.accepted, exp))
        return out
    for tid, scopes in traces.items():
        key = tid.hex().encode()
        exp = experiment if experiment is not None else _first_experiment(scopes, resource_experiment)
        for value, n in _encode(request, scopes, limits.max_message_bytes if span_cap is not None else None):
            out.messages.append(TraceMessage(key, value, n, exp))
    return out


def _first_experiment(scopes: Mapping[tuple[int, int], list[Span]], found: Mapping[int, str | None]) -> str | None:
    for ri, _ in scopes:
        if found.get(ri):
            return found[ri]
    return None


def _encode(
    request: ExportTraceServiceRequest, scopes: Mapping[tuple[int, int], list[Span]], cap: int | None
) -> Iterator[tuple[bytes, int]]:
    """`TracesData` values for one trace; with `cap`, several ones each under it (spans in order)."""
    data = TracesData()
    n = size = 0
    for (ri, si), spans in scopes.items():
        rs_in = request.resource_spans[ri]
        ss_in = rs_in.scope_spans[si]
        envelope = None
        for span in spans:
            span_size = span.ByteSize() if cap is not None else 0
            if cap is not None and n and size + span_size > cap - _ENVELOPE_BYTES:
                yield data.SerializeToString(), n
                data, n, size, envelope = TracesData(), 0, 0, None
            if envelope is None:
                rs = data.resource_spans.add()
                rs.resource.CopyFrom(rs_in.resource)
                rs.schema_url = rs_in.schema_url
                envelope = rs.scope_spans.add()
                envelope.scope.CopyFrom(ss_in.scope)
                envelope.schema_url = ss_in.schema_url
            envelope.spans.append(span)
            n += 1
            size += span_size
    if n:
        yield data.SerializeToString(), n
