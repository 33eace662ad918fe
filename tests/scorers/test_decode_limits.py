"""The decoder's bounds (issue 11, breaks 1 and 6): a bad time or an over-long id is a DecodeError.

A value the decoder lets through ends up in an assessment (`trace_end_ms`), a Redis key or a
metric label, so the property test below checks the whole promise: whatever one field of a
real trace is mutated to, decoding either gives a trace whose assessments can be written and
read back, or raises `DecodeError` with a known reason; never any other exception.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorers import (
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_TIME_MS,
    MAX_TIME_NS,
    Assessment,
    AssessmentError,
    DecodeError,
    Feedback,
    assessments_for,
    decode_trace,
    scorer,
    trace_from_dict,
)
from scorers._trace import TraceInfo
from tests.conftest import FIXTURES

U64_MAX = 2**64 - 1
FIXTURE = orjson.loads((FIXTURES / "mlflow_trace_01_ok_acme.json").read_bytes())


def mutated(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """The fixture with the field at `path` set to `value`."""
    trace: dict[str, Any] = copy.deepcopy(FIXTURE)
    node: Any = trace
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return trace


def reason_of(trace: dict[str, Any]) -> str:
    with pytest.raises(DecodeError) as info:
        decode_trace(orjson.dumps(trace))
    return info.value.reason


EXPERIMENT = ("info", "trace_location", "mlflow_experiment", "experiment_id")


# -- break 1: times and durations ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("info", "request_time"), U64_MAX),
        (("info", "request_time"), MAX_TIME_MS + 1),
        (("info", "request_time"), -1),
        (("info", "request_time"), 1.5e12),
        (("info", "request_time"), True),
        (("info", "request_time"), "yesterday"),
        (("info", "request_time"), "0001-01-01T00:00:00Z"),  # parses, but before the epoch
        (("info", "request_time"), {"seconds": 1}),
        (("info", "execution_duration_ms"), U64_MAX),
        (("info", "execution_duration_ms"), -5),
        (("info", "execution_duration_ms"), 2.5),
        (("info", "execution_duration_ms"), "soon"),
        (("data", "spans", 0, "start_time_unix_nano"), U64_MAX),
        (("data", "spans", 0, "end_time_unix_nano"), -1),
        (("data", "spans", 1, "end_time_unix_nano"), str(2**64)),
    ],
)
def test_times_out_of_range_are_bad_value(path, value) -> None:
    assert reason_of(mutated(path, value)) == "bad_value"


def test_span_times_of_the_wrong_type_stay_bad_spans() -> None:
    assert reason_of(mutated(("data", "spans", 0, "start_time_unix_nano"), 1.5)) == "bad_spans"
    assert reason_of(mutated(("data", "spans", 0, "start_time_unix_nano"), "abc")) == "bad_spans"


@pytest.mark.parametrize(
    ("path", "value", "ms"),
    [
        (("info", "request_time"), MAX_TIME_MS, MAX_TIME_MS),
        (("info", "request_time"), 0, 0),
        (("info", "request_time"), "1795726192975", 1795726192975),  # proto3 JSON writes int64 as text
        (("info", "request_time"), "2026-11-26T20:49:52.975123456Z", 1795726192975),
    ],
)
def test_times_in_range_decode(path, value, ms) -> None:
    trace = decode_trace(orjson.dumps(mutated(path, value)))
    assert trace.info.timestamp_ms == ms


def test_edge_times_give_an_end_that_can_be_written() -> None:
    trace = decode_trace(orjson.dumps(mutated(("info", "execution_duration_ms"), 10**15)))
    start = trace.info.timestamp_ms
    assert start is not None and trace.info.end_ms == start + 10**15
    trace = decode_trace(orjson.dumps(mutated(("info", "execution_duration_ms"), 2**53 - 1)))
    assert trace.info.end_ms is None  # the sum is past the bound: unknown rather than inexact
    trace = decode_trace(orjson.dumps(mutated(("info", "request_time"), MAX_TIME_MS)))
    assert trace.info.end_ms is None  # request time plus 50 ms is past the bound: unknown, not wrong
    [a] = assessments_for(trace.trace_id, trace.experiment_id, "s", feedbacks=[Feedback(1)], trace_end_ms=trace.info.end_ms)
    assert orjson.loads(a.to_json())["trace_end_ms"] is None


def test_a_hand_built_info_never_yields_an_unwritable_end() -> None:
    """`TraceInfo` built without the decoder (tests, SDK code) is bounded as well."""
    info = TraceInfo("t", "0", "OK", U64_MAX, 50, {}, {})
    assert info.timestamp_ms is None and info.end_ms is None
    info = TraceInfo("t", "0", "OK", 1_000, U64_MAX, {}, {})
    assert info.end_ms == 1_000  # an unusable duration counts as zero


@pytest.mark.parametrize(
    "kwargs",
    [
        {"trace_end_ms": U64_MAX + 50},
        {"created_ms": -(2**70)},
        {"trace_id": "tr-\ud800"},
        {"value": 10**5000},  # has no repr: Python refuses to print 5,000 digits
        {"metadata": {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}},
        {"metadata": {2**70: "key past 64 bits", "x": U64_MAX + 1}},
        {"rationale": "lone \udfff surrogate"},
    ],
)
def test_assessment_json_never_raises(kwargs) -> None:
    base: dict[str, Any] = {"trace_id": "tr-1", "experiment_id": "1", "scorer": "s", "name": "s", "value": 1}
    a = Assessment(**(base | kwargs))
    data = a.to_json()
    again = Assessment.from_dict(orjson.loads(data))
    assert again.to_json() == data


# -- break 6: ids and names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (EXPERIMENT, "x" * (MAX_ID_CHARS + 1)),
        (EXPERIMENT, "e" * 1_000_000),
        (EXPERIMENT, {"id": 1}),
        (EXPERIMENT, 1.5),
        (EXPERIMENT, U64_MAX),  # as an integer it must fit 63 bits
        (("info", "trace_metadata", "mlflow.trace.user"), "u" * (MAX_ID_CHARS + 1)),
        (("info", "trace_metadata", "mlflow.trace.session"), "s" * (MAX_ID_CHARS + 1)),
        (("info", "trace_metadata", "mlflow.trace.session"), ["not", "an", "id"]),
    ],
)
def test_over_long_or_mistyped_ids_are_bad_id(path, value) -> None:
    assert reason_of(mutated(path, value)) == "bad_id"


def test_ids_at_the_limit_decode() -> None:
    exp = "é" * MAX_ID_CHARS  # characters, not bytes
    assert decode_trace(orjson.dumps(mutated(EXPERIMENT, exp))).experiment_id == exp
    assert decode_trace(orjson.dumps(mutated(EXPERIMENT, 42))).experiment_id == "42"
    trace = mutated(("info", "trace_metadata", "mlflow.trace.user"), "u" * MAX_ID_CHARS)
    assert decode_trace(orjson.dumps(trace)).info.user == "u" * MAX_ID_CHARS


def test_trace_id_limit_keeps_its_reason() -> None:
    assert reason_of(mutated(("info", "trace_id"), "t" * (MAX_ID_CHARS + 1))) == "bad_trace_id"


def test_ids_that_cannot_be_utf8_are_refused_from_dicts() -> None:
    """A dict from Python (the publisher) can hold a lone surrogate; no key or JSON can."""
    with pytest.raises(DecodeError, match="bad_trace_id"):
        trace_from_dict(mutated(("info", "trace_id"), "tr-\ud800"))
    with pytest.raises(DecodeError, match="bad_id"):
        trace_from_dict(mutated(EXPERIMENT, "exp-\udc00"))


def test_scorer_names_are_bounded() -> None:
    from scorers import ScorerDefinitionError
    from scorers._scorer import Scorer

    Scorer(lambda outputs: True, name="n" * MAX_NAME_CHARS)
    with pytest.raises(ScorerDefinitionError, match="limit"):
        Scorer(lambda outputs: True, name="n" * (MAX_NAME_CHARS + 1))


def test_returned_feedback_names_are_bounded() -> None:
    trace = decode_trace(orjson.dumps(FIXTURE))

    @scorer
    def long_name(outputs: Any) -> Feedback:
        return Feedback(value=True, name="n" * (MAX_NAME_CHARS + 1))

    @scorer
    def long_in_list(outputs: Any) -> list[Feedback]:
        return [Feedback(value=True, name="ok"), Feedback(value=True, name="n" * 10_000)]

    for s in (long_name, long_in_list):
        [fb] = s.run(trace).feedbacks
        assert isinstance(fb.error, AssessmentError) and fb.error.code == "SCORER_ERROR" and fb.name == s.name


# -- the property: decode or DecodeError, and what decodes can be written -------------------

_FIELDS: list[tuple[Any, ...]] = [
    ("info", "trace_id"),
    ("info", "request_time"),
    ("info", "execution_duration_ms"),
    ("info", "state"),
    ("info", "tags"),
    ("info", "trace_metadata"),
    ("info", "trace_metadata", "mlflow.trace.user"),
    ("info", "trace_metadata", "mlflow.trace.session"),
    ("info", "assessments"),
    ("info", "trace_location"),
    ("info", "client_request_id"),
    EXPERIMENT,
    ("info",),
    ("data",),
    ("data", "spans"),
    ("data", "spans", 0),
    ("data", "spans", 0, "span_id"),
    ("data", "spans", 0, "start_time_unix_nano"),
    ("data", "spans", 0, "end_time_unix_nano"),
    ("data", "spans", 0, "attributes"),
    ("data", "spans", 0, "events"),
    ("data", "spans", 1, "parent_span_id"),
]
_EXTREME_INTS = st.sampled_from(
    [0, -1, 1, 2**31, 2**53 - 1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), U64_MAX, 2**64, 10**30, -(10**30)]
)
_ODD_TEXT = st.sampled_from(["", "\x00", "\x1f", "\x1e", ":", "%", "{}", "\u202e", "\ufeff", "👍" * 3, "a\nb", "\udfff"])
_VALUES = st.one_of(
    _EXTREME_INTS,
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=40),
    _ODD_TEXT,
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "😀", "\x1f"]), st.sampled_from([255, 256, 257, 5000, 70_000])),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.integers(0, 10**20).map(str),  # digit strings, as proto3 JSON writes int64
    st.sampled_from(["2026-11-26T20:49:52.975Z", "0001-01-01T00:00:00", "9999-12-31T23:59:59+14:00", "2026-13-40"]),
)


def _check_decodes_or_refuses(decode: Any, payload: Any) -> None:
    try:
        trace = decode(payload)
    except DecodeError as exc:
        assert exc.reason in DecodeError.REASONS
        return
    end_ms = trace.info.end_ms
    assert end_ms is None or 0 <= end_ms <= MAX_TIME_MS
    for span in trace.spans:
        assert 0 <= span.start_ns <= MAX_TIME_NS
    assert len(trace.experiment_id) <= MAX_ID_CHARS and len(trace.trace_id) <= MAX_ID_CHARS
    for a in assessments_for(trace.trace_id, trace.experiment_id, "s", feedbacks=[Feedback(True)], trace_end_ms=end_ms):
        data = a.to_json()
        back = Assessment.from_dict(orjson.loads(data))
        assert (back.trace_id, back.experiment_id, back.trace_end_ms) == (trace.trace_id, trace.experiment_id, end_ms)
        assert back.to_json() == data


_FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(path=st.sampled_from(_FIELDS), value=_VALUES)
def test_one_mutated_field_decodes_or_is_a_decode_error(path, value) -> None:
    """As bytes on the wire (stdlib json writes what orjson will not: big ints, lone surrogates)."""
    trace = mutated(path, value)
    try:
        data = json.dumps(trace, allow_nan=True).encode("utf-8", "surrogatepass")
    except ValueError:  # Python will not print a > 4,300 digit int: no such bytes can exist
        return
    _check_decodes_or_refuses(decode_trace, data)


@_FAST
@given(path=st.sampled_from(_FIELDS), value=_VALUES)
def test_one_mutated_field_from_a_dict_decodes_or_is_a_decode_error(path, value) -> None:
    """As a Python dict (the publisher's path): values JSON bytes could never carry."""
    _check_decodes_or_refuses(trace_from_dict, mutated(path, value))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_random_bytes_decode_or_are_a_decode_error(data: bytes) -> None:
    _check_decodes_or_refuses(decode_trace, data)
