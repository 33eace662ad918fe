"""The assembler's loop: spans topic -> `PartitionState` per partition -> traces topic, then commit.

Each iteration: fetch a batch; feed each message to its partition's state (bad messages and
late spans become dead letters); advance event time with the wall clock for partitions that
are caught up; produce every emitted trace and dead letter (acks=all) and **await all acks**;
only then compute each partition's commit offset (`PartitionState.commit_offset`) and commit.
A crash anywhere loses nothing: uncommitted messages are redelivered and rebuild the same
traces, and an emission repeated by the replay carries the same key and bytes.

Rebalance: a revoked partition commits the offset last proven safe (computed after acks) and
drops its state; the new owner rebuilds from there. aiokafka does not call the listener on
`stop()`, so shutdown commits itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream._config import Settings
from stream._kafka import (
    REBALANCED_ERRORS,
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    KafkaError,
    TopicPartition,
    kafka_errors,
    make_consumer,
    make_producer,
    producer_max_request_size,
)
from stream.assembler._metrics import AssemblerMetrics
from stream.assembler._otlp import SpanDecodeError, decode_traces_data
from stream.assembler._state import AssemblyLimits, DeadLetterOut, Emission, PartitionState

__all__ = ["Assembler", "AssemblerHandle", "AssemblerOptions", "limits_from", "run_assembler"]

log = logging.getLogger("tracewatch.assembler")

EXPERIMENT_HEADER = "tw-experiment"
DEFAULT_EXPERIMENT = "0"


@dataclass(slots=True)
class AssemblerOptions:
    """Loop knobs; the assembly bounds themselves come from Settings (`limits_from`)."""

    max_records: int = 2000
    poll_interval: float = 0.1
    commit_interval: float = 0.5
    # Event time advances with the wall clock only on a caught-up partition, and lags it by
    # this much, so a message stamped just before `now` but still in flight is not late.
    clock_skew_interval: float = 0.1


def limits_from(settings: Settings) -> AssemblyLimits:
    """The assembly bounds configured in `Settings` (`assembler_*`)."""
    return AssemblyLimits(
        quiet_ms=int(settings.assembler_quiet_interval * 1000),
        max_age_ms=int(settings.assembler_max_age_timeout * 1000),
        max_open=settings.assembler_max_open_traces,
        max_spans=settings.assembler_max_spans_per_trace,
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, assembler: Assembler) -> None:
        self._assembler = assembler

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._assembler._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(tp.partition for tp in assigned))
        self._assembler._on_assigned(assigned)


_Out = tuple[TopicPartition, Emission | tuple[Any, DeadLetterOut]]


class Assembler:
    """One assembler process's loop; several in one consumer group split the partitions."""

    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        metrics: AssemblerMetrics,
        *,
        options: AssemblerOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics
        self.opts = options or AssemblerOptions()
        self.limits = limits_from(settings)
        self._clock = clock
        self.topics = settings.topics
        self.parts: dict[TopicPartition, PartitionState] = {}
        self._safe: dict[TopicPartition, int] = {}  # offsets proven safe: computed after acks
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._max_value = producer_max_request_size(settings) - 64 * 1024
        self.stopping = asyncio.Event()
        self.emitted = 0

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topics.spans], listener=_Listener(self))

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        """Consume until `stop()`; offsets committed only behind acked emissions."""
        poll_ms = int(self.opts.poll_interval * 1000)
        try:
            while not self.stopping.is_set():
                batch = await self.consumer.getmany(timeout_ms=poll_ms, max_records=self.opts.max_records)
                outs: list[_Out] = []
                assigned = self.consumer.assignment()
                for tp, msgs in batch.items():
                    if tp not in assigned:  # revoked while this batch was in flight: the new owner reads it
                        continue
                    part = self.parts.get(tp)
                    if part is None:
                        part = self.parts[tp] = PartitionState(self.limits)
                    for msg in msgs:
                        outs.extend((tp, o) for o in self._take(part, msg))
                now_ms = int((self._clock() - self.opts.clock_skew_interval) * 1000)
                for tp, part in self.parts.items():
                    if part.open and self._caught_up(tp, part):
                        outs.extend((tp, e) for e in part.advance(now_ms))
                await self._deliver(outs)
                for tp, part in self.parts.items():
                    offset = part.commit_offset()
                    if offset is not None:
                        self._safe[tp] = offset
                self.metrics.set_open(
                    sum(len(p.open) for p in self.parts.values()), sum(p.span_count for p in self.parts.values())
                )
                if time.monotonic() - self._last_commit >= self.opts.commit_interval:
                    await self._commit()
        finally:
            with contextlib.suppress(KafkaError, *REBALANCED_ERRORS):
                await self._commit()

    # -- per message --------------------------------------------------------------------------

    def _take(self, part: PartitionState, msg: Any) -> list[Emission | tuple[Any, DeadLetterOut]]:
        try:
            records = decode_traces_data(msg.value or b"")
        except SpanDecodeError as exc:
            part.skip(msg.offset)
            return [(msg, DeadLetterOut(msg.offset, exc.reason, str(exc)))]
        self.metrics.spans_received(len(records))
        experiment = DEFAULT_EXPERIMENT
        for name, value in msg.headers or ():
            if name == EXPERIMENT_HEADER and value:
                experiment = value.decode("utf-8", "replace")
        out: list[Emission | tuple[Any, DeadLetterOut]] = []
        for o in part.add(msg.offset, msg.timestamp, records, experiment):
            out.append((msg, o) if isinstance(o, DeadLetterOut) else o)
        return out

    def _caught_up(self, tp: TopicPartition, part: PartitionState) -> bool:
        hw = self.consumer.highwater(tp)
        return part.next_offset is None or hw is None or part.next_offset >= hw

    # -- output -------------------------------------------------------------------------------

    async def _deliver(self, outs: list[_Out]) -> None:
        """Produce everything and wait for every ack; a failure raises and nothing is committed."""
        if not outs:
            return
        futures = []
        with kafka_errors("producing assembled traces"):
            for tp, o in outs:
                if isinstance(o, Emission):
                    futures.append(await self._send_trace(tp, o))
                else:
                    msg, dead = o
                    futures.append(await self._send_dead(tp, msg.key, msg.value, dead.reason, dead.error))
            await asyncio.gather(*futures)
        now = self._clock()
        for _, o in outs:
            if isinstance(o, Emission):
                self.emitted += 1
                self.metrics.emitted(o.incomplete_reason, now - o.last_end_ns / 1e9)
            else:
                late = o[1].spans if o[1].reason == "late_span" else 0
                self.metrics.dead_lettered(o[1].reason, late)

    async def _send_trace(self, tp: TopicPartition, e: Emission) -> Any:
        key = f"tr-{e.trace_hex}".encode()
        value = orjson.dumps(e.trace)
        if len(value) > self._max_value:  # the broker would refuse it: dead-letter a marked prefix
            head = value[: self._max_value // 2]
            return await self._send_dead(tp, key, head, "too_large", f"assembled trace is {len(value)} bytes")
        return await self.producer.send(self.topics.traces, value, key=key)

    async def _send_dead(
        self, tp: TopicPartition, key: bytes | None, value: bytes | None, reason: str, error: str
    ) -> Any:
        headers = [
            ("tw-reason", reason.encode()),
            ("tw-error", error.encode()[:1000]),
            ("tw-source-topic", tp.topic.encode()),
            ("tw-source-partition", str(tp.partition).encode()),
        ]
        return await self.producer.send(self.topics.dlq, value, key=key, headers=headers)

    # -- commits ------------------------------------------------------------------------------

    async def _commit(self, only: list[TopicPartition] | None = None) -> None:
        self._last_commit = time.monotonic()
        assigned = self.consumer.assignment()
        todo = {
            tp: off
            for tp, off in self._safe.items()
            if (only is None or tp in only) and tp in assigned and off > self._committed.get(tp, -1)
        }
        if not todo:
            return
        try:
            await self.consumer.commit(todo)
        except REBALANCED_ERRORS as exc:
            log.warning("commit refused (group rebalanced): %s", exc)
            return
        self._committed.update(todo)

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Reading restarts at the committed offset: any state left for these partitions is stale."""
        for tp in assigned:
            self.parts.pop(tp, None)
            self._safe.pop(tp, None)
            self._committed.pop(tp, None)

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        with contextlib.suppress(KafkaError):
            await self._commit(only=list(revoked))
        for tp in revoked:
            self.parts.pop(tp, None)
            self._safe.pop(tp, None)
            self._committed.pop(tp, None)


@dataclass
class AssemblerHandle:
    """What a running assembler exposes to its caller (tests)."""

    assembler: Assembler | None = None
    metrics_port: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


async def run_assembler(
    settings: Settings,
    *,
    options: AssemblerOptions | None = None,
    metrics_port: int | None = None,
    handle: AssemblerHandle | None = None,
    install_signals: bool = True,
) -> int:
    """Run one assembler until SIGTERM/SIGINT (or `handle.assembler.stop()`); returns traces emitted."""
    from sinks import serve_metrics

    handle = handle or AssemblerHandle()
    metrics = AssemblerMetrics()
    port = settings.assembler_metrics_port if metrics_port is None else metrics_port
    server = None
    if port >= 0:
        server = serve_metrics(metrics.registry, settings.metrics_host, port)
        handle.metrics_port = server.port
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.port)
    producer = make_producer(settings)
    consumer = make_consumer(settings, group_id=settings.assembler_group)
    try:
        with kafka_errors(f"connecting to Kafka at {settings.kafka_bootstrap}"):
            await producer.start()
            await consumer.start()
        assembler = Assembler(settings, consumer, producer, metrics, options=options)
        handle.assembler = assembler
        assembler.subscribe()
        if install_signals:
            assembler.install_signal_handlers()
        handle.ready.set()
        await assembler.run()
        return assembler.emitted
    finally:
        await consumer.stop()
        await producer.stop()
        if server is not None:
            server.shutdown()
