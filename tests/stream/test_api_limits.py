"""The API refuses what a worker would dead-letter (issue 11, breaks 1 and 6).

Ids and names share their bounds with the decoder (`scorers._limits`): a 422 naming the field
for bodies, a 422 with the decoder's reason for traces, and nothing published to Kafka.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import orjson
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from scorers import MAX_ID_CHARS, MAX_NAME_CHARS
from tests.stream.test_api import AUTH, TID, FakeProducer, assert_error, make_app

with warnings.catch_warnings():  # as in test_api: starlette would rather have httpx2
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

EXPERIMENT = ("info", "trace_location", "mlflow_experiment", "experiment_id")


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def client(producer):
    with TestClient(make_app(producer)) as c:
        yield c


def _trace(fixture_bytes: list[bytes], path: tuple[Any, ...], value: Any) -> bytes:
    trace = copy.deepcopy(orjson.loads(fixture_bytes[0]))
    node: Any = trace
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return orjson.dumps(trace)


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("info", "request_time"), 2**64 - 1, "bad_value"),
        (("info", "execution_duration_ms"), -1, "bad_value"),
        (("data", "spans", 0, "end_time_unix_nano"), 2**64 - 1, "bad_value"),
        (EXPERIMENT, "e" * (MAX_ID_CHARS + 1), "bad_id"),
        (("info", "trace_metadata", "mlflow.trace.session"), "s" * 10_000, "bad_id"),
    ],
)
def test_post_trace_refuses_bad_times_and_long_ids_with_422(client, producer, fixture_bytes, path, value, reason) -> None:
    data = _trace(fixture_bytes, path, value)
    r = client.post("/v1/traces", content=data, headers={**AUTH, "content-type": "application/json"})
    body = assert_error(r, 422, "invalid_trace")
    assert body["reason"] == reason
    assert path[-1] in body["message"] or "experiment id" in body["message"]
    assert producer.calls == 0


def test_post_trace_accepts_ids_at_the_limit(client, producer, fixture_bytes) -> None:
    data = _trace(fixture_bytes, EXPERIMENT, "e" * MAX_ID_CHARS)
    r = client.post("/v1/traces", content=data, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 202, r.text
    assert producer.calls == 1


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/v1/feedback", {"trace_id": "t" * (MAX_ID_CHARS + 1), "value": True}, "trace_id"),
        ("/v1/feedback", {"trace_id": TID, "value": True, "name": "n" * (MAX_NAME_CHARS + 1)}, "name"),
        ("/v1/feedback", {"trace_id": TID, "value": True, "source": {"id": "u" * (MAX_ID_CHARS + 1)}}, "source.id"),
        ("/v1/feedback", {"trace_id": TID, "value": True, "source_id": "u" * 1_000}, "source.source_id"),
        ("/v1/expectations", {"trace_id": TID, "value": 1, "name": "n" * (MAX_NAME_CHARS + 1)}, "name"),
        ("/v1/feedback-tokens", {"trace_id": TID, "names": ["n" * (MAX_NAME_CHARS + 1)]}, "names.0"),
        ("/v1/feedback-tokens", {"trace_id": TID, "user_id": "u" * (MAX_ID_CHARS + 1)}, "user_id"),
    ],
)
def test_long_ids_and_names_are_422_naming_the_field(client, producer, route, body, field) -> None:
    r = client.post(route, json=body, headers=AUTH)
    err = assert_error(r, 422, "invalid_request")
    assert field in [f["field"] for f in err["fields"]], err
    assert producer.calls == 0


def test_ids_and_names_at_the_limit_are_accepted(client, producer) -> None:
    body = {"trace_id": "t" * MAX_ID_CHARS, "value": True, "name": "n" * MAX_NAME_CHARS, "source": {"id": "u" * MAX_ID_CHARS}}
    r = client.post("/v1/feedback", json=body, headers=AUTH)
    assert r.status_code == 202, r.text
    [event] = producer.events()
    assert (len(event.trace_id), len(event.name), len(event.source_id)) == (MAX_ID_CHARS, MAX_NAME_CHARS, MAX_ID_CHARS)


def test_summary_refuses_names_and_experiments_past_the_limits(client) -> None:
    r = client.get(f"/v1/scorers/{'n' * (MAX_NAME_CHARS + 1)}/summary", headers=AUTH)
    assert_error(r, 422, "invalid_request")
    r = client.get("/v1/scorers/x/summary", params={"experiment": "e" * (MAX_ID_CHARS + 1)}, headers=AUTH)
    assert_error(r, 422, "invalid_request")
