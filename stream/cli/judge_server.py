"""A fake judge over real loopback HTTP: OpenAI's `POST /v1/chat/completions` and
Anthropic's `POST /v1/messages` (both shapes, so both client paths are tested for real).

For tests, demos and benchmarks that must not call a paid API. Answers are derived from
the prompt, so the same prompt always gets the same verdict:

- "no" when the prompt holds `[[bad]]` or `[[unsafe]]`, or when the prompt's sha256 falls
  under `fail_fraction`; else "yes" (a prompt asking for `Answer type: number` gets a 1-5
  score, `Answer type: bool` gets true/false);
- a non-JSON answer when the prompt holds `[[garbage]]`.

Faults are drawn from a seeded RNG per request (not from the prompt, so a retried request
can succeed): `rate_429` (with `Retry-After`, unless `retry_after_header` is off; Anthropic
429s also carry `anthropic-ratelimit-requests-remaining: 0` and `-reset`), `rate_500`,
`garbage_rate`, plus a fixed `latency` and random `jitter`. `GET /stats` reports requests by
status and the current and maximum number of requests in flight, which is how tests check a
client's concurrency cap; `GET /requests` (or `received()`) returns the last request bodies
and auth headers, which is how tests check what a client sent.

The Anthropic route answers 401 without `x-api-key` and 400 without `anthropic-version`,
as the real API does.

Run it with `python -m stream.cli.judge_server --port 8900`, or in tests with
`with JudgeServer(rate_429=0.5) as srv: ... srv.base_url ... srv.stats()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import typer
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stream.api._serve import BackgroundServer
from stream.cli._judge_command import judge_server_command

__all__ = ["FakeJudge", "JudgeServer", "JudgeServerConfig", "judge_server_command", "serve"]

_GARBAGE = "Sorry, I cannot answer in JSON today. The response looks fine to me, I think."


@dataclass(slots=True, frozen=True)
class JudgeServerConfig:
    """Behaviour switches of the fake judge (fractions are per request, in [0, 1])."""

    latency: float = 0.0
    jitter: float = 0.0
    rate_429: float = 0.0
    retry_after: float = 1.0
    rate_500: float = 0.0
    garbage_rate: float = 0.0
    fail_fraction: float = 0.0
    seed: int = 0
    retry_after_header: bool = True

    def __post_init__(self) -> None:
        for name in ("rate_429", "rate_500", "garbage_rate", "fail_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.latency < 0 or self.jitter < 0 or self.retry_after < 0:
            raise ValueError("latency, jitter and retry_after must be >= 0")


def _bucket(prompt: str) -> float:
    """Where the prompt's sha256 falls in [0, 1): the deterministic part of the verdict."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _answer(prompt: str, fail_fraction: float) -> tuple[Any, str, str]:
    """Return `(result, rationale, verdict)` for a prompt; verdict is `yes` or `no`."""
    u = _bucket(prompt)
    if "[[bad]]" in prompt:
        ok, why = False, "The content carries the [[bad]] marker."
    elif "[[unsafe]]" in prompt:
        ok, why = False, "The content carries the [[unsafe]] marker."
    elif u < fail_fraction:
        ok, why = False, f"Prompt hash bucket {u:.3f} is under the fail fraction {fail_fraction:g}."
    else:
        ok, why = True, "The content meets the criteria."
    result: Any
    if "Answer type: number" in prompt:
        result = (4 if u < 0.5 else 5) if ok else 1
    elif "Answer type: bool" in prompt:
        result = ok
    else:
        result = "yes" if ok else "no"
    return result, why, "yes" if ok else "no"


def _content_text(content: Any) -> str:
    """A message's text: a string, or (Anthropic, OpenAI multimodal) a list of text blocks."""
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return str(content)


def _anthropic_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error in Anthropic's shape: `{"type": "error", "error": {"type": ..., "message": ...}}`."""
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status, headers=headers)


