"""Errors of the runtime: every exception `stream` raises is a `StreamError`.

    StreamError                 root of everything `stream` raises
    ├── ConfigError             bad configuration, raised at startup
    ├── KafkaUnavailableError   the broker cannot be reached or refused a request
    ├── PublishError            a trace was not acknowledged by Kafka (carries `trace_id`)
    ├── CommitError             an offset commit failed; the batch will be redelivered
    ├── OffsetError             an offset went backwards on a partition (also a `RuntimeError`)
    ├── FilterError             a sampling filter string is invalid (carries `text`, `column`;
    │                           also a `ValueError`)
    ├── RegistryError           a registry request is invalid or names nothing (carries
    │                           `scorer`, `experiment_id`; also a `ValueError`)
    ├── TokenError              a feedback token was refused (carries `reason`)
    ├── FeedbackError           the API did not accept a vote or expectation (carries
    │                           `status`, `code`, `retry_after`)
    └── ApiError                an HTTP refusal (carries `status`, `code`, `headers`)

The classes live here so that the SDK, the registry, the API and the worker share one tree;
`stream`, `stream.sdk`, `stream.registry` and `stream.api` re-export them where they were.

At the boundaries:

- CLI: the process exits with `exit_code(exc)`: 2 when the input is wrong (`ConfigError`,
  `FilterError`, `RegistryError`, `TokenError`; `scorers.DecodeError` and
  `scorers.ScorerDefinitionError` say the same), 1 for anything else, such as a dependency
  that is down.
- HTTP: `ApiError.status` is the response's status; `stream.api` renders other errors of
  the tree with `stream.api.http_status` (`TokenError` 401/403, `FilterError` and
  `RegistryError` 422, Kafka 503, the rest 500).
- DLQ: a dead-lettered message's `tw-reason` header is `scorers.DecodeError.reason` for a
  record that is not a trace and `bad_feedback` for a feedback event that is not valid
  (`dead_letter_reason(exc)`); scoring failures are data, not dead letters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

__all__ = [
    "ApiError",
    "CommitError",
    "ConfigError",
    "FeedbackError",
    "FilterError",
    "KafkaUnavailableError",
    "OffsetError",
    "PublishError",
    "RegistryError",
    "StreamError",
    "TokenError",
    "TokenReason",
    "dead_letter_reason",
    "exit_code",
]

TokenReason = Literal["expired", "bad_signature", "malformed", "wrong_trace", "name_not_allowed", "value_not_allowed"]
"""Why a feedback token was refused: a stable code the API maps to 401 or 403."""

EXIT_FAILURE = 1
EXIT_USAGE = 2


class StreamError(Exception):
    """Root of the errors raised by the `stream` package.

    Attributes:
        exit_code: The CLI's exit status for this error (see `exit_code`).
    """

    exit_code: ClassVar[int] = EXIT_FAILURE


class ConfigError(StreamError):
    """Configuration is wrong; the message says what to fix."""

    exit_code = EXIT_USAGE


class KafkaUnavailableError(StreamError):
    """The broker could not be reached or refused a request."""


class PublishError(StreamError):
    """Kafka did not acknowledge a trace: it is NOT stored and the caller must know."""

    def __init__(self, message: str, *, trace_id: str | None = None) -> None:
        super().__init__(message)
        self.trace_id = trace_id


class CommitError(StreamError):
    """An offset commit failed; nothing after the last good commit is lost, only redelivered."""


class OffsetError(StreamError, RuntimeError):
    """An offset went backwards on a partition that was not reset: a bug, never data.

    Attributes:
        partition: The topic-partition concerned.
        offset: The offset that arrived.
        last: The offset tracked before it.
    """

    def __init__(self, message: str, *, partition: object = None, offset: int = -1, last: int = -1) -> None:
        super().__init__(message)
        self.partition = partition
        self.offset = offset
        self.last = last


class FilterError(StreamError, ValueError):
    """A filter string is not valid; the message says what is wrong, where, and what to write.

    Attributes:
        text: the filter as given.
        column: 1-based column of the problem.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, text: str, column: int) -> None:
        super().__init__(message)
        self.text = text
        self.column = column


class RegistryError(StreamError, ValueError):
    """A registry request is invalid or names nothing; the message says what to fix.

    Attributes:
        scorer: the scorer name concerned, when there is one.
        experiment_id: its experiment, when known.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, scorer: str | None = None, experiment_id: str | None = None) -> None:
        super().__init__(message)
        self.scorer = scorer
        self.experiment_id = experiment_id


class TokenError(StreamError):
    """A feedback token was refused; `reason` is one of `TokenReason` (stable, for the API).

    Attributes:
        reason: `expired`, `bad_signature`, `malformed`, `wrong_trace`, `name_not_allowed`
            or `value_not_allowed`.
    """

    exit_code = EXIT_USAGE

    def __init__(self, reason: TokenReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: TokenReason = reason
        self.message = message


class FeedbackError(StreamError):
    """The API did not accept the event (or could not be reached); it was not recorded.

    Attributes:
        status: The HTTP status, or None when there was no answer.
        code: The API's error code (`unauthorized`, `token_expired`, `rate_limited`, ...).
        retry_after: Seconds the server asked to wait before retrying, when it said so.
    """

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class ApiError(StreamError):
    """A refusal, rendered as the API's JSON error `{"error": code, "message": ...}` by one handler.

    Attributes:
        status: The HTTP status.
        code: The stable error code (`unauthorized`, `trace_not_found`, ...).
        message: What to do about it, for a human.
        headers: Extra response headers (`Retry-After`, `WWW-Authenticate`).
        reason: A finer code, when there is one (a `DecodeError` reason, a token reason).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.reason = status, code, message, headers, reason


def exit_code(exc: BaseException) -> int:
    """The CLI's exit status for an error: 2 when the input is wrong, 1 otherwise.

    Works for the roots of all three packages (`StreamError`, `scorers.ScorerError`,
    `sinks.SinkError` carry an `exit_code` class attribute) and for anything else (1).

    Example:
        >>> exit_code(ConfigError("TRACEWATCH_PARTITIONS=-3: must be >= 1"))
        2
    """
    code = getattr(type(exc), "exit_code", EXIT_FAILURE)
    return code if isinstance(code, int) and not isinstance(code, bool) else EXIT_FAILURE


def dead_letter_reason(exc: BaseException) -> str:
    """The `tw-reason` of a dead-lettered message that failed to decode with `exc`.

    A `scorers.DecodeError` names its own reason (`not_json`, `too_large`, `bad_id`, ...);
    any other decoding failure of a feedback event is `bad_feedback`.
    """
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) and hasattr(type(exc), "REASONS") else "bad_feedback"
