"""The tracewatch runtime: Kafka, the worker, sampling, the publisher SDK, the API and the CLI.

Apps import the publisher from here: `from stream import TracePublisher`.
"""

from stream._config import Settings, Topics
from stream._exceptions import CommitError, ConfigError, KafkaUnavailableError, PublishError, StreamError
from stream._publisher import SyncTracePublisher, TracePublisher, encode_for_wire
from stream._sampling import sample_u, sampled

__all__ = [
    "CommitError",
    "ConfigError",
    "KafkaUnavailableError",
    "PublishError",
    "Settings",
    "StreamError",
    "SyncTracePublisher",
    "Topics",
    "TracePublisher",
    "encode_for_wire",
    "sample_u",
    "sampled",
]
