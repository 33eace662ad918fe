"""The HTTP API (DESIGN.md, "HTTP API"): feedback in, results out.

`create_app` builds the FastAPI app. Its lifespan opens the shared clients, one idempotent
`acks=all` Kafka producer and one `RedisSink`, unless the caller injects them (tests pass
fakes; an injected client belongs to the caller, who starts and closes it).

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

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Annotated, Any, Final, Protocol

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.routing import Route

from scorers import MAX_ID_CHARS, MAX_NAME_CHARS, DecodeError
from sinks import Aggregate, RedisSink, SinkError, metrics_asgi_app
from stream._config import Settings
from stream._events import FeedbackEvent
from stream._exceptions import KafkaUnavailableError, StreamError
from stream._kafka import kafka_errors, make_producer
from stream.api._auth import (
    ApiError,
    Auth,
    Principal,
    install_error_handlers,
    require_key,
    require_key_or_token,
    token_refusal,
    unavailable,
)
from stream.api._limits import BodyLimitMiddleware
from stream.api._metrics import AsgiEndpoint, HttpMetrics, MetricsMiddleware
from stream.api._models import (
    WINDOW_PATTERN,
    Accepted,
    ApiOptions,
    ErrorBody,
    ExpectationBody,
    FeedbackBody,
    Health,
    ScorerInfo,
    ScorerList,
    Summary,
    TokenRequest,
    TokenResponse,
    TraceAccepted,
    TraceResults,
    window_minutes,
)
from stream.api._ratelimit import RateLimiter, RateLimitMiddleware
from stream.sdk._publisher import encode_for_wire
from stream.sdk._tokens import TokenError, mint_feedback_token

__all__ = ["Producer", "RegistryLister", "ResultStore", "create_app"]

log = logging.getLogger(__name__)

_OFFLOAD_BYTES: Final = 64 * 1024  # traces above this are validated off the event loop


class Producer(Protocol):
    """What the API needs of a Kafka producer: send one record and wait for its ack."""

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any: ...


class ResultStore(Protocol):
    """What the API reads from the serving store (`sinks.RedisSink` fits)."""

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None: ...
    async def aggregates(self, experiment: str, scorer: str, *, start_minute: int, end_minute: int) -> Aggregate: ...
    async def experiments(self) -> set[str]: ...
    async def scorers(self, experiment: str) -> set[str]: ...
    async def names(self, experiment: str) -> set[str]: ...
    async def ping(self) -> None: ...


RegistryLister = Callable[[], Awaitable[Iterable[Any]]]
"""Lists registered scorers: mappings or pydantic models with at least `name` and `experiment_id`."""


# -- clients ----------------------------------------------------------------------------------


class _Services:
    """The shared clients and their lifecycle; publishes with the all-or-error guarantee."""

    def __init__(
        self,
        settings: Settings,
        options: ApiOptions,
        producer: Producer | None,
        sink: ResultStore | None,
        registry_lister: RegistryLister | None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.producer = producer
        self.sink = sink
        self.registry_lister = registry_lister
        self._own_producer: Any = None
        self._own_sink: RedisSink | None = None
        self._starter: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.sink is None:
            s = self.settings
            self.sink = self._own_sink = RedisSink.from_url(
                s.redis_url, prefix=s.redis_prefix, trace_ttl=s.trace_ttl_s, aggregate_ttl=s.aggregate_ttl_s
            )
        if self.producer is None and not await self._start_producer():
            # Kafka is down: serve anyway (readyz says 503, publishes answer 503) and retry.
            self._starter = asyncio.create_task(self._keep_starting(), name="tracewatch-api-producer")

    async def _start_producer(self) -> bool:
        # No linger: every request waits for its own ack, so lingering is pure latency (5 ms of
        # a ~7 ms single-client p50 measured); under load, records queue up behind the request
        # in flight and batch anyway.
        producer = make_producer(self.settings, client_id="tracewatch-api", linger_ms=0)
        try:
            with kafka_errors(f"starting a producer for {self.settings.kafka_bootstrap}"):
                await producer.start()
        except KafkaUnavailableError as exc:
            log.warning("%s", exc)
            with contextlib.suppress(KafkaUnavailableError), kafka_errors("stopping a failed producer"):
                await producer.stop()
            return False
        self.producer = self._own_producer = producer
        return True

    async def _keep_starting(self) -> None:
        delay = 0.5
        while not await self._start_producer():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        log.info("connected to Kafka at %s", self.settings.kafka_bootstrap)

    async def stop(self) -> None:
        if self._starter is not None:
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
        if self._own_producer is not None:
            self.producer = None
            try:
                with kafka_errors("stopping the API's producer"):
                    await self._own_producer.stop()  # flushes: everything acked so far stays acked
            except KafkaUnavailableError as exc:
                log.warning("%s", exc)
        if self._own_sink is not None:
            try:
                await self._own_sink.aclose()
            except SinkError as exc:
                log.warning("closing Redis: %s", exc)

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Return once Kafka acknowledged the record; raise a 503 `ApiError` otherwise."""
        producer = self.producer
        if producer is None:
            raise unavailable("kafka_unavailable", "not connected to Kafka yet; nothing was accepted, retry later")
        timeout = self.options.publish_timeout
        try:
            async with asyncio.timeout(timeout):
                with kafka_errors(f"publishing to {topic}"):
                    await producer.send_and_wait(topic, value=value, key=key.encode())
        except KafkaUnavailableError as exc:
            log.warning("%s", exc)
            raise unavailable(
                "kafka_unavailable", "Kafka did not accept the event; nothing was stored, retry later"
            ) from exc
        except TimeoutError as exc:
            log.warning("no ack from Kafka on %s within %.1f s", topic, timeout)
            raise unavailable(
                "kafka_timeout",
                f"Kafka did not acknowledge within {timeout:g} s; retry (a repeated vote replaces the first)",
            ) from exc

    @property
    def store(self) -> ResultStore:
        if self.sink is None:
            raise unavailable("store_unavailable", "the result store is not open")
        return self.sink


