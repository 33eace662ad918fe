"""Credentials sent twice are refused, whichever copy is valid (TestClient and fakes)."""

from __future__ import annotations

import warnings

import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from stream.cli._api import ApiServer
from tests.stream.test_api import KEY, TID, FakeProducer, assert_error, make_app, token

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works the same here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

BODY = {"trace_id": TID, "value": True}
GOOD = ("Authorization", f"Bearer {KEY}")
BAD = ("Authorization", "Bearer not-a-key")


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def client(producer):
    with TestClient(make_app(producer)) as c:
        yield c


@pytest.mark.parametrize(
    "headers",
    [
        [BAD, GOOD],  # the last copy used to win: an invalid-then-valid pair was accepted
        [GOOD, BAD],
        [GOOD, GOOD],
    ],
    ids=["invalid-then-valid", "valid-then-invalid", "valid-twice"],
)
def test_two_authorization_headers_are_refused(client, producer, headers) -> None:
    body = assert_error(client.post("/v1/feedback", json=BODY, headers=headers), 400, "duplicate_credentials")
    assert "Authorization" in body["message"]
    assert_error(client.get("/v1/scorers", headers=headers), 400, "duplicate_credentials")
    assert producer.calls == 0
    assert client.post("/v1/feedback", json=BODY, headers=[GOOD]).status_code == 202  # once is fine


def test_two_feedback_tokens_are_refused(client, producer) -> None:
    [(name, value)] = token().items()
    other = token(user_id="someone-else")[name]
    for headers in ([(name, "garbage"), (name, value)], [(name, value), (name, other)]):
        body = assert_error(client.post("/v1/feedback", json=BODY, headers=headers), 400, "duplicate_credentials")
        assert "X-Feedback-Token" in body["message"]
    assert producer.calls == 0
    assert client.post("/v1/feedback", json=BODY, headers=[(name, value)]).status_code == 202


def test_a_key_and_a_token_together_are_not_duplicates(client, producer) -> None:
    # Different credentials: the key wins, as documented, and must be valid.
    [(name, value)] = token().items()
    assert client.post("/v1/feedback", json=BODY, headers=[GOOD, (name, value)]).status_code == 202
    assert_error(client.post("/v1/feedback", json=BODY, headers=[BAD, (name, value)]), 401, "invalid_api_key")


def test_two_authorization_headers_over_http(producer) -> None:
    # The same through uvicorn: its h11 parser keeps both copies, in order, in the scope.
    with ApiServer(make_app(producer)) as srv:
        r = httpx.post(f"{srv.base_url}/v1/feedback", json=BODY, headers=[BAD, GOOD])
        assert_error(r, 400, "duplicate_credentials")
        assert httpx.post(f"{srv.base_url}/v1/feedback", json=BODY, headers=[GOOD]).status_code == 202
    assert producer.calls == 1
