"""Errors of the scorer domain.

    ScorerError                 root of everything `scorers` raises
    ├── DecodeError             a payload is not a valid MLflow trace (carries `reason`)
    ├── ScorerDefinitionError   a scorer or judge is declared wrongly (bad template, bad return)
    │   └── ScorerReferenceError    a scorer reference is outside the grammar or names
    │                               something that may not be loaded (`scorers._reference`)
    └── JudgeError              a judge call failed (carries `code`)
        ├── JudgeTimeoutError   the judge did not answer within its timeout
        ├── JudgeRateLimitError retries on 429 ran out
        └── JudgeResponseError  the judge answered something we cannot parse

`DecodeError.reason` is a short, bounded code (`not_json`, `too_large`, ...) used as a
metric label and as the `tw-reason` header of dead-lettered messages. `bad_id` is an id or
name that is not a string of bounded length (it would become a Redis key or a metric label,
see `scorers._limits`); `bad_value` is a time or duration that is not an integer in range.

`exit_code` says how a command line reports the error: 2 when the input is at fault
(`DecodeError`, `ScorerDefinitionError`), 1 otherwise.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "DecodeError",
    "JudgeError",
    "JudgeRateLimitError",
    "JudgeResponseError",
    "JudgeTimeoutError",
    "ScorerDefinitionError",
    "ScorerError",
]


class ScorerError(Exception):
    """Root of the errors raised by the `scorers` package.

    Attributes:
        exit_code: The exit status a command line gives for this error.
    """

    exit_code: ClassVar[int] = 1


class DecodeError(ScorerError):
    """A payload is not a valid trace; `reason` is one of `DecodeError.REASONS`."""

    REASONS = frozenset(
        {
            "not_json",
            "not_object",
            "missing_info",
            "missing_trace_id",
            "bad_trace_id",
            "bad_spans",
            "bad_id",
            "bad_value",
            "too_large",
            "bad_compression",
        }
    )

    exit_code = 2

    def __init__(self, reason: str, message: str) -> None:
        assert reason in self.REASONS, reason
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class ScorerDefinitionError(ScorerError, TypeError):
    """A scorer, judge or template is declared wrongly; raised when it is defined."""

    exit_code = 2


class JudgeError(ScorerError):
    """A judge call failed; `code` becomes the error code of the resulting feedback."""

    code = "JUDGE_ERROR"


class JudgeTimeoutError(JudgeError):
    code = "JUDGE_TIMEOUT"


class JudgeRateLimitError(JudgeError):
    code = "JUDGE_RATE_LIMITED"


class JudgeResponseError(JudgeError):
    code = "JUDGE_BAD_RESPONSE"
