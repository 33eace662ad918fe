"""The MLflow tracking-server sink: scorer results, votes and ground truth as MLflow assessments.

Depends on `scorers` (entity types) and `sinks` only; the consumer loop that feeds it lives
in `stream.mlflow`. Importing it opens no clients and registers no metrics.
"""

from sinks.mlflow._guard import PENDING, MlflowGuard
from sinks.mlflow._metrics import SinkMetrics
from sinks.mlflow._otlp import experiment_of, trace_to_otlp_json
from sinks.mlflow._payload import RESULT_ID_KEY, UserEvent, event_payload, result_id, score_payload, source_id_of
from sinks.mlflow._rest import (
    MlflowConfig,
    MlflowRejectedError,
    MlflowRest,
    MlflowUnavailableError,
    TraceNotInMlflowError,
)
from sinks.mlflow._sink import MlflowSink, SinkOutcome, TraceLoader

__all__ = [
    "PENDING",
    "RESULT_ID_KEY",
    "MlflowConfig",
    "MlflowGuard",
    "MlflowRejectedError",
    "MlflowRest",
    "MlflowSink",
    "MlflowUnavailableError",
    "SinkMetrics",
    "SinkOutcome",
    "TraceLoader",
    "TraceNotInMlflowError",
    "UserEvent",
    "event_payload",
    "experiment_of",
    "result_id",
    "score_payload",
    "source_id_of",
    "trace_to_otlp_json",
]
