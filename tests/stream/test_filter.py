"""The trace filter: parsing, error messages, evaluation, and a property test against a reference."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorers import trace_from_dict
from stream.registry._filter import FilterError, parse_filter

# -- building traces -----------------------------------------------------------------------


def make_trace(
    *,
    state: str = "OK",
    duration: int | None = 1500,
    request_time: int | str | None = 1_700_000_000_000,
    tags: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    spans: list[tuple[str, str | None, int, int]] | None = None,
) -> Any:
    """A trace from a model: spans are (name, type or None, start_ns, end_ns); the first is the root."""
    info: dict[str, Any] = {"trace_id": "tr-" + "0" * 32, "state": state, "tags": tags or {}}
    if duration is not None:
        info["execution_duration_ms"] = duration
    if request_time is not None:
        info["request_time"] = request_time
    if metadata is not None:
        info["trace_metadata"] = metadata
    raw_spans = []
    for i, (name, kind, start, end) in enumerate(spans or []):
        attrs = {} if kind is None else {"mlflow.spanType": json.dumps(kind)}
        raw_spans.append(
            {
                "span_id": f"s{i}",
                "parent_span_id": None if i == 0 else "s0",
                "name": name,
                "start_time_unix_nano": start,
                "end_time_unix_nano": end,
                "attributes": attrs,
            }
        )
    return trace_from_dict({"info": info, "data": {"spans": raw_spans}})


TRACE = make_trace(
    state="OK",
    duration=1500,
    tags={"app.env": "prod", "team": "search", "mlflow.traceName": "sales_email_agent"},
    metadata={"mlflow.trace.user": "rep-17"},
    spans=[("agent", "AGENT", 0, 10), ("chat", "LLM", 1, 5), ("lookup", "TOOL", 5, 9)],
)


# -- valid filters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, True),
        ("", True),
        ("   ", True),
        ("attributes.status = 'OK'", True),
        ('attributes.status = "OK"', True),
        ("trace.status = 'ERROR'", False),
        ("attributes.status != 'ERROR'", True),
        ("attributes.status IN ('ERROR', 'OK')", True),
        ("attributes.execution_time_ms > 1000", True),
        ("attributes.execution_time_ms >= 1500", True),
        ("attributes.execution_time_ms < 1500", False),
        ("attributes.execution_time_ms <= 1.5e3", True),
        ("attributes.execution_time_ms = 1500", True),
        ("attributes.timestamp_ms > 1600000000000", True),
        # MLflow's bare attribute keys and their aliases (the seed's `timestamp > <ms>`).
        ("timestamp > 1600000000000", True),
        ("timestamp_ms < 1600000000000", False),
        ("attributes.timestamp > 1600000000000", True),
        ("execution_time > 1000", True),
        ("status = 'OK' AND execution_time_ms >= 1500", True),
        ("name = 'sales_email_agent'", True),
        ("attributes.name = 'sales_email_agent'", True),
        ("attributes.name LIKE 'sales%'", True),
        ("attributes.name LIKE 'Sales%'", False),
        ("attributes.name ILIKE 'SALES%AGENT'", True),
        ("attributes.name like 'sales_email_agen_'", True),
        ("tags.`app.env` = 'prod'", True),
        ("tags.team = 'search'", True),
        ("tags.`team` != 'search'", False),
        ("tags.missing = 'x'", False),
        ("tags.missing != 'x'", False),  # SQL semantics: nothing compares true with a missing value
        ("metadata.`mlflow.trace.user` = 'rep-17'", True),
        ("span.type = 'LLM'", True),
        ("span.type = 'RETRIEVER'", False),
        ("span.name = 'chat' AND span.type = 'LLM'", True),
        ("span.name = 'chat' AND span.type = 'TOOL'", False),  # same span must match both
        ("span.name IN ('lookup', 'x') and span.type = 'TOOL'", True),
        ("attributes.status = 'OK' AND tags.`app.env` IN ('prod', 'staging') AND span.type = 'LLM'", True),
        ("attributes.status='OK'AND tags.team='search'", True),
    ],
)
def test_filters_evaluate(text: str | None, expected: bool) -> None:
    assert parse_filter(text)(TRACE) is expected


def test_empty_filter_matches_everything() -> None:
    f = parse_filter(None)
    assert f.matches_all and f(make_trace(spans=[]))
    assert not parse_filter("span.type = 'LLM'").matches_all


def test_span_clauses_need_a_span() -> None:
    assert parse_filter("span.name = 'x'")(make_trace(spans=[])) is False
    assert parse_filter("span.type = 'UNKNOWN'")(make_trace(spans=[("x", None, 0, 1)])) is True


def test_latency_falls_back_to_the_root_span() -> None:
    trace = make_trace(duration=None, spans=[("root", "AGENT", 0, 2_500_000_000)])
    assert parse_filter("attributes.execution_time_ms = 2500")(trace)
    assert not parse_filter("attributes.execution_time_ms > 0")(make_trace(duration=None, spans=[]))


def test_quotes_are_doubled_inside_strings() -> None:
    trace = make_trace(tags={"q": "it's \"x\""})
    assert parse_filter("tags.q = 'it''s \"x\"'")(trace)
    assert parse_filter('tags.q = "it\'s ""x"""')(trace)


