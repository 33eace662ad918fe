"""Wiring `tracewatch sink mlflow`: clients, metrics server, then the loop until a signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cramjam
import orjson
from prometheus_client import CollectorRegistry

from sinks import RedisSink, serve_metrics
from sinks.mlflow import MlflowConfig, MlflowGuard, MlflowRest, MlflowSink, SinkMetrics, TraceLoader
from stream._config import Settings
from stream._kafka import kafka_errors, make_consumer, make_producer, producer_max_request_size
from stream.mlflow._loop import MlflowSinkLoop
from stream.worker._dead_letter import dead_letter_limit

__all__ = ["SinkHandle", "run_mlflow_sink"]

log = logging.getLogger("tracewatch.mlflow_sink")


@dataclass
class SinkHandle:
    """What a running sink exposes to its caller (tests, the CLI)."""

    loop: MlflowSinkLoop | None = None
    metrics_port: int | None = None
    registry: CollectorRegistry | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


def _stored_trace_loader(redis: RedisSink) -> TraceLoader:
    """Reads the raw trace the worker keeps in Redis (only for traces it sampled and stored)."""

    async def load(trace_id: str) -> dict[str, Any] | None:
        raw = await redis.trace_raw(trace_id)
        if raw is None:
            return None
        data = orjson.loads(bytes(cramjam.lz4.decompress_block(raw)))
        return data if isinstance(data, dict) else None

    return load


async def run_mlflow_sink(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    upload_traces: bool = False,
    metrics_port: int | None = None,
    handle: SinkHandle | None = None,
    install_signals: bool = True,
) -> int:
    """Run the MLflow sink until SIGTERM/SIGINT (or `handle.loop.stop()`); returns messages finished.

    Raises:
        SinkError: `MLFLOW_TRACKING_URI` is missing or not an http(s) URL.
        KafkaUnavailableError: Kafka cannot be reached.
    """
    handle = handle or SinkHandle()
    config = MlflowConfig.from_env(
        os.environ if env is None else env,
        rate_limit=settings.mlflow_sink_rate_limit,
        max_connections=settings.mlflow_sink_max_in_flight,
    )
    registry = CollectorRegistry()
    metrics = SinkMetrics(registry)
    handle.registry = registry
    port = settings.mlflow_sink_metrics_port if metrics_port is None else metrics_port
    server = serve_metrics(registry, settings.metrics_host, port) if port >= 0 else None
    if server is not None:
        handle.metrics_port = server.port
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.port)
    rest = MlflowRest(config, observe=metrics.observe)
    guard = MlflowGuard.from_url(settings.redis_url, prefix=settings.redis_prefix)
    redis = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    sink = MlflowSink(
        rest,
        guard,
        metrics,
        load_trace=_stored_trace_loader(redis) if upload_traces else None,
        trace_wait_timeout=settings.mlflow_sink_trace_wait_timeout,
    )
    producer = make_producer(settings)
    consumer = make_consumer(settings, group_id=settings.mlflow_sink_group)
    try:
        with kafka_errors(f"connecting to Kafka at {settings.kafka_bootstrap}"):
            await producer.start()
            await consumer.start()
        loop = MlflowSinkLoop(
            settings,
            consumer,
            producer,
            sink,
            metrics,
            max_in_flight=settings.mlflow_sink_max_in_flight,
            dead_letter_limit=dead_letter_limit(producer_max_request_size(settings)),
        )
        handle.loop = loop
        loop.subscribe()
        if install_signals:
            ev = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                ev.add_signal_handler(sig, loop.stop)
        handle.ready.set()
        await loop.run()
        return loop.processed
    finally:
        await consumer.stop()
        await producer.stop()
        await rest.aclose()
        await guard.aclose()
        await redis.aclose()
        if server is not None:
            server.shutdown()
