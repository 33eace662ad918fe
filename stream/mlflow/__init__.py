"""`tracewatch sink mlflow`: the consumer that writes results and feedback to an MLflow tracking server.

`MlflowSinkLoop` consumes the assessments and feedback topics and commits finished prefixes;
`run_mlflow_sink` wires the real clients. The writing itself is `sinks.mlflow.MlflowSink`.
"""

from stream.mlflow._loop import MlflowSinkLoop
from stream.mlflow._runtime import SinkHandle, run_mlflow_sink

__all__ = ["MlflowSinkLoop", "SinkHandle", "run_mlflow_sink"]
