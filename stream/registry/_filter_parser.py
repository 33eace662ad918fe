"""Filter syntax: the fields, the operators and the parser (grammar in `stream.registry._filter`).

`parse_clauses` turns text into `FilterClause`s or raises `FilterError` naming the problem,
its column and what to write instead; `stream.registry._filter` compiles the clauses into a
`Filter`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Final, Literal

from stream._exceptions import FilterError

__all__ = ["FILTER_FIELDS", "FieldKind", "FilterClause", "Value", "parse_clauses"]

FieldKind = Literal["str", "num"]
Value = str | float

_ATTRIBUTES: Final[dict[str, FieldKind]] = {
    "status": "str",
    "execution_time_ms": "num",
    "timestamp_ms": "num",
    "name": "str",
}
_SPAN_FIELDS: Final[dict[str, FieldKind]] = {"type": "str", "name": "str"}
# MLflow's `SearchTraceUtils.SEARCH_KEY_TO_ATTRIBUTE`: other spellings of attribute keys. As in
# MLflow, an attribute may also be written bare (`timestamp > 1700000000000`, `status = 'OK'`).
_ATTRIBUTE_KEYS: Final[dict[str, str]] = {"timestamp": "timestamp_ms", "execution_time": "execution_time_ms"}

FILTER_FIELDS: Final = (
    "attributes.status",
    "attributes.execution_time_ms",
    "attributes.timestamp_ms",
    "attributes.name",
    "tags.<key>",
    "metadata.<key>",
    "span.type",
    "span.name",
)
"""The fields a filter may use (`trace.` is an alias of `attributes.`)."""

_STR_OPS: Final = ("=", "!=", "LIKE", "ILIKE", "IN")
_NUM_OPS: Final = ("=", "!=", "<", "<=", ">", ">=", "IN")

_WS = re.compile(r"\s*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_\-]+")
_OP = re.compile(r"==|<>|!=|<=|>=|=|<|>|(?i:ilike|like|not|in)\b")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z0-9_.])")
_WORD = re.compile(r"[^\s(),]+")
_AND = re.compile(r"(?i:and)\b")
_OR = re.compile(r"(?i:or)\b")




@dataclass(slots=True, frozen=True)
class FilterClause:
    """One parsed `field op value` clause (`value` is a tuple for `IN`)."""

    field: str
    op: str
    value: Value | tuple[Value, ...]
    column: int

    @property
    def on_span(self) -> bool:
        """The clause tests a span (`span.*`), not the trace."""
        return self.field.startswith("span.")



def parse_clauses(text: str) -> list[FilterClause]:
    """The clauses of a non-blank filter string.

    Raises:
        FilterError: The text is not a valid filter.
    """
    return _Parser(text).parse()


def _fields_hint() -> str:
    return ", ".join(FILTER_FIELDS)


# Names people reach for, mapped to the field they mean (for "did you mean" hints only).
_ALIASES: Final = {
    "state": "status",
    "latency": "execution_time_ms",
    "latency_ms": "execution_time_ms",
    "duration": "execution_time_ms",
    "duration_ms": "execution_time_ms",
    "execution_time": "execution_time_ms",
    "execution_duration_ms": "execution_time_ms",
    "timestamp": "timestamp_ms",
    "request_time": "timestamp_ms",
    "trace_name": "name",
    "span_type": "type",
}


def _guess_field(name: str) -> str | None:
    head, _, rest = name.partition(".")
    if rest and head in ("tag", "tags", "meta", "metadata", "request_metadata", "trace_metadata"):
        kind = "tags" if head.startswith("tag") else "metadata"
        return f"{kind}.{rest}" if "." not in rest else f"{kind}.`{rest}`"
    prefix, dot, last = name.rpartition(".")
    last = _ALIASES.get(last, last)
    if prefix.startswith("span") and last in _SPAN_FIELDS:
        return f"span.{last}"
    if last in _ATTRIBUTES:
        return f"attributes.{last}"
    if last in _SPAN_FIELDS and dot:
        return f"span.{last}"
    known = [f for f in FILTER_FIELDS if "<" not in f]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else None


def _describe(text: str, pos: int) -> str:
    if pos >= len(text):
        return "the end of the filter"
    m = _WORD.match(text, pos)
    return f"`{m.group(0) if m else text[pos]}`"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str, pos: int | None = None, fix: str = "") -> FilterError:
        at = self.pos if pos is None else pos
        full = f"{message} at column {at + 1}" + (f": {fix}" if fix else "")
        return FilterError(full, text=self.text, column=at + 1)

    def skip_ws(self) -> None:
        m = _WS.match(self.text, self.pos)
        assert m is not None
        self.pos = m.end()

    def parse(self) -> list[FilterClause]:
        clauses = [self.clause()]
        while True:
            self.skip_ws()
            if self.pos >= len(self.text):
                return clauses
            if m := _AND.match(self.text, self.pos):
                self.pos = m.end()
                clauses.append(self.clause())
                continue
            if _OR.match(self.text, self.pos):
                raise self.error(
                    "OR is not supported", fix="clauses can only be joined with AND; use IN ('a', 'b') "
                    "for alternatives of one field, or register a second scorer"
                )
            raise self.error(f"expected AND or the end of the filter, found {_describe(self.text, self.pos)}")

    def clause(self) -> FilterClause:
        self.skip_ws()
        start = self.pos
        field, kind = self.field()
        self.skip_ws()
        op = self.operator(field, kind)
        self.skip_ws()
        value = self.value_list(field, kind) if op == "IN" else self.value(field, kind)
        return FilterClause(field, op, value, start + 1)

    def field(self) -> tuple[str, FieldKind]:
        text, start = self.text, self.pos
        m = _IDENT.match(text, start)
        if m is None:
            raise self.error(
                f"expected a field, found {_describe(text, start)}", fix=f"use {_fields_hint()}"
            )
        prefix = m.group(0)
        self.pos = m.end()
        if self.pos >= len(text) or text[self.pos] != ".":
            bare = _ATTRIBUTE_KEYS.get(prefix, prefix)
            if bare not in _ATTRIBUTES:
                raise self.unknown_field(prefix, start)
            return f"attributes.{bare}", _ATTRIBUTES[bare]
        self.pos += 1
        key = self.key(prefix, start)
        if prefix in ("attributes", "trace"):
            key = _ATTRIBUTE_KEYS.get(key, key)
            kind = _ATTRIBUTES.get(key)
            if kind is None:
                raise self.unknown_field(f"{prefix}.{key}", start)
            return f"attributes.{key}", kind
        if prefix in ("tags", "metadata"):
            return f"{prefix}.{key}", "str"
        if prefix == "span":
            kind = _SPAN_FIELDS.get(key)
            if kind is None:
                raise self.unknown_field(f"span.{key}", start)
            return f"span.{key}", kind
        raise self.unknown_field(f"{prefix}.{key}", start)

    def key(self, prefix: str, field_start: int) -> str:
        text, pos = self.text, self.pos
        if pos < len(text) and text[pos] == "`":
            end = text.find("`", pos + 1)
            if end < 0:
                raise self.error("unterminated backquoted key", pos, fix="close it with `")
            key = text[pos + 1 : end]
            if not key:
                raise self.error("empty key", pos, fix=f"write {prefix}.`some.key`")
            self.pos = end + 1
            return key
        m = _BARE_KEY.match(text, pos)
        if m is None:
            raise self.error(
                f"expected a key after `{prefix}.`, found {_describe(text, pos)}",
                pos,
                fix=f"write {prefix}.name, or {prefix}.`some.key` for keys with dots or other characters",
            )
        self.pos = m.end()
        if self.pos < len(text) and text[self.pos] == ".":
            dotted = _WORD.match(text, pos)
            full = dotted.group(0) if dotted else m.group(0)
            raise self.error(
                f"key `{full}` contains dots", field_start, fix=f"put it in backquotes: {prefix}.`{full}`"
            )
        return m.group(0)

    def unknown_field(self, name: str, pos: int) -> FilterError:
        guess = _guess_field(name)
        hint = f" (did you mean {guess}?)" if guess else ""
        return self.error(f"unknown field `{name}`", pos, fix=f"use {_fields_hint()}{hint}")

    def operator(self, field: str, kind: FieldKind) -> str:
        m = _OP.match(self.text, self.pos)
        if m is None:
            raise self.error(
                f"expected an operator after {field}, found {_describe(self.text, self.pos)}",
                fix=f"use one of {' '.join(_STR_OPS if kind == 'str' else _NUM_OPS)}",
            )
        op = m.group(0).upper()
        if op == "==":
            raise self.error("`==` is not an operator", fix="use =")
        if op == "<>":
            raise self.error("`<>` is not supported", fix="use !=")
        if op == "NOT":
            raise self.error("NOT is not supported", fix="use != for one value; NOT IN / NOT LIKE are not available")
        allowed = _STR_OPS if kind == "str" else _NUM_OPS
        if op not in allowed:
            what = "a string" if kind == "str" else "a number"
            raise self.error(
                f"operator {op} does not apply to {field}, which is {what}", fix=f"use one of {' '.join(allowed)}"
            )
        self.pos = m.end()
        return op

    def value(self, field: str, kind: FieldKind) -> Value:
        text, pos = self.text, self.pos
        if pos < len(text) and text[pos] in "'\"":
            s = self.string()
            if kind == "num":
                raise self.error(f"{field} is a number", pos, fix=f"write the value without quotes: {s}")
            return s
        m = _NUMBER.match(text, pos)
        if m is not None:
            if kind == "str":
                raise self.error(f"{field} is a string", pos, fix=f"quote the value: '{m.group(0)}'")
            self.pos = m.end()
            return float(m.group(0))
        if pos >= len(text) or text[pos] in ",)":
            raise self.error(f"missing value for {field}", pos)
        word = _WORD.match(text, pos)
        shown = word.group(0) if word else text[pos]
        if kind == "str":
            raise self.error(f"value `{shown}` is not quoted", pos, fix=f"write '{shown}'")
        raise self.error(f"value `{shown}` is not a number", pos, fix=f"{field} compares with numbers, e.g. 1000")

    def string(self) -> str:
        text, start = self.text, self.pos
        quote = text[start]
        out: list[str] = []
        pos = start + 1
        while True:
            end = text.find(quote, pos)
            if end < 0:
                fix = f"close it with {quote} (write {quote}{quote} for a literal {quote})"
                raise self.error("unterminated string", start, fix=fix)
            out.append(text[pos:end])
            if text.startswith(quote, end + 1):
                out.append(quote)
                pos = end + 2
                continue
            self.pos = end + 1
            return "".join(out)

    def value_list(self, field: str, kind: FieldKind) -> tuple[Value, ...]:
        example = "('a', 'b')" if kind == "str" else "(100, 200)"
        if self.pos >= len(self.text) or self.text[self.pos] != "(":
            raise self.error(f"IN needs a parenthesised list, found {_describe(self.text, self.pos)}",
                             fix=f"write {field} IN {example}")
        self.pos += 1
        values: list[Value] = []
        while True:
            self.skip_ws()
            if self.pos < len(self.text) and self.text[self.pos] == ")" and not values:
                raise self.error("empty IN list", fix=f"write {field} IN {example}")
            values.append(self.value(field, kind))
            self.skip_ws()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                continue
            if self.pos < len(self.text) and self.text[self.pos] == ")":
                self.pos += 1
                return tuple(values)
            raise self.error(f"expected , or ) in the IN list, found {_describe(self.text, self.pos)}")

