"""The OTLP receiver: OTLP/HTTP and OTLP/gRPC trace exports -> the spans topic, one message per trace.

`_decode` parses bodies and groups spans by trace id (pure), `_receiver` applies auth, the
in-flight cap and Kafka acks for both transports, `_http` (raw ASGI under uvicorn) and
`_grpc` (grpc.aio) speak the wire protocols, `_serve` runs them and `tracewatch otlp` is the
command. The spans topic's contract is in DESIGN.md and `_decode`; `stream.assembler` reads it.
"""

from stream.otlp._auth import KeyCheck
from stream.otlp._decode import (
    EXPERIMENT_ATTRIBUTE,
    ExportRefused,
    Grouped,
    SpanLimits,
    TraceMessage,
    group_spans,
    parse_body,
)
from stream.otlp._grpc import grpc_handler, make_grpc_server
from stream.otlp._http import OtlpHttpApp
from stream.otlp._metrics import ReceiverMetrics
from stream.otlp._receiver import EXPERIMENT_HEADER, RECEIVED_HEADER, Receiver, response_for
from stream.otlp._serve import ReceiverHandle, receiver_from, run_receiver

__all__ = [
    "EXPERIMENT_ATTRIBUTE",
    "EXPERIMENT_HEADER",
    "RECEIVED_HEADER",
    "ExportRefused",
    "Grouped",
    "KeyCheck",
    "OtlpHttpApp",
    "Receiver",
    "ReceiverHandle",
    "ReceiverMetrics",
    "SpanLimits",
    "TraceMessage",
    "group_spans",
    "grpc_handler",
    "make_grpc_server",
    "parse_body",
    "receiver_from",
    "response_for",
    "run_receiver",
]
