"""Reading a judge's answer: find the JSON verdict in free text and coerce its value.

Models wrap JSON in code fences, prepend "Sure! Here is my assessment:", or say `"value"`
instead of `"result"`; all of that is accepted. What cannot be read becomes a
`JudgeResponseError` carrying the raw answer (truncated), never a guess.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

from scorers._exceptions import JudgeResponseError, ScorerDefinitionError

__all__ = ["VALUE_TYPES", "parse_verdict"]

VALUE_TYPES: Final = ("yes/no", "bool", "str", "int", "float")
"""How a judge's `result` is coerced: built-in judges use `yes/no`; `make_judge` the rest."""

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_YES: Final = frozenset({"yes", "true", "pass", "y", "1"})
_NO: Final = frozenset({"no", "false", "fail", "n", "0"})
_RAW_LIMIT = 500
_MAX_SCAN = 64  # `{` positions tried before giving up: bounds the work on long garbage
_DECODER = json.JSONDecoder()


def _raw(text: str) -> str:
    return (
        text
        if len(text) <= _RAW_LIMIT
        else f"{text[:_RAW_LIMIT]}...[truncated {len(text) - _RAW_LIMIT} chars]"
    )


def _find_object(text: str) -> dict[str, Any] | None:
    fenced = _FENCE.search(text)
    candidates = [fenced.group(1).strip()] if fenced else []
    candidates.append(text.strip())
    for candidate in candidates:
        try:
            obj = orjson.loads(candidate)
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(obj, dict):
                return obj
        start = candidate.find("{")
        tries = 0
        while start != -1 and tries < _MAX_SCAN:
            tries += 1
            try:
                obj, _ = _DECODER.raw_decode(candidate, start)
            except json.JSONDecodeError:
                pass
            else:
                if isinstance(obj, dict):
                    return obj
            start = candidate.find("{", start + 1)
    return None


def _coerce(value: Any, value_type: str, text: str) -> Any:
    def bad(expected: str) -> JudgeResponseError:
        return JudgeResponseError(f"judge result {value!r} is not {expected}; raw answer: {_raw(text)}")

    if value_type in ("yes/no", "bool"):
        if isinstance(value, bool):
            verdict = value
        elif isinstance(value, (str, int)) and str(value).strip().lower() in _YES | _NO:
            verdict = str(value).strip().lower() in _YES
        else:
            raise bad('"yes" or "no"')
        if value_type == "bool":
            return verdict
        return "yes" if verdict else "no"
    if value_type == "str":
        if isinstance(value, (dict, list)) or value is None:
            raise bad("a string")
        return value if isinstance(value, str) else str(value)
    if isinstance(value, bool) or value is None:
        raise bad("a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad("a number") from None
    if value_type == "int":
        if not number.is_integer():
            raise bad("an integer")
        return int(number)
    return number


def parse_verdict(text: str, value_type: str = "yes/no") -> tuple[Any, str | None]:
    """Return `(value, rationale)` from a judge answer such as `{"result": "yes", ...}`.

    Raises:
        JudgeResponseError: no JSON object with `result` (or `value`) is found, or it cannot
            be coerced to `value_type`; the message holds the raw answer, truncated.
        ScorerDefinitionError: `value_type` is not one of `VALUE_TYPES`.
    """
    if value_type not in VALUE_TYPES:
        raise ScorerDefinitionError(f"unknown value type {value_type!r}; use one of {', '.join(VALUE_TYPES)}")
    obj = _find_object(text)
    if obj is None:
        raise JudgeResponseError(f"judge answer holds no JSON object; raw answer: {_raw(text)}")
    key = "result" if "result" in obj else "value" if "value" in obj else None
    if key is None:
        raise JudgeResponseError(f'judge answer has no "result" field; raw answer: {_raw(text)}')
    rationale = obj.get("rationale")
    if rationale is not None and not isinstance(rationale, str):
        rationale = str(rationale)
    return _coerce(obj[key], value_type, text), rationale
