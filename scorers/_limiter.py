"""Pacing and bounding judge calls: token buckets, `Retry-After`, prompt truncation.

Split from `_judge` so the client module holds only the request loop; nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import email.utils
from datetime import UTC, datetime
from time import monotonic

__all__ = ["TokenBucket", "parse_retry_after", "truncate"]


def truncate(text: str, limit: int) -> str:
    """Cut `text` to `limit` characters, saying so: never a silent cut.

    Example:
        >>> truncate("abcdefghij", 4)
        'abcd...[truncated 6 chars]'
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[truncated {len(text) - limit} chars]"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is not a delay
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class TokenBucket:
    """An async token bucket: `rate_per_minute` tokens refill continuously.

    The bucket holds at most one second's worth (at least 1), so a quiet period does not
    let a full minute's budget out in one burst. Waiters are served in arrival order.
    """

    def __init__(self, rate_per_minute: float, *, capacity: float | None = None) -> None:
        if rate_per_minute <= 0:
            raise ValueError(f"rate must be > 0 per minute, got {rate_per_minute}")
        self.rate_per_s = rate_per_minute / 60.0
        self.capacity = capacity if capacity is not None else max(1.0, self.rate_per_s)
        self._tokens = self.capacity
        self._stamp = monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    async def acquire(self, n: float = 1.0) -> None:
        """Take `n` tokens, waiting as long as needed (n is capped at the capacity)."""
        n = min(n, self.capacity)
        async with self._lock:
            self._refill()
            while self._tokens < n:
                await asyncio.sleep((n - self._tokens) / self.rate_per_s)
                self._refill()
            self._tokens -= n

    def adjust(self, delta: float) -> None:
        """Debit (`delta > 0`) or credit tokens after the fact, e.g. real vs estimated usage."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens - delta)
