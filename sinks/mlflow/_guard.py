"""The Redis guard that makes the MLflow sink write each result exactly once.

One key per result, `<prefix>mlflow:r:<result id>`:

- absent: never attempted; the claim sets it to `pending` and the write goes straight to MLflow;
- `pending`: an earlier attempt started and may have landed in MLflow before a crash or a
  lost answer; the writer looks at the trace's assessments before writing again;
- `a-...`: MLflow's assessment id, set only after MLflow acknowledged: done, skip.

Claim is one `SET NX GET` round trip (Redis >= 7.0), so the common path costs one Redis
call before and one after the MLflow call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis.asyncio as aioredis
import redis.exceptions as rexc

from sinks._exceptions import SinkUnavailableError

__all__ = ["PENDING", "MlflowGuard"]

PENDING = "pending"


@contextlib.contextmanager
def _converted(operation: str) -> Iterator[None]:
    try:
        yield
    except (rexc.RedisError, OSError) as exc:
        raise SinkUnavailableError(
            f"redis {operation}: {type(exc).__name__}: {exc}", sink="redis", operation=operation
        ) from exc


class MlflowGuard:
    """Per-result write guards in Redis.

    Args:
        client: A `redis.asyncio.Redis`, owned by the caller.
        prefix: Key prefix (the deployment's `redis_prefix`).
        ttl: Seconds a guard lives: longer than any redelivery (the topic's retention).
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = "tw:", ttl: float = 14 * 86400) -> None:
        self._client = client
        self._prefix = f"{prefix}mlflow:r:"
        self._ttl_ms = int(ttl * 1000)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "tw:", ttl: float = 14 * 86400) -> MlflowGuard:
        return cls(aioredis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0), prefix=prefix, ttl=ttl)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def claim(self, rid: str) -> str | None:
        """Mark a result as being written; returns what was there (None, `PENDING` or an assessment id).

        Raises:
            SinkUnavailableError: Redis did not answer.
        """
        with _converted("claim"):
            prev = await self._client.set(self._prefix + rid, PENDING, px=self._ttl_ms, nx=True, get=True)
        if prev is None:
            return None
        return prev.decode() if isinstance(prev, bytes) else str(prev)

    async def done(self, rid: str, assessment_id: str) -> None:
        """Record MLflow's acknowledgement of a result (its assessment id).

        Raises:
            SinkUnavailableError: Redis did not answer.
        """
        with _converted("done"):
            await self._client.set(self._prefix + rid, assessment_id, px=self._ttl_ms)
