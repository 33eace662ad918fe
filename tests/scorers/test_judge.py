"""`JudgeClient` against `httpx.MockTransport`: retries, Retry-After, limits, accounting, truncation."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import orjson
import pytest

from scorers import (
    JudgeClient,
    JudgeError,
    JudgeRateLimitError,
    JudgeResponseError,
    JudgeTimeoutError,
    ScorerDefinitionError,
    TokenBucket,
    parse_model,
    parse_retry_after,
    truncate,
)

MODEL = "openai:/gpt-4.1-mini"


def completion(
    content: str = '{"result": "yes", "rationale": "ok"}', prompt_tokens: int = 10, completion_tokens: int = 5
):
    return httpx.Response(
        200,
        json={
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        },
    )


def scripted(*responses):
    """A transport answering with `responses` in order (callables get the request)."""
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item(request) if callable(item) else item

    return httpx.MockTransport(handler), seen


def client_for(transport, **kwargs) -> JudgeClient:
    kwargs.setdefault("backoff_base", 0.001)
    kwargs.setdefault("max_retries", 3)
    return JudgeClient("http://judge.test/v1", "sk-test", transport=transport, **kwargs)


def test_parse_model_and_truncate() -> None:
    assert parse_model("openai:/gpt-4.1-mini") == ("openai", "gpt-4.1-mini")
    assert parse_model("gpt-4o") == ("openai", "gpt-4o")
    assert parse_model("anthropic:/claude-opus-4-1") == ("anthropic", "claude-opus-4-1")
    with pytest.raises(ScorerDefinitionError, match="provider 'bedrock' is not supported"):
        parse_model("bedrock:/claude-opus-4-1")
    with pytest.raises(ScorerDefinitionError):
        parse_model("openai:/")
    assert truncate("abcdef", 10) == "abcdef"
    assert truncate("x" * 250, 100) == "x" * 100 + "...[truncated 150 chars]"


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= parse_retry_after(future) <= 30
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past) == 0.0


async def test_complete_sends_openai_request_and_accounts_tokens_and_cost() -> None:
    calls = []
    transport, seen = scripted(completion(prompt_tokens=1000, completion_tokens=500))
    async with client_for(
        transport,
        prices={"gpt-4.1-mini": (0.4, 1.6)},
        on_request=lambda *args: calls.append(args),
    ) as client:
        result = await client.complete(MODEL, "Is this polite?", max_tokens=64)
        assert not client.closed
    assert client.closed
    (request,) = seen
    assert request.url == "http://judge.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    body = orjson.loads(request.content)
    assert body["model"] == "gpt-4.1-mini" and body["max_tokens"] == 64
    assert body["messages"] == [{"role": "user", "content": "Is this polite?"}]
    assert result.text == '{"result": "yes", "rationale": "ok"}'
    assert (result.prompt_tokens, result.completion_tokens, result.attempts) == (1000, 500, 1)
    assert result.cost == pytest.approx(0.4 + 0.8)
    assert client.stats.cost == pytest.approx(1.2) and client.stats.prompt_tokens == 1000
    ((model, status, latency, p, c, cost),) = calls
    assert (model, status, p, c) == ("gpt-4.1-mini", "ok", 1000, 500) and latency >= 0
    assert cost == pytest.approx(1.2)  # the metrics hook gets the spend (tracewatch_judge_cost_usd_total)


async def test_prompt_over_the_cap_is_truncated_with_a_marker() -> None:
    transport, seen = scripted(completion())
    async with client_for(transport, max_prompt_chars=100) as client:
        await client.complete(MODEL, "x" * 250)
    content = orjson.loads(seen[0].content)["messages"][0]["content"]
    assert content == "x" * 100 + "...[truncated 150 chars]"


async def test_429_retry_honours_retry_after() -> None:
    statuses = []
    transport, seen = scripted(httpx.Response(429, headers={"Retry-After": "0.2"}), completion())
    async with client_for(transport, on_request=lambda m, s, *_: statuses.append(s)) as client:
        start = time.perf_counter()
        result = await client.complete(MODEL, "p")
        elapsed = time.perf_counter() - start
    assert elapsed >= 0.2
    assert result.attempts == 2 and client.stats.retries == 1
    assert statuses == ["429", "ok"] and len(seen) == 2


async def test_retry_after_as_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    transport, _ = scripted(httpx.Response(503, headers={"Retry-After": when}), completion())
    async with client_for(transport) as client:
        start = time.perf_counter()
        await client.complete(MODEL, "p")
    # HTTP dates have 1 s resolution, so the wait is in (1, 2] s, not the ~0 s jittered backoff.
    assert time.perf_counter() - start >= 1.0
    assert client.stats.retries == 1


async def test_retry_after_beyond_max_backoff_gives_up_at_once() -> None:
    transport, seen = scripted(httpx.Response(429, headers={"Retry-After": "120"}))
    async with client_for(transport, max_backoff=5) as client:
        with pytest.raises(JudgeRateLimitError, match="exceeds max_backoff") as info:
            await client.complete(MODEL, "p")
    assert len(seen) == 1
    assert info.value.code == "JUDGE_RATE_LIMITED"


async def test_exhausted_retries_map_to_error_types() -> None:
    for response, error, status in (
        (httpx.Response(429), JudgeRateLimitError, "429"),
        (httpx.Response(502), JudgeError, "5xx"),
        (httpx.ReadTimeout("slow"), JudgeTimeoutError, "timeout"),
        (httpx.ConnectError("refused"), JudgeError, "error"),
    ):
        transport, seen = scripted(response)
        async with client_for(transport, max_retries=2) as client:
            with pytest.raises(error, match="gave up after 3 attempts"):
                await client.complete(MODEL, "p")
        assert len(seen) == 3
        assert client.stats.by_status == {status: 3} and client.stats.retries == 2


async def test_transient_failures_then_success() -> None:
    transport, seen = scripted(
        httpx.ConnectError("refused"), httpx.Response(500), httpx.ReadTimeout("slow"), completion()
    )
    async with client_for(transport, max_retries=3) as client:
        result = await client.complete(MODEL, "p")
    assert result.attempts == 4 and len(seen) == 4
    assert client.stats.by_status == {"error": 1, "5xx": 1, "timeout": 1, "ok": 1}


async def test_client_errors_and_bad_bodies_are_not_retried() -> None:
    transport, seen = scripted(httpx.Response(401, json={"error": "bad key"}))
    async with client_for(transport) as client:
        with pytest.raises(JudgeError, match="HTTP 401") as info:
            await client.complete(MODEL, "p")
    assert type(info.value) is JudgeError and len(seen) == 1
    transport, seen = scripted(httpx.Response(200, text="<html>gateway</html>"))
    async with client_for(transport) as client:
        with pytest.raises(JudgeResponseError, match="not a chat completion"):
            await client.complete(MODEL, "p")
    assert len(seen) == 1


async def test_overall_deadline_per_request() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1.0)
        return completion()

    async with JudgeClient(
        "http://judge.test/v1",
        transport=httpx.MockTransport(slow),
        timeout=0.05,
        max_retries=1,
        backoff_base=0.001,
    ) as client:
        start = time.perf_counter()
        with pytest.raises(JudgeTimeoutError):
            await client.complete(MODEL, "p")
    assert time.perf_counter() - start < 0.5
    assert client.stats.by_status == {"timeout": 2}


async def test_in_flight_cap_per_model() -> None:
    current = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        await asyncio.sleep(0.01)
        current -= 1
        return completion()

    async with JudgeClient(
        "http://judge.test/v1", transport=httpx.MockTransport(handler), max_in_flight=3
    ) as client:
        await asyncio.gather(*(client.complete(MODEL, f"p{i}") for i in range(20)))
        assert peak == 3
        peak = 0
        # The cap is per model: two models may each use it.
        await asyncio.gather(*(client.complete(m, "p") for m in ("gpt-a", "gpt-b") for _ in range(10)))
        assert peak == 6


async def test_rpm_limiter_spaces_requests() -> None:
    transport, seen = scripted(completion())
    # 1200/min = 20/s with a one-second burst of 20: 30 requests need >= 0.5 s.
    async with client_for(transport, rpm=1200, max_in_flight=30) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client.complete(MODEL, "p") for _ in range(30)))
        elapsed = time.perf_counter() - start
    assert len(seen) == 30
    assert 0.45 <= elapsed < 2.0


async def test_token_bucket_waits_for_tokens() -> None:
    bucket = TokenBucket(60_000)  # 1000 tokens/s, capacity 1000
    start = time.perf_counter()
    await bucket.acquire(1000)
    assert time.perf_counter() - start < 0.05
    await bucket.acquire(200)
    assert 0.18 <= time.perf_counter() - start < 0.5
    bucket.adjust(500)  # the call used more than estimated: later callers wait for it
    await bucket.acquire(100)
    assert time.perf_counter() - start >= 0.7
    with pytest.raises(ValueError):
        TokenBucket(0)


async def test_tpm_limiter_uses_estimates() -> None:
    transport, _ = scripted(completion(prompt_tokens=0, completion_tokens=0))
    # 60k tokens/min = 1000/s, capacity 1000; each call estimates 2000/4 + 100 = 600 tokens:
    # the 2nd call waits 0.2 s, the 3rd 0.6 s.
    async with client_for(transport, tpm=60_000) as client:
        start = time.perf_counter()
        for _ in range(3):
            await client.complete(MODEL, "y" * 2000, max_tokens=100)
    assert 0.75 <= time.perf_counter() - start < 1.5


async def test_from_env_and_overrides() -> None:
    env = {
        "TRACEWATCH_JUDGE_BASE_URL": "http://127.0.0.1:8900/v1/",
        "TRACEWATCH_JUDGE_API_KEY": "k",
        "TRACEWATCH_JUDGE_MAX_IN_FLIGHT": "4",
        "TRACEWATCH_JUDGE_RPM": "600",
        "TRACEWATCH_JUDGE_TIMEOUT": "2.5",
        "TRACEWATCH_JUDGE_MAX_RETRIES": "1",
        "TRACEWATCH_JUDGE_PRICES": '{"gpt-4.1-mini": [0.4, 1.6], "openai:/gpt-4o": 2.5}',
    }
    client = JudgeClient.from_env(env, max_retries=7, tpm=None)
    assert client.base_url == "http://127.0.0.1:8900/v1"
    assert (client.max_in_flight, client.timeout, client.max_retries) == (4, 2.5, 7)
    assert client.cost_of("gpt-4.1-mini", 1000, 1000) == pytest.approx(2.0)
    assert client.cost_of("gpt-4o", 1000, 0) == pytest.approx(2.5)
    assert client.cost_of("other", 1000, 1000) == 0.0
    default = JudgeClient.from_env({})
    assert default.base_url == "https://api.openai.com/v1"
    await client.aclose()
    await default.aclose()
