"""Fuzz the running API with schemathesis: whatever a client sends, the answer is never a 5xx.

The API runs in uvicorn on loopback with the real Kafka and Redis (valid feedback really goes
to a test topic); every operation in its OpenAPI document gets a bounded number of generated
requests, with a valid API key so that generation reaches the handlers, not just the auth.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error

from stream._config import Settings
from stream._kafka import create_topics
from stream.api._app import create_app
from stream.api._models import ApiOptions
from stream.cli._api import ApiServer

pytestmark = pytest.mark.integration

KEY = "fuzz-key"
# No rate limits: a 429 is no 5xx, but it would keep generated requests from the handlers.
OPTIONS = ApiOptions(rate_limit=0, key_rate_limit=0, publish_timeout=10)

# The document is the app's own; building the app opens no connection (that is the lifespan's).
schema = schemathesis.openapi.from_dict(create_app(Settings(api_keys=[KEY]), options=OPTIONS).openapi())


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        topic_prefix=f"twtest.{tag}.",
        consumer_group=f"twtest-{tag}",
        redis_prefix=f"twtest:{tag}:",
        api_keys=[KEY],
        feedback_secrets=["fuzz-secret"],
    )
    asyncio.run(create_topics(settings, partitions=1))
    with ApiServer(create_app(settings, options=OPTIONS)) as server:
        yield server.base_url


@schema.parametrize()
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_api_fail(case, base_url: str) -> None:
    case.call_and_validate(
        base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, checks=[not_a_server_error], timeout=30
    )
