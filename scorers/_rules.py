"""MLflow 3.17's rule-based built-ins: `RegexMatch`, `PIIDetection`, `ResponseLength`.

Code, not judges: no model call, no cost. Each answers `"yes"`/`"no"` with MLflow's
rationale texts, reads the outputs as MLflow's `parse_outputs_to_str` does (a chat
completion's or a message list's last content, else JSON), and answers `"no"` with
"No outputs provided to evaluate." when there are none (MLflow's behaviour: not a skip).
Arguments are checked when the scorer is built, so a bad pattern or bound is refused at
registration, not on every trace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from scorers._assessment import Feedback
from scorers._exceptions import ScorerDefinitionError
from scorers._scorer import Scorer

__all__ = ["RULE_SCORERS", "PIIDetection", "RegexMatch", "ResponseLength"]

PII_PATTERNS: Final[dict[str, str]] = {
    "email": r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}",
    "phone": r"(?:(?:\+?1[-.\s]?)?\(?\d{3}\)?[-.\s]?\d{3}[-.\s]?\d{4}|\+[1-9]\d{1,14})",
    "ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    "credit_card": (
        r"\b(?:"
        r"(?:4\d{3}|5[1-5]\d{2}|6(?:011|5\d{2}))[-\s]?\d{4}[-\s]?\d{4}[-\s]?\d{4}"
        r"|3[47]\d{2}[-\s]?\d{6}[-\s]?\d{5}"
        r")\b"
    ),
    "ip_address": r"\b(?:(?:25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d\d?)\b",
}
"""MLflow's PII regexes, verbatim (they favour recall over precision)."""

_COMPILED: Final = {kind: re.compile(p) for kind, p in PII_PATTERNS.items()}
_NO_OUTPUTS = "No outputs provided to evaluate."


def outputs_str(value: Any) -> str | None:
    """MLflow's `parse_outputs_to_str`, None for no outputs."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        return outputs_str(value[0])
    if isinstance(value, Mapping):
        choices = value.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            content = (choices[0].get("message") or {}).get("content")
            if isinstance(content, str):
                return content
        messages = value.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], Mapping):
            content = messages[-1].get("content")
            if isinstance(content, str):
                return content
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _verdict(ok: bool, rationale: str) -> Feedback:
    return Feedback(value="yes" if ok else "no", rationale=rationale)


class RegexMatch(Scorer):
    """Does the output match `pattern` (`search` anywhere, or `fullmatch`)?"""

    value_type = "yes/no"

    def __init__(
        self,
        pattern: str,
        name: str = "regex_match",
        *,
        match_type: str = "search",
        case_insensitive: bool = False,
    ) -> None:
        if match_type not in ("search", "fullmatch"):
            raise ScorerDefinitionError(f"RegexMatch: match_type must be 'search' or 'fullmatch', got {match_type!r}")
        try:
            self._regex = re.compile(pattern, re.IGNORECASE if case_insensitive else 0)
        except (re.error, TypeError) as exc:
            raise ScorerDefinitionError(f"invalid regex pattern {pattern!r}: {exc}") from None
        self.pattern, self.match_type, self.case_insensitive = pattern, match_type, case_insensitive
        super().__init__(self._check, name=name, params=("outputs",))

    def _check(self, outputs: Any) -> Feedback:
        text = outputs_str(outputs)
        if text is None:
            return _verdict(False, _NO_OUTPUTS)
        match = self._regex.fullmatch if self.match_type == "fullmatch" else self._regex.search
        ok = match(text) is not None
        return _verdict(ok, f"Output {'matches' if ok else 'does not match'} pattern {self.pattern!r}")


class PIIDetection(Scorer):
    """Is the output free of emails, phone numbers, SSNs, card numbers and IPv4 addresses?

    "no" (fails the privacy check) when any of `pii_types` is found, as in MLflow.
    """

    value_type = "yes/no"

    def __init__(self, name: str = "pii_detection", *, pii_types: Iterable[str] | None = None) -> None:
        types = list(PII_PATTERNS) if pii_types is None else list(pii_types)
        unknown = sorted(set(types).difference(PII_PATTERNS))
        if unknown:
            raise ScorerDefinitionError(
                f"PIIDetection: unknown pii_types {unknown}; choose from {', '.join(PII_PATTERNS)}"
            )
        self.pii_types = types
        super().__init__(self._check, name=name, params=("outputs",))

    def _check(self, outputs: Any) -> Feedback:
        text = outputs_str(outputs)
        if text is None:
            return _verdict(False, _NO_OUTPUTS)
        found = [kind for kind in self.pii_types if _COMPILED[kind].search(text)]
        if found:
            return _verdict(False, f"Detected PII: {', '.join(found)}")
        return _verdict(True, "No PII detected")


class ResponseLength(Scorer):
    """Is the output's length in characters (or words) within `[min_length, max_length]`?"""

    value_type = "yes/no"

    def __init__(
        self,
        name: str = "response_length",
        *,
        min_length: int | None = None,
        max_length: int | None = None,
        unit: str = "chars",
    ) -> None:
        if min_length is None and max_length is None:
            raise ScorerDefinitionError("ResponseLength requires at least one of `min_length` or `max_length`.")
        for label, bound in (("min_length", min_length), ("max_length", max_length)):
            if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool) or bound < 0):
                raise ScorerDefinitionError(f"`{label}` must be a non-negative integer, got {bound!r}.")
        if min_length is not None and max_length is not None and min_length > max_length:
            raise ScorerDefinitionError(f"`min_length` ({min_length}) must be <= `max_length` ({max_length}).")
        if unit not in ("chars", "words"):
            raise ScorerDefinitionError(f"ResponseLength: unit must be 'chars' or 'words', got {unit!r}")
        self.min_length, self.max_length, self.unit = min_length, max_length, unit
        super().__init__(self._check, name=name, params=("outputs",))

    def _check(self, outputs: Any) -> Feedback:
        text = outputs_str(outputs)
        if text is None:
            return _verdict(False, _NO_OUTPUTS)
        n = len(text.split()) if self.unit == "words" else len(text)
        unit = self.unit
        if self.min_length is not None and n < self.min_length:
            return _verdict(False, f"Output length ({n} {unit}) is below the minimum ({self.min_length} {unit})")
        if self.max_length is not None and n > self.max_length:
            return _verdict(False, f"Output length ({n} {unit}) exceeds the maximum ({self.max_length} {unit})")
        return _verdict(True, f"Output length ({n} {unit}) is within bounds")


RULE_SCORERS: Final[dict[str, type[Scorer]]] = {
    "PIIDetection": PIIDetection,
    "RegexMatch": RegexMatch,
    "ResponseLength": ResponseLength,
}
"""Rule-based built-ins by their MLflow name (what `resolve_scorer("RegexMatch(...)")` finds)."""
