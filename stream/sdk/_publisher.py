"""The publisher SDK: how production apps hand finished traces to tracewatch.

The contract is the opposite of fire-and-forget logging: `publish` returns only once Kafka
has acknowledged the trace (acks=all, idempotent producer) and raises otherwise. When the
producer's buffer is full, the caller waits; nothing is dropped. Closing flushes.

Importing it costs only aiokafka, orjson and `scorers`' entities: its settings come from
`PublisherConfig` (the same `TRACEWATCH_*` variables as `stream.Settings`, without
pydantic-settings).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future as ThreadFuture
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from scorers import DEFAULT_MAX_TRACE_BYTES, Trace, decode_trace, trace_from_dict
from stream._exceptions import PublishError
from stream._kafka import AIOKafkaProducer, KafkaError, make_producer
from stream.sdk._env import PublisherConfig

if TYPE_CHECKING:
    from stream._config import Settings

__all__ = ["SyncTracePublisher", "TracePublisher", "encode_for_wire"]


def encode_for_wire(trace: Any, *, max_bytes: int = DEFAULT_MAX_TRACE_BYTES) -> tuple[str, bytes]:
    """Validate a trace and return `(trace_id, json_bytes)` ready for the traces topic.

    Accepts our `Trace`, a wire dict, JSON bytes/str, or an `mlflow.entities.Trace`
    (anything with `to_json()`); mlflow itself is never imported.

    Raises:
        DecodeError: the trace is not a valid MLflow trace (reason code attached).
    """
    if isinstance(trace, Trace):
        return trace.trace_id, trace.to_json()
    if isinstance(trace, dict):
        decoded = trace_from_dict(trace)
        data = orjson.dumps(trace)
        if len(data) > max_bytes:
            decode_trace(data, max_bytes=max_bytes)  # raises too_large with the standard message
        return decoded.trace_id, data
    if isinstance(trace, (bytes, bytearray, memoryview, str)):
        data = trace.encode() if isinstance(trace, str) else bytes(trace)
        return decode_trace(data, max_bytes=max_bytes).trace_id, data
    to_json = getattr(trace, "to_json", None)
    if callable(to_json):  # mlflow.entities.Trace
        return encode_for_wire(to_json(), max_bytes=max_bytes)
    raise TypeError(
        f"cannot publish a {type(trace).__name__}: pass a tracewatch Trace, a dict, JSON bytes/str "
        "or an mlflow.entities.Trace"
    )


class TracePublisher:
    """Async publisher of finished traces to the traces topic, keyed by trace id.

    Args:
        bootstrap: Kafka's bootstrap servers; `TRACEWATCH_KAFKA_BOOTSTRAP` by default.
        topic: The traces topic; `<TRACEWATCH_TOPIC_PREFIX>traces` by default.
        settings: A `stream.Settings` or `PublisherConfig` to take the defaults from instead
            of the environment.
        producer: An `AIOKafkaProducer` to use instead of opening one.

    Raises:
        ConfigError: A `TRACEWATCH_*` variable holds a bad value.

    Example:
        async with TracePublisher() as pub:
            await pub.publish(trace)          # returns after Kafka's ack
            acks = [await pub.send(t) for t in traces]
            await asyncio.gather(*acks)       # pipelined: many in flight, each acked
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        topic: str | None = None,
        settings: Settings | PublisherConfig | None = None,
        producer: AIOKafkaProducer | None = None,
    ) -> None:
        self._settings = PublisherConfig.of(settings) if settings is not None else PublisherConfig.from_env()
        if bootstrap:
            self._settings = replace(self._settings, kafka_bootstrap=bootstrap)
        self.topic = topic or self._settings.traces_topic
        self._producer = producer or make_producer(self._settings)
        self._started = False
        self.published = 0

    async def start(self) -> None:
        if not self._started:
            try:
                await self._producer.start()
            except KafkaError as exc:
                await self._producer.stop()
                raise PublishError(
                    f"cannot reach Kafka at {self._settings.kafka_bootstrap}: {exc}"
                ) from exc
            self._started = True

    async def close(self) -> None:
        """Flush everything buffered (waiting for acks), then disconnect."""
        if self._started:
            self._started = False
            await self._producer.stop()

    async def __aenter__(self) -> TracePublisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def send(self, trace: Any) -> asyncio.Future[Any]:
        """Enqueue a trace and return a future that resolves on Kafka's ack (or raises).

        Waits while the producer's buffer is full. Await the returned future: an un-awaited
        failure is a lost trace.
        """
        if not self._started:
            await self.start()
        trace_id, data = encode_for_wire(trace, max_bytes=self._settings.max_trace_bytes)
        try:
            fut = await self._producer.send(self.topic, value=data, key=trace_id.encode())
        except KafkaError as exc:
            raise PublishError(f"trace {trace_id} not published: {exc}", trace_id=trace_id) from exc
        return _checked(fut, trace_id, self)

    async def publish(self, trace: Any) -> None:
        """Publish one trace and return once Kafka acknowledged it.

        Raises:
            PublishError: Kafka did not acknowledge it.
            DecodeError: the trace is not valid.
        """
        await (await self.send(trace))

    async def publish_many(
        self, traces: Iterable[Any], *, on_ack: Callable[[int], None] | None = None, window: int = 10_000
    ) -> int:
        """Publish many traces pipelined, at most `window` unacknowledged; returns the count.

        Raises the first `PublishError`; traces acked before it stay published.
        """
        pending: list[asyncio.Future[Any]] = []
        count = 0
        for trace in traces:
            pending.append(await self.send(trace))
            if len(pending) >= window:
                await asyncio.gather(*pending)
                count += len(pending)
                if on_ack:
                    on_ack(len(pending))
                pending.clear()
        if pending:
            await asyncio.gather(*pending)
            count += len(pending)
            if on_ack:
                on_ack(len(pending))
        return count