def test_like_escapes_regex_characters() -> None:
    trace = make_trace(tags={"v": "a.b(c)"})
    assert parse_filter("tags.v LIKE 'a.b(c)'")(trace)
    assert not parse_filter("tags.v LIKE 'a.b'")(trace)
    assert parse_filter("tags.v LIKE 'a_b%'")(trace)


def test_clauses_are_kept_with_columns() -> None:
    f = parse_filter("attributes.status = 'OK' AND tags.`a.b` IN ('x', 'y')")
    assert [(c.field, c.op, c.value, c.column) for c in f.clauses] == [
        ("attributes.status", "=", "OK", 1),
        ("tags.a.b", "IN", ("x", "y"), 30),
    ]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "fragments"),
    [
        ("attrs.status = 'OK'", 1, ["unknown field `attrs.status` at column 1", "use attributes.status",
                                    "tags.<key>", "did you mean attributes.status?"]),
        ("state = 'OK'", 1, ["unknown field `state`", "did you mean attributes.status?"]),
        ("attributes.latency > 5", 1, ["did you mean attributes.execution_time_ms?"]),
        ("tag.env = 'x'", 1, ["did you mean tags.env?"]),
        ("span.kind = 'LLM'", 1, ["unknown field `span.kind`"]),
        ("tags.app.env = 'prod'", 1, ["key `app.env` contains dots", "tags.`app.env`"]),
        ("tags.`app.env = 'prod'", 6, ["unterminated backquoted key"]),
        ("attributes.status = 'OK", 21, ["unterminated string at column 21"]),
        ("attributes.status = OK", 21, ["value `OK` is not quoted at column 21", "write 'OK'"]),
        ("attributes.status = 1", 21, ["attributes.status is a string", "quote the value: '1'"]),
        ("attributes.execution_time_ms > '5'", 32, ["is a number", "without quotes: 5"]),
        ("attributes.execution_time_ms LIKE '5%'", 30, ["operator LIKE does not apply", "use one of = != < <= > >="]),
        ("tags.x < 'b'", 8, ["operator < does not apply to tags.x, which is a string"]),
        ("tags.x == 'b'", 8, ["`==` is not an operator", "use ="]),
        ("tags.x <> 'b'", 8, ["use !="]),
        ("tags.x NOT IN ('b')", 8, ["NOT is not supported"]),
        ("tags.x IN 'b'", 11, ["IN needs a parenthesised list"]),
        ("tags.x IN ()", 12, ["empty IN list"]),
        ("tags.x IN ('a',)", 16, ["missing value for tags.x"]),
        ("tags.x IN ('a' 'b')", 16, ["expected , or ) in the IN list"]),
        ("tags.x = 'a' OR tags.y = 'b'", 14, ["OR is not supported at column 14", "only be joined with AND"]),
        ("tags.x = 'a' tags.y = 'b'", 14, ["expected AND or the end of the filter, found `tags.y`"]),
        ("tags.x = 'a' AND", 17, ["expected a field, found the end of the filter"]),
        ("tags.x", 7, ["expected an operator after tags.x"]),
        ("tags.x =", 9, ["missing value for tags.x"]),
        ("attributes.execution_time_ms > fast", 32, ["value `fast` is not a number"]),
    ],
)
def test_errors_say_what_and_where(text: str, column: int, fragments: list[str]) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(text)
    assert info.value.column == column, str(info.value)
    assert f"at column {column}" in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


# -- property test: the predicate agrees with an independent reference evaluator ------------

