"""Deterministic sampling by trace id, as DESIGN.md fixes it.

`u = xxh64(trace_id) / 2**64` is the same for every scorer, worker and replay, so a scorer
at rate 0.1 scores a subset of what a scorer at 0.5 scores, and redelivery samples the
same traces.
"""

from __future__ import annotations

from xxhash import xxh64_intdigest

__all__ = ["sample_u", "sampled"]

_SCALE = 1.0 / 2.0**64


def sample_u(trace_id: str) -> float:
    """The trace's sampling coordinate in [0, 1)."""
    return xxh64_intdigest(trace_id.encode()) * _SCALE


def sampled(trace_id: str, rate: float) -> bool:
    """Whether a scorer at `rate` scores this trace."""
    return sample_u(trace_id) < rate
