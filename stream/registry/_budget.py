"""Hourly budgets: a cap on how many calls (and judge tokens) a scorer may spend per hour.

The worker asks `take()` before each sampled (trace, scorer) pair and, on False, records the
pair as `skipped` with reason `budget`, so spending stops at the cap and the coverage
metrics show exactly how much was skipped.

Counting is local to one worker process: with N worker processes a scorer may spend up to N
times its budget per hour. That keeps `take()` a few attribute reads on the hot path (no
Redis round trip per pair); set the budget per process accordingly. The window is the clock
hour (UTC epoch hours), so every process resets at the same moment.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["HourlyBudget"]

_HOUR = 3600.0


class HourlyBudget:
    """Calls and tokens allowed per clock hour, counted in this process.

    Args:
        max_calls: calls allowed per hour (None: no cap on calls).
        max_tokens: judge tokens allowed per hour (None: no cap); spent tokens are reported
            with `add_tokens` after a call, so the call that crosses the cap still runs.
        clock: seconds since the epoch (injectable for tests).

    Raises:
        ValueError: a cap is below 1.

    Example:
        >>> budget = HourlyBudget(max_calls=2)
        >>> [budget.take(), budget.take(), budget.take()]
        [True, True, False]
    """

    __slots__ = ("_clock", "_window", "calls", "max_calls", "max_tokens", "tokens")

    def __init__(
        self,
        *,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_calls: int | None = None
        self.max_tokens: int | None = None
        self.configure(max_calls=max_calls, max_tokens=max_tokens)
        self._clock = clock
        self._window = int(clock() // _HOUR)
        self.calls = 0
        self.tokens = 0

    def __repr__(self) -> str:
        return (
            f"HourlyBudget(calls={self.calls}/{self.max_calls}, tokens={self.tokens}/{self.max_tokens})"
        )

    def configure(self, *, max_calls: int | None, max_tokens: int | None) -> None:
        """Change the caps, keeping what this hour has spent (a registry update does this).

        Raises:
            ValueError: a cap is below 1.
        """
        for label, cap in (("max_calls", max_calls), ("max_tokens", max_tokens)):
            if cap is not None and cap < 1:
                raise ValueError(f"{label} must be at least 1 per hour, got {cap}")
        self.max_calls = max_calls
        self.max_tokens = max_tokens

    def _roll(self) -> None:
        window = int(self._clock() // _HOUR)
        if window != self._window:
            self._window = window
            self.calls = 0
            self.tokens = 0

    def take(self) -> bool:
        """Spend one call if the hour's caps allow it; False means skip with reason `budget`."""
        self._roll()
        if self.max_calls is not None and self.calls >= self.max_calls:
            return False
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            return False
        self.calls += 1
        return True

    def add_tokens(self, n: int) -> None:
        """Record `n` tokens spent by a call this hour (judges report their usage)."""
        self._roll()
        self.tokens += max(0, n)
