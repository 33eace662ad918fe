"""The sinks of tracewatch: Redis (the serving store) and Prometheus (metrics).

Depends on `scorers` (entity types) only. Importing it opens no clients and registers no
metrics: `RedisSink` takes a client and `Metrics` a registry, both owned by the caller.
"""

from sinks._exceptions import SinkDataError, SinkError, SinkUnavailableError
from sinks._join import FeedbackRecord, JoinCounts
from sinks._keys import RedisKeys
from sinks._prometheus import Metrics, MetricsServer, metrics_asgi_app, serve_metrics
from sinks._redis import Aggregate, RedisSink, WriteResult
from sinks._registry_store import RegistryChanges, RegistryStore, StoredRecord

__all__ = [
    "Aggregate",
    "FeedbackRecord",
    "JoinCounts",
    "Metrics",
    "MetricsServer",
    "RedisKeys",
    "RedisSink",
    "RegistryChanges",
    "RegistryStore",
    "SinkDataError",
    "SinkError",
    "SinkUnavailableError",
    "StoredRecord",
    "WriteResult",
    "metrics_asgi_app",
    "serve_metrics",
]
