"""Steady replay: fresh traces from templates at a paced rate, with an exact failed share.

Every trace goes out under a fresh id (a replayed id would be a no-op for the workers, whose
Redis guard makes replays idempotent), re-stamped to "now" (so end-to-end latency and the
per-minute aggregates look live). Failed vs OK is decided by the trace itself (`Trace.ok`), so
the fixtures folder may hold any traces. The failed share is exact, not random: an accumulator
spreads the failed traces evenly, so a 5% share is one trace in twenty.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stream.traffic._template import Templates, new_trace_id

if TYPE_CHECKING:
    from stream.sdk._publisher import TracePublisher

__all__ = ["ReplayStats", "TraceFactory", "incident_schedule", "replay"]


class TraceFactory:
    """Fresh traces from templates: `tr-` + 32 random hex digits, re-stamped to now.

    Whether the next trace is a failed one follows an exact share (see the module docstring);
    which template of its kind is drawn at random (seeded).
    """

    def __init__(self, templates: Templates, *, seed: int = 1, clock: Callable[[], float] = time.time) -> None:
        self.templates = templates
        self._rng = random.Random(seed)
        self._clock = clock
        self._acc = 0.0
        self.made = 0
        self.made_failed = 0

    def next(self, error_share: float) -> tuple[str, bytes]:
        """The next `(trace_id, wire bytes)`, failed with long-run share `error_share`.

        Raises:
            ValueError: the share asks for a kind of trace the templates do not have.
        """
        self._acc += min(max(error_share, 0.0), 1.0)
        failed = self._acc >= 1.0 - 1e-9
        if failed:
            self._acc -= 1.0
        pool = self.templates.failed if failed else self.templates.ok
        if not pool:
            kind = "failed (state ERROR)" if failed else "OK"
            raise ValueError(f"error share {error_share} needs {kind} traces and the fixtures have none")
        template = self._rng.choice(pool)
        tid = new_trace_id(self._rng)
        self.made += 1
        self.made_failed += failed
        return tid, template.with_id(tid, end_ms=int(self._clock() * 1000))


def incident_schedule(
    error_share: float, *, after: float | None = None, duration: float | None = None, incident_share: float = 0.8
) -> Callable[[float], float]:
    """Failed share as a function of seconds since start: `error_share`, and `incident_share`
    from `after` for `duration` seconds (forever when `duration` is None)."""

    def share(elapsed: float) -> float:
        if after is not None and elapsed >= after and (duration is None or elapsed < after + duration):
            return incident_share
        return error_share

    return share


@dataclass(slots=True)
class ReplayStats:
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0


async def replay(
    publisher: TracePublisher,
    factory: TraceFactory,
    *,
    rate: float,
    error_share: float | Callable[[float], float],
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    tick: float = 0.1,
    report: Callable[[str], None] | None = None,
    report_every: float = 10.0,
) -> ReplayStats:
    """Publish `rate` traces per second until `duration` seconds passed or `stop` is set.

    Every trace is acknowledged by Kafka before the call returns (a failure raises
    `stream.PublishError`). After a stall the schedule catches up, so the long-run rate holds.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    share_at = error_share if callable(error_share) else (lambda _elapsed: float(error_share))
    loop = asyncio.get_running_loop()
    start = loop.time()
    stats = ReplayStats()
    failed_before = factory.made_failed
    next_report = report_every
    while True:
        elapsed = loop.time() - start
        if (stop is not None and stop.is_set()) or (duration is not None and elapsed >= duration):
            break
        due = int(rate * elapsed) + 1 - stats.sent
        if due > 0:
            share = share_at(elapsed)
            batch = [factory.next(share)[1] for _ in range(due)]
            stats.sent += await publisher.publish_many(batch, window=max(due, 1))
        if report is not None and elapsed >= next_report:
            next_report += report_every
            report(
                f"{elapsed:7.0f}s sent {stats.sent} traces ({factory.made_failed - failed_before} failed); "
                f"failed share now {share_at(elapsed):.0%}"
            )
        if stop is None:
            await asyncio.sleep(tick)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
    stats.failed = factory.made_failed - failed_before
    stats.seconds = loop.time() - start
    return stats
