"""Errors of the sink layer.

    SinkError                   root of everything `sinks` raises (carries `sink`, `operation`)
    ├── SinkUnavailableError    the store is down, slow, loading, read-only or out of memory:
    │                           retry the same batch with backoff and do not commit offsets
    └── SinkDataError           the store refused the data itself (a malformed pair, a key of
                                the wrong type, a script error): retrying the batch fails again

A plain `SinkError` means the sink is misconfigured (bad credentials, missing ACL
permission): neither waiting nor dropping data helps, so the worker should stop.

Callers never see `redis.exceptions.*`: the Redis sink converts them at its boundary and
chains the original as `__cause__`. A command line exits with `exit_code` (1) on any of them.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["SinkDataError", "SinkError", "SinkUnavailableError"]


class SinkError(Exception):
    """Root of the errors raised by the `sinks` package.

    Attributes:
        sink: Which sink failed (`"redis"`), for logs and the `reason` of a metric.
        operation: What it was doing (`"write"`, `"get_trace"`, ...).
        exit_code: The exit status a command line gives for this error.
    """

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, sink: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.sink = sink
        self.operation = operation


class SinkUnavailableError(SinkError):
    """The store cannot take writes right now; the same batch may succeed later.

    Writes are idempotent, so retrying a batch that partly landed is safe.
    """


class SinkDataError(SinkError):
    """The store rejected the data; retrying the same batch will fail the same way.

    Attributes:
        index: Position of the offending pair in the batch, when known.
    """

    def __init__(
        self, message: str, *, sink: str = "", operation: str = "", index: int | None = None
    ) -> None:
        super().__init__(message, sink=sink, operation=operation)
        self.index = index
