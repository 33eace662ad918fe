"""The API's shared clients: one Kafka producer and one result store, and how routes reach them.

`Services` opens them in the app's lifespan, unless the caller injected them (tests pass
fakes; an injected client belongs to the caller, who starts and closes it). It publishes with
the API's guarantee: return once Kafka acknowledged the record, or raise a 503 `ApiError`.
Routes get it with `Depends(services)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol

from fastapi import Request

from sinks import Aggregate, RedisSink, SinkError
from stream._config import Settings
from stream._exceptions import KafkaUnavailableError
from stream._kafka import kafka_errors, make_producer
from stream.api._auth import unavailable
from stream.api._models import ApiOptions

__all__ = ["Producer", "RegistryLister", "ResultStore", "Services", "services", "store_errors"]

log = logging.getLogger("stream.api._app")


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


class Services:
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
        self.topics = settings.topics
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


def services(request: Request) -> Services:
    """The app's `Services` (a FastAPI dependency: `Annotated[Services, Depends(services)]`)."""
    found: Services = request.app.state.services
    return found


@contextlib.contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Turn a result-store failure into a 503 `ApiError`: nothing to serve, retry later."""
    try:
        yield
    except SinkError as exc:
        log.warning("%s: %s", what, exc)
        raise unavailable("store_unavailable", f"the result store did not answer ({what}); retry later") from exc