def _checked(fut: asyncio.Future[Any], trace_id: str, pub: TracePublisher) -> asyncio.Future[Any]:
    """Wrap the ack future so failures surface as `PublishError` with the trace id."""
    loop = asyncio.get_running_loop()
    out: asyncio.Future[Any] = loop.create_future()

    def done(f: asyncio.Future[Any]) -> None:
        if out.done():
            return
        if f.cancelled():
            out.set_exception(PublishError(f"trace {trace_id}: publish cancelled", trace_id=trace_id))
        elif (exc := f.exception()) is not None:
            out.set_exception(PublishError(f"trace {trace_id} not acknowledged: {exc}", trace_id=trace_id))
        else:
            pub.published += 1
            out.set_result(f.result())

    fut.add_done_callback(done)
    return out


class SyncTracePublisher:
    """Blocking wrapper for apps without an event loop: a private loop in a daemon thread.

    Example:
        with SyncTracePublisher() as pub:
            pub.publish(trace_dict)   # blocks until Kafka acked
    """

    def __init__(self, bootstrap: str | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tracewatch-publisher", daemon=True)
        self._thread.start()
        self._pub: TracePublisher = self._run(self._make(bootstrap, kwargs), timeout=30)

    async def _make(self, bootstrap: str | None, kwargs: dict[str, Any]) -> TracePublisher:
        pub = TracePublisher(bootstrap, **kwargs)
        await pub.start()
        return pub

    def _run(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        fut: ThreadFuture[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def publish(self, trace: Any, *, timeout: float | None = 60.0) -> None:
        """Publish one trace; returns after Kafka's ack, raises `PublishError` otherwise."""
        self._run(self._pub.publish(trace), timeout)

    def publish_many(self, traces: Iterable[Any]) -> int:
        return int(self._run(self._pub.publish_many(traces)))

    def close(self) -> None:
        """Flush and stop; safe to call twice."""
        if self._loop.is_running():
            self._run(self._pub.close(), 60)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> SyncTracePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
