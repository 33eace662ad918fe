from __future__ import annotations

import xxhash

from stream.worker._sampling import sample_u, sampled


def test_u_is_xxh64_over_2_64() -> None:
    tid = "tr-06862f3f97231e20a311e8229b3a98c9"
    assert sample_u(tid) == xxhash.xxh64(tid.encode()).intdigest() / 2**64
    assert 0.0 <= sample_u(tid) < 1.0


def test_lower_rates_sample_subsets() -> None:
    ids = [f"tr-{i:032x}" for i in range(5000)]
    at = {r: {t for t in ids if sampled(t, r)} for r in (0.0, 0.1, 0.5, 1.0)}
    assert at[0.0] == set()
    assert at[1.0] == set(ids)
    assert at[0.1] < at[0.5] < at[1.0]
    assert 0.45 < len(at[0.5]) / len(ids) < 0.55
    assert 0.07 < len(at[0.1]) / len(ids) < 0.13
