"""A scorer that always raises: the `error` path of a pair, for tests that run a real worker."""

from __future__ import annotations

from typing import Any

from scorers import scorer


@scorer
def always_raises(outputs: Any) -> bool:
    raise RuntimeError("this scorer always fails (tests/fixtures_pkg/failing_scorers.py)")
