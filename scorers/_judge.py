"""The judge HTTP client: the one module that talks to the judges' chat APIs.

Every judge call goes through `JudgeClient.complete`, which adds what a production caller
needs around one `POST {base_url}/chat/completions` (OpenAI and compatible servers) or
`POST {anthropic_base_url}/messages` (Anthropic; the shapes live in `_providers`):

- one pooled `httpx.AsyncClient` with an explicit `httpx.Timeout` and connection limits,
  plus an overall per-request deadline (a server trickling bytes cannot hold a slot);
- a cap on requests in flight per model (a semaphore), so a burst of traces cannot open
  hundreds of connections or starve other models;
- requests-per-minute and tokens-per-minute token buckets that make callers wait rather
  than collect 429s;
- retries with exponential backoff and full jitter on 429, 5xx, timeouts and connection
  errors, waiting at least what `Retry-After` asks (seconds or an HTTP date);
- Anthropic's `anthropic-ratelimit-*-remaining`/`-reset` headers: a limit at 0 pauses every
  request to that provider until its reset, instead of spending one 429 per caller;
- token and cost accounting from the response's `usage`;
- a size cap on the prompt, truncated with an explicit `...[truncated N chars]` marker;
- an `on_request` hook per HTTP attempt so the stream layer can export metrics without
  this package knowing about Prometheus.

httpx exceptions never leave this module: they become `JudgeError` subclasses.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from time import monotonic, perf_counter
from types import TracebackType
from typing import Any, Final, Protocol

import httpx
import orjson

from scorers._exceptions import (
    JudgeError,
    JudgeRateLimitError,
    JudgeResponseError,
    JudgeTimeoutError,
)
from scorers._limiter import TokenBucket, parse_retry_after, truncate
from scorers._providers import (
    ANTHROPIC_VERSION,
    DEFAULT_ANTHROPIC_BASE_URL,
    SUPPORTED_PROVIDERS,
    anthropic_body,
    anthropic_delay,
    openai_body,
    parse_anthropic,
    parse_model,
    parse_openai,
)

__all__ = [
    "DEFAULT_ANTHROPIC_BASE_URL",
    "DEFAULT_JUDGE_BASE_URL",
    "DEFAULT_JUDGE_MODEL",
    "SUPPORTED_PROVIDERS",
    "Completion",
    "JudgeClient",
    "JudgeStats",
    "OnRequest",
    "TokenBucket",
    "parse_model",
    "parse_retry_after",
    "truncate",
]

DEFAULT_JUDGE_BASE_URL: Final = "https://api.openai.com/v1"
DEFAULT_JUDGE_MODEL: Final = "openai:/gpt-4.1-mini"


class OnRequest(Protocol):
    """Called once per HTTP attempt: `status` is `ok`, `429`, `5xx`, `timeout` or `error`.

    `cost` is the attempt's USD spend from the client's `prices` (0 when unpriced or no
    tokens were reported), so `tracewatch_judge_cost_usd_total` can count it.

    It runs inline on the request path, so it must be cheap and must not raise (a metrics
    hook: increment counters, observe a histogram).
    """

    def __call__(
        self, model: str, status: str, latency_s: float, prompt_tokens: int, completion_tokens: int, cost: float
    ) -> None: ...


@dataclass(slots=True)
class Completion:
    """One successful chat completion and what it cost."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency_s: float
    attempts: int = 1


@dataclass(slots=True)
class JudgeStats:
    """Running totals of one client (HTTP attempts, retries, tokens, cost)."""

    requests: int = 0
    retries: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


@dataclass(slots=True)
class _Retryable:
    status: str
    message: str
    retry_after: float | None = None


@dataclass(slots=True)
class _Request:
    """One judge call's provider, URL, headers, body and response parser (fixed across retries)."""

    provider: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    parse: Callable[[Any], tuple[str, int, int]]


_FINAL_ERRORS: Final[dict[str, type[JudgeError]]] = {
    "429": JudgeRateLimitError,
    "timeout": JudgeTimeoutError,
}


