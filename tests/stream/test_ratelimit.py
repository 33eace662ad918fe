"""Token buckets per client, on a fake clock."""

from __future__ import annotations

import pytest

from stream.api._ratelimit import RateLimit, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_the_sustained_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit(rate=2.0, burst=3)
    assert [limiter.acquire("a", limit) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a", limit) == pytest.approx(0.5)  # one token every 0.5 s
    clock.now += 0.5
    assert limiter.acquire("a", limit) == 0.0
    assert limiter.acquire("a", limit) == pytest.approx(0.5)


def test_refill_is_capped_at_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit(rate=1.0, burst=2)
    limiter.acquire("a", limit)
    clock.now += 3600
    assert [limiter.acquire("a", limit) == 0.0 for _ in range(3)] == [True, True, False]


def test_clients_have_separate_buckets() -> None:
    limiter = RateLimiter(clock=Clock())
    limit = RateLimit(rate=1.0, burst=1)
    assert limiter.acquire("a", limit) == 0.0
    assert limiter.acquire("a", limit) > 0
    assert limiter.acquire("b", limit) == 0.0


def test_rate_zero_is_unlimited_and_remembers_nothing() -> None:
    limiter = RateLimiter(clock=Clock())
    assert all(limiter.acquire(f"c{i}", RateLimit(rate=0, burst=1)) == 0.0 for i in range(100))
    assert len(limiter) == 0


def test_the_table_is_bounded_and_forgets_the_least_recent() -> None:
    clock = Clock()
    limiter = RateLimiter(max_clients=3, clock=clock)
    limit = RateLimit(rate=0.001, burst=1)
    for key in "abc":
        limiter.acquire(key, limit)
    assert limiter.acquire("a", limit) > 0  # touches a: b is now the least recent
    limiter.acquire("d", limit)
    assert len(limiter) == 3
    assert limiter.acquire("a", limit) > 0  # still remembered
    assert limiter.acquire("b", limit) == 0.0  # forgotten: a full bucket again


@pytest.mark.parametrize(("rate", "burst"), [(-1.0, 1), (1.0, 0)])
def test_bad_limits(rate, burst) -> None:
    with pytest.raises(ValueError):
        RateLimit(rate=rate, burst=burst)
