"""Fixtures of the seed-example tests: the seed's own fixture traces, decoded."""

from __future__ import annotations

from pathlib import Path

import pytest

from scorers import Trace, decode_trace


@pytest.fixture(scope="session")
def seed_traces(fixtures_dir: Path) -> list[Trace]:
    """The shared MLflow fixture traces: what the seed's `mlflow.search_traces` stands for."""
    return [decode_trace(p.read_bytes()) for p in sorted(fixtures_dir.glob("mlflow_trace_*.json"))]