class FakeJudge:
    """The ASGI app and its counters; thread-safe to read while a server runs it."""

    def __init__(self, config: JudgeServerConfig | None = None) -> None:
        self.config = config or JudgeServerConfig()
        self._lock = threading.Lock()
        self._rng = random.Random(self.config.seed)
        self._reset_counters()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/stats", self._stats, methods=["GET"]),
                Route("/requests", self._requests_route, methods=["GET"]),
                Route("/healthz", self._health, methods=["GET"]),
            ]
        )

    def _reset_counters(self) -> None:
        # `in_flight` is a gauge, not a counter: requests still running keep counting.
        self._requests = 0
        self._by_status: Counter[str] = Counter()
        self._answers: Counter[str] = Counter()
        self._in_flight: int = getattr(self, "_in_flight", 0)
        self._max_in_flight = self._in_flight
        self._received: deque[dict[str, Any]] = deque(maxlen=200)

    def configure(self, **changes: Any) -> None:
        """Change switches on the fly (e.g. between test phases); reseeds if `seed` is given."""
        with self._lock:
            self.config = replace(self.config, **changes)
            if "seed" in changes:
                self._rng = random.Random(self.config.seed)

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._reset_counters()

    def stats(self) -> dict[str, Any]:
        """Requests in total and by HTTP status, answers by kind, in-flight now and at most."""
        with self._lock:
            return {
                "requests": self._requests,
                "by_status": dict(self._by_status),
                "answers": dict(self._answers),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "config": asdict(self.config),
            }

    def received(self) -> list[dict[str, Any]]:
        """The last 200 requests: `path`, `body` (parsed JSON) and the auth/version headers."""
        with self._lock:
            return list(self._received)

    async def _requests_route(self, request: Request) -> Response:
        return JSONResponse(self.received())

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _chat(self, request: Request) -> Response:
        return await self._handle(request, "openai")

    async def _messages(self, request: Request) -> Response:
        return await self._handle(request, "anthropic")

    async def _handle(self, request: Request, shape: str) -> Response:
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            cfg = self.config
            draw_429, draw_500, draw_garbage, draw_jitter = (self._rng.random() for _ in range(4))
        status = 500
        try:
            response = await self._respond(request, shape, cfg, draw_429, draw_500, draw_garbage, draw_jitter)
            status = response.status_code
            return response
        finally:
            with self._lock:
                self._in_flight -= 1
                self._by_status[str(status)] += 1

    async def _respond(
        self,
        request: Request,
        shape: str,
        cfg: JudgeServerConfig,
        d429: float,
        d500: float,
        dgarbage: float,
        djitter: float,
    ) -> Response:
        try:
            body = orjson.loads(await request.body())
            messages = body["messages"]
            prompt = "\n".join(_content_text(m.get("content", "")) for m in messages)
            model = str(body.get("model") or "fake-judge")
        except ClientDisconnect:
            return Response(status_code=499)  # the client gave up; nobody reads this
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            return JSONResponse(
                {"error": {"message": f"bad request body: {exc}", "type": "invalid_request"}}, 400
            )
        headers = request.headers
        with self._lock:
            self._received.append(
                {
                    "path": request.url.path,
                    "body": body,
                    "authorization": headers.get("authorization"),
                    "x-api-key": headers.get("x-api-key"),
                    "anthropic-version": headers.get("anthropic-version"),
                }
            )
        if shape == "anthropic":
            if not headers.get("x-api-key"):
                return _anthropic_error(401, "authentication_error", "x-api-key header is required")
            if not headers.get("anthropic-version"):
                return _anthropic_error(400, "invalid_request_error", "anthropic-version header is required")
            if not isinstance(body.get("max_tokens"), int):
                return _anthropic_error(400, "invalid_request_error", "max_tokens: Field required")
        delay = cfg.latency + cfg.jitter * djitter
        if delay > 0:
            await asyncio.sleep(delay)
        if d429 < cfg.rate_429:
            limit_headers = {"Retry-After": f"{cfg.retry_after:g}"} if cfg.retry_after_header else {}
            if shape == "anthropic":
                reset = datetime.now(UTC) + timedelta(seconds=cfg.retry_after)
                limit_headers["anthropic-ratelimit-requests-remaining"] = "0"
                limit_headers["anthropic-ratelimit-requests-reset"] = reset.isoformat().replace("+00:00", "Z")
                return _anthropic_error(429, "rate_limit_error", "rate limited (fake)", limit_headers)
            return JSONResponse(
                {"error": {"message": "rate limited (fake)", "type": "rate_limit_exceeded"}},
                429,
                headers=limit_headers,
            )
        if d500 < cfg.rate_500:
            return JSONResponse({"error": {"message": "internal error (fake)", "type": "server_error"}}, 500)
        if dgarbage < cfg.garbage_rate or "[[garbage]]" in prompt:
            content, kind = _GARBAGE, "garbage"
        else:
            result, rationale, kind = _answer(prompt, cfg.fail_fraction)
            content = orjson.dumps({"result": result, "rationale": rationale}).decode()
        with self._lock:
            self._answers[kind] += 1
        prompt_tokens = max(1, len(prompt) // 4)
        completion_tokens = max(1, len(content) // 4)
        if shape == "anthropic":
            return JSONResponse(
                {
                    "id": f"msg_fake_{hashlib.sha256(prompt.encode()).hexdigest()[:12]}",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": content}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
                },
                headers={"anthropic-ratelimit-requests-remaining": "1000"},
            )
        return JSONResponse(
            {
                "id": f"chatcmpl-fake-{hashlib.sha256(prompt.encode()).hexdigest()[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )


class JudgeServer(BackgroundServer):
    """Run a `FakeJudge` on loopback in a background thread (a context manager for tests).

    A `BackgroundServer` (port 0 picks a free port, race-free) without a lifespan, whose
    `base_url` is the OpenAI-style one and whose counters and switches are the judge's.

    Example:
        >>> with JudgeServer(fail_fraction=0.2) as srv:  # doctest: +SKIP
        ...     client = JudgeClient(srv.base_url)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        self.judge = FakeJudge(JudgeServerConfig(**config))
        super().__init__(
            self.judge.app, host, port, name="fake judge server", lifespan="off", timeout_graceful_shutdown=1
        )

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, e.g. `http://127.0.0.1:41234/v1`."""
        return f"{super().base_url}/v1"

    def stats(self) -> dict[str, Any]:
        return self.judge.stats()

    def received(self) -> list[dict[str, Any]]:
        """The last request bodies and auth headers the server saw (see `FakeJudge.received`)."""
        return self.judge.received()

    def configure(self, **changes: Any) -> None:
        self.judge.configure(**changes)

    def reset(self) -> None:
        self.judge.reset()


def serve(host: str = "127.0.0.1", port: int = 8900, **config: Any) -> None:
    """Serve the fake judge in the foreground until interrupted (blocking)."""
    judge = FakeJudge(JudgeServerConfig(**config))
    uvicorn.run(
        judge.app, host=host, port=port, log_level="info", access_log=False, lifespan="off", ws="none"
    )


if __name__ == "__main__":
    typer.run(judge_server_command)
