"""Trace filters: the subset of MLflow's `search_traces` filter syntax that DESIGN.md fixes.

A filter is parsed once, when a scorer is registered or a registry snapshot is built, into a
`Filter`: a callable `Trace -> bool` made of precompiled clause tests, so the hot loop pays
a few attribute reads per clause and never re-parses text.

Grammar (keywords `AND`, `LIKE`, `ILIKE`, `IN` in any case)::

    filter  := clause (AND clause)*
    clause  := field op value | field IN '(' value (',' value)* ')'
    field   := attributes.status | trace.status            (trace state: OK, ERROR, ...)
             | attributes.execution_time_ms                (latency, number)
             | attributes.timestamp_ms                     (request time, number)
             | attributes.name                             (tag `mlflow.traceName`)
             | tags.KEY | metadata.KEY                     (KEY with dots in backquotes)
             | span.type | span.name
    op      := = | != | < | <= | > | >= | LIKE | ILIKE
    value   := 'text' | "text" | number                   (a quote is doubled inside: 'it''s')

`trace.` is accepted wherever `attributes.` is, as MLflow 3 does, and so is no prefix at
all (`timestamp > 1700000000000`, `status = 'OK'`); `timestamp` and `execution_time` are
MLflow's aliases of `timestamp_ms` and `execution_time_ms`. String fields take `= !=
LIKE ILIKE IN` and quoted values; numeric fields take `= != < <= > >= IN` and bare numbers.
`LIKE` matches the whole value with `%` (any run) and `_` (one character); `ILIKE` is the
same ignoring case. A clause on a value the trace lacks (a missing tag, no latency) is
false for every operator, `!=` included, as in SQL. All `span.*` clauses of one filter must
hold for the same span, as in MLflow: `span.type = 'LLM' AND span.name = 'chat'` needs one
span that is both.

Example:
    >>> f = parse_filter("attributes.status = 'OK' AND tags.`app.env` IN ('prod', 'staging')")
    >>> f(trace)
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from scorers import Span, Trace
from stream._exceptions import FilterError
from stream.registry._filter_parser import FILTER_FIELDS, FilterClause, parse_clauses

__all__ = ["FILTER_FIELDS", "Filter", "FilterClause", "FilterError", "parse_filter"]

_Test = Callable[[object], bool]


class Filter:
    """A parsed filter: call it with a `Trace` to know whether the trace matches.

    Attributes:
        text: the filter as given (None or blank: matches every trace).
        clauses: the parsed clauses, in order.
    """

    __slots__ = ("_span_tests", "_trace_tests", "clauses", "text")

    def __init__(
        self,
        text: str | None,
        clauses: Sequence[FilterClause],
        trace_tests: Sequence[Callable[[Trace], bool]],
        span_tests: Sequence[Callable[[Span], bool]],
    ) -> None:
        self.text = text
        self.clauses = tuple(clauses)
        self._trace_tests = tuple(trace_tests)
        self._span_tests = tuple(span_tests)

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"

    @property
    def matches_all(self) -> bool:
        """True for the empty filter (the worker can skip calling it)."""
        return not self.clauses

    def __call__(self, trace: Trace) -> bool:
        for test in self._trace_tests:
            if not test(trace):
                return False
        span_tests = self._span_tests
        if not span_tests:
            return True
        for span in trace.spans:
            for stest in span_tests:
                if not stest(span):
                    break
            else:
                return True
        return False


def parse_filter(text: str | None) -> Filter:
    """Parse a filter string once into a `Filter` (see the module docstring for the syntax).

    Raises:
        FilterError: the message names the problem and its column, e.g. "unknown field
            `attrs.status` at column 1: use attributes.status, ...".

    Example:
        >>> parse_filter("attributes.execution_time_ms > 2000 AND span.type = 'LLM'").clauses[1].field
        'span.type'
    """
    if text is None or not text.strip():
        return Filter(text, (), (), ())
    clauses = parse_clauses(text)
    trace_tests: list[Callable[[Trace], bool]] = []
    span_tests: list[Callable[[Span], bool]] = []
    for clause in clauses:
        test = _value_test(clause)
        if clause.on_span:
            span_tests.append(_span_test(clause.field, test))
        else:
            trace_tests.append(_trace_test(clause.field, test))
    return Filter(text, clauses, trace_tests, span_tests)



# -- compiling -----------------------------------------------------------------------------


def _like(pattern: str, ignore_case: bool) -> _Test:
    source = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    if ignore_case:
        rx = re.compile(source.lower(), re.DOTALL)
        return lambda v: isinstance(v, str) and rx.fullmatch(v.lower()) is not None
    rx = re.compile(source, re.DOTALL)
    return lambda v: isinstance(v, str) and rx.fullmatch(v) is not None


def _value_test(clause: FilterClause) -> _Test:
    op, value = clause.op, clause.value
    if op == "IN":
        assert isinstance(value, tuple)
        options = frozenset(value)
        return lambda v: v is not None and v in options
    if op == "LIKE" or op == "ILIKE":
        assert isinstance(value, str)
        return _like(value if op == "LIKE" else value.lower(), op == "ILIKE")
    if op == "=":
        return lambda v: v is not None and v == value
    if op == "!=":
        return lambda v: v is not None and v != value
    assert isinstance(value, float)
    num = value
    if op == "<":
        return lambda v: isinstance(v, (int, float)) and v < num
    if op == "<=":
        return lambda v: isinstance(v, (int, float)) and v <= num
    if op == ">":
        return lambda v: isinstance(v, (int, float)) and v > num
    return lambda v: isinstance(v, (int, float)) and v >= num


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _trace_test(field: str, test: _Test) -> Callable[[Trace], bool]:
    if field == "attributes.status":
        return lambda t: test(t.info.state)
    if field == "attributes.execution_time_ms":
        return lambda t: test(t.latency_ms)
    if field == "attributes.timestamp_ms":
        return lambda t: test(t.info.timestamp_ms)
    if field == "attributes.name":
        return lambda t: test(_text_or_none(t.info.tags.get("mlflow.traceName")))
    prefix, _, key = field.partition(".")
    if prefix == "tags":
        return lambda t: test(_text_or_none(t.info.tags.get(key)))
    return lambda t: test(_text_or_none(t.info.metadata.get(key)))


def _span_test(field: str, test: _Test) -> Callable[[Span], bool]:
    if field == "span.type":
        return lambda s: test(s.span_type)
    return lambda s: test(s.name)

