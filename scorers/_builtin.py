"""Built-in code scorers: small, dependency-free checks built on the `Trace` helpers.

Each public name is a factory returning a fresh `Scorer` with a stable default name (the
factory's name), so a threshold change does not create a new metric series; thresholds
show up in the rationale instead. `BUILTIN_SCORERS` maps those names to the factories,
for `resolve_scorer` and the registry.

A scorer that has nothing to measure (no token usage recorded, no expected tool calls,
...) returns None, which records the pair as skipped with reason `no_result`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from scorers._assessment import Feedback
from scorers._scorer import Scorer
from scorers._trace import SpanType, Trace

__all__ = [
    "BUILTIN_SCORERS",
    "contains_expected",
    "exact_match",
    "has_retriever_span",
    "json_valid_output",
    "latency_under",
    "no_error",
    "output_length",
    "output_text",
    "output_word_count",
    "pii_leak",
    "retrieval_recall",
    "token_budget",
    "tool_trajectory",
]

_TEXT_KEYS: Final = ("email", "response", "output", "content", "text")
# These built-ins measure an answer: on a trace whose root raised there is none, and a word
# count of 0 or a "not JSON" failure would be noise in the histograms, so they skip
# (`missing_outputs`) rather than take MLflow's None (user `@scorer`s get None, as in MLflow).
_NEEDS_OUTPUTS: Final = ("outputs",)
_NEEDS_OUTPUTS_AND_EXPECTATIONS: Final = ("outputs", "expectations")


def output_text(outputs: Any) -> str:
    """The text an app answered with, from whatever shape its outputs have.

    A string is used as is; a dict contributes its first string under `email`, `response`,
    `output`, `content` or `text`, or an OpenAI chat completion's
    `choices[0].message.content`; anything else is JSON-dumped so text checks still see it.
    """
    if isinstance(outputs, str):
        return outputs
    if outputs is None:
        return ""
    if isinstance(outputs, Mapping):
        for key in _TEXT_KEYS:
            value = outputs.get(key)
            if isinstance(value, str):
                return value
        choices = outputs.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            message = choices[0].get("message")
            if isinstance(message, Mapping) and isinstance(message.get("content"), str):
                return str(message["content"])
    return orjson.dumps(outputs, default=str).decode()


def latency_under(max_ms: float = 2000.0, *, name: str | None = None) -> Scorer:
    """Pass when the trace's end-to-end latency is at most `max_ms` milliseconds."""

    def check(trace: Trace) -> Feedback | None:
        latency = trace.latency_ms
        if latency is None:
            return None
        ok = latency <= max_ms
        return Feedback(
            value=ok, rationale=f"latency {latency:g} ms {'<=' if ok else '>'} budget {max_ms:g} ms"
        )

    return Scorer(check, name=name or "latency_under")


def no_error(*, name: str | None = None) -> Scorer:
    """Pass when the trace finished `OK` and no span has an error status."""

    def check(trace: Trace) -> Feedback:
        if trace.ok:
            return Feedback(value=True, rationale="trace OK, no span failed")
        failed = [s for s in trace.spans if not s.ok]
        # The latest-starting failed span is where the error began; parents only relay it.
        origin = max(failed, key=lambda s: s.start_ns) if failed else None
        where = f"span {origin.name!r} failed: {origin.status_message}" if origin else ""
        return Feedback(value=False, rationale=f"trace state {trace.status}; {where}".rstrip("; "))

    return Scorer(check, name=name or "no_error")


def output_length(max_chars: int = 4000, min_chars: int = 0, *, name: str | None = None) -> Scorer:
    """Pass when the output text has between `min_chars` and `max_chars` characters."""

    def check(outputs: Any) -> Feedback:
        n = len(output_text(outputs))
        ok = min_chars <= n <= max_chars
        return Feedback(value=ok, rationale=f"{n} characters; allowed {min_chars}..{max_chars}")

    return Scorer(check, name=name or "output_length", skip_when_missing=_NEEDS_OUTPUTS)


def output_word_count(*, name: str | None = None) -> Scorer:
    """The number of whitespace-separated words in the output text (a numeric value)."""

    def check(outputs: Any) -> int:
        return len(output_text(outputs).split())

    return Scorer(check, name=name or "output_word_count", skip_when_missing=_NEEDS_OUTPUTS)


def json_valid_output(*, name: str | None = None) -> Scorer:
    """Pass when the output text parses as JSON (apps that must answer machine-readably)."""

    def check(outputs: Any) -> Feedback:
        try:
            orjson.loads(output_text(outputs))
        except orjson.JSONDecodeError as exc:
            return Feedback(value=False, rationale=f"output is not valid JSON: {exc}")
        return Feedback(value=True, rationale="output is valid JSON")

    return Scorer(check, name=name or "json_valid_output", skip_when_missing=_NEEDS_OUTPUTS)


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Separated national numbers (415-555-0132, (415) 555 0132, +1 415.555.0132), E.164
# (+14155550132) and spaced international (+44 20 7946 0958). Bare 10-digit runs are left
# out on purpose: they are far more often order or account numbers than phone numbers.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\w)"
    r"|(?<![\w+])\+\d{10,15}(?!\w)"
    r"|(?<![\w+])\+\d{1,3}(?:[\s.-]\d{2,4}){2,5}(?!\w)"
)
_CARD_CANDIDATE = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d])")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _pii_kinds(text: str) -> dict[str, int]:
    found: dict[str, int] = {}
    if n := len(_EMAIL.findall(text)):
        found["email address"] = n
    cards = 0
    for m in _CARD_CANDIDATE.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            cards += 1
    if cards:
        found["payment card number"] = cards
    if n := len(_PHONE.findall(text)):
        found["phone number"] = n
    return found