@contextlib.contextmanager
def _store_errors(what: str) -> Iterator[None]:
    try:
        yield
    except SinkError as exc:
        log.warning("%s: %s", what, exc)
        raise unavailable("store_unavailable", f"the result store did not answer ({what}); retry later") from exc


_TRACE_BODY: Final = {
    "requestBody": {
        "required": True,
        "description": "An MLflow 3 trace, as `mlflow.entities.Trace.to_json()` writes it.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["info"],
                    "properties": {
                        "info": {"type": "object", "required": ["trace_id"]},
                        "data": {"type": "object"},
                    },
                }
            }
        },
    }
}


_SLICE_MINUTES: Final = 1440


async def _aggregate(store: ResultStore, experiment: str, name: str, start: int, end: int) -> Aggregate:
    """`store.aggregates` a day at a time, summed.

    The store reads one hash per minute; a 30-day window in one pipeline keeps the event loop
    busy for about a second (measured), stalling every other request. Day slices cost the
    same in total but yield between them (~50 ms each).
    """
    total = Aggregate()
    for lo in range(start, end, _SLICE_MINUTES):
        part = await store.aggregates(experiment, name, start_minute=lo, end_minute=min(lo + _SLICE_MINUTES, end))
        total = Aggregate(
            count=total.count + part.count,
            sum=total.sum + part.sum,
            passed=total.passed + part.passed,
            failed=total.failed + part.failed,
            errors=total.errors + part.errors,
            values=total.values + part.values,
        )
    return total


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


def _as_dict(item: Any) -> dict[str, Any]:
    dump = getattr(item, "model_dump", None)
    if callable(dump):
        return dict(dump(mode="json"))
    return dict(item)