KEYS = ["env", "team", "app.env", "mlflow.traceName", "a-b"]
STRINGS = ["", "OK", "ERROR", "IN_PROGRESS", "a", "ab", "Ab", "AB", "b%c", "x_y", "it's", 'say "hi"',
           "LLM", "TOOL", "chat", "Chat", "chat.v2", "ünï", "%", "_", "a\nb"]
SPAN_TYPES = ["LLM", "TOOL", "AGENT", "RETRIEVER", "CHAT_MODEL"]
STR_FIELDS = ["status", "name", "tags", "metadata", "span.type", "span.name"]
NUM_FIELDS = ["execution_time_ms", "timestamp_ms"]


def like(value: str, pattern: str) -> bool:
    """SQL LIKE by dynamic programming (deliberately not a regex)."""

    @functools.cache
    def match(i: int, j: int) -> bool:
        if j == len(pattern):
            return i == len(value)
        if pattern[j] == "%":
            return match(i, j + 1) or (i < len(value) and match(i + 1, j))
        return i < len(value) and (pattern[j] == "_" or pattern[j] == value[i]) and match(i + 1, j + 1)

    return match(0, 0)


def compare(actual: Any, op: str, value: Any) -> bool:
    if actual is None:
        return False
    if op == "=":
        return bool(actual == value)
    if op == "!=":
        return bool(actual != value)
    if op == "IN":
        return bool(actual in value)
    if op == "LIKE":
        return like(actual, value)
    if op == "ILIKE":
        return like(actual.lower(), value.lower())
    return bool({"<": actual < value, "<=": actual <= value, ">": actual > value, ">=": actual >= value}[op])


def reference(model: dict[str, Any], clauses: list[tuple[str, str | None, str, Any]]) -> bool:
    """Evaluate clauses (field, key, op, value) on the trace model directly."""
    spans = model["spans"]

    def trace_value(field: str, key: str | None) -> Any:
        if field == "status":
            return model["state"]
        if field == "execution_time_ms":
            if model["duration"] is not None:
                return model["duration"]
            return (spans[0][3] - spans[0][2]) / 1e6 if spans else None
        if field == "timestamp_ms":
            return model["request_time"]
        if field == "name":
            return model["tags"].get("mlflow.traceName")
        return model[field].get(key)

    def span_value(field: str, span: tuple[str, str | None, int, int]) -> Any:
        return span[0] if field == "span.name" else (span[1] or "UNKNOWN")

    trace_clauses = [c for c in clauses if not c[0].startswith("span.")]
    span_clauses = [c for c in clauses if c[0].startswith("span.")]
    if not all(compare(trace_value(f, k), op, v) for f, k, op, v in trace_clauses):
        return False
    if not span_clauses:
        return True
    return any(all(compare(span_value(f, s), op, v) for f, _, op, v in span_clauses) for s in spans)


def quote(s: str, q: str) -> str:
    return q + s.replace(q, q + q) + q


def present(model: dict[str, Any], field: str, key: str | None) -> list[Any]:
    """Values the trace actually has for a field, so that generated clauses often match."""
    spans = model["spans"]
    values: list[Any] = {
        "status": [model["state"]],
        "name": [model["tags"].get("mlflow.traceName")],
        "tags": [model["tags"].get(key or "")],
        "metadata": [model["metadata"].get(key or "")],
        "span.name": [s[0] for s in spans],
        "span.type": [s[1] or "UNKNOWN" for s in spans],
        "execution_time_ms": [model["duration"]],
        "timestamp_ms": [model["request_time"]],
    }[field]
    return [v for v in values if v is not None]


@st.composite
def blur(draw: st.DrawFn, text: str) -> str:
    """A LIKE pattern that matches `text` (some characters -> `_`, some runs -> `%`), maybe case-changed."""
    out = []
    for ch in text:
        out.append(draw(st.sampled_from([ch, ch, ch, "_", "%"])))
    pattern = "".join(out)
    return draw(st.sampled_from([pattern, pattern.upper(), pattern + "%", "%" + pattern]))


