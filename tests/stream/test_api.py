"""The API with TestClient and fakes injected through `create_app`: no Kafka, no Redis."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry
from starlette.exceptions import StarletteDeprecationWarning

import stream.api._auth as api_auth
from sinks import Aggregate, SinkUnavailableError
from stream._config import Settings
from stream._events import FeedbackEvent
from stream.api._app import create_app
from stream.api._models import ApiOptions, window_minutes
from stream.sdk._tokens import mint_feedback_token, verify_feedback_token

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works the same here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

KEY = "key-one"
KEY2 = "key-two"
SECRET = "token-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
TID = "tr-" + "a" * 32


class FakeProducer:
    """Records what Kafka acknowledged. `gate` holds the ack; `fail` raises; `hang` never acks."""

    def __init__(self, *, fail: Exception | None = None, gate: threading.Event | None = None, hang: bool = False):
        self.fail, self.gate, self.hang = fail, gate, hang
        self.calls = 0
        self.acked: list[tuple[str, bytes | None, bytes | None]] = []

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> asyncio.Future[Any]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.gate is not None:
            await asyncio.to_thread(self.gate.wait, 10)
        if self.hang:
            await asyncio.Event().wait()
        self.acked.append((topic, key, value))
        fut.set_result(("partition", 0))
        return fut

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        return await (await self.send(topic, value=value, key=key))

    def events(self) -> list[FeedbackEvent]:
        return [FeedbackEvent.from_json(v) for _, _, v in self.acked if v is not None]


class FakeSink:
    def __init__(self) -> None:
        self.traces: dict[str, dict[str, Any]] = {}
        self.index: dict[str, set[str]] = {"0": {"is_polite"}}
        self.agg = Aggregate(count=10, sum=7.0, passed=7, failed=2, errors=1, values=0)
        self.ranges: list[tuple[str, str, int, int]] = []
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise SinkUnavailableError("redis down", sink="redis", operation="test")

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        self._check()
        return self.traces.get(trace_id)

    async def aggregates(self, experiment: str, scorer: str, *, start_minute: int, end_minute: int) -> Aggregate:
        self._check()
        self.ranges.append((experiment, scorer, start_minute, end_minute))
        return self.agg

    async def experiments(self) -> set[str]:
        self._check()
        return set(self.index)

    async def scorers(self, experiment: str) -> set[str]:
        self._check()
        return self.index.get(experiment, set())

    async def names(self, experiment: str) -> set[str]:
        self._check()
        return self.index.get(experiment, set())

    async def ping(self) -> None:
        self._check()


def make_app(producer=None, sink=None, *, settings=None, registry=None, lister=None, **options):
    settings = settings or Settings(api_keys=[KEY, KEY2], feedback_secrets=[SECRET])
    options.setdefault("rate_limit", 1000.0)
    options.setdefault("rate_burst", 1000)
    return create_app(
        settings,
        producer=producer if producer is not None else FakeProducer(),
        sink=sink if sink is not None else FakeSink(),
        registry_lister=lister,
        metrics_registry=registry,
        options=ApiOptions(**options),
    )


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def client(producer, sink):
    with TestClient(make_app(producer, sink)) as c:
        yield c


def token(trace_id: str = TID, **kw) -> dict[str, str]:
    kw.setdefault("secret", SECRET)
    return {"X-Feedback-Token": mint_feedback_token(trace_id, **kw)}


def assert_error(response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


# -- feedback ---------------------------------------------------------------------------------


def test_feedback_is_published_keyed_by_trace_and_acknowledged(client, producer) -> None:
    r = client.post(
        "/v1/feedback",
        json={
            "trace_id": TID,
            "value": True,
            "rationale": "clear",
            "source": {"type": "HUMAN", "id": "u-1"},
            "metadata": {"page": "chat"},
        },
        headers=AUTH,
    )
    assert r.status_code == 202
    body = r.json()
    [(topic, key, _)] = producer.acked
    assert topic == "tracewatch.feedback" and key == TID.encode()
    [event] = producer.events()
    assert body == {"event_id": event.event_id, "trace_id": TID}
    assert (event.kind, event.name, event.value, event.rationale) == ("feedback", "user_satisfaction", True, "clear")
    assert (event.source_type, event.source_id, event.metadata) == ("HUMAN", "u-1", {"page": "chat"})


def test_202_only_after_kafka_acked() -> None:
    gate = threading.Event()
    producer = FakeProducer(gate=gate)
    with TestClient(make_app(producer)) as c, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(c.post, "/v1/feedback", json={"trace_id": TID, "value": True}, headers=AUTH)
        time.sleep(0.3)
        assert not pending.done(), "answered before Kafka acknowledged"
        assert producer.acked == []
        gate.set()
        r = pending.result(10)
    assert r.status_code == 202
    assert len(producer.acked) == 1


def test_503_with_retry_after_when_kafka_fails_and_nothing_recorded() -> None:
    producer = FakeProducer(fail=KafkaTimeoutError("no leader"))
    with TestClient(make_app(producer)) as c:
        r = c.post("/v1/feedback", json={"trace_id": TID, "value": True}, headers=AUTH)
    assert_error(r, 503, "kafka_unavailable")
    assert r.headers["Retry-After"] == "1"
    assert producer.calls == 1 and producer.acked == []


def test_503_when_kafka_does_not_ack_in_time() -> None:
    producer = FakeProducer(hang=True)
    with TestClient(make_app(producer, publish_timeout=0.2)) as c:
        t0 = time.monotonic()
        r = c.post("/v1/feedback", json={"trace_id": TID, "value": True}, headers=AUTH)
    assert time.monotonic() - t0 < 5
    assert_error(r, 503, "kafka_timeout")
    assert r.headers["Retry-After"] == "1"
    assert producer.acked == []


def test_kafka_down_at_startup_serves_but_is_not_ready(sink) -> None:
    settings = Settings(api_keys=[KEY], kafka_bootstrap="127.0.0.1:1")  # nothing listens there
    app = create_app(settings, sink=sink, options=ApiOptions())
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["kafka"] == "not connected"
        r = c.post("/v1/feedback", json={"trace_id": TID, "value": True}, headers=AUTH)
        assert_error(r, 503, "kafka_unavailable")


def test_mlflow_style_source_fields_are_accepted(client, producer) -> None:
    r = client.post(
        "/v1/feedback",
        json={"trace_id": TID, "name": "helpful", "value": 4, "source_type": "LLM_JUDGE", "source_id": "gpt"},
        headers=AUTH,
    )
    assert r.status_code == 202
    [event] = producer.events()
    assert (event.name, event.value, event.source_type, event.source_id) == ("helpful", 4, "LLM_JUDGE", "gpt")
    r = client.post(
        "/v1/feedback",
        json={"trace_id": TID, "value": 1, "source": {"source_type": "HUMAN", "source_id": "u-9"}},
        headers=AUTH,
    )
    assert r.status_code == 202 and producer.events()[-1].source_id == "u-9"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"value": True}, "trace_id"),
        ({"trace_id": TID}, "value"),
        ({"trace_id": TID, "value": None}, "value"),
        ({"trace_id": TID, "value": [1, {"a": 1}]}, "value"),
        ({"trace_id": TID, "value": 2**70}, "value"),
        ({"trace_id": "", "value": True}, "trace_id"),
        ({"trace_id": "tr-\n", "value": True}, "trace_id"),
        ({"trace_id": TID, "value": True, "name": ""}, "name"),
        ({"trace_id": TID, "value": True, "source": {"type": "ROBOT"}}, "source.type"),
        ({"trace_id": TID, "value": True, "source": {"id": 7}}, "source.id"),
        ({"trace_id": TID, "value": True, "metadata": []}, "metadata"),
        ({"trace_id": TID, "val": True, "value": 1}, "val"),
        ({"trace_id": TID, "value": True, "source": {}, "source_id": "x"}, "body"),
    ],
)
def test_422_names_the_wrong_field(client, producer, body, field) -> None:
    r = client.post("/v1/feedback", json=body, headers=AUTH)
    err = assert_error(r, 422, "invalid_request")
    assert field in [f["field"] for f in err["fields"]], err
    assert field in err["message"]
    assert producer.calls == 0


def test_nan_and_bad_json_are_refused(client, producer) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    r = client.post("/v1/feedback", content=b'{"trace_id": "t", "value": NaN}', headers=headers)
    assert_error(r, 422, "invalid_request")
    r = client.post("/v1/feedback", content=b'{"trace_id": "t", "value": 1, "metadata": {"x": NaN}}', headers=headers)
    assert_error(r, 422, "invalid_request")
    r = client.post("/v1/feedback", content=b'{"trace_id": ', headers=headers)
    assert assert_error(r, 422, "invalid_request")["fields"][0]["field"] == "body"
    assert producer.calls == 0


# -- authentication ---------------------------------------------------------------------------


def test_missing_and_wrong_api_keys_get_401(client, producer) -> None:
    body = {"trace_id": TID, "value": True}
    r = client.post("/v1/feedback", json=body)
    assert_error(r, 401, "unauthorized")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    for header in (f"Bearer {KEY}x", "Bearer ", f"Basic {KEY}", KEY, f"Bearer {KEY[:-1]}"):
        assert_error(client.post("/v1/feedback", json=body, headers={"Authorization": header}), 401, "invalid_api_key")
    assert client.post("/v1/feedback", json=body, headers={"Authorization": f"bearer {KEY2}"}).status_code == 202
    assert producer.calls == 1


def test_api_keys_are_compared_in_constant_time_against_every_key(client, monkeypatch) -> None:
    calls = []

    def spy(a, b):
        calls.append((len(a), len(b)))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr(api_auth, "compare_digest", spy)
    client.get("/v1/scorers", headers=AUTH)  # the first key matches: the second is compared anyway
    assert calls == [(32, 32), (32, 32)]


def test_every_data_endpoint_needs_an_api_key(client) -> None:
    tok = token()
    for method, path, body in [
        ("POST", "/v1/expectations", {"trace_id": TID, "name": "answer", "value": "42"}),
        ("POST", "/v1/traces", {"info": {"trace_id": TID}}),
        ("GET", f"/v1/traces/{TID}", None),
        ("GET", "/v1/scorers", None),
        ("GET", "/v1/scorers/is_polite/summary", None),
        ("POST", "/v1/feedback-tokens", {"trace_id": TID}),
    ]:
        assert_error(client.request(method, path, json=body), 401, "unauthorized")
        # A feedback token is for one vote, nothing else.
        assert_error(client.request(method, path, json=body, headers=tok), 403, "api_key_required")


def test_token_allows_its_vote_and_binds_the_user(client, producer) -> None:
    headers = token(values=[True, False], user_id="u-7")
    r = client.post("/v1/feedback", json={"trace_id": TID, "value": False}, headers=headers)
    assert r.status_code == 202, r.text
    r = client.post("/v1/feedback", json={"trace_id": TID, "value": True, "source": {"id": "u-7"}}, headers=headers)
    assert r.status_code == 202, r.text
    assert [(e.source_type, e.source_id, e.value) for e in producer.events()] == [
        ("HUMAN", "u-7", False),
        ("HUMAN", "u-7", True),
    ]


def test_a_token_without_a_user_is_one_anonymous_voter(client, producer) -> None:
    first, second = token(), token(ttl_s=7200)  # two page views, two tokens
    for headers in (first, first, second):
        r = client.post("/v1/feedback", json={"trace_id": TID, "value": True}, headers=headers)
        assert r.status_code == 202, r.text
    ids = [e.source_id for e in producer.events()]
    assert ids[0] == ids[1] != ids[2]  # a repeat through one token replaces, never adds
    assert all(i.startswith("anon-") for i in ids)
    # Nor can the holder pick who it votes as.
    r = client.post("/v1/feedback", json={"trace_id": TID, "value": True, "source": {"id": "u-1"}}, headers=first)
    assert_error(r, 403, "source_mismatch")


@pytest.mark.parametrize(
    ("mint_kw", "body", "status", "code"),
    [
        ({"trace_id": "tr-other"}, {}, 403, "token_wrong_trace"),
        ({}, {"name": "toxicity"}, 403, "token_name_not_allowed"),
        ({"values": [True, False]}, {"value": 5}, 403, "token_value_not_allowed"),
        ({"user_id": "u-7"}, {"source": {"id": "u-8"}}, 403, "source_mismatch"),
        ({}, {"source": {"type": "LLM_JUDGE"}}, 403, "source_not_allowed"),
        ({"ttl_s": 60, "now": time.time() - 120}, {}, 401, "token_expired"),
        ({"secret": "not-ours"}, {}, 401, "token_bad_signature"),
    ],
)
def test_token_refusals(client, producer, mint_kw, body, status, code) -> None:
    headers = token(mint_kw.pop("trace_id", TID), **mint_kw)
    r = client.post("/v1/feedback", json={"trace_id": TID, "value": True, **body}, headers=headers)
    assert_error(r, status, code)
    assert producer.calls == 0


def test_altered_and_garbage_tokens_get_401(client, producer) -> None:
    good = token(user_id="u-7")["X-Feedback-Token"]
    body_b64, sig = good.split(".")
    flipped = body_b64[:-1] + ("A" if body_b64[-1] != "A" else "B")
    for bad, code in [(f"{flipped}.{sig}", "token_bad_signature"), ("garbage", "token_malformed")]:
        r = client.post("/v1/feedback", json={"trace_id": TID, "value": True}, headers={"X-Feedback-Token": bad})
        assert_error(r, 401, code)
    assert producer.calls == 0


def test_tokens_disabled_without_secrets(producer) -> None:
    settings = Settings(api_keys=[KEY], feedback_secrets=[])
    with TestClient(make_app(producer, settings=settings)) as c:
        r = c.post("/v1/feedback", json={"trace_id": TID, "value": True}, headers=token())
        assert "TRACEWATCH_FEEDBACK_SECRETS" in assert_error(r, 401, "tokens_disabled")["message"]
        assert_error(c.post("/v1/feedback-tokens", json={"trace_id": TID}, headers=AUTH), 501, "tokens_disabled")
    assert producer.calls == 0


def test_minted_tokens_verify_and_rotation_keeps_old_ones_valid(producer) -> None:
    old = mint_feedback_token(TID, secret="old-secret")
    settings = Settings(api_keys=[KEY], feedback_secrets=["new-secret", "old-secret"])
    with TestClient(make_app(producer, settings=settings)) as c:
        r = c.post("/v1/feedback-tokens", json={"trace_id": TID, "values": [True], "user_id": "u-1"}, headers=AUTH)
        assert r.status_code == 200, r.text
        minted = r.json()
        claims = verify_feedback_token(
            minted["token"], secrets=["new-secret"], trace_id=TID, name="user_satisfaction", value=True
        )
        assert claims.user_id == "u-1" and claims.expires_at == minted["expires_at"]
        assert abs(minted["expires_at"] - (time.time() + 3600)) < 5
        for tok in (minted["token"], old):
            r = c.post("/v1/feedback", json={"trace_id": TID, "value": True}, headers={"X-Feedback-Token": tok})
            assert r.status_code == 202, r.text
        r = c.post("/v1/feedback-tokens", json={"trace_id": TID, "ttl_s": 31 * 86400}, headers=AUTH)
        assert assert_error(r, 422, "invalid_request")["fields"][0]["field"] == "ttl_s"


# -- limits -----------------------------------------------------------------------------------


def test_413_before_the_body_is_read_by_content_length(producer) -> None:
    app = make_app(producer)
    received = 0

    async def receive():
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/feedback",
        "raw_path": b"/v1/feedback",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-length", b"100000000"), (b"authorization", f"Bearer {KEY}".encode())],
        "client": ("10.0.0.1", 1234),
        "server": ("test", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert orjson.loads(sent[1]["body"])["error"] == "too_large"
    assert received == 0, "the body was read"
    assert producer.calls == 0


def test_413_for_a_streamed_body_stops_reading_at_the_limit(producer) -> None:
    app = make_app(producer)
    received = 0

    async def receive():
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"x" * 16384, "more_body": True}  # endless, no length

    sent: list[dict[str, Any]] = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/expectations",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {KEY}".encode())],
        "client": ("10.0.0.1", 1234),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert received == 5  # 64 KiB + one chunk, then refused
    assert producer.calls == 0


def test_body_limits_per_route(fixture_bytes) -> None:
    producer = FakeProducer()
    with TestClient(make_app(producer, max_body_bytes=2048, max_trace_body_bytes=1 << 20)) as c:
        big = {"trace_id": TID, "value": True, "rationale": "x" * 4096}
        assert_error(c.post("/v1/feedback", json=big, headers=AUTH), 413, "too_large")
        trace = orjson.loads(fixture_bytes[0])
        assert len(orjson.dumps(trace)) > 2048
        assert c.post("/v1/traces", json=trace, headers=AUTH).status_code == 202
        huge = {"info": {"trace_id": TID}, "pad": "x" * (1 << 20)}
        assert_error(c.post("/v1/traces", json=huge, headers=AUTH), 413, "too_large")
    assert [t for t, _, _ in producer.acked] == ["tracewatch.traces"]


def test_429_with_retry_after_after_a_flood(producer) -> None:
    with TestClient(make_app(producer, rate_limit=0.5, rate_burst=3)) as c:
        headers = token()
        statuses = [
            c.post("/v1/feedback", json={"trace_id": TID, "value": True}, headers=headers).status_code
            for _ in range(10)
        ]
        assert statuses == [202] * 3 + [429] * 7
        r = c.post("/v1/feedback", json={"trace_id": TID, "value": True}, headers=headers)
        assert_error(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1
        # Unauthenticated callers are limited by IP, separately from the token holder.
        assert [c.get("/v1/scorers").status_code for _ in range(4)] == [401] * 3 + [429]
        # An app backend with an API key has its own, larger bucket.
        assert c.get("/v1/scorers", headers=AUTH).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes are never limited
    assert len(producer.acked) == 3


def test_cors_preflight_and_refusals_readable_by_the_browser(producer) -> None:
    origin = "https://app.example.com"
    with TestClient(make_app(producer, cors_origins=[origin], rate_limit=0.1, rate_burst=1)) as c:
        r = c.options(
            "/v1/feedback",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-feedback-token",
            },
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == origin
        assert "x-feedback-token" in r.headers["access-control-allow-headers"].lower()
        assert "POST" in r.headers["access-control-allow-methods"]
        r = c.options(
            "/v1/feedback",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        headers = {"Origin": origin, **token()}
        assert c.post("/v1/feedback", json={"trace_id": TID, "value": True}, headers=headers).status_code == 202
        r = c.post("/v1/feedback", json={"trace_id": TID, "value": True}, headers=headers)
        assert r.status_code == 429
        assert r.headers["access-control-allow-origin"] == origin
        assert "retry-after" in r.headers["access-control-expose-headers"].lower()


def test_no_cors_headers_unless_configured(client) -> None:
    r = client.get("/healthz", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in r.headers


# -- other endpoints --------------------------------------------------------------------------


def test_expectation_is_an_event_of_its_own_kind(client, producer) -> None:
    r = client.post(
        "/v1/expectations", json={"trace_id": TID, "name": "expected_answer", "value": {"facts": ["a"]}}, headers=AUTH
    )
    assert r.status_code == 202
    [event] = producer.events()
    assert (event.kind, event.name, event.value, event.source_id) == (
        "expectation",
        "expected_answer",
        {"facts": ["a"]},
        "api",
    )
    assert r.json()["event_id"] == event.event_id


def test_post_trace_publishes_the_exact_bytes(client, producer, fixture_bytes) -> None:
    data = fixture_bytes[0]
    tid = orjson.loads(data)["info"]["trace_id"]
    r = client.post("/v1/traces", content=data, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 202 and r.json() == {"trace_id": tid}
    assert producer.acked == [("tracewatch.traces", tid.encode(), data)]


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"not json", 400, "not_json"),
        (b"[1, 2]", 422, "not_object"),
        (b'{"data": {}}', 422, "missing_info"),
        (b'{"info": {}}', 422, "missing_trace_id"),
        (b'{"info": {"trace_id": "tr-1"}, "data": {"spans": 3}}', 422, "bad_spans"),
    ],
)
def test_post_trace_refuses_bad_traces_with_the_reason(client, producer, data, status, reason) -> None:
    r = client.post("/v1/traces", content=data, headers={**AUTH, "content-type": "application/json"})
    assert assert_error(r, status, "invalid_trace")["reason"] == reason
    assert producer.calls == 0


def test_get_trace_joins_assessments_and_feedback(client, sink) -> None:
    stored = {
        "trace_id": TID,
        "experiment_id": "0",
        "assessments": {"is_polite": {"value": True}},
        "feedback": {"user_satisfaction": {"value": False}},
    }
    sink.traces[TID] = stored
    r = client.get(f"/v1/traces/{TID}", headers=AUTH)
    assert r.status_code == 200 and r.json() == {**stored, "expectations": {}}
    # Whatever else the store returns passes through (the sink's shape may grow).
    sink.traces[TID] = {**stored, "expectations": {"answer": "42"}, "votes": {"up": 1}}
    assert client.get(f"/v1/traces/{TID}", headers=AUTH).json() == sink.traces[TID]
    assert_error(client.get("/v1/traces/tr-unknown", headers=AUTH), 404, "trace_not_found")


def test_redis_down_is_503(client, sink) -> None:
    sink.down = True
    r = client.get(f"/v1/traces/{TID}", headers=AUTH)
    assert_error(r, 503, "store_unavailable")
    assert r.headers["Retry-After"] == "1"
    assert client.get("/readyz").status_code == 503


def test_scorers_from_redis_sets(client, sink) -> None:
    sink.index = {"0": {"b", "a"}, "7": {"c"}}
    r = client.get("/v1/scorers", headers=AUTH)
    assert r.json() == {
        "scorers": [
            {"name": "a", "experiment_id": "0"},
            {"name": "b", "experiment_id": "0"},
            {"name": "c", "experiment_id": "7"},
        ]
    }


def test_scorers_from_the_registry_when_given(producer, sink) -> None:
    from pydantic import BaseModel

    class Record(BaseModel):
        name: str
        experiment_id: str
        state: str

    async def lister():
        return [Record(name="judge", experiment_id="1", state="active"), {"name": "raw", "experiment_id": "0"}]

    with TestClient(make_app(producer, sink, lister=lister)) as c:
        r = c.get("/v1/scorers", headers=AUTH)
        assert r.json()["scorers"] == [
            {"name": "judge", "experiment_id": "1", "state": "active"},
            {"name": "raw", "experiment_id": "0"},
        ]
        # Registered but without results yet: a summary of zeros, not a 404.
        sink.agg = Aggregate()
        assert c.get("/v1/scorers/judge/summary?experiment=1", headers=AUTH).json()["count"] == 0


def test_summary_reports_the_aggregate_over_the_window(client, sink) -> None:
    before = int(time.time()) // 60
    r = client.get("/v1/scorers/is_polite/summary?window=2h&experiment=0", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    [(exp, name, start, end)] = sink.ranges
    assert (exp, name) == ("0", "is_polite")
    assert end - start == 120 and before + 1 <= end <= before + 2
    assert (body["start_ms"], body["end_ms"]) == (start * 60000, end * 60000)
    assert body == {
        "scorer": "is_polite",
        "experiment_id": "0",
        "window": "2h",
        "start_ms": start * 60000,
        "end_ms": end * 60000,
        **sink.agg.to_dict(),
    }
    assert (body["count"], body["pass"], body["fail"], body["error"]) == (10, 7, 2, 1)
    assert body["pass_rate"] == pytest.approx(7 / 9) and body["error_rate"] == pytest.approx(0.1)


def test_long_windows_are_read_a_day_at_a_time_and_summed(client, sink) -> None:
    r = client.get("/v1/scorers/is_polite/summary?window=3d", headers=AUTH)
    body = r.json()
    slices = [(lo, hi) for _, _, lo, hi in sink.ranges]
    assert [hi - lo for lo, hi in slices] == [1440, 1440, 1440]
    assert slices[0][0] * 60000 == body["start_ms"] and slices[-1][1] * 60000 == body["end_ms"]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(slices))  # contiguous
    assert (body["count"], body["pass"], body["error"]) == (30, 21, 3)
    assert body["pass_rate"] == pytest.approx(7 / 9)


@pytest.mark.parametrize("window", ["0m", "31d", "721h", "1w", "1.5h", "h", "-1h", "1 h", "9999999m"])
def test_summary_refuses_bad_windows(client, window) -> None:
    r = client.get(f"/v1/scorers/is_polite/summary?window={window}", headers=AUTH)
    assert [f["field"] for f in assert_error(r, 422, "invalid_request")["fields"]] == ["window"]


@pytest.mark.parametrize(("text", "minutes"), [("5m", 5), ("1h", 60), ("1d", 1440), ("30d", 43200), ("720h", 43200)])
def test_window_minutes(text, minutes) -> None:
    assert window_minutes(text) == minutes


def test_summary_of_an_unknown_scorer_is_404(client) -> None:
    assert_error(client.get("/v1/scorers/nope/summary", headers=AUTH), 404, "scorer_not_found")
    assert_error(client.get("/v1/scorers/is_polite/summary?experiment=9", headers=AUTH), 404, "scorer_not_found")


def test_every_error_is_json(client) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.delete("/v1/feedback", headers=AUTH), 405, "method_not_allowed")


def test_metrics_count_requests_by_route_template_and_status(producer, sink) -> None:
    registry = CollectorRegistry()
    with TestClient(make_app(producer, sink, registry=registry, rate_limit=0.01, rate_burst=1)) as c:
        c.get("/v1/traces/tr-1", headers=AUTH)
        c.get("/v1/traces/tr-2", headers=AUTH)
        c.get("/v1/scorers")
        c.get("/v1/scorers")  # the second from this IP is rate limited, before routing
        text = c.get("/metrics").text

    def count(route, method, status):
        labels = {"route": route, "method": method, "status": status}
        return registry.get_sample_value("tracewatch_api_requests_total", labels)

    assert count("/v1/traces/{trace_id}", "GET", "404") == 2
    assert count("/v1/scorers", "GET", "401") == 1
    assert count("/v1/scorers", "GET", "429") == 1
    labels = {"route": "/v1/traces/{trace_id}", "method": "GET"}
    assert registry.get_sample_value("tracewatch_api_request_duration_seconds_count", labels) == 2
    assert "tr-1" not in text and "tracewatch_api_requests_total" in text


def test_openapi_lists_every_operation(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {(p, m) for p, ops in paths.items() for m in ops} >= {
        ("/v1/feedback", "post"),
        ("/v1/expectations", "post"),
        ("/v1/traces", "post"),
        ("/v1/traces/{trace_id}", "get"),
        ("/v1/scorers", "get"),
        ("/v1/scorers/{name}/summary", "get"),
        ("/v1/feedback-tokens", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    }
    assert paths["/v1/feedback"]["post"]["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def test_health_and_readiness(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    assert client.get("/readyz").json() == {"status": "ok", "checks": {"kafka": "ok", "redis": "ok"}}
