"""The API over real HTTP (uvicorn on loopback) with the real Kafka and Redis.

Every check that refuses a request also checks Kafka afterwards: the topic holds exactly the
events that got a 202, nothing from a refused request.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from scorers import Assessment, AssessmentError
from sinks import RedisSink
from stream._config import Settings
from stream._events import FeedbackEvent
from stream._kafka import create_topics, topic_partitions
from stream.api._app import create_app
from stream.api._models import ApiOptions
from stream.cli._api import ApiServer
from stream.sdk._feedback import log_feedback
from stream.sdk._tokens import mint_feedback_token

pytestmark = pytest.mark.integration

KEY = "integration-key"
SECRET = "integration-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Api:
    settings: Settings
    url: str


async def topic_contents(settings: Settings, topic: str) -> list[tuple[bytes, bytes]]:
    """Everything on a topic right now: read each partition up to its end offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(await topic_partitions(settings, topic))]
        assert parts, f"topic {topic} does not exist"
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        out: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 20
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, "could not read the topic to its end"
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                out.extend((m.key, m.value) for m in msgs)
        return out
    finally:
        await consumer.stop()


async def feedback_events(settings: Settings) -> list[FeedbackEvent]:
    rows = await topic_contents(settings, settings.topics.feedback)
    events = [FeedbackEvent.from_json(v) for _, v in rows]
    assert [k.decode() for k, _ in rows] == [e.trace_id for e in events]  # keyed by trace id
    return events


async def start_api(settings: Settings, **options) -> tuple[Settings, ApiServer]:
    s = settings.model_copy(update={"api_keys": [KEY], "feedback_secrets": [SECRET]})
    await create_topics(s, partitions=2)
    # Browsers and unauthenticated clients: bursts of 6, then practically nothing (no refill
    # during a test, so counts are exact). App backends with the key: effectively unlimited.
    opts = {"rate_limit": 0.01, "rate_burst": 6, "key_rate_limit": 1000.0, "key_rate_burst": 1000, **options}
    server = ApiServer(create_app(s, options=ApiOptions(**opts)))
    server.start()
    return s, server


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    s, server = await start_api(settings)
    try:
        yield Api(s, server.base_url)
    finally:
        server.stop()


