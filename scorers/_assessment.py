"""Assessment entities: what a scorer returns (`Feedback`) and what the sinks store (`Assessment`).

Field names follow MLflow (`source_type`, `error_code`, ...) so code written for
`mlflow.entities` ports by changing an import; short aliases (`type`, `code`) exist too.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = [
    "Assessment",
    "AssessmentError",
    "AssessmentSource",
    "AssessmentSourceType",
    "Expectation",
    "Feedback",
    "Outcome",
    "State",
    "assessments_for",
    "numeric_value",
    "outcome_of",
]

Outcome = Literal["pass", "fail", "error", "value"]
"""How an assessment counts in aggregates and the `result` metric label."""

State = Literal["scored", "error", "skipped"]
"""The one final state of a sampled (trace, scorer) pair."""


class AssessmentSourceType:
    HUMAN = "HUMAN"
    CODE = "CODE"
    LLM_JUDGE = "LLM_JUDGE"


@dataclass(slots=True, frozen=True)
class AssessmentSource:
    """Who produced an assessment: a human, code, or an LLM judge, and which one."""

    source_type: str = AssessmentSourceType.CODE
    source_id: str = "tracewatch"

    @property
    def type(self) -> str:
        return self.source_type

    @property
    def id(self) -> str:
        return self.source_id

    def to_dict(self) -> dict[str, str]:
        return {"source_type": self.source_type, "source_id": self.source_id}


@dataclass(slots=True, frozen=True)
class AssessmentError:
    """Why a scorer could not produce a value (`SCORER_ERROR`, `JUDGE_TIMEOUT`, ...)."""

    error_code: str
    error_message: str = ""
    stack_trace: str | None = None

    @property
    def code(self) -> str:
        return self.error_code

    @property
    def message(self) -> str:
        return self.error_message

    def to_dict(self) -> dict[str, Any]:
        return {
            "error_code": self.error_code,
            "error_message": self.error_message,
            "stack_trace": self.stack_trace,
        }


DEFAULT_SOURCE = AssessmentSource(AssessmentSourceType.CODE, "default")
"""MLflow's source for a `Feedback` built without one (`CODE`/`default`)."""


@dataclass(slots=True)
class Feedback:
    """A scorer's verdict on a trace, as in `mlflow.entities.Feedback`.

    Exactly one of `value` and `error` is meaningful: a feedback with `error` set has no value.
    `error` is normalised as MLflow does: an exception becomes an `AssessmentError` named
    after its class with its stack trace, a string one with code `ASSESSMENT_ERROR` (before,
    a string error was lost and the feedback stored as a value of None). `source` stays None
    when not given so a scorer can tell "unset" apart; the scorer that returns the feedback
    fills it with `DEFAULT_SOURCE` as MLflow does. The id/validity fields are only set on
    assessments read back from a trace (`Trace.search_assessments`).

    Raises:
        TypeError: `error` is not an exception, an `AssessmentError`, a string or None.
    """

    value: Any = None
    rationale: str | None = None
    name: str | None = None
    source: AssessmentSource | None = None
    metadata: dict[str, Any] | None = None
    error: AssessmentError | Exception | str | None = None
    span_id: str | None = None
    trace_id: str | None = None
    assessment_id: str | None = None
    valid: bool | None = True
    overrides: str | None = None

    def __post_init__(self) -> None:
        err = self.error
        if err is None or type(err) is AssessmentError:
            return
        if isinstance(err, Exception):
            self.error = AssessmentError(type(err).__name__, str(err), stack_trace_of(err))
        elif isinstance(err, str):
            self.error = AssessmentError("ASSESSMENT_ERROR", err)
        elif not isinstance(err, AssessmentError):
            raise TypeError(f"'error' must be an Exception, AssessmentError, or string. Got: {type(err)}")


def stack_trace_of(exc: BaseException) -> str:
    """An exception's stack trace as MLflow stores it: its repr, then the formatted traceback."""
    msg = repr(exc)
    try:
        return (msg + "".join(traceback.format_exception(exc))).strip()
    except Exception:  # formatting a hostile exception must not lose the feedback
        return msg


@dataclass(slots=True)
class Expectation:
    """Ground truth for a trace (an expected answer, facts, documents, tool calls)."""

    name: str
    value: Any
    source: AssessmentSource | None = None
    metadata: dict[str, Any] | None = None
    span_id: str | None = None
    trace_id: str | None = None
    assessment_id: str | None = None
    valid: bool | None = None
    overrides: str | None = None


