"""The scorers and trace probes both sides of the parity suite run, from this one file.

`mlflow_side.py` imports it in MLflow's venv with `TRACEWATCH_PARITY_SIDE=mlflow`; the test
imports it in ours. Only the import lines below differ, which is the promise under test:
a scorer written for MLflow runs with its imports changed. Everything after them uses
MLflow's public API only (no tracewatch extras), and the stdlib.
"""

from __future__ import annotations

import os
import re
from enum import Enum
from typing import Any

if os.environ.get("TRACEWATCH_PARITY_SIDE") == "mlflow":
    from mlflow.entities import AssessmentError, AssessmentSource, Feedback, SpanType
    from mlflow.genai.scorers import scorer
else:
    from scorers import AssessmentError, AssessmentSource, Feedback, SpanType, scorer

ERROR_TRACE_TOOL = re.compile(r"^lookup_")


# --- every return type -------------------------------------------------------------------------


@scorer
def ret_bool(outputs):
    return "email" in str(outputs)


@scorer
def ret_int(outputs):
    return len(str(outputs))


@scorer
def ret_float(trace):
    return trace.info.execution_duration / 1000


@scorer
def ret_str(inputs):
    return "yes" if inputs else "no"


@scorer
def ret_feedback(outputs):
    return Feedback(value=outputs is not None, rationale="checked the outputs")


@scorer
def ret_feedback_named(outputs):
    return Feedback(
        name="custom_name",
        value=1.5,
        rationale="r",
        source=AssessmentSource(source_type="HUMAN", source_id="me@example.com"),
        metadata={"k": "v"},
    )


@scorer
def ret_feedback_list(trace):
    return [Feedback(name="part_a", value=1), Feedback(name="part_b", value=False, rationale="b")]


@scorer
def ret_list_unnamed(trace):
    return [Feedback(value=1), Feedback(value=2)]


@scorer
def ret_none(trace):
    return None


@scorer
def ret_empty_list(trace):
    return []


@scorer
def ret_dict(trace):
    return {"score": 1}


@scorer
def ret_mixed_list(trace):
    return [Feedback(name="a", value=1), 2]


@scorer
def ret_ints(trace):
    return [1, 2]


# --- errors ------------------------------------------------------------------------------------


@scorer
def raises(outputs):
    raise ValueError("boom")


@scorer
def raises_empty(trace):
    raise RuntimeError


@scorer
def fb_error_exception(trace):
    return Feedback(error=ValueError("bad input"))


@scorer
def fb_error_text(trace):
    return Feedback(error="judge unavailable")


@scorer
def fb_error_object(trace):
    return Feedback(error=AssessmentError(error_code="CUSTOM_CODE", error_message="custom message"))


# --- missing arguments -------------------------------------------------------------------------


@scorer
def sees_outputs(outputs):
    return repr(outputs)[:40]


@scorer
def uses_outputs(outputs):
    return len(outputs["email"])  # TypeError on a trace whose root raised


@scorer
def sees_expectations(expectations):
    return repr(sorted(expectations))


@scorer
def exact_match(outputs, expectations):
    return outputs == expectations.get("expected_response")


# --- trace helpers -----------------------------------------------------------------------------


@scorer
def tool_spans(trace):
    return len(trace.search_spans(span_type=SpanType.TOOL))


@scorer
def regex_spans(trace):
    return ",".join(s.name for s in trace.search_spans(name=ERROR_TRACE_TOOL))


@scorer
def span_by_id(trace):
    first = trace.data.spans[-1]
    return [s.name for s in trace.search_spans(span_id=first.span_id)] == [first.name]


@scorer
def root_name(trace):
    return next(s.name for s in trace.data.spans if s.parent_id is None)


@scorer
def failed_spans(trace):
    return sum(1 for s in trace.data.spans if s.status.status_code == "ERROR")


@scorer
def human_feedback(trace):
    found = trace.search_assessments(type="feedback")
    if not found:
        return None
    return Feedback(value=len(found), rationale=",".join(a.name for a in found))


@scorer(aggregations=["mean", "min", "max", "median", "variance", "p90"])
def latency_s(trace):
    return trace.info.execution_duration / 1000


SCORERS = [
    v for v in list(globals().values()) if not isinstance(v, type) and hasattr(v, "aggregations") and hasattr(v, "run")
]


# --- trace probes ------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A JSON-able form of an accessor's value (enums as their value, entities summarised)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"<{type(value).__name__}>"


