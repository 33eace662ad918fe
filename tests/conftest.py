"""Shared test fixtures: the MLflow fixtures folder and isolated settings for integration tests.

Integration tests talk to the real Kafka and Redis that `make test` starts; each test gets its
own topic prefix, consumer group and Redis key prefix, so tests never see each other's data.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream._config import Settings
from stream.traffic import find_fixtures

FIXTURES = find_fixtures(must_exist=False)  # ../shared/fixtures/mlflow, or $TRACEWATCH_SHARED/fixtures/mlflow


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return find_fixtures()  # a missing folder fails with where it looked and how to point elsewhere


@pytest.fixture(scope="session")
def fixture_bytes(fixtures_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(fixtures_dir.glob("mlflow_trace_*.json"))]


# Integration tests keep their Redis data in a database of its own, and each test deletes its
# keys afterwards, so repeated runs on a developer machine do not pile up keys.
TEST_REDIS_URL = os.environ.get("TRACEWATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _delete_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=0.5)
    try:
        batch = []
        for key in client.scan_iter(match=f"{prefix}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    except redis.RedisError:
        pass  # no local Redis (unit runs): nothing to clean
    finally:
        client.close()


@pytest.fixture
def settings() -> Iterator[Settings]:
    """Settings for the local stack, isolated per test by unique prefixes (keys deleted after)."""
    tag = uuid.uuid4().hex[:10]
    s = Settings(
        redis_url=TEST_REDIS_URL,
        topic_prefix=f"twtest.{tag}.",
        consumer_group=f"twtest-{tag}",
        redis_prefix=f"twtest:{tag}:",
        partitions=4,
        metrics_port=0,
    )
    yield s
    _delete_prefix(s.redis_prefix)
    _delete_topics(s)


def _delete_topics(s: Settings) -> None:
    """Drop the test's topics so a developer's broker does not collect thousands of partitions."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    async def drop() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            mine = [t for t in await admin.list_topics() if t.startswith(s.topic_prefix)]
            if mine:
                await admin.delete_topics(mine)
        except KafkaError:
            pass  # no broker (unit runs) or already gone
        finally:
            await admin.close()

    with contextlib.suppress(RuntimeError):  # called inside a running loop: leave the topics
        asyncio.run(drop())


@pytest.fixture(scope="module")
def judge_server():
    """A fake judge (`JudgeServer`) on loopback, one per test module; `fresh_judge` resets it per test."""
    from stream.cli.judge_server import JudgeServer

    with JudgeServer() as srv:
        yield srv