def assessment_from_wire(item: Mapping[str, Any]) -> Feedback | Expectation | None:
    """The entity for one wire assessment of a trace (`info.assessments[i]`), None if neither kind.

    Read on demand (`Trace.search_assessments`), never on the decode path. Expectation values
    stored serialized (`serialized_value`) are decoded, as MLflow does.
    """
    name = item.get("assessment_name")
    src = item.get("source")
    source = (
        AssessmentSource(
            str(src.get("source_type") or AssessmentSourceType.CODE), str(src.get("source_id") or "default")
        )
        if isinstance(src, Mapping)
        else DEFAULT_SOURCE
    )
    common: dict[str, Any] = {
        "span_id": item.get("span_id"),
        "trace_id": item.get("trace_id"),
        "assessment_id": item.get("assessment_id"),
        "overrides": item.get("overrides"),
        "metadata": item.get("metadata"),
    }
    fb = item.get("feedback")
    if isinstance(fb, Mapping):
        err = fb.get("error")
        error = (
            AssessmentError(
                str(err.get("error_code") or ""), str(err.get("error_message") or ""), err.get("stack_trace")
            )
            if isinstance(err, Mapping)
            else None
        )
        return Feedback(
            value=fb.get("value"),
            rationale=item.get("rationale"),
            name=str(name),
            source=source,
            error=error,
            valid=item.get("valid"),  # absent on the wire: None, as MLflow reads it
            **common,
        )
    exp = item.get("expectation")
    if isinstance(exp, Mapping):
        value: Any = exp.get("value")
        ser = exp.get("serialized_value")
        if "value" not in exp and isinstance(ser, Mapping) and isinstance(ser.get("value"), str):
            try:
                value = orjson.loads(ser["value"])
            except orjson.JSONDecodeError:
                value = ser["value"]
        # MLflow's Expectation has no validity of its own: it reads back as None.
        return Expectation(name=str(name), value=value, source=source, valid=None, **common)
    return None


_PASS = {"yes", "pass", "true"}
_FAIL = {"no", "fail", "false"}


def outcome_of(value: Any, error: AssessmentError | None) -> Outcome:
    """Classify a result: bools and "yes"/"no" are pass/fail, numbers are values."""
    if error is not None:
        return "error"
    if isinstance(value, bool):
        return "pass" if value else "fail"
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _PASS:
            return "pass"
        if low in _FAIL:
            return "fail"
    return "value"


def numeric_value(value: Any) -> float | None:
    """The number an aggregate or histogram sees: bools and yes/no as 1/0, else numbers."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _PASS:
            return 1.0
        if low in _FAIL:
            return 0.0
    return None


@dataclass(slots=True)
class Assessment:
    """One stored result: a scorer's feedback on a trace, or the record of why there is none.

    `state` is the pair's final state; `skip_reason` is set only when `state == "skipped"`.
    """

    trace_id: str
    experiment_id: str
    scorer: str
    name: str
    scorer_version: int = 1
    value: Any = None
    rationale: str | None = None
    error: AssessmentError | None = None
    source: AssessmentSource = field(default_factory=AssessmentSource)
    duration_s: float = 0.0
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    state: State = "scored"
    skip_reason: str | None = None
    metadata: Mapping[str, Any] | None = None
    trace_end_ms: int | None = None
    run_id: str = ""  # distinguishes re-runs of the same scorer version (e.g. on new ground truth)
    _json: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def outcome(self) -> Outcome:
        return outcome_of(self.value, self.error)

    @property
    def numeric(self) -> float | None:
        return None if self.error is not None else numeric_value(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "experiment_id": self.experiment_id,
            "scorer": self.scorer,
            "scorer_version": self.scorer_version,
            "name": self.name,
            "state": self.state,
            "skip_reason": self.skip_reason,
            "value": self.value,
            "outcome": self.outcome if self.state != "skipped" else None,
            "rationale": self.rationale,
            "error": None if self.error is None else self.error.to_dict(),
            "source": self.source.to_dict(),
            "duration_s": self.duration_s,
            "created_ms": self.created_ms,
            # A Mapping as given; anything else only comes from reading back a record whose
            # metadata was unwritable (stored as its repr), and is kept as it is.
            "metadata": (dict(self.metadata) if isinstance(self.metadata, Mapping) else self.metadata) or None,
            "trace_end_ms": self.trace_end_ms,
            "run_id": self.run_id or None,
        }

    def to_json(self) -> bytes:
        """The wire and storage form, computed once (the worker sends it to Kafka and Redis).

        Values JSON cannot hold (huge integers, odd nesting) are kept as their `repr`.
        Never raises: an assessment that cannot be written would fail the worker's flush on
        every restart (a crash loop on one message), so when `value` and `metadata` are not
        the only culprits, every field is made writable (`_writable`) as a last resort.
        """
        data = self._json
        if data is None:
            d = self.to_dict()
            try:
                data = orjson.dumps(d, default=str, option=orjson.OPT_NON_STR_KEYS)
            except (orjson.JSONEncodeError, TypeError):
                # Only the culprits change, so a stored record read back and written again is
                # byte-identical: `value` and `metadata` whole, as their repr; any other field
                # (a 65-bit `trace_end_ms`, a lone surrogate in an id) made writable in place.
                for key in ("value", "metadata"):
                    if not _dumps_ok(d[key]):
                        d[key] = _safe_repr(d[key])
                safe = {k: v if k in ("value", "metadata") else _writable(v) for k, v in d.items()}
                data = orjson.dumps(safe, default=str, option=orjson.OPT_NON_STR_KEYS)
            self._json = data
        return data

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Assessment:
        err = d.get("error")
        src = d.get("source") or {}
        return cls(
            trace_id=d["trace_id"],
            experiment_id=d.get("experiment_id", "0"),
            scorer=d["scorer"],
            name=d.get("name") or d["scorer"],
            scorer_version=int(d.get("scorer_version", 1)),
            value=d.get("value"),
            rationale=d.get("rationale"),
            error=None
            if not err
            else AssessmentError(err["error_code"], err.get("error_message", ""), err.get("stack_trace")),
            source=AssessmentSource(
                src.get("source_type", AssessmentSourceType.CODE), src.get("source_id", "tracewatch")
            ),
            duration_s=float(d.get("duration_s", 0.0)),
            created_ms=int(d.get("created_ms", 0)),
            state=d.get("state", "scored"),
            skip_reason=d.get("skip_reason"),
            metadata=d.get("metadata"),
            trace_end_ms=d.get("trace_end_ms"),
            run_id=d.get("run_id") or "",
        )


_MAX_DEPTH = 64  # well under orjson's recursion limit (254)


def _dumps_ok(value: Any) -> bool:
    """Whether `to_json`'s first attempt could write `value` as it is."""
    try:
        orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return False
    return True


