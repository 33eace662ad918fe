"""What one tracewatch result looks like as an MLflow assessment (the REST JSON body).

Every assessment we write carries `metadata["tracewatch.result_id"]`: a stable id of the
result (not of its bytes), so a replay of the same result finds what an earlier attempt
wrote, whichever process made it:

- a scorer result: hash of (trace id, scorer, scorer version, name, run id): a re-score of
  the same pair on redelivery is the same result, a re-run on new ground truth a new one;
- a vote or expectation: its `event_id` (the API mints one per submission).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from scorers import Assessment, AssessmentSourceType

__all__ = [
    "CREATED_MS_KEY",
    "RESULT_ID_KEY",
    "UserEvent",
    "event_payload",
    "result_id",
    "score_payload",
    "source_id_of",
]

RESULT_ID_KEY = "tracewatch.result_id"
CREATED_MS_KEY = "tracewatch.created_ms"
_SOURCE_TYPES = frozenset({AssessmentSourceType.CODE, AssessmentSourceType.LLM_JUDGE, AssessmentSourceType.HUMAN})


@dataclass(slots=True, frozen=True)
class UserEvent:
    """A vote (`kind="feedback"`) or ground truth (`kind="expectation"`) from the feedback topic."""

    kind: Literal["feedback", "expectation"]
    trace_id: str
    name: str
    value: Any
    source_type: str
    source_id: str
    event_id: str
    created_ms: int
    rationale: str | None = None
    metadata: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    """Why a vote has no value: MLflow's `AssessmentError` (`error_code`, `error_message`, `stack_trace`)."""
    span_id: str | None = None
    """The span the vote or ground truth is about (the assessment's `span_id`); None: the whole trace."""


def result_id(a: Assessment) -> str:
    """The stable id of a scorer result (see the module docstring)."""
    key = "\x1f".join((a.trace_id, a.scorer, str(a.scorer_version), a.name, a.run_id))
    return hashlib.blake2b(key.encode("utf-8", "backslashreplace"), digest_size=16).hexdigest()


def source_id_of(a: Assessment) -> str:
    """The MLflow source id of a scorer result: the scorer and its version, `name@v3`."""
    return f"{a.scorer}@v{a.scorer_version}"


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Any) -> str:
    """MLflow metadata is a string map: non-strings go as JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _metadata(given: Any, ours: dict[str, str]) -> dict[str, str]:
    out = {str(k): _text(v) for k, v in given.items()} if isinstance(given, dict) else {}
    out.update(ours)
    return out


def _json_value(value: Any) -> Any:
    """A value protobuf's `Value` can carry (what MLflow stores for feedback)."""
    return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS))


def _error(given: dict[str, Any]) -> dict[str, str]:
    """MLflow's `AssessmentError`: its string fields that are set (non-strings as JSON)."""
    return {k: _text(given[k]) for k in ("error_code", "error_message", "stack_trace") if given.get(k) is not None}


def score_payload(a: Assessment, rid: str) -> dict[str, Any]:
    """A scorer result as an MLflow `Feedback` (CreateAssessment's `assessment` field)."""
    source_type = a.source.source_type if a.source.source_type in _SOURCE_TYPES else AssessmentSourceType.CODE
    feedback: dict[str, Any] = {"value": None if a.error is not None else _json_value(a.value)}
    if a.error is not None:
        feedback["error"] = {"error_code": a.error.error_code, "error_message": a.error.error_message}
    meta = {
        RESULT_ID_KEY: rid,
        CREATED_MS_KEY: str(a.created_ms),
        "tracewatch.scorer": a.scorer,
        "tracewatch.scorer_version": str(a.scorer_version),
        "tracewatch.duration_s": f"{a.duration_s:.6f}",
    }
    if a.source.source_id and a.source.source_id not in (a.scorer, "tracewatch"):
        meta["tracewatch.source_id"] = a.source.source_id  # a judge's model, say
    if a.run_id:
        meta["tracewatch.run_id"] = a.run_id
    body: dict[str, Any] = {
        "assessment_name": a.name,
        "trace_id": a.trace_id,
        "source": {"source_type": source_type, "source_id": source_id_of(a)},
        "create_time": _time(a.created_ms),
        "last_update_time": _time(a.created_ms),
        "feedback": feedback,
        "metadata": _metadata(a.metadata, meta),
    }
    if a.rationale is not None:
        body["rationale"] = a.rationale
    return body


def event_payload(e: UserEvent, *, overrides: str | None = None) -> dict[str, Any]:
    """A vote as an MLflow `Feedback` (overriding the user's earlier vote), ground truth as an `Expectation`.

    A vote with an `error` is a feedback without a value (MLflow's rule, as `log_feedback(error=...)`
    writes it); an expectation has no error in MLflow, so an event's `error` is not sent with one.
    """
    source_type = e.source_type if e.source_type in _SOURCE_TYPES else AssessmentSourceType.HUMAN
    body: dict[str, Any] = {
        "assessment_name": e.name,
        "trace_id": e.trace_id,
        "source": {"source_type": source_type, "source_id": e.source_id},
        "create_time": _time(e.created_ms),
        "last_update_time": _time(e.created_ms),
        "metadata": _metadata(e.metadata, {RESULT_ID_KEY: e.event_id, CREATED_MS_KEY: str(e.created_ms)}),
    }
    if e.kind == "expectation":
        if isinstance(e.value, (str, int, float, bool)) or e.value is None:
            body["expectation"] = {"value": e.value}
        else:  # lists and objects: MLflow stores them serialized, as its client does
            body["expectation"] = {"serialized_value": {"serialization_format": "JSON_FORMAT", "value": _text(e.value)}}
    elif e.error is not None:
        body["feedback"] = {"value": None, "error": _error(e.error)}
    else:
        body["feedback"] = {"value": _json_value(e.value)}
    if e.span_id:
        body["span_id"] = e.span_id
    if e.rationale is not None:
        body["rationale"] = e.rationale
    if overrides:
        body["overrides"] = overrides
    return body