# -- the app ----------------------------------------------------------------------------------


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
    topics = settings.topics
    services = _Services(settings, opts, producer, sink, registry_lister)
    auth = Auth(settings.api_keys, settings.feedback_secrets, opts)
    registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
    http_metrics = HttpMetrics(registry)

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

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        """The process is up (no dependency is checked)."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["ops"], responses={503: {"model": Health}})
    async def readyz() -> Response:
        """Kafka producer started and Redis answering; 503 otherwise."""
        checks = {"kafka": "ok" if services.producer is not None else "not connected"}
        try:
            async with asyncio.timeout(2.0):
                await services.store.ping()
            checks["redis"] = "ok"
        except (SinkError, ApiError, TimeoutError) as exc:
            checks["redis"] = f"unavailable: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        body = Health(status="ok" if ok else "unavailable", checks=checks)
        return Response(body.model_dump_json(), status_code=200 if ok else 503, media_type="application/json")

    @app.post(
        "/v1/feedback",
        status_code=202,
        response_model=Accepted,
        responses=_errors(400, 401, 403, 408, 413, 422, 429, 503),
        tags=["feedback"],
    )
    async def post_feedback(
        body: FeedbackBody, principal: Annotated[Principal, Depends(require_key_or_token)]
    ) -> Accepted:
        """Record one vote; 202 once Kafka has acknowledged it.

        With `X-Feedback-Token` the token must cover this trace, name and value, the source is
        HUMAN, and the source id is the user bound in the token (or, when it binds none, an
        anonymous id of the token: one token, one voter).
        """
        source_type, source_id = body.source.type, body.source.id
        claims = principal.claims if principal.key_id is None else None
        if claims is not None:
            try:
                claims.check(body.trace_id, body.name, body.value)
            except TokenError as exc:
                raise token_refusal(exc) from None
            if source_type != "HUMAN":
                raise ApiError(403, "source_not_allowed", "feedback sent with a token is HUMAN feedback")
            if source_id is not None and source_id != principal.voter:
                raise ApiError(
                    403,
                    "source_mismatch",
                    "with a feedback token the token decides who votes: leave source.id out, or give the user "
                    "the token was minted for",
                )
            source_id = principal.voter
        event = FeedbackEvent(
            kind="feedback",
            trace_id=body.trace_id,
            name=body.name,
            value=body.value,
            source_type=source_type,
            source_id=source_id or "anonymous",
            rationale=body.rationale,
            metadata=body.metadata,
        )
        await services.publish(topics.feedback, body.trace_id, event.to_json())
        return Accepted(event_id=event.event_id, trace_id=body.trace_id)

    @app.post(
        "/v1/expectations",
        status_code=202,
        response_model=Accepted,
        responses=_errors(400, 401, 403, 408, 413, 422, 429, 503),
        dependencies=[Depends(require_key)],
        tags=["feedback"],
    )
    async def post_expectation(body: ExpectationBody) -> Accepted:
        """Record ground truth for a trace (API key only); 202 once Kafka has acknowledged it."""
        event = FeedbackEvent(
            kind="expectation",
            trace_id=body.trace_id,
            name=body.name,
            value=body.value,
            source_type=body.source.type,
            source_id=body.source.id or "api",
            metadata=body.metadata,
        )
        await services.publish(topics.feedback, body.trace_id, event.to_json())
        return Accepted(event_id=event.event_id, trace_id=body.trace_id)

    @app.post(
        "/v1/traces",
        status_code=202,
        response_model=TraceAccepted,
        responses=_errors(400, 401, 403, 408, 413, 422, 429, 503),
        dependencies=[Depends(require_key)],
        openapi_extra=_TRACE_BODY,
        tags=["traces"],
    )
    async def post_trace(request: Request) -> TraceAccepted:
        """Ingest one MLflow trace over HTTP; 202 once it is on the traces topic."""
        data = await request.body()
        max_bytes = settings.max_trace_bytes
        try:
            if len(data) > _OFFLOAD_BYTES:
                trace_id, payload = await asyncio.to_thread(encode_for_wire, data, max_bytes=max_bytes)
            else:
                trace_id, payload = encode_for_wire(data, max_bytes=max_bytes)
        except DecodeError as exc:
            status = 413 if exc.reason == "too_large" else 400 if exc.reason in ("not_json", "bad_compression") else 422
            raise ApiError(status, "invalid_trace", str(exc), reason=exc.reason) from None
        await services.publish(topics.traces, trace_id, payload)
        return TraceAccepted(trace_id=trace_id)

    @app.get(
        "/v1/traces/{trace_id}",
        response_model=TraceResults,
        responses=_errors(400, 401, 403, 404, 422, 429, 503),
        dependencies=[Depends(require_key)],
        tags=["traces"],
    )
    async def get_trace(trace_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)]) -> TraceResults:
        """The latest assessments and feedback of a trace, joined; 404 when unknown or expired."""
        with _store_errors("get_trace"):
            found = await services.store.get_trace(trace_id)
        if found is None:
            raise ApiError(404, "trace_not_found", "no results for this trace (unknown, not scored yet, or expired)")
        return TraceResults.model_validate(found)

    async def list_scorers() -> list[dict[str, Any]]:
        if registry_lister is not None:
            try:
                return [_as_dict(item) for item in await registry_lister()]
            except (StreamError, SinkError) as exc:
                log.warning("listing scorers: %s", exc)
                raise unavailable("registry_unavailable", "the scorer registry did not answer; retry later") from exc
        store = services.store
        with _store_errors("scorers"):
            return [
                {"name": name, "experiment_id": exp}
                for exp in sorted(await store.experiments())
                for name in sorted(await store.scorers(exp))
            ]

    @app.get(
        "/v1/scorers",
        response_model=ScorerList,
        responses=_errors(400, 401, 403, 429, 503),
        dependencies=[Depends(require_key)],
        tags=["scorers"],
    )
    async def get_scorers() -> ScorerList:
        """The scorers: from the registry when the app has one, else those with results."""
        return ScorerList(scorers=[ScorerInfo.model_validate(s) for s in await list_scorers()])

    @app.get(
        "/v1/scorers/{name}/summary",
        response_model=Summary,
        responses=_errors(400, 401, 403, 404, 422, 429, 503),
        dependencies=[Depends(require_key)],
        tags=["scorers"],
    )
    async def get_summary(
        name: Annotated[str, Path(min_length=1, max_length=MAX_NAME_CHARS)],
        window: Annotated[str, Query(pattern=WINDOW_PATTERN, description="5m, 1h, 7d; at most 30d")] = "1h",
        experiment: Annotated[str, Query(min_length=1, max_length=MAX_ID_CHARS)] = "0",
    ) -> Summary:
        """Counts, pass rate, mean and errors of one scorer over the last `window` (whole minutes)."""
        try:
            minutes = window_minutes(window)
        except ValueError as exc:
            error = {"loc": ("query", "window"), "msg": str(exc), "type": "value_error"}
            raise RequestValidationError([error]) from None
        end_minute = int(time.time()) // 60 + 1  # through the current minute
        start_minute = end_minute - minutes
        store = services.store
        with _store_errors("summary"):
            known = name in await store.names(experiment) or name in await store.scorers(experiment)
            if not known and registry_lister is not None:
                listed = await list_scorers()
                known = any(s.get("name") == name and str(s.get("experiment_id")) == experiment for s in listed)
            if not known:
                raise ApiError(404, "scorer_not_found", f"no scorer {name!r} in experiment {experiment!r}")
            agg = await _aggregate(store, experiment, name, start_minute, end_minute)
        return Summary(
            scorer=name,
            experiment_id=experiment,
            window=window,
            start_ms=start_minute * 60000,
            end_ms=end_minute * 60000,
            **agg.to_dict(),
        )

    @app.post(
        "/v1/feedback-tokens",
        response_model=TokenResponse,
        responses=_errors(400, 401, 403, 408, 413, 422, 429, 501),
        dependencies=[Depends(require_key)],
        tags=["feedback"],
    )
    async def post_token(body: TokenRequest) -> TokenResponse:
        """Mint a feedback token for a browser (see `stream.sdk._tokens` for the format)."""
        if not auth.secrets:
            raise ApiError(501, "tokens_disabled", "feedback tokens are disabled: set TRACEWATCH_FEEDBACK_SECRETS")
        now = time.time()
        try:
            token = mint_feedback_token(
                body.trace_id,
                secret=auth.secrets[0],
                names=body.names,
                values=body.values,
                user_id=body.user_id,
                ttl_s=body.ttl_s,
                now=now,
            )
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        return TokenResponse(token=token, expires_at=int(now + body.ttl_s))

    app.router.routes.append(Route("/metrics", AsgiEndpoint(metrics_asgi_app(registry)), methods=["GET"]))

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
    app.add_middleware(MetricsMiddleware, metrics=http_metrics, routes=app.router.routes)
    return app
