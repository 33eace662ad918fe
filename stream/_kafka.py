"""The aiokafka boundary: producer, consumer and admin factories, and error conversion.

Everything else in tracewatch talks to Kafka through these few functions, so the library's
exceptions never leak upward and durations stay in seconds outside this module.

`Settings` is only a type here: the producer factory reads three attributes
(`ProducerSettings`), so the publisher SDK builds a producer without pydantic-settings.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
    RebalanceInProgressError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
)

from stream._exceptions import KafkaUnavailableError

if TYPE_CHECKING:
    from stream._config import Settings

__all__ = [
    "REBALANCED_ERRORS",
    "TOO_LARGE_ERRORS",
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "ConsumerRebalanceListener",
    "KafkaError",
    "ProducerSettings",
    "TopicPartition",
    "create_topics",
    "kafka_errors",
    "make_consumer",
    "make_producer",
    "producer_max_request_size",
    "topic_max_message_bytes",
    "topic_partitions",
]

REBALANCED_ERRORS: tuple[type[KafkaError], ...] = (
    CommitFailedError,
    IllegalStateError,  # "partition is not assigned" / "no partitions assigned": revoked meanwhile
    UnknownMemberIdError,
    IllegalGenerationError,
    RebalanceInProgressError,
)
"""A commit refused because the group moved on (this member timed out, or partitions were revoked).

Normal in a consumer group: the partitions' new owner redoes the uncommitted messages.
"""

TOO_LARGE_ERRORS: tuple[type[KafkaError], ...] = (MessageSizeTooLargeError, RecordListTooLargeError)
"""A produce refused by the broker for size: retrying the same bytes can never succeed."""


class ProducerSettings(Protocol):
    """What `make_producer` reads: `stream.Settings` fits, and so does the SDK's `PublisherConfig`."""

    @property
    def kafka_bootstrap(self) -> str: ...
    @property
    def compression(self) -> str: ...
    @property
    def max_trace_bytes(self) -> int: ...


@contextlib.contextmanager
def kafka_errors(what: str) -> Iterator[None]:
    """Turn aiokafka errors into `KafkaUnavailableError` naming what we were doing."""
    try:
        yield
    except KafkaError as exc:
        raise KafkaUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc


def make_producer(settings: ProducerSettings, **overrides: Any) -> AIOKafkaProducer:
    """A durable producer: acks from all replicas, idempotent, compressed, batched."""
    compression = None if settings.compression == "none" else settings.compression
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": compression,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "max_request_size": producer_max_request_size(settings),
        "request_timeout_ms": 30_000,
        "client_id": "tracewatch",
    }
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)


def producer_max_request_size(settings: ProducerSettings) -> int:
    """The producer's `max_request_size`: room for a trace at the decoder's limit, twice over."""
    return max(settings.max_trace_bytes * 2, 1024 * 1024)


def make_consumer(settings: Settings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A group consumer with manual commits: offsets move only when results are durable."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": settings.consumer_group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": max(settings.max_trace_bytes * 2, 1024 * 1024),
        "fetch_max_bytes": 64 * 1024 * 1024,
        "isolation_level": "read_uncommitted",
        "session_timeout_ms": int(settings.consumer_session_timeout * 1000),
        "heartbeat_interval_ms": int(settings.consumer_heartbeat_interval * 1000),
        "max_poll_interval_ms": int(settings.consumer_max_poll_interval * 1000),
        "client_id": "tracewatch",
        # Range assignment gives partition i of traces and of feedback to the same worker
        # (both topics have the same partition count), so one worker owns both join sides.
        "partition_assignment_strategy": (RangePartitionAssignor,),
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **kwargs)


async def create_topics(
    settings: Settings, *, partitions: int | None = None, replication: int = 1, add_partitions: bool = False
) -> dict[str, str]:
    """Create the topics of DESIGN.md; traces, feedback and assessments get the same partition count.

    Returns a map topic -> "created", "exists", "exists: N partitions, wanted M" (an existing
    topic with another count is left as it is) or, with `add_partitions`, "partitions: N -> M"
    (Kafka can add partitions, never remove them; keys then map to other partitions, so
    traces and feedback are grown together to keep their partitions aligned).
    """
    n = partitions or settings.partitions
    topics = settings.topics
    wanted = {
        topics.traces: n,
        topics.feedback: n,
        topics.assessments: n,
        topics.dlq: 1,
        topics.spans: n,  # keyed by trace id like traces: the assembler owns a trace whole
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="tracewatch-admin")
    result: dict[str, str] = {}
    with kafka_errors(f"creating topics on {settings.kafka_bootstrap}"):
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [
                NewTopic(name, num_partitions=p, replication_factor=replication)
                for name, p in wanted.items()
                if name not in existing
            ]
            have = await _partition_counts(admin, [name for name in wanted if name in existing])
            grow: dict[str, NewPartitions] = {}
            for name, p in wanted.items():
                count = have.get(name, p)
                if name not in existing:
                    result[name] = "created"
                elif count == p or name == topics.dlq:
                    result[name] = "exists"
                elif count < p and add_partitions:
                    grow[name] = NewPartitions(total_count=p)
                    result[name] = f"partitions: {count} -> {p}"
                else:
                    result[name] = f"exists: {count} partitions, wanted {p}"
            if grow:
                await admin.create_partitions(grow)
            if new:
                with contextlib.suppress(TopicAlreadyExistsError):  # created concurrently: fine
                    await admin.create_topics(new)
            # Wait until new topics and partitions show in metadata, so a publish right after works.
            changed = {t.name: t.num_partitions for t in new} | {k: v.total_count for k, v in grow.items()}
            for _ in range(100 if changed else 0):
                counts = await _partition_counts(admin, list(changed))
                if all(counts.get(name) == count for name, count in changed.items()):
                    break
                await asyncio.sleep(0.1)
        finally:
            await admin.close()
    return result


async def topic_partitions(settings: Settings, topic: str) -> int:
    """How many partitions a topic has (0 when it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="tracewatch-admin")
    with kafka_errors(f"reading metadata of {topic}"):
        await admin.start()
        try:
            return (await _partition_counts(admin, [topic])).get(topic, 0)
        finally:
            await admin.close()


async def topic_max_message_bytes(settings: Settings, topic: str) -> int | None:
    """The topic's effective `max.message.bytes` (its own or the broker's default), None if unknown.

    Unknown when the topic does not exist yet or the broker refuses DescribeConfigs (ACLs):
    callers then start from their own cap and shrink on a size error.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="tracewatch-admin")
    try:
        await admin.start()
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})
        responses = await admin.describe_configs([resource])
    except KafkaError:
        return None  # a hint only: the outbox still shrinks dead letters on a size error
    finally:
        await admin.close()
    for response in responses:
        for res in response.to_object().get("resources", []):
            if res.get("error_code", 0) != 0:
                continue
            for entry in res.get("config_entries", []):
                if entry.get("config_names") == "max.message.bytes":
                    with contextlib.suppress(TypeError, ValueError):
                        return int(entry["config_value"])
    return None


async def _partition_counts(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    existing = set(await admin.list_topics())
    present = [t for t in topics if t in existing]
    if not present:
        return {}
    described = await admin.describe_topics(present)
    return {d["topic"]: len(d["partitions"]) for d in described if d.get("error_code", 0) == 0}
