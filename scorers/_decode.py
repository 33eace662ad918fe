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
from scorers._limits import MAX_DURATION_MS, MAX_ID_CHARS, MAX_TIME_MS, MAX_TIME_NS
from scorers._trace import Span, Trace, TraceInfo, time_ms

__all__ = ["DEFAULT_MAX_TRACE_BYTES", "decode_trace", "trace_from_dict"]

DEFAULT_MAX_TRACE_BYTES = 1024 * 1024
_EMPTY: Mapping[str, Any] = {}
# Trace metadata that names a user or a session: ids that sinks key on (sessions, per-user views).
_METADATA_IDS = ("mlflow.trace.user", "mlflow.trace.session")


def decode_trace(data: bytes | bytearray | memoryview | str, *, max_bytes: int = DEFAULT_MAX_TRACE_BYTES) -> Trace:
    """Decode one trace from its JSON bytes.

    Raises:
        DecodeError: with `reason` `too_large`, `not_json`, `not_object`, `missing_info`,
            `missing_trace_id`, `bad_trace_id`, `bad_id` (an experiment, user or session id
            that is not a string of at most `MAX_ID_CHARS`), `bad_value` (a request time,
            duration or span time that is not an integer in range, see `scorers._limits`,
            or a `state` that is not a string) or `bad_spans`.
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
    if not isinstance(trace_id, str) or len(trace_id) > MAX_ID_CHARS or not _utf8(trace_id):
        raise DecodeError("bad_trace_id", f"`info.trace_id` must be a string of at most {MAX_ID_CHARS} characters")
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
        exp = info.get("experiment_id")
    tags = info.get("tags")
    meta = info.get("trace_metadata")
    if isinstance(meta, dict):
        for key in _METADATA_IDS:
            value = meta.get(key)
            if value is not None:
                _check_id(value, f"`info.trace_metadata[{key!r}]`")
    assessments = info.get("assessments")
    request_time = info.get("request_time", info.get("timestamp_ms"))
    if request_time is not None:
        ms = time_ms(request_time)
        if ms is None or not 0 <= ms <= MAX_TIME_MS:
            raise DecodeError(
                "bad_value", f"`info.request_time` must be an epoch time in ms in 0..{MAX_TIME_MS} or RFC 3339"
            )
        request_time = ms  # MLflow's `TraceInfo.request_time` is epoch ms; the check computed it anyway
    state = info.get("state") or info.get("status") or "STATE_UNSPECIFIED"
    if not isinstance(state, str):
        raise DecodeError("bad_value", "`info.state` must be a string")
    return Trace(
        info=TraceInfo(
            trace_id=trace_id,
            experiment_id="0" if exp is None else _experiment_id(exp),
            state=state,
            request_time=request_time,
            execution_duration_ms=_duration_ms(info.get("execution_duration_ms")),
            tags=tags if isinstance(tags, dict) else _EMPTY,
            metadata=meta if isinstance(meta, dict) else _EMPTY,
            client_request_id=info.get("client_request_id"),
            raw_assessments=assessments if isinstance(assessments, list) else [],
            raw=info,
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
        if t is None:
            continue
        if type(t) is not int:
            if type(t) is not str:  # a float or bool is not a time (int() would truncate it)
                raise DecodeError("bad_spans", f"span {index} has a non-integer `{key}`")
            try:
                t = int(t)
            except ValueError:
                raise DecodeError("bad_spans", f"span {index} has a non-integer `{key}`") from None
        if not 0 <= t <= MAX_TIME_NS:
            raise DecodeError("bad_value", f"span {index} `{key}` is outside 0..{MAX_TIME_NS}")
    events = s.get("events")
    if events is not None and type(events) is not list:
        raise DecodeError("bad_spans", f"span {index} `events` is not a list")
    return Span(s)


def _utf8(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (a lone surrogate cannot: no key, no JSON)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_id(value: Any, what: str) -> str:
    """Return `value` if it is a usable id: a UTF-8 string of at most `MAX_ID_CHARS`."""
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS or not _utf8(value):
        raise DecodeError("bad_id", f"{what} must be a string of at most {MAX_ID_CHARS} characters")
    return value


def _experiment_id(value: Any) -> str:
    """The experiment id as a string; MLflow writes a string, an integer is accepted as one."""
    if type(value) is int and 0 <= value <= 2**63 - 1:
        return str(value)
    return _check_id(value, "the experiment id")


def _duration_ms(value: Any) -> int | None:
    """`execution_duration_ms`: an integer in `0..MAX_DURATION_MS` (a digit string too), or absent."""
    if value is None:
        return None
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    if type(value) is not int or not 0 <= value <= MAX_DURATION_MS:
        raise DecodeError("bad_value", f"`info.execution_duration_ms` must be an integer in 0..{MAX_DURATION_MS}")
    return value
