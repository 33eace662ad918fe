"""Shared test fixtures: the MLflow fixtures folder and isolated settings for integration tests.

Integration tests talk to the real Kafka and Redis that `make test` starts; each test gets its
own topic prefix, consumer group and Redis key prefix, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from stream._config import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRACEWATCH_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "mlflow"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"MLflow fixtures not found at {FIXTURES} (set TRACEWATCH_SHARED)"
    return FIXTURES


@pytest.fixture(scope="session")
def fixture_bytes(fixtures_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(fixtures_dir.glob("mlflow_trace_*.json"))]


@pytest.fixture
def settings() -> Settings:
    """Settings for the local stack, isolated per test by unique prefixes."""
    tag = uuid.uuid4().hex[:10]
    return Settings(
        topic_prefix=f"twtest.{tag}.",
        consumer_group=f"twtest-{tag}",
        redis_prefix=f"twtest:{tag}:",
        partitions=4,
        metrics_port=0,
    )
