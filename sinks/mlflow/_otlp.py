"""An MLflow trace JSON (`Trace.to_json()`) as an OTLP/HTTP JSON export request.

The `--upload-traces` option sends traces MLflow does not have to the tracking server's own
OTLP endpoint (`POST /v1/traces`), which stores their spans and creates the trace record,
so assessments can attach. MLflow's span dicts are OpenTelemetry spans already: ids are
base64 (OTLP JSON wants hex), attributes are JSON-encoded strings (sent as `stringValue`,
which is how MLflow's own exporter sends them, so they read back unchanged).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

__all__ = ["experiment_of", "trace_to_otlp_json"]

_STATUS = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2, "UNSET": 0, "OK": 1, "ERROR": 2}


def _hex(value: Any, size: int) -> str:
    """An OTel id as hex: MLflow writes base64; hex (or `tr-<hex>`) passes through."""
    if not isinstance(value, str) or not value:
        return ""
    text = value[3:] if value.startswith("tr-") else value
    if len(text) == size * 2:
        try:
            bytes.fromhex(text)
        except ValueError:
            pass
        else:
            return text.lower()
    try:
        return base64.b64decode(text, validate=True).hex()
    except (binascii.Error, ValueError):
        return ""


def _attr(key: str, value: Any) -> dict[str, Any]:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return {"key": key, "value": {"stringValue": text}}


def _span(span: dict[str, Any], trace_hex: str, trace_id: str) -> dict[str, Any]:
    status = span.get("status") or {}
    attrs = dict(span.get("attributes") or {})
    if trace_id and "mlflow.traceRequestId" in attrs:  # MLflow files the span under this id
        attrs["mlflow.traceRequestId"] = orjson.dumps(trace_id).decode()
    code = status.get("code", 0)
    out: dict[str, Any] = {
        "traceId": trace_hex or _hex(span.get("trace_id"), 16),
        "spanId": _hex(span.get("span_id"), 8),
        "name": str(span.get("name", "")),
        "kind": 1,
        "startTimeUnixNano": str(span.get("start_time_unix_nano", 0)),
        "endTimeUnixNano": str(span.get("end_time_unix_nano") or span.get("start_time_unix_nano", 0)),
        "attributes": [_attr(k, v) for k, v in attrs.items()],
        "status": {
            "code": _STATUS.get(code, code) if isinstance(code, str) else int(code or 0),
            "message": str(status.get("message", "")),
        },
        "events": [
            {
                "name": str(e.get("name", "")),
                "timeUnixNano": str(e.get("time_unix_nano", 0)),
                "attributes": [_attr(k, v) for k, v in (e.get("attributes") or {}).items()],
            }
            for e in span.get("events") or []
            if isinstance(e, dict)
        ],
    }
    parent = _hex(span.get("parent_span_id"), 8)
    if parent:
        out["parentSpanId"] = parent
    return out


def experiment_of(trace: dict[str, Any]) -> str:
    """The trace's MLflow experiment id (`"0"` when absent), as DESIGN.md reads it."""
    loc = (trace.get("info") or {}).get("trace_location") or {}
    exp = (loc.get("mlflow_experiment") or {}).get("experiment_id")
    return str(exp) if exp else "0"


def trace_to_otlp_json(trace: dict[str, Any]) -> bytes:
    """The OTLP JSON `ExportTraceServiceRequest` carrying every span of an MLflow trace.

    Raises:
        ValueError: The trace has no spans (nothing MLflow's OTLP endpoint could store).
    """
    info = trace.get("info") or {}
    spans = [s for s in ((trace.get("data") or {}).get("spans") or []) if isinstance(s, dict)]
    if not spans:
        raise ValueError("trace has no spans")
    trace_hex = _hex(info.get("trace_id"), 16)
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", "tracewatch")]},
                "scopeSpans": [
                    {
                        "scope": {"name": "tracewatch.mlflow_sink"},
                        "spans": [_span(s, trace_hex, str(info.get("trace_id") or "")) for s in spans],
                    }
                ],
            }
        ]
    }
    return orjson.dumps(request)