def _env_float(env: Mapping[str, str], key: str) -> float | None:
    raw = env.get(key)
    return float(raw) if raw not in (None, "") else None


class JudgeClient:
    """Async client for the judges' chat APIs: OpenAI-compatible and Anthropic.

    One instance owns one connection pool; share it between judges (`judge.bind(client)`)
    and close it with `aclose()` or `async with`. An instance belongs to the event loop it
    is first used on.

    Args:
        base_url: for `openai:/` models, e.g. `https://api.openai.com/v1`, a vLLM or Ollama
            `http://host:port/v1`, or a LiteLLM proxy.
        api_key: sent to `base_url` as `Authorization: Bearer ...` when given.
        anthropic_base_url: for `anthropic:/` models (`https://api.anthropic.com/v1`).
        anthropic_api_key: sent to `anthropic_base_url` as `x-api-key` (never to `base_url`).
        anthropic_version: the `anthropic-version` header.
        max_in_flight: requests in flight at once, per model.
        rpm: requests per minute, per client (None: unlimited).
        tpm: tokens per minute (estimated before the call, corrected from `usage`).
        timeout: seconds one HTTP attempt may take, end to end.
        max_retries: retries after the first attempt on 429, 5xx, timeouts, connection errors.
        backoff_base: first backoff ceiling in seconds; doubles per retry (full jitter).
        max_backoff: backoff ceiling; a `Retry-After` longer than this ends the retries.
        max_prompt_chars: prompts longer than this are truncated with a marker.
        prices: per model, USD per 1k tokens: one number, or `(prompt, completion)`.
        on_request: metrics hook called once per HTTP attempt.
        transport: an `httpx.AsyncBaseTransport` (tests pass `httpx.MockTransport`).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_JUDGE_BASE_URL,
        api_key: str | None = None,
        *,
        anthropic_base_url: str = DEFAULT_ANTHROPIC_BASE_URL,
        anthropic_api_key: str | None = None,
        anthropic_version: str = ANTHROPIC_VERSION,
        max_in_flight: int = 8,
        rpm: float | None = None,
        tpm: float | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        max_backoff: float = 30.0,
        max_prompt_chars: int = 100_000,
        prices: Mapping[str, float | tuple[float, float]] | None = None,
        on_request: OnRequest | Callable[[str, str, float, int, int, float], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.max_backoff = max_backoff
        self.max_prompt_chars = max_prompt_chars
        self.on_request = on_request
        self.stats = JudgeStats()
        self._prices: dict[str, tuple[float, float]] = {}
        for key, price in (prices or {}).items():
            pair = (float(price), float(price)) if isinstance(price, (int, float)) else (price[0], price[1])
            self._prices[parse_model(key)[1]] = pair
        self._rpm = TokenBucket(rpm) if rpm else None
        self._tpm = TokenBucket(tpm) if tpm else None
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._paused_until: dict[str, float] = {}
        # Each provider's URL and credentials are its own: a key is sent only to its provider.
        self.anthropic_base_url = anthropic_base_url.rstrip("/")
        self._openai_headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._anthropic_headers = {"anthropic-version": anthropic_version}
        if anthropic_api_key:
            self._anthropic_headers["x-api-key"] = anthropic_api_key
        self._http = httpx.AsyncClient(
            headers={"Content-Type": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            # Headroom over the per-model cap: several models share the pool.
            limits=httpx.Limits(
                max_connections=max(16, 4 * max_in_flight), max_keepalive_connections=max_in_flight
            ),
            transport=transport,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> JudgeClient:
        """Build a client from `TRACEWATCH_JUDGE_*` variables; keyword overrides win.

        Reads `TRACEWATCH_JUDGE_BASE_URL` (default OpenAI), `TRACEWATCH_JUDGE_API_KEY`,
        `TRACEWATCH_JUDGE_ANTHROPIC_BASE_URL` (default Anthropic's),
        `TRACEWATCH_JUDGE_ANTHROPIC_API_KEY` (else `ANTHROPIC_API_KEY`, as MLflow reads it),
        `..._MAX_IN_FLIGHT`, `..._RPM`, `..._TPM`, `..._TIMEOUT`, `..._MAX_RETRIES` and
        `..._PRICES` (JSON: `{"gpt-4.1-mini": [0.0004, 0.0016]}`).
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {
            "base_url": env.get("TRACEWATCH_JUDGE_BASE_URL") or DEFAULT_JUDGE_BASE_URL,
            "api_key": env.get("TRACEWATCH_JUDGE_API_KEY") or None,
            "anthropic_base_url": env.get("TRACEWATCH_JUDGE_ANTHROPIC_BASE_URL") or DEFAULT_ANTHROPIC_BASE_URL,
            "anthropic_api_key": env.get("TRACEWATCH_JUDGE_ANTHROPIC_API_KEY") or env.get("ANTHROPIC_API_KEY") or None,
        }
        for key, name, conv in (
            ("TRACEWATCH_JUDGE_MAX_IN_FLIGHT", "max_in_flight", int),
            ("TRACEWATCH_JUDGE_RPM", "rpm", float),
            ("TRACEWATCH_JUDGE_TPM", "tpm", float),
            ("TRACEWATCH_JUDGE_TIMEOUT", "timeout", float),
            ("TRACEWATCH_JUDGE_MAX_RETRIES", "max_retries", int),
        ):
            value = _env_float(env, key)
            if value is not None:
                kwargs[name] = conv(value)
        prices = env.get("TRACEWATCH_JUDGE_PRICES")
        if prices:
            kwargs["prices"] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in orjson.loads(prices).items()
            }
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    async def __aenter__(self) -> JudgeClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    def cost_of(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD cost of a call from the configured prices (0 for unpriced models)."""
        p_in, p_out = self._prices.get(model, (0.0, 0.0))
        return (prompt_tokens * p_in + completion_tokens * p_out) / 1000.0

    async def complete(
        self,
        model: str,
        prompt: str,
        *,
        max_tokens: int = 512,
        inference_params: Mapping[str, Any] | None = None,
    ) -> Completion:
        """Send one user message and return the answer text, retrying transient failures.

        `inference_params` (temperature, top_p, max_tokens, ...) are merged into the request
        body last, as MLflow passes them to LiteLLM; see `_providers` for reasoning models.

        The worst case is `(max_retries + 1) * timeout` plus the backoffs; give the judge a
        scorer `timeout` if a hard bound per trace is needed.

        Raises:
            JudgeTimeoutError: every attempt timed out.
            JudgeRateLimitError: the server kept answering 429.
            JudgeResponseError: the server answered 2xx with a body that is not a completion.
            JudgeError: any other failure (HTTP 4xx, connection errors after retries, 5xx).
            ScorerDefinitionError: the model string is not supported.
        """
        provider, name = parse_model(model)
        prompt = truncate(prompt, self.max_prompt_chars)
        if provider == "anthropic":
            payload = anthropic_body(name, prompt, max_tokens, inference_params)
            request = _Request(
                provider, f"{self.anthropic_base_url}/messages", self._anthropic_headers, b"", parse_anthropic
            )
        else:
            payload = openai_body(name, prompt, max_tokens, inference_params)
            request = _Request(
                provider, f"{self.base_url}/chat/completions", self._openai_headers, b"", parse_openai
            )
        request.body = orjson.dumps(payload)
        budget = payload.get("max_tokens", payload.get("max_completion_tokens", max_tokens))
        estimate = len(prompt) // 4 + (budget if isinstance(budget, int) else max_tokens)
        last: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            outcome = await self._attempt(name, request, estimate)
            if isinstance(outcome, Completion):
                outcome.attempts = attempt + 1
                return outcome
            last = outcome
            if attempt == self.max_retries:
                break
            ceiling = min(self.max_backoff, self.backoff_base * (2**attempt))
            delay = random.uniform(0.0, ceiling)
            if outcome.retry_after is not None:
                if outcome.retry_after > self.max_backoff:
                    last.message += f"; Retry-After {outcome.retry_after:g} s exceeds max_backoff"
                    break
                delay = max(delay, outcome.retry_after)
            self.stats.retries += 1
            await asyncio.sleep(delay)
        assert last is not None
        error_type = _FINAL_ERRORS.get(last.status, JudgeError)
        raise error_type(f"judge {name}: {last.message} (gave up after {attempt + 1} attempts)")

    def _semaphore(self, model: str) -> asyncio.Semaphore:
        sem = self._semaphores.get(model)
        if sem is None:
            sem = self._semaphores[model] = asyncio.Semaphore(self.max_in_flight)
        return sem

    def _record(
        self, model: str, status: str, latency_s: float, prompt_tokens: int, completion_tokens: int
    ) -> None:
        stats = self.stats
        stats.requests += 1
        stats.by_status[status] = stats.by_status.get(status, 0) + 1
        if self.on_request is not None:
            cost = self.cost_of(model, prompt_tokens, completion_tokens) if prompt_tokens or completion_tokens else 0.0
            self.on_request(model, status, latency_s, prompt_tokens, completion_tokens, cost)

    async def _wait_for_provider(self, provider: str) -> None:
        """Sleep while the provider said a limit is exhausted (see `anthropic_delay`)."""
        # Another response may extend the pause while we sleep: re-read it, a bounded number of times.
        for _ in range(8):
            wait = self._paused_until.get(provider, 0.0) - monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def _pause(self, provider: str, seconds: float | None) -> None:
        if seconds:
            until = monotonic() + min(seconds, self.max_backoff)
            self._paused_until[provider] = max(self._paused_until.get(provider, 0.0), until)

    async def _attempt(self, model: str, request: _Request, estimate: int) -> Completion | _Retryable:
        """One HTTP attempt under the in-flight cap and rate limits."""
        async with self._semaphore(model):
            await self._wait_for_provider(request.provider)
            if self._rpm is not None:
                await self._rpm.acquire(1)
            if self._tpm is not None:
                await self._tpm.acquire(estimate)
            start = perf_counter()
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self._http.post(request.url, content=request.body, headers=request.headers)
            except (TimeoutError, httpx.TimeoutException) as exc:
                self._record(model, "timeout", perf_counter() - start, 0, 0)
                return _Retryable("timeout", f"no answer within {self.timeout:g} s ({type(exc).__name__})")
            except httpx.RequestError as exc:  # connection refused/reset, protocol errors
                self._record(model, "error", perf_counter() - start, 0, 0)
                return _Retryable("error", f"request failed: {type(exc).__name__}: {exc}")
        latency = perf_counter() - start
        code = response.status_code
        limit_reset = anthropic_delay(response.headers) if request.provider == "anthropic" else None
        self._pause(request.provider, limit_reset)
        if code == 429 or code >= 500:
            status = "429" if code == 429 else "5xx"
            self._record(model, status, latency, 0, 0)
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is None and code == 429:
                retry_after = limit_reset
            return _Retryable(status, f"HTTP {code}", retry_after)
        if code >= 400:
            self._record(model, "error", latency, 0, 0)
            raise JudgeError(f"judge {model}: HTTP {code}: {truncate(response.text, 300)}")
        try:
            text, prompt_tokens, completion_tokens = request.parse(orjson.loads(response.content))
        except (
            orjson.JSONDecodeError, LookupError, StopIteration, TypeError, ValueError, AttributeError
        ) as exc:
            self._record(model, "error", latency, 0, 0)
            shape = "Messages API response" if request.provider == "anthropic" else "chat completion"
            raise JudgeResponseError(
                f"judge {model}: HTTP {code} body is not a {shape} ({type(exc).__name__}): "
                f"{truncate(response.text, 500)}"
            ) from None
        self._record(model, "ok", latency, prompt_tokens, completion_tokens)
        if self._tpm is not None and (prompt_tokens or completion_tokens):
            self._tpm.adjust(prompt_tokens + completion_tokens - estimate)
        cost = self.cost_of(model, prompt_tokens, completion_tokens)
        stats = self.stats
        stats.prompt_tokens += prompt_tokens
        stats.completion_tokens += completion_tokens
        stats.cost += cost
        return Completion(text, model, prompt_tokens, completion_tokens, cost, latency)
