"""OTLP/gRPC (stream/otlp/_grpc.py) on a loopback grpc.aio server with a fake producer."""

from __future__ import annotations

import os

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from stream.otlp import make_grpc_server
from tests.otlp.helpers import FakeProducer, make_receiver, request, span

T1, T2 = os.urandom(16), os.urandom(16)


async def serve(receiver):
    server, port = make_grpc_server(receiver, "127.0.0.1", 0, max_body_bytes=1 << 20)
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


async def test_export_groups_by_trace_and_reads_metadata():
    producer = FakeProducer()
    server, channel = await serve(make_receiver(producer, keys=["k"]))
    try:
        stub = TraceServiceStub(channel)
        req = request([span(T1), span(T2), span(os.urandom(3))])
        md = (("authorization", "Bearer k"), ("x-mlflow-experiment-id", "5"))
        resp = await stub.Export(req, metadata=md, compression=grpc.Compression.Gzip)
        assert resp.partial_success.rejected_spans == 1
        assert sorted(k for _, k, _, _ in producer.sent) == sorted([T1.hex().encode(), T2.hex().encode()])
        assert {h["tw-experiment"] for *_, h in producer.sent} == {b"5"}
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Export(req)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Export(request([span(b"")]), metadata=md)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await channel.close()
        await server.stop(None)


async def test_unavailable_carries_retry_info():
    producer = FakeProducer()
    producer.hang = True
    server, channel = await serve(make_receiver(producer, ack_timeout=0.2))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await TraceServiceStub(channel).Export(request([span(T1)]))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        details = dict(info.value.trailing_metadata() or ())["grpc-status-details-bin"]
        status = Status.FromString(details)
        retry = RetryInfo()
        assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == 5
    finally:
        await channel.close()
        await server.stop(None)
