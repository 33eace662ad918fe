"""The Redis boundary of `sinks`: the one way to open a client, and error conversion.

Every Redis call of the package runs inside `converted(operation)`, so callers see only
`SinkError` types (chained to the client's exception), never `redis.exceptions.*`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from sinks._exceptions import SinkDataError, SinkError, SinkUnavailableError

__all__ = ["client_from_url", "convert", "converted", "text"]

_UNAVAILABLE_PREFIXES = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def convert(exc: BaseException, operation: str) -> SinkError:
    """Our error for a Redis client error: is waiting going to help, or is the data at fault?"""
    msg = f"redis {operation} failed: {exc}"
    if isinstance(exc, (rexc.AuthenticationError, rexc.AuthorizationError, rexc.NoPermissionError)):
        return SinkError(msg, sink="redis", operation=operation)
    if isinstance(
        exc,
        (
            rexc.ConnectionError,
            rexc.TimeoutError,
            rexc.ReadOnlyError,
            rexc.OutOfMemoryError,
            rexc.MasterDownError,
            rexc.TryAgainError,
            rexc.ClusterDownError,
            rexc.InvalidResponse,
            OSError,
        ),
    ):
        return SinkUnavailableError(msg, sink="redis", operation=operation)
    if isinstance(exc, rexc.ResponseError):
        if str(exc).startswith(_UNAVAILABLE_PREFIXES):
            return SinkUnavailableError(msg, sink="redis", operation=operation)
        return SinkDataError(msg, sink="redis", operation=operation)
    if isinstance(exc, rexc.DataError):
        return SinkDataError(msg, sink="redis", operation=operation)
    return SinkError(msg, sink="redis", operation=operation)


@contextmanager
def converted(operation: str) -> Iterator[None]:
    """Raise our `SinkError` types, chained, for anything the Redis client raises."""
    try:
        yield
    except (rexc.RedisError, OSError) as exc:
        raise convert(exc, operation) from exc


def text(x: bytes | str) -> str:
    """`x` as text, whichever `decode_responses` setting the client has."""
    return x.decode() if isinstance(x, bytes) else x


def client_from_url(url: str, *, socket_timeout: float = 5.0, connect_timeout: float = 2.0) -> aioredis.Redis:
    """The one way tracewatch opens Redis: timeouts, and two quick retries over a stale connection.

    Raises:
        ValueError: The URL is malformed.
    """
    return aioredis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        health_check_interval=30,
    )
