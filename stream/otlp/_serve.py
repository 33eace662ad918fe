"""Running the receiver: one producer, the OTLP/HTTP (uvicorn) and OTLP/gRPC servers, /metrics.

Both servers share one event loop, one producer and one in-flight cap, so the cap bounds
the process's memory whichever transport the load comes through. The sockets are bound here
(port 0 picks a free one, reported on the handle), then handed to uvicorn. Shutdown stops
taking exports, lets those in flight finish (gRPC grace, uvicorn's graceful close), then
flushes and stops the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import uvicorn

from stream._kafka import AIOKafkaProducer, kafka_errors, make_producer
from stream.otlp._auth import KeyCheck
from stream.otlp._decode import SpanLimits
from stream.otlp._grpc import make_grpc_server
from stream.otlp._http import OtlpHttpApp
from stream.otlp._metrics import ReceiverMetrics
from stream.otlp._receiver import Receiver

if TYPE_CHECKING:
    from stream._config import Settings

__all__ = ["ReceiverHandle", "receiver_from", "run_receiver"]

log = logging.getLogger(__name__)

GRACE_INTERVAL = 5.0


class _UvicornServer(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM/SIGINT to us: one handler stops both transports."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class ReceiverHandle:
    """What a running receiver exposes to its caller (tests, the CLI): bound ports, stop."""

    http_port: int | None = None
    grpc_port: int | None = None
    metrics_port: int | None = None
    receiver: Receiver | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self.stopping.set()


def receiver_from(
    settings: Settings, producer: AIOKafkaProducer, metrics: ReceiverMetrics, *, keys: KeyCheck
) -> Receiver:
    """The `Receiver` the settings describe (messages capped at `max_trace_bytes`, as traces are)."""
    limits = SpanLimits(max_span_bytes=settings.otlp_max_span_bytes, max_message_bytes=settings.max_trace_bytes)
    return Receiver(
        producer,
        settings.topics.spans,
        keys=keys,
        limits=limits,
        default_experiment=settings.otlp_default_experiment,
        max_in_flight=settings.otlp_max_in_flight,
        ack_timeout=settings.otlp_ack_timeout,
        metrics=metrics,
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def run_receiver(
    settings: Settings,
    *,
    handle: ReceiverHandle | None = None,
    metrics_port: int | None = None,
    install_signals: bool = True,
) -> None:
    """Serve OTLP until SIGTERM/SIGINT (or `handle.stop()`).

    Raises:
        KafkaUnavailableError: Kafka cannot be reached at startup.
        OSError: a port is taken.
    """
    from sinks import serve_metrics

    handle = handle or ReceiverHandle()
    metrics = ReceiverMetrics()
    port = settings.otlp_metrics_port if metrics_port is None else metrics_port
    metrics_server = serve_metrics(metrics.registry, settings.metrics_host, port) if port >= 0 else None
    if metrics_server is not None:
        handle.metrics_port = metrics_server.port
    producer = make_producer(settings)
    http_server: uvicorn.Server | None = None
    http_task: asyncio.Task[None] | None = None
    grpc_server = None
    try:
        with kafka_errors(f"connecting to Kafka at {settings.kafka_bootstrap}"):
            await producer.start()
        receiver = receiver_from(settings, producer, metrics, keys=KeyCheck(settings.api_keys))
        handle.receiver = receiver
        if settings.otlp_grpc_port >= 0:
            grpc_server, handle.grpc_port = make_grpc_server(
                receiver, settings.otlp_host, settings.otlp_grpc_port, max_body_bytes=settings.otlp_max_body_bytes
            )
            await grpc_server.start()
            log.info("OTLP/gRPC on %s:%d", settings.otlp_host, handle.grpc_port)
        if settings.otlp_http_port >= 0:
            sock = _bind(settings.otlp_host, settings.otlp_http_port)
            handle.http_port = sock.getsockname()[1]
            app = OtlpHttpApp(receiver, max_body_bytes=settings.otlp_max_body_bytes)
            config = uvicorn.Config(
                app,
                lifespan="off",
                access_log=False,
                log_level="warning",
                timeout_graceful_shutdown=int(GRACE_INTERVAL),
            )
            http_server = _UvicornServer(config)
            http_task = asyncio.create_task(http_server.serve(sockets=[sock]))
            while not http_server.started and not http_task.done():  # noqa: ASYNC110 - uvicorn has no event
                await asyncio.sleep(0.01)
            if http_task.done():
                await http_task  # raises what stopped it
            log.info("OTLP/HTTP on http://%s:%d/v1/traces", settings.otlp_host, handle.http_port)
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, handle.stop)
        handle.ready.set()
        await handle.stopping.wait()
    finally:
        if http_server is not None and http_task is not None:
            http_server.should_exit = True
            await asyncio.gather(http_task, return_exceptions=True)
        if grpc_server is not None:
            await grpc_server.stop(GRACE_INTERVAL)
        await producer.stop()
        if metrics_server is not None:
            metrics_server.shutdown()