@pytest.fixture
async def cleanup(api: Api) -> AsyncIterator[None]:
    """Delete the test's Redis keys afterwards (only for tests that write: SCAN costs ~1 s)."""
    yield
    client = aioredis.Redis.from_url(api.settings.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{api.settings.redis_prefix}*", count=100_000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def tid() -> str:
    return f"tr-{uuid.uuid4().hex}"


async def test_feedback_with_key_token_and_sdk_lands_on_the_topic(api: Api) -> None:
    a, b = tid(), tid()
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        r = await http.post(
            "/v1/feedback",
            json={"trace_id": a, "value": True, "rationale": "good", "source": {"type": "HUMAN", "id": "u-1"}},
            headers=AUTH,
        )
        assert r.status_code == 202, r.text
        by_key = r.json()
        r = await http.post(
            "/v1/feedback-tokens", json={"trace_id": b, "values": [True, False], "user_id": "u-2"}, headers=AUTH
        )
        assert r.status_code == 200, r.text
        r = await http.post(
            "/v1/feedback", json={"trace_id": b, "value": False}, headers={"X-Feedback-Token": r.json()["token"]}
        )
        assert r.status_code == 202, r.text
        by_token = r.json()
    by_sdk = log_feedback(a, "helpful", 5, source_id="u-3", base_url=api.url, api_key=KEY)

    events = await feedback_events(api.settings)
    assert sorted(e.event_id for e in events) == sorted([by_key["event_id"], by_token["event_id"], by_sdk.event_id])
    got = {e.event_id: e for e in events}
    e1, e2, e3 = got[by_key["event_id"]], got[by_token["event_id"]], got[by_sdk.event_id]
    assert (e1.kind, e1.trace_id, e1.name, e1.value, e1.rationale, e1.source_id) == (
        "feedback", a, "user_satisfaction", True, "good", "u-1"
    )
    assert (e2.trace_id, e2.value, e2.source_type, e2.source_id) == (b, False, "HUMAN", "u-2")
    assert (e3.trace_id, e3.name, e3.value, e3.source_id) == (a, "helpful", 5, "u-3")


async def test_refused_requests_never_reach_kafka(api: Api) -> None:
    a, other = tid(), tid()
    accepted: list[str] = []
    ok = mint_feedback_token(a, secret=SECRET, values=[True, False], user_id="u-1")
    body_b64, sig = ok.split(".")
    forged_payload = orjson.loads(base64.urlsafe_b64decode(body_b64 + "=" * (-len(body_b64) % 4)))
    forged_payload["uid"] = "someone-else"
    forged = base64.urlsafe_b64encode(orjson.dumps(forged_payload)).rstrip(b"=").decode()
    vote = {"trace_id": a, "value": True}

    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        r = await http.post("/v1/feedback", json=vote, headers=AUTH)
        assert r.status_code == 202
        accepted.append(r.json()["event_id"])

        refusals = [
            ("missing key", {}, vote, 401),
            ("wrong key", {"Authorization": "Bearer not-the-key"}, vote, 401),
            ("token for another trace", {"X-Feedback-Token": mint_feedback_token(other, secret=SECRET)}, vote, 403),
            (
                "expired token",
                {"X-Feedback-Token": mint_feedback_token(a, secret=SECRET, ttl_s=1, now=time.time() - 60)},
                vote,
                401,
            ),
            ("altered token", {"X-Feedback-Token": f"{forged}.{sig}"}, vote, 401),
            ("token from another secret", {"X-Feedback-Token": mint_feedback_token(a, secret="guess")}, vote, 401),
            ("value the token does not allow", {"X-Feedback-Token": ok}, {**vote, "value": 5}, 403),
            ("someone else's vote", {"X-Feedback-Token": ok}, {**vote, "source": {"id": "u-9"}}, 403),
            ("over-size body", AUTH, {**vote, "rationale": "x" * (200 * 1024)}, 413),
        ]
        for what, headers, body, status in refusals:
            r = await http.post("/v1/feedback", json=body, headers=headers)
            assert r.status_code == status, (what, r.status_code, r.text)
            assert r.json()["error"], what

        async def endless():
            for _ in range(64):
                yield b"x" * 16384  # 1 MiB streamed without a Content-Length

        r = await http.post("/v1/feedback", content=endless(), headers={**AUTH, "content-type": "application/json"})
        assert r.status_code == 413

        # A flood from one browser: its token's bucket allows a burst of 6, then 429.
        flood = mint_feedback_token(a, secret=SECRET, user_id="u-flood")
        statuses = []
        for _ in range(14):
            r = await http.post("/v1/feedback", json=vote, headers={"X-Feedback-Token": flood})
            statuses.append(r.status_code)
            if r.status_code == 202:
                accepted.append(r.json()["event_id"])
            else:
                assert int(r.headers["Retry-After"]) >= 1
        assert statuses == [202] * 6 + [429] * 8, statuses

    events = await feedback_events(api.settings)
    assert sorted(e.event_id for e in events) == sorted(accepted)
    assert len(events) == 7
    assert {e.source_id for e in events} == {"anonymous", "u-flood"}


async def test_post_trace_lands_on_the_traces_topic(api: Api, fixture_bytes: list[bytes]) -> None:
    data = fixture_bytes[0]
    trace_id = orjson.loads(data)["info"]["trace_id"]
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        headers = {**AUTH, "content-type": "application/json"}
        r = await http.post("/v1/traces", content=data, headers=headers)
        assert r.status_code == 202 and r.json() == {"trace_id": trace_id}
        r = await http.post("/v1/traces", content=b'{"info": {}}', headers=headers)
        assert (r.status_code, r.json()["reason"]) == (422, "missing_trace_id")
        r = await http.post("/v1/traces", content=data, headers={"content-type": "application/json"})
        assert r.status_code == 401
    assert await topic_contents(api.settings, api.settings.topics.traces) == [(trace_id.encode(), data)]


def assessment(trace: str, scorer: str, value: object, *, end_ms: int, error: str | None = None) -> Assessment:
    return Assessment(
        trace_id=trace,
        experiment_id="0",
        scorer=scorer,
        name=scorer,
        value=None if error else value,
        rationale="because",
        error=AssessmentError(error, "boom") if error else None,
        duration_s=0.1,
        created_ms=end_ms + 1000,
        state="error" if error else "scored",
        trace_end_ms=end_ms,
    )


async def test_get_trace_returns_what_the_sink_wrote(api: Api, cleanup: None) -> None:
    s = api.settings
    trace = tid()
    now_ms = int(time.time() * 1000)
    sink = RedisSink.from_url(s.redis_url, prefix=s.redis_prefix)
    try:
        await sink.write(
            [[assessment(trace, "is_polite", True, end_ms=now_ms)], [assessment(trace, "length", 42, end_ms=now_ms)]]
        )
        stored = await sink.get_trace(trace)
    finally:
        await sink.aclose()
    assert stored is not None
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        r = await http.get(f"/v1/traces/{trace}", headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json() == stored
        assert set(r.json()["assessments"]) == {"is_polite", "length"}
        assert r.json()["assessments"]["length"]["value"] == 42
        r = await http.get(f"/v1/traces/{tid()}", headers=AUTH)
        assert r.status_code == 404


async def test_summary_and_scorers_match_the_sink(api: Api, cleanup: None) -> None:
    s = api.settings
    now_ms = int(time.time() * 1000)
    pairs = [
        [assessment(tid(), "is_polite", True, end_ms=now_ms - 60_000)],
        [assessment(tid(), "is_polite", True, end_ms=now_ms - 120_000)],
        [assessment(tid(), "is_polite", False, end_ms=now_ms)],
        [assessment(tid(), "is_polite", None, end_ms=now_ms, error="JUDGE_TIMEOUT")],
        [assessment(tid(), "is_polite", True, end_ms=now_ms - 3 * 3600_000)],  # outside 1h
        [assessment(tid(), "length", 10, end_ms=now_ms)],
        [assessment(tid(), "length", 20, end_ms=now_ms)],
    ]
    sink = RedisSink.from_url(s.redis_url, prefix=s.redis_prefix)
    try:
        await sink.write(pairs)
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            r = await http.get("/v1/scorers", headers=AUTH)
            assert r.json() == {
                "scorers": [{"name": "is_polite", "experiment_id": "0"}, {"name": "length", "experiment_id": "0"}]
            }
            for name, window in [("is_polite", "1h"), ("is_polite", "1d"), ("length", "5m")]:
                r = await http.get(f"/v1/scorers/{name}/summary", params={"window": window}, headers=AUTH)
                assert r.status_code == 200, r.text
                body = r.json()
                agg = await sink.aggregates(
                    "0", name, start_minute=body["start_ms"] // 60000, end_minute=body["end_ms"] // 60000
                )
                assert {k: body[k] for k in agg.to_dict()} == agg.to_dict()
                if (name, window) == ("is_polite", "1h"):
                    assert (body["count"], body["pass"], body["fail"], body["error"]) == (4, 2, 1, 1)
                    assert body["pass_rate"] == pytest.approx(2 / 3)
                if (name, window) == ("is_polite", "1d"):
                    assert body["count"] == 5
                if name == "length":
                    assert (body["count"], body["mean"]) == (2, 15.0)
    finally:
        await sink.aclose()


async def test_readyz_and_metrics(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        r = await http.get("/readyz")
        assert r.status_code == 200 and r.json()["checks"] == {"kafka": "ok", "redis": "ok"}
        await http.get(f"/v1/traces/{tid()}", headers=AUTH)
        text = (await http.get("/metrics")).text
    assert 'tracewatch_api_requests_total{method="GET",route="/v1/traces/{trace_id}",status="404"} 1.0' in text
    assert "tr-" not in text
