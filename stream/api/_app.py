"""The HTTP API (DESIGN.md, "HTTP API"): feedback in, results out.

`create_app` assembles the FastAPI app from one router per concern:

- `stream.api._ingest`: `POST /v1/feedback`, `/v1/expectations`, `/v1/traces` (writes);
- `stream.api._results`: `GET /v1/traces/{id}`, `/v1/scorers`, `/v1/scorers/{name}/summary`;
- `stream.api._tokens`: `POST /v1/feedback-tokens`;
- `stream.api._health`: `/healthz`, `/readyz` and `/metrics`.

Its lifespan opens the shared clients (`stream.api._services`), one idempotent `acks=all`
Kafka producer and one `RedisSink`, unless the caller injects them (tests pass fakes; an
injected client belongs to the caller, who starts and closes it).

A request passes, outermost first:

1. request metrics (every status, including the refusals below, by route template);
2. CORS, when origins are configured, so browsers can read even the refusals;
3. the rate limit, keyed by who the credentials say the client is (API key, token's trace
   and user, or IP), before any byte of the body is read;
4. the body limit (413 before the body is read past the limit) and deadline (408 when the
   body takes over `api_body_timeout`; the headers' deadline is the server's, `stream.api._deadline`);
5. FastAPI: authentication, then body validation (422 naming the field), then the handler.

Nothing is half-written: a 202 means Kafka acknowledged the event; any failure to get that
ack is a 503 with `Retry-After`. A retried vote is harmless: votes replace by
(trace, name, user).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.middleware.cors import CORSMiddleware

from stream._config import Settings
from stream.api import _health, _ingest, _results, _tokens
from stream.api._auth import Auth, install_error_handlers
from stream.api._limits import BodyLimitMiddleware
from stream.api._metrics import HttpMetrics, MetricsMiddleware
from stream.api._models import ApiOptions
from stream.api._ratelimit import RateLimiter, RateLimitMiddleware
from stream.api._services import Producer, RegistryLister, ResultStore, Services

__all__ = ["Producer", "RegistryLister", "ResultStore", "create_app"]


def create_app(
    settings: Settings,
    *,
    producer: Producer | None = None,
    sink: ResultStore | None = None,
    registry_lister: RegistryLister | None = None,
    metrics_registry: CollectorRegistry | None = None,
    options: ApiOptions | None = None,
) -> FastAPI:
    """Build the API app.

    Args:
        settings: Kafka, Redis, topics, API keys (`api_keys`) and token secrets
            (`feedback_secrets`; the first signs, all verify; empty disables tokens).
        producer: A started producer to use instead of opening one (the caller closes it).
        sink: A result store to read instead of opening a `RedisSink` (the caller closes it).
        registry_lister: Lists registered scorers for `GET /v1/scorers`; without it the list
            comes from the scorers that have results in Redis.
        metrics_registry: Where the request metrics go; a fresh registry by default.
        options: Body limits, rate limits, CORS and the publish timeout; from the
            `TRACEWATCH_API_*` environment by default.

    Example:
        >>> app = create_app(Settings(api_keys=["k"]))   # then: uvicorn.run(app)
    """
    opts = options if options is not None else ApiOptions()
    services = Services(settings, opts, producer, sink, registry_lister)
    auth = Auth(settings.api_keys, settings.feedback_secrets, opts)
    registry = metrics_registry if metrics_registry is not None else CollectorRegistry()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(
        title="tracewatch",
        version="1",
        summary="Feedback in, trace quality results out.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.auth = auth
    app.state.services = services
    install_error_handlers(app)
    routers = (_health.router, _ingest.router, _results.router, _tokens.router)
    for router in routers:
        app.include_router(router)
    metrics = _health.metrics_route(registry)
    app.router.routes.append(metrics)
    # The routes a refusal before routing (429, 413) is labelled by: the routers' own routes
    # (FastAPI includes a router as one opaque entry of `app.router.routes`).
    templates = [route for router in routers for route in router.routes] + [metrics]

    # add_middleware wraps: the last added runs first.
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=opts.max_body_bytes,
        limits={"/v1/traces": opts.max_trace_body_bytes or settings.max_trace_bytes},
        body_timeout=settings.api_body_timeout,
    )
    app.add_middleware(RateLimitMiddleware, limiter=RateLimiter(), classify=auth.classify)
    if opts.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=opts.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-Feedback-Token"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(registry), routes=templates)
    return app
