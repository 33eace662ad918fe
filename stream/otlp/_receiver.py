"""The transport-independent receiver: authorize, admit, parse, group, produce, answer.

Both transports (OTLP/HTTP in `_http`, OTLP/gRPC in `_grpc`) hand raw protobuf bytes (or a
parsed JSON request) here, so the rules live once: an export is answered with success only
after Kafka acknowledged every message it produced (acks=all, idempotent producer from
`stream._kafka`), which is what makes a standard exporter's retry safe; the assembler keeps
the first copy of a span it sees twice.

Overload is a bounded number of exports in flight: one more is refused at once
(`overloaded`, HTTP 429 / gRPC RESOURCE_EXHAUSTED with a retry delay) rather than queued, so
memory stays bounded and the exporter's own backoff spreads the load. Kafka not acknowledging
within `ack_timeout` is `unavailable` (HTTP 503 / gRPC UNAVAILABLE): the exporter retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from stream._exceptions import KafkaUnavailableError
from stream._kafka import TOO_LARGE_ERRORS, AIOKafkaProducer, kafka_errors
from stream.otlp._auth import KeyCheck
from stream.otlp._decode import ExportRefused, Grouped, SpanLimits, group_spans
from stream.otlp._metrics import ReceiverMetrics

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["EXPERIMENT_HEADER", "RECEIVED_HEADER", "Receiver", "response_for"]

log = logging.getLogger(__name__)

EXPERIMENT_HEADER = "tw-experiment"
RECEIVED_HEADER = "tw-received-ms"
OVERLOAD_RETRY_AFTER = 1.0
UNAVAILABLE_RETRY_AFTER = 5.0


def response_for(grouped: Grouped) -> ExportTraceServiceResponse:
    """The export's answer: empty on full success, `partial_success` when spans were rejected."""
    response = ExportTraceServiceResponse()
    if grouped.rejected:
        response.partial_success.rejected_spans = grouped.rejected_spans
        response.partial_success.error_message = grouped.message()
    return response


class Receiver:
    """Turns OTLP exports into acknowledged messages on the spans topic.

    Args:
        producer: a started producer from `stream._kafka.make_producer` (acks=all, idempotent).
        topic: the spans topic (`Settings.topics.spans`).
        keys: the API keys; an empty `KeyCheck` lets every caller in (embedding and tests
            only: `tracewatch otlp`, like `tracewatch api`, refuses to start without keys).
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        keys: KeyCheck,
        limits: SpanLimits,
        default_experiment: str,
        max_in_flight: int,
        ack_timeout: float,
        metrics: ReceiverMetrics,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.keys = keys
        self.limits = limits
        self.default_experiment = default_experiment
        self.max_in_flight = max_in_flight
        self.ack_timeout = ack_timeout
        self.metrics = metrics
        self._in_flight = 0

    def authorize(self, authorization: str | None) -> None:
        """Refuse a caller without a valid API key (when keys are configured).

        Raises:
            ExportRefused: `unauthorized`.
        """
        if self.keys:
            self.keys.check(authorization)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the `max_in_flight` export slots, or refuse at once.

        Raises:
            ExportRefused: `overloaded` when every slot is taken.
        """
        if self._in_flight >= self.max_in_flight:
            raise ExportRefused(
                "overloaded",
                "overloaded",
                f"receiver busy ({self.max_in_flight} exports in flight): retry later",
                retry_after=OVERLOAD_RETRY_AFTER,
            )
        self._in_flight += 1
        self.metrics.in_flight(self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= 1
            self.metrics.in_flight(self._in_flight)

    async def export(
        self,
        request: ExportTraceServiceRequest,
        *,
        raw: bytes | None,
        experiment: str | None,
        body_size: int | None = None,
    ) -> Grouped:
        """Group the request's spans by trace and produce them; returns once Kafka acked all.

        Raises:
            ExportRefused: `bad_request` (every span rejected), `unavailable` (Kafka did not
                acknowledge in time; `spans` tells how many were at stake) or `too_large`.
        """
        grouped = group_spans(request, raw=raw, limits=self.limits, experiment=experiment or None, body_size=body_size)
        try:
            await self._produce(grouped)
        except ExportRefused as exc:
            exc.spans = grouped.accepted
            raise
        return grouped

    async def _produce(self, grouped: Grouped) -> None:
        if not grouped.messages:
            return
        received = str(int(time.time() * 1000)).encode()
        default = self.default_experiment.encode()
        send = self.producer.send
        try:
            async with asyncio.timeout(self.ack_timeout):
                with kafka_errors(f"producing spans to {self.topic}"):
                    try:
                        futures = []
                        for m in grouped.messages:
                            headers: Sequence[tuple[str, bytes]] = [
                                (EXPERIMENT_HEADER, m.experiment.encode() if m.experiment else default),
                                (RECEIVED_HEADER, received),
                            ]
                            futures.append(await send(self.topic, m.value, key=m.key, headers=list(headers)))
                        await asyncio.gather(*futures)
                    except TOO_LARGE_ERRORS as exc:
                        raise ExportRefused(
                            "too_large", "too_large", f"Kafka refused a trace's spans as too large: {exc}"
                        ) from exc
        except TimeoutError:
            raise ExportRefused(
                "unavailable",
                "kafka_unavailable",
                f"Kafka did not acknowledge the spans within {self.ack_timeout:g}s; retry later",
                retry_after=UNAVAILABLE_RETRY_AFTER,
            ) from None
        except KafkaUnavailableError as exc:
            log.warning("export refused: %s", exc)
            raise ExportRefused(
                "unavailable",
                "kafka_unavailable",
                "Kafka is unavailable; nothing was acknowledged, retry later",
                retry_after=UNAVAILABLE_RETRY_AFTER,
            ) from exc

    def exported(self, transport: str, grouped: Grouped, started: float) -> None:
        """Count an answered export."""
        self.metrics.exported(
            transport,
            spans=grouped.accepted,
            messages=len(grouped.messages),
            rejected=grouped.rejected,
            seconds=time.perf_counter() - started,
        )

    def refused(self, transport: str, exc: ExportRefused, started: float) -> None:
        """Count a refused export (its spans, when they were parsed, count as refused)."""
        self.metrics.refused(transport, exc.reason, spans=exc.spans, seconds=time.perf_counter() - started)
