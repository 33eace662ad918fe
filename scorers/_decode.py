"""Decoding the wire format: bytes of MLflow 3 trace JSON into a `Trace`.

This is the first step of the hot path, so it validates the shape once, copies nothing it
does not need, and leaves span attribute values undecoded (see `Span.attribute`). Unknown
fields are ignored, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from scorers._exceptions import DecodeError
from scorers._trace import Span, Trace, TraceInfo

__all__ = ["DEFAULT_MAX_TRACE_BYTES", "decode_trace", "trace_from_dict"]

DEFAULT_MAX_TRACE_BYTES = 1024 * 1024
_EMPTY: Mapping[str, Any] = {}


def decode_trace(data: bytes | bytearray | memoryview | str, *, max_bytes: int = DEFAULT_MAX_TRACE_BYTES) -> Trace:
    """Decode one trace from its JSON bytes.

    Raises:
        DecodeError: with `reason` `too_large`, `not_json`, `not_object`, `missing_info`,
            `missing_trace_id`, `bad_trace_id` or `bad_spans`.
    """
    if len(data) > max_bytes:
        raise DecodeError("too_large", f"trace is {len(data)} bytes, the limit is {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("not_json", f"not valid JSON: {exc}") from None
    return trace_from_dict(obj)


def trace_from_dict(obj: Any) -> Trace:
    """Build a `Trace` from an already-parsed wire dict (same checks as `decode_trace`)."""
    if not isinstance(obj, dict):
        raise DecodeError("not_object", f"top level must be a JSON object, got {type(obj).__name__}")
    info = obj.get("info")
    if not isinstance(info, dict):
        raise DecodeError("missing_info", "the trace has no `info` object")
    trace_id = info.get("trace_id") or info.get("request_id")
    if trace_id is None or trace_id == "":
        raise DecodeError("missing_trace_id", "`info.trace_id` is missing or empty")
    if not isinstance(trace_id, str) or len(trace_id) > 256:
        raise DecodeError("bad_trace_id", "`info.trace_id` must be a string of at most 256 characters")
    data = obj.get("data")
    spans_raw = data.get("spans", []) if isinstance(data, dict) else ([] if data is None else None)
    if not isinstance(spans_raw, list):
        raise DecodeError("bad_spans", "`data.spans` must be a list")
    spans = [_span(s, i) for i, s in enumerate(spans_raw)]
    loc = info.get("trace_location")
    exp = None
    if isinstance(loc, dict):
        mlexp = loc.get("mlflow_experiment")
        if isinstance(mlexp, dict):
            exp = mlexp.get("experiment_id")
    if exp is None:
        exp = info.get("experiment_id", "0")
    tags = info.get("tags")
    meta = info.get("trace_metadata")
    assessments = info.get("assessments")
    duration = info.get("execution_duration_ms")
    request_time = info.get("request_time", info.get("timestamp_ms"))
    return Trace(
        info=TraceInfo(
            trace_id=trace_id,
            experiment_id=str(exp),
            state=str(info.get("state") or info.get("status") or "STATE_UNSPECIFIED"),
            request_time=request_time if isinstance(request_time, (str, int)) else None,
            execution_duration_ms=duration if isinstance(duration, int) else None,
            tags=tags if isinstance(tags, dict) else _EMPTY,
            metadata=meta if isinstance(meta, dict) else _EMPTY,
            client_request_id=info.get("client_request_id"),
            assessments=assessments if isinstance(assessments, list) else [],
        ),
        spans=spans,
        raw=obj,
    )


def _span(s: Any, index: int) -> Span:
    """Check the few things every later read relies on, then wrap the dict (no copying)."""
    if type(s) is not dict:
        raise DecodeError("bad_spans", f"span {index} is not an object")
    span_id = s.get("span_id")
    if type(span_id) is not str or not span_id:
        raise DecodeError("bad_spans", f"span {index} has no `span_id`")
    attrs = s.get("attributes")
    if attrs is not None and type(attrs) is not dict:
        raise DecodeError("bad_spans", f"span {index} `attributes` is not an object")
    for key in ("start_time_unix_nano", "end_time_unix_nano"):
        t = s.get(key)
        if t is not None and type(t) is not int:
            try:
                int(t)
            except (TypeError, ValueError):
                raise DecodeError("bad_spans", f"span {index} has a non-integer `{key}`") from None
    events = s.get("events")
    if events is not None and type(events) is not list:
        raise DecodeError("bad_spans", f"span {index} `events` is not a list")
    return Span(s)
