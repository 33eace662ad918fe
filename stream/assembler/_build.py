"""Spans of one trace -> the MLflow trace JSON the worker decodes (`{"info", "data": {"spans"}}`).

Trace info is derived as MLflow's tracking store derives it when it receives OTLP spans
(`SqlAlchemyStore._log_spans_once`): request time = earliest span start (ms); duration =
latest end - earliest start; state `ERROR` if the root span's status is ERROR, `OK` for OK or
UNSET, `IN_PROGRESS` when there is no root; `mlflow.traceName` = the root's name; resource
attributes (except `telemetry.sdk.*` and `mlflow.*`) and the root's `mlflow.traceTag.<k>`
attributes become tags; `user.id` and `session.id`/`gen_ai.conversation.id` become
`mlflow.trace.user`/`mlflow.trace.session`; token usage is summed over the top-most spans
that report it (a parent that reports a rollup is not added to its children again); the
request/response previews are the root's inputs/outputs as MLflow's `_get_truncated_preview`
makes them (the text of the last user/assistant message of a chat payload, else the JSON;
cut at 1,000 characters with "..."); metadata `mlflow.traceInputs`/`mlflow.traceOutputs` are
the root's raw inputs/outputs cut at 250 characters with "..." ("" when absent), as MLflow's
client writes them.

Nothing here reads a clock: the JSON is a function of the spans (sorted root first, then by
start time and span id), the experiment and the incomplete reason, so a replay emits the
same bytes and the worker's Redis guard makes the duplicate harmless.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from stream.assembler._otlp import SpanRecord
from stream.assembler._translate import INPUTS, OUTPUTS, usage_of

__all__ = ["INCOMPLETE_TAG", "build_trace"]

INCOMPLETE_TAG = "tracewatch.incomplete"
"""Tag set to `"true"` on a trace emitted before it was complete; `tracewatch.incomplete_reason` says why."""

_PREVIEW_CHARS = 1000
_META_PREVIEW_CHARS = 250
_TAG_PREFIX = "mlflow.traceTag."


def _rfc3339_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _plain(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _sort_key(r: SpanRecord) -> tuple[int, int, str]:
    return (0 if r.parent_hex is None else 1, r.start_ns, r.span_hex)


def _usage_total(records: list[SpanRecord]) -> dict[str, int] | None:
    """Sum usage over spans with no ancestor that reports usage (MLflow's tree-aware rollup)."""
    by_id = {r.span_hex: r for r in records}
    usage = {r.span_hex: u for r in records if (u := usage_of(r.span["attributes"]))}
    if not usage:
        return None
    total: dict[str, int] = {}
    for span_hex, u in sorted(usage.items()):
        parent, seen = by_id[span_hex].parent_hex, 0
        covered = False
        while parent is not None and parent in by_id and seen < len(by_id):
            if parent in usage:
                covered = True
                break
            parent, seen = by_id[parent].parent_hex, seen + 1
        if not covered:
            for k, v in u.items():
                total[k] = total.get(k, 0) + v
    return total


def _messages(obj: Any) -> list[dict[str, Any]] | None:
    """Chat messages of a request/response payload (MLflow's `_try_extract_messages`)."""
    if not isinstance(obj, dict):
        return None
    if (messages := obj.get("messages")) and isinstance(messages, list):
        return [m for m in messages if _is_message(m)]
    choices = obj.get("choices")
    if choices and isinstance(choices, list) and isinstance(choices[0], dict):
        msg = choices[0].get("message")
        if msg and _is_message(msg):
            return [msg]
    for key in ("input", "output"):
        if (items := obj.get(key)) and isinstance(items, list):
            return [m for m in items if _is_message(m)]
    if "request" in obj:
        return _messages(obj["request"])
    return None


def _is_message(item: Any) -> bool:
    return isinstance(item, dict) and "role" in item and "content" in item


def _message_text(msg: dict[str, Any]) -> str:
    content = msg.get("content")
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                return part
            if isinstance(part, dict) and part.get("type") in ("text", "output_text"):
                text = part.get("text")
                return text if isinstance(text, str) else ""
        return ""
    return content if isinstance(content, str) else ""


def _preview(raw: str, role: str) -> str:
    """MLflow's `_get_truncated_preview` of a root's JSON-encoded inputs/outputs."""
    content = None
    if messages := _messages(_plain(raw)):
        msg = next((m for m in reversed(messages) if m.get("role") == role), messages[-1])
        content = _message_text(msg)
    content = content or raw
    return content if len(content) <= _PREVIEW_CHARS else content[: _PREVIEW_CHARS - 3] + "..."


def _meta_preview(raw: str | None) -> str:
    if not raw:
        return ""
    return raw if len(raw) <= _META_PREVIEW_CHARS else raw[: _META_PREVIEW_CHARS - 3] + "..."


def _str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def build_trace(
    trace_hex: str,
    spans: Mapping[str, SpanRecord],
    *,
    experiment_id: str,
    incomplete_reason: str | None = None,
) -> dict[str, Any]:
    """The MLflow trace dict for one trace's spans (see the module docstring)."""
    records = sorted(spans.values(), key=_sort_key)
    root = next((r for r in records if r.parent_hex is None), None)
    start_ms = min(r.start_ns for r in records) // 1_000_000
    ends = [r.end_ns for r in records if r.end_ns]
    tags: dict[str, str] = {}
    meta: dict[str, str] = {"mlflow.trace_schema.version": "3"}
    resource = next((r.resource for r in records if r.resource), {})
    for key in sorted(resource):
        if not key.startswith(("telemetry.sdk.", "mlflow.")):
            tags[key] = _str(resource[key])
    state = "IN_PROGRESS"
    info_extra: dict[str, Any] = {}
    if root is not None:
        attrs = root.span["attributes"]
        state = "ERROR" if root.error else "OK"
        tags["mlflow.traceName"] = root.span["name"]
        for key in attrs:
            if key.startswith(_TAG_PREFIX):
                tags[key[len(_TAG_PREFIX) :]] = _str(_plain(attrs[key]))
        if (inputs := attrs.get(INPUTS)) is not None:
            info_extra["request_preview"] = _preview(inputs, "user")
        if (outputs := attrs.get(OUTPUTS)) is not None:
            info_extra["response_preview"] = _preview(outputs, "assistant")
        meta["mlflow.traceInputs"] = _meta_preview(attrs.get(INPUTS))
        meta["mlflow.traceOutputs"] = _meta_preview(attrs.get(OUTPUTS))
    for r in records:
        attrs = r.span["attributes"]
        user = _plain(attrs.get("user.id"))
        session = _plain(attrs.get("session.id") or attrs.get("gen_ai.conversation.id"))
        if user is not None and "mlflow.trace.user" not in meta:
            meta["mlflow.trace.user"] = _str(user)
        if session is not None and "mlflow.trace.session" not in meta:
            meta["mlflow.trace.session"] = _str(session)
    if usage := _usage_total(records):
        meta["mlflow.trace.tokenUsage"] = json.dumps(usage)
    if incomplete_reason is not None:
        tags[INCOMPLETE_TAG] = "true"
        tags["tracewatch.incomplete_reason"] = incomplete_reason
    info: dict[str, Any] = {
        "trace_id": f"tr-{trace_hex}",
        "client_request_id": None,
        "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}},
        "request_time": _rfc3339_ms(start_ms),
        "state": state,
        "trace_metadata": meta,
        "tags": dict(sorted(tags.items())),
        **info_extra,
        "execution_duration_ms": (max(ends) // 1_000_000 - start_ms) if ends else None,
    }
    return {"info": info, "data": {"spans": [r.span for r in records]}}
