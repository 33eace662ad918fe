"""OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on a grpc.aio server.

The method is registered with a generic handler that receives the request's raw bytes (no
deserializer), so it goes through the same single parse as OTLP/HTTP and an export of one
trace is forwarded as received. gzip is gRPC's own (negotiated by the library).

Refusals map to the codes the spec names: INVALID_ARGUMENT for bad input (not retried),
UNAUTHENTICATED, RESOURCE_EXHAUSTED for overload and UNAVAILABLE for Kafka, the last two with
a `google.rpc.RetryInfo` in `grpc-status-details-bin` (an exporter retries RESOURCE_EXHAUSTED
only when the server sends it).
"""

from __future__ import annotations

import math
import time
from typing import Final

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError as ProtoDecodeError
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from stream.otlp._decode import ExportRefused
from stream.otlp._receiver import Receiver, response_for

__all__ = ["SERVICE", "grpc_handler", "make_grpc_server"]

SERVICE: Final = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
_CODE: Final = {
    "bad_request": grpc.StatusCode.INVALID_ARGUMENT,
    "too_large": grpc.StatusCode.INVALID_ARGUMENT,
    "unsupported": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthorized": grpc.StatusCode.UNAUTHENTICATED,
    "overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}


class _Export:
    """The Export method: bytes in, `ExportTraceServiceResponse` out."""

    def __init__(self, receiver: Receiver, max_body_bytes: int) -> None:
        self.receiver = receiver
        self.max_body_bytes = max_body_bytes

    async def export(self, body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> ExportTraceServiceResponse:
        receiver = self.receiver
        started = time.perf_counter()
        authorization = experiment = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value if isinstance(value, str) else value.decode("latin-1")
            elif key == "x-mlflow-experiment-id":
                experiment = (value if isinstance(value, str) else value.decode("utf-8", "replace")).strip()
        try:
            receiver.authorize(authorization)
            with receiver.slot():
                request = ExportTraceServiceRequest()
                try:
                    request.ParseFromString(body)
                except (ProtoDecodeError, ValueError, RuntimeError) as exc:
                    raise ExportRefused(
                        "bad_request", "not_protobuf", f"not an OTLP ExportTraceServiceRequest: {exc}"
                    ) from None
                grouped = await receiver.export(request, raw=body, experiment=experiment or None)
        except ExportRefused as exc:
            receiver.refused("grpc", exc, started)
            await context.abort(_CODE[exc.kind], exc.message, trailing_metadata=_details(exc))
            raise AssertionError("unreachable: abort raises") from None
        receiver.exported("grpc", grouped, started)
        return response_for(grouped)


def _details(exc: ExportRefused) -> tuple[tuple[str, bytes], ...]:
    if exc.retry_after is None:
        return ()
    info = RetryInfo(retry_delay=Duration(seconds=math.ceil(exc.retry_after)))
    detail = AnyProto()
    detail.Pack(info)
    status = Status(code=_CODE[exc.kind].value[0], message=exc.message, details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()),)


def grpc_handler(receiver: Receiver, *, max_body_bytes: int) -> grpc.GenericRpcHandler:
    """The TraceService handler (its Export method takes the request's raw bytes)."""
    method = grpc.unary_unary_rpc_method_handler(
        _Export(receiver, max_body_bytes).export,  # a coroutine function: grpc.aio checks
        request_deserializer=None,
        response_serializer=ExportTraceServiceResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"Export": method})


def make_grpc_server(receiver: Receiver, host: str, port: int, *, max_body_bytes: int) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server with the TraceService bound to `host:port` (0: a free port); not started.

    Returns the server and the bound port. Messages above `max_body_bytes` are refused by
    gRPC itself (RESOURCE_EXHAUSTED).

    Raises:
        RuntimeError: the address cannot be bound.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_body_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((grpc_handler(receiver, max_body_bytes=max_body_bytes),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"cannot bind OTLP/gRPC to {host}:{port}")
    return server, bound
