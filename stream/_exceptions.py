"""Errors of the runtime.

    StreamError                 root of everything `stream` raises
    ├── ConfigError             bad configuration, raised at startup
    ├── KafkaUnavailableError   the broker cannot be reached or refused a request
    ├── PublishError            a trace was not acknowledged by Kafka (carries `trace_id`)
    └── CommitError             an offset commit failed; the batch will be redelivered
"""

from __future__ import annotations

__all__ = ["CommitError", "ConfigError", "KafkaUnavailableError", "PublishError", "StreamError"]


class StreamError(Exception):
    """Root of the errors raised by the `stream` package."""


class ConfigError(StreamError):
    """Configuration is wrong; the message says what to fix."""


class KafkaUnavailableError(StreamError):
    """The broker could not be reached or refused a request."""


class PublishError(StreamError):
    """Kafka did not acknowledge a trace: it is NOT stored and the caller must know."""

    def __init__(self, message: str, *, trace_id: str | None = None) -> None:
        super().__init__(message)
        self.trace_id = trace_id


class CommitError(StreamError):
    """An offset commit failed; nothing after the last good commit is lost, only redelivered."""
