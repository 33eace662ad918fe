"""Events on the feedback topic: end-user feedback and ground-truth expectations.

The API writes them, the worker joins them with scores on `trace_id`. One JSON object per
message, keyed by trace id (so a trace's feedback lands in the partition of the same number
as its trace, and one worker owns both sides of the join):

    {"kind": "feedback", "event_id": "...", "trace_id": "tr-...", "name": "user_satisfaction",
     "value": true, "rationale": null, "source": {"source_type": "HUMAN", "source_id": "u-1"},
     "metadata": {}, "created_ms": 1790000000000}
    {"kind": "expectation", ... same fields, value = the ground truth ...}

plus `"error"` (MLflow's `AssessmentError`: a feedback with no value says why) and
`"span_id"` when the sender gave them.

A vote is identified by (trace_id, name, source_id): a new vote of the same user replaces
the old one, it is never added to it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from scorers import MAX_ID_CHARS, MAX_NAME_CHARS, MAX_TIME_MS, DecodeError

__all__ = ["FeedbackEvent", "thumb_of"]

Kind = Literal["feedback", "expectation"]
_UP = frozenset({"up", "thumbs_up", "yes", "true", "1", "positive", "👍"})
_DOWN = frozenset({"down", "thumbs_down", "no", "false", "0", "negative", "👎"})


def thumb_of(value: Any) -> str | None:
    """`"up"`, `"down"` for a boolean-like feedback value (thumbs), else None."""
    if isinstance(value, bool):
        return "up" if value else "down"
    if isinstance(value, (int, float)) and value in (0, 1):
        return "up" if value == 1 else "down"
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _UP:
            return "up"
        if low in _DOWN:
            return "down"
    return None


@dataclass(slots=True)
class FeedbackEvent:
    """One feedback or expectation as it travels on the feedback topic."""

    kind: Kind
    trace_id: str
    name: str
    value: Any
    source_type: str = "HUMAN"
    source_id: str = "anonymous"
    rationale: str | None = None
    metadata: dict[str, Any] | None = None
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    error: dict[str, Any] | None = None
    """MLflow's `AssessmentError` (`error_code`, `error_message`, `stack_trace`): why no value."""
    span_id: str | None = None
    """The span the feedback or expectation is about (MLflow's `span_id`)."""

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "kind": self.kind,
            "event_id": self.event_id,
            "trace_id": self.trace_id,
            "name": self.name,
            "value": self.value,
            "rationale": self.rationale,
            "source": {"source_type": self.source_type, "source_id": self.source_id},
            "metadata": self.metadata or {},
            "created_ms": self.created_ms,
        }
        # Only when set, so events without them are the same bytes as before they existed.
        if self.error is not None:
            doc["error"] = self.error
        if self.span_id is not None:
            doc["span_id"] = self.span_id
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, data: bytes) -> FeedbackEvent:
        """Parse one event.

        Ids and names become Redis keys and metric labels, so they are bounded here, where
        the topic's messages enter (the API bounds them too, but anyone may write the topic).

        Raises:
            DecodeError: `bad_id`: the trace id, user (source) id or event id is longer than
                `MAX_ID_CHARS`, or the name longer than `MAX_NAME_CHARS`; `bad_value`:
                `created_ms` is an integer outside `0..MAX_TIME_MS`.
            ValueError: not JSON, not an object, or a required field is missing or mistyped
                (the message names it). The worker dead-letters both.
        """
        try:
            d = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(d, dict):
            raise ValueError("event must be a JSON object")
        kind = d.get("kind", "feedback")
        if kind not in ("feedback", "expectation"):
            raise ValueError(f"kind must be feedback or expectation, got {kind!r}")
        tid, name = d.get("trace_id"), d.get("name")
        if not isinstance(tid, str) or not tid:
            raise ValueError("trace_id missing")
        if not isinstance(name, str) or not name:
            raise ValueError("name missing")
        _check_id(tid, "trace_id", MAX_ID_CHARS)
        _check_id(name, "name", MAX_NAME_CHARS)
        src_raw = d.get("source")
        src: dict[str, Any] = src_raw if isinstance(src_raw, dict) else {}
        created = d.get("created_ms")
        if isinstance(created, int) and (type(created) is bool or not 0 <= created <= MAX_TIME_MS):
            raise DecodeError("bad_value", f"created_ms must be an epoch time in ms in 0..{MAX_TIME_MS}")
        return cls(
            kind=kind,
            trace_id=tid,
            name=name,
            value=d.get("value"),
            source_type=_check_id(str(src.get("source_type") or "HUMAN"), "source.source_type", MAX_NAME_CHARS),
            source_id=_id_text(src.get("source_id"), "source.source_id") or "anonymous",
            rationale=d.get("rationale"),
            metadata=d.get("metadata") if isinstance(d.get("metadata"), dict) else None,
            created_ms=created if isinstance(created, int) else int(time.time() * 1000),
            event_id=_id_text(d.get("event_id"), "event_id") or uuid.uuid4().hex,
            error=_error_of(d.get("error")),
            span_id=_id_text(d.get("span_id"), "span_id") or None,
        )


def _error_of(value: Any) -> dict[str, Any] | None:
    """An event's `error`: an object with a string `error_code` of at most `MAX_NAME_CHARS`.

    Raises:
        ValueError: present but not such an object.
        DecodeError: `bad_id`: the code is too long.
    """
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("error_code"), str):
        raise ValueError("error must be an object with a string error_code")
    _check_id(value["error_code"], "error.error_code", MAX_NAME_CHARS)
    return value


def _check_id(text: str, what: str, limit: int) -> str:
    """Return `text` if it can be a key part: at most `limit` characters, writable as UTF-8."""
    if len(text) > limit:
        raise DecodeError("bad_id", f"{what} is {len(text)} characters, the limit is {limit}")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise DecodeError("bad_id", f"{what} is not valid Unicode (a lone surrogate)") from None
    return text


def _id_text(value: Any, what: str) -> str:
    """An optional id as text ("" when absent): a string, or an integer (as user ids often are)."""
    if not value:  # absent, null, "", 0 or false: the caller's default, as before
        return ""
    if type(value) is int and -(2**63) <= value < 2**64:
        return str(value)
    if not isinstance(value, str):
        raise DecodeError("bad_id", f"{what} must be a string or an integer, got {type(value).__name__}")
    return _check_id(value, what, MAX_ID_CHARS)