def _safe_repr(value: Any) -> str:
    """`repr(value)` as text JSON can hold; never raises (a 5,000-digit int has no repr)."""
    try:
        text = repr(value)
    except Exception:  # repr of arbitrary scorer output: any error means "no repr", never a crash
        text = f"<unrepresentable {type(value).__name__}>"
    return _utf8_text(text)


def _utf8_text(text: str) -> str:
    """`text`, with lone surrogates (which UTF-8 and so JSON cannot hold) escaped."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _writable(value: Any, depth: int = 0) -> Any:
    """A copy of a JSON-like tree that orjson can always write: the last-resort form.

    Integers outside 64 bits and objects JSON has no form for become their `repr`, strings
    lose lone surrogates, keys become strings, and nesting deeper than `_MAX_DEPTH` is cut.
    """
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else _safe_repr(value)
    if isinstance(value, str):
        return _utf8_text(value)
    if depth >= _MAX_DEPTH:
        return _safe_repr(value)
    if isinstance(value, Mapping):
        return {
            (_utf8_text(k) if isinstance(k, str) else _safe_repr(k)): _writable(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_writable(v, depth + 1) for v in value]
    return _safe_repr(value)


_CODE_SOURCE_CACHE: dict[str, AssessmentSource] = {}


def assessments_for(
    trace_id: str,
    experiment_id: str,
    scorer: str,
    *,
    feedbacks: list[Feedback],
    skip_reason: str | None = None,
    duration_s: float = 0.0,
    version: int = 1,
    trace_end_ms: int | None = None,
    created_ms: int | None = None,
    run_id: str = "",
) -> list[Assessment]:
    """The stored records of one sampled (trace, scorer) pair: one per feedback, or one skip.

    This is the single place where a scorer's output becomes `Assessment`s, shared by the
    worker and offline evaluation so both store exactly the same thing.
    """
    now = created_ms if created_ms is not None else int(time.time() * 1000)
    if skip_reason is not None or not feedbacks:
        return [
            Assessment(
                trace_id=trace_id,
                experiment_id=experiment_id,
                scorer=scorer,
                name=scorer,
                scorer_version=version,
                duration_s=duration_s,
                created_ms=now,
                state="skipped",
                skip_reason=skip_reason or "no_result",
                trace_end_ms=trace_end_ms,
                run_id=run_id,
            )
        ]
    out: list[Assessment] = []
    for fb in feedbacks:
        err = fb.error if isinstance(fb.error, AssessmentError) else None
        src = fb.source
        if src is None:
            src = _CODE_SOURCE_CACHE.get(scorer)
            if src is None:
                src = _CODE_SOURCE_CACHE.setdefault(scorer, AssessmentSource(AssessmentSourceType.CODE, scorer))
        out.append(
            Assessment(
                trace_id=trace_id,
                experiment_id=experiment_id,
                scorer=scorer,
                name=fb.name or scorer,
                scorer_version=version,
                value=None if err is not None else fb.value,
                rationale=fb.rationale,
                error=err,
                source=src,
                duration_s=duration_s,
                created_ms=now,
                state="error" if err is not None else "scored",
                metadata=fb.metadata,
                trace_end_ms=trace_end_ms,
                run_id=run_id,
            )
        )
    return out