def pii_leak(*, name: str | None = None) -> Scorer:
    """Pass when the output has no email address, phone number or Luhn-valid card number.

    The rationale names the kinds and counts found, never the values, so the assessment
    store does not become a second copy of the leak.
    """

    def check(outputs: Any) -> Feedback:
        found = _pii_kinds(output_text(outputs))
        if not found:
            return Feedback(value=True, rationale="no email, phone or card number found")
        kinds = ", ".join(
            f"{n} {kind}{'es' if kind.endswith('s') else 's'}" if n > 1 else f"1 {kind}"
            for kind, n in found.items()
        )
        return Feedback(value=False, rationale=f"possible PII in the output: {kinds}")

    return Scorer(check, name=name or "pii_leak", skip_when_missing=_NEEDS_OUTPUTS)


def token_budget(max_tokens: int = 4000, *, name: str | None = None) -> Scorer:
    """Pass when the trace used at most `max_tokens` tokens in total (skips if unrecorded)."""

    def check(trace: Trace) -> Feedback | None:
        usage = trace.token_usage
        if usage is None:
            return None
        ok = usage.total_tokens <= max_tokens
        return Feedback(value=ok, rationale=f"{usage.total_tokens} tokens; budget {max_tokens}")

    return Scorer(check, name=name or "token_budget")


def _tool_name(item: Any) -> str:
    if isinstance(item, Mapping):
        return str(item.get("name", ""))
    return str(item)


def tool_trajectory(*, name: str | None = None) -> Scorer:
    """Pass when the tool calls, in order, are `expectations["expected_tool_calls"]`.

    The expectation is a list of tool names or of `{"name": ...}` objects.
    """

    def check(trace: Trace, expectations: Mapping[str, Any]) -> Feedback | None:
        expected_raw = expectations.get("expected_tool_calls")
        if not isinstance(expected_raw, list):
            return None
        expected = [_tool_name(x) for x in expected_raw]
        actual = [c.name for c in trace.tool_calls]
        ok = actual == expected
        return Feedback(value=ok, rationale=f"expected {expected}, actual {actual}")

    return Scorer(check, name=name or "tool_trajectory")


def retrieval_recall(*, name: str | None = None) -> Scorer:
    """Fraction of `expectations["expected_document_uris"]` found among retrieved documents."""

    def check(trace: Trace, expectations: Mapping[str, Any]) -> Feedback | None:
        expected_raw = expectations.get("expected_document_uris")
        if not isinstance(expected_raw, list) or not expected_raw:
            return None
        expected = {str(u) for u in expected_raw}
        retrieved = {d.doc_uri for d in trace.retrieved_documents if d.doc_uri is not None}
        hits = len(expected & retrieved)
        return Feedback(
            value=hits / len(expected),
            rationale=f"retrieved {hits} of {len(expected)} expected documents",
        )

    return Scorer(check, name=name or "retrieval_recall")


def exact_match(*, name: str | None = None) -> Scorer:
    """Pass when the outputs equal `expectations["expected_response"]` (as in MLflow's docs)."""

    def check(outputs: Any, expectations: Mapping[str, Any]) -> bool | None:
        if "expected_response" not in expectations:
            return None
        return bool(outputs == expectations["expected_response"])

    return Scorer(check, name=name or "exact_match", skip_when_missing=_NEEDS_OUTPUTS_AND_EXPECTATIONS)


def contains_expected(*, name: str | None = None) -> Scorer:
    """Pass when the output text contains every `expected_facts` item (else `expected_response`).

    Matching is case-insensitive substring search; the rationale lists what is missing.
    """

    def check(outputs: Any, expectations: Mapping[str, Any]) -> Feedback | None:
        facts = expectations.get("expected_facts")
        if isinstance(facts, str):
            facts = [facts]
        if not isinstance(facts, list):
            response = expectations.get("expected_response")
            if not isinstance(response, str):
                return None
            facts = [response]
        text = output_text(outputs).casefold()
        missing = [str(f) for f in facts if str(f).casefold() not in text]
        if missing:
            return Feedback(value=False, rationale=f"missing {len(missing)} of {len(facts)}: {missing}")
        return Feedback(value=True, rationale=f"all {len(facts)} expected items found")

    return Scorer(check, name=name or "contains_expected", skip_when_missing=_NEEDS_OUTPUTS_AND_EXPECTATIONS)


def has_retriever_span(*, name: str | None = None) -> Scorer:
    """Pass when the trace has at least one RETRIEVER span (the app grounded its answer)."""

    def check(trace: Trace) -> bool:
        return any(s.span_type == SpanType.RETRIEVER for s in trace.spans)

    return Scorer(check, name=name or "has_retriever_span")


BUILTIN_SCORERS: Final[dict[str, Callable[..., Scorer]]] = {
    "contains_expected": contains_expected,
    "exact_match": exact_match,
    "has_retriever_span": has_retriever_span,
    "json_valid_output": json_valid_output,
    "latency_under": latency_under,
    "no_error": no_error,
    "output_length": output_length,
    "output_word_count": output_word_count,
    "pii_leak": pii_leak,
    "retrieval_recall": retrieval_recall,
    "token_budget": token_budget,
    "tool_trajectory": tool_trajectory,
}
"""Built-in code scorer factories by name (what `resolve_scorer("name(...)")` looks up)."""