@st.composite
def clauses(draw: st.DrawFn, model: dict[str, Any]) -> tuple[tuple[str, str | None, str, Any], str]:
    """One clause as (parsed form, rendered text); values are often taken from the trace itself."""
    # span.* twice as likely: the same-span rule needs several span clauses and several spans.
    field = draw(st.sampled_from([*STR_FIELDS, *NUM_FIELDS, "span.type", "span.name"]))
    key = None
    if field in ("tags", "metadata"):
        key = draw(st.sampled_from(KEYS + list(model[field]) * 3))
    have = present(model, field, key)
    if field in NUM_FIELDS:
        number = st.one_of(st.integers(-10, 6000), st.floats(-10, 6000, allow_nan=False).map(lambda x: round(x, 2)))
        if have:
            number = st.one_of(number, st.sampled_from(have), st.sampled_from(have).map(lambda v: v + 0.5))
        op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "IN"]))
        value: Any = draw(st.lists(number, min_size=1, max_size=3)) if op == "IN" else draw(number)
        rhs_items = [repr(v) for v in value] if op == "IN" else [repr(value)]
    else:
        op = draw(st.sampled_from(["=", "!=", "LIKE", "ILIKE", "IN"]))
        pool = SPAN_TYPES + STRINGS if field == "span.type" else STRINGS
        text = st.one_of(st.sampled_from(have), st.sampled_from(have), st.sampled_from(pool)) if have else (
            st.sampled_from(pool)
        )
        if op in ("LIKE", "ILIKE"):
            piece = st.sampled_from(["%", "_", "a", "b", "A", "chat", "'", '"', ".", "x", "ü", "OK", "LL"])
            random_pattern = st.lists(piece, max_size=4).map("".join)
            value = draw(st.one_of(random_pattern, text.flatmap(blur), text.flatmap(blur)))
        elif op == "IN":
            value = draw(st.lists(text, min_size=1, max_size=3))
        else:
            value = draw(text)
        q = draw(st.sampled_from(["'", '"']))
        rhs_items = [quote(v, q) for v in value] if op == "IN" else [quote(value, q)]

    if field in ("tags", "metadata"):
        assert key is not None
        bare = all(c.isalnum() or c in "_-" for c in key)
        shown_key = key if bare and draw(st.booleans()) else f"`{key}`"
        lhs = f"{field}.{shown_key}"
    elif field.startswith("span."):
        lhs = field
    else:
        lhs = f"{draw(st.sampled_from(['attributes', 'trace']))}.{field}"
    shown_op = draw(st.sampled_from([op, op.lower(), op.title()]))
    rhs = f"({', '.join(rhs_items)})" if op == "IN" else rhs_items[0]
    pad = draw(st.sampled_from([" ", "  ", "\t"])) if op.isalpha() else draw(st.sampled_from(["", " ", "  "]))
    return (field, key, op, value), f"{lhs}{pad}{shown_op}{pad}{rhs}"


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    span = st.tuples(
        st.sampled_from(STRINGS),
        st.one_of(st.none(), st.sampled_from(SPAN_TYPES)),
        st.integers(0, 10**9),
        st.integers(0, 6 * 10**9),
    ).map(lambda s: (s[0], s[1], s[2], s[2] + s[3]))
    tag_values = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(STRINGS), min_size=1, max_size=4)
    return {
        "state": draw(st.sampled_from(["OK", "ERROR", "IN_PROGRESS"])),
        "duration": draw(st.one_of(st.none(), st.integers(0, 6000), st.integers(0, 6000))),
        "request_time": draw(st.one_of(st.none(), st.integers(0, 6000), st.integers(0, 6000))),
        "tags": draw(tag_values),
        "metadata": draw(tag_values),
        "spans": draw(st.lists(span, min_size=draw(st.sampled_from([0, 1, 2, 2])), max_size=3)),
    }


def build(model: dict[str, Any]) -> Any:
    return make_trace(
        state=model["state"],
        duration=model["duration"],
        request_time=model["request_time"],
        tags=model["tags"],
        metadata=model["metadata"],
        spans=model["spans"],
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models(), data=st.data())
def test_predicate_matches_reference(model: dict[str, Any], data: st.DataObject) -> None:
    parts = data.draw(st.lists(clauses(model), min_size=1, max_size=4))
    joiners = [data.draw(st.sampled_from([" AND ", " and ", "  And\t"])) for _ in parts[1:]]
    text = parts[0][1] + "".join(j + p[1] for j, p in zip(joiners, parts[1:], strict=True))
    filt = parse_filter(text)
    assert len(filt.clauses) == len(parts)
    assert filt(build(model)) is reference(model, [p[0] for p in parts]), text
