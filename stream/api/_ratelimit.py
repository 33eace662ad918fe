"""Per-client rate limiting for the API: a token bucket per client key, in process memory.

Why in memory and not in Redis: the limit protects this process (and Kafka behind it) from
one noisy client, so an approximate per-process bucket is enough, costs no round trip and
keeps working when Redis is down. With N API processes a client gets up to N times the rate;
size the rate for one process.

The table of buckets is bounded: the least recently seen clients are forgotten first, which
only ever hands a forgotten client a full bucket again (a client idle long enough to be
evicted would have refilled anyway).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from stream.api._models import error_response

__all__ = ["RateLimit", "RateLimitMiddleware", "RateLimiter"]


@dataclass(slots=True, frozen=True)
class RateLimit:
    """A sustained `rate` of requests per second with bursts of up to `burst`; rate 0 = unlimited."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst < 1:
            raise ValueError(f"rate must be >= 0 and burst >= 1, got rate={self.rate}, burst={self.burst}")


class RateLimiter:
    """Token buckets keyed by client.

    Args:
        max_clients: How many clients to remember; the least recently seen are forgotten.
        clock: Monotonic seconds (injectable for tests).

    Example:
        >>> limiter = RateLimiter()
        >>> limiter.acquire("ip:10.0.0.1", RateLimit(rate=1, burst=2))
        0.0
    """

    def __init__(self, *, max_clients: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_clients < 1:
            raise ValueError("max_clients must be >= 1")
        self._max = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, last]

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str, limit: RateLimit) -> float:
        """Take one token for `key`: 0.0 when allowed, else the seconds until one is available."""
        if limit.rate == 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(limit.burst), now]
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(float(limit.burst), bucket[0] + (now - bucket[1]) * limit.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / limit.rate


Classifier = Callable[[Scope], tuple[str, RateLimit] | None]
"""Maps a request to `(client key, its limit)`, or None for requests that are never limited."""


class RateLimitMiddleware:
    """Answer 429 with `Retry-After` (whole seconds) to a client over its limit.

    Runs before the body is read, so a flood costs one header parse per request and never
    reaches validation, Kafka or Redis.
    """

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter, classify: Classifier) -> None:
        self.app = app
        self.limiter = limiter
        self.classify = classify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = self.classify(scope)
            if found is not None:
                wait = self.limiter.acquire(*found)
                if wait > 0:
                    retry = max(1, math.ceil(wait))
                    response = error_response(
                        429,
                        "rate_limited",
                        f"too many requests from this client; retry in {retry} s",
                        headers={"Retry-After": str(retry)},
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