def _assessment(a: Any) -> dict[str, Any]:
    error = getattr(a, "error", None)
    return {
        "kind": type(a).__name__,
        "name": a.name,
        "value": plain(a.value),
        "valid": a.valid,
        "span_id": a.span_id,
        "source": [plain(a.source.source_type), a.source.source_id],
        "error_code": None if error is None else error.error_code,
        "rationale": getattr(a, "rationale", None),
        "assessment_id": a.assessment_id,
        "trace_id": a.trace_id,
        "overrides": a.overrides,
    }


def probe(trace: Any) -> dict[str, Any]:
    """Every accessor value a scorer can read, by path; a failing accessor records its error."""
    out: dict[str, Any] = {}

    def put(path: str, get: Any) -> None:
        try:
            out[path] = plain(get())
        except Exception as exc:  # a missing accessor is a difference, not a crash
            out[path] = f"<raised {type(exc).__name__}>"

    info = trace.info
    for attr in (
        "trace_id", "request_id", "state", "request_time", "execution_duration", "execution_time_ms",
        "timestamp_ms", "request_preview", "response_preview", "trace_metadata", "request_metadata",
        "tags", "client_request_id", "experiment_id",
    ):
        put(f"info.{attr}", lambda attr=attr: getattr(info, attr))
    put("info.assessments", lambda: [_assessment(a) for a in info.assessments])
    put("data.request", lambda: trace.data.request)
    put("data.response", lambda: trace.data.response)
    put("data.spans.count", lambda: len(trace.data.spans))
    try:
        spans = list(trace.data.spans)
    except Exception:  # no `trace.data`: every span accessor then counts as a difference
        spans = []
    for i, s in enumerate(spans):
        for attr in (
            "span_id", "parent_id", "trace_id", "request_id", "name", "span_type", "start_time_ns",
            "end_time_ns", "inputs", "outputs", "attributes",
        ):
            put(f"span[{i}].{attr}", lambda s=s, attr=attr: getattr(s, attr))
        put(f"span[{i}].status.status_code", lambda s=s: s.status.status_code)
        put(f"span[{i}].status.description", lambda s=s: s.status.description)
        put(f"span[{i}].get_attribute(spanType)", lambda s=s: s.get_attribute("mlflow.spanType"))
        put(f"span[{i}].get_attribute(absent)", lambda s=s: s.get_attribute("no.such.key"))
        put(f"span[{i}].events", lambda s=s: [[e.name, e.timestamp, e.attributes] for e in s.events])
        put(f"search_spans(span_id=span[{i}])", lambda s=s: [x.name for x in trace.search_spans(span_id=s.span_id)])
        put(f"search_spans(name=span[{i}])", lambda s=s: [x.span_id for x in trace.search_spans(name=s.name)])
    types = sorted(k for k in vars(SpanType) if k.isupper())
    out["SpanType"] = [[k, getattr(SpanType, k)] for k in types]
    for k in types:
        put(f"search_spans(span_type={k})", lambda k=k: [x.span_id for x in trace.search_spans(span_type=getattr(SpanType, k))])
    put("search_spans(name=regex)", lambda: [x.name for x in trace.search_spans(name=re.compile(r"email|^lookup"))])
    put("search_spans(TOOL, name=regex)", lambda: [x.name for x in trace.search_spans(SpanType.TOOL, re.compile("crm"))])
    put("search_spans(span_id=unknown)", lambda: trace.search_spans(span_id="0000000000000000"))
    put("search_assessments()", lambda: [_assessment(a) for a in trace.search_assessments()])
    put("search_assessments(all)", lambda: [_assessment(a) for a in trace.search_assessments(all=True)])
    put("search_assessments(feedback)", lambda: [a.name for a in trace.search_assessments(type="feedback")])
    put("search_assessments(expectation)", lambda: [a.name for a in trace.search_assessments(type="expectation")])
    put("search_assessments(name)", lambda: [a.valid for a in trace.search_assessments("user_thumbs", all=True)])
    put("search_assessments(span_id)", lambda: [a.name for a in trace.search_assessments(span_id="4f0d14b325d0152f")])
    return out


def feedback_fields(fb: Any) -> dict[str, Any]:
    """The compared fields of one recorded feedback (the same names on both sides)."""
    error = fb["error"]
    return {
        "name": fb["name"],
        "value": plain(fb["value"]),
        "rationale": fb["rationale"],
        "error_code": None if error is None else error["error_code"],
        "error_message": None if error is None else error["error_message"],
        "has_stack_trace": bool(error and error.get("stack_trace")),
        "source_type": plain(fb["source_type"]),
        "source_id": fb["source_id"],
        "metadata": plain(fb["metadata"] or {}),
    }
