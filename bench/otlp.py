"""OTLP ingest: spans/s through one `tracewatch otlp` process against decoding the same spans in a loop.

    python -m bench.otlp [--batches 20] [--batch-spans 512] [--concurrency 8]

Batches look like the OpenTelemetry SDK's BatchSpanProcessor exports (up to 512 spans, traces
of 4 spans with GenAI attributes, protobuf). The receiver runs as its own process (the CLI,
against the Kafka of TRACEWATCH_KAFKA_BOOTSTRAP, acks=all) and is fed over HTTP by this one;
the baseline parses the same bodies with `ExportTraceServiceRequest.FromString` and walks
every span. The ratio is the receiver's cost over the bare protobuf work. Keep sizes tiny on
a shared machine: the defaults run in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

KEY = "bench-otlp-key"


def make_batches(n: int, spans: int) -> list[bytes]:
    """`n` protobuf export bodies of `spans` spans each (traces of 4 spans)."""
    out = []
    base = time.time_ns()
    for _ in range(n):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="bench")))
        ss = rs.scope_spans.add()
        ss.scope.name = "bench.otlp"
        trace_id = os.urandom(16)
        root = b""
        for i in range(spans):
            if i % 4 == 0:
                trace_id, root = os.urandom(16), b""
            span = Span(trace_id=trace_id, span_id=os.urandom(8), parent_span_id=root, name=f"op-{i % 4}")
            root = root or span.span_id
            span.start_time_unix_nano, span.end_time_unix_nano = base + i, base + i + 1_000_000
            for k, v in (("gen_ai.operation.name", "chat"), ("gen_ai.request.model", "gpt-4.1-mini")):
                span.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
            span.attributes.append(KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=120)))
            ss.spans.append(span)
        out.append(req.SerializeToString())
    return out


def decode_loop(bodies: list[bytes]) -> float:
    """Spans/s of a plain parse-and-walk loop over the bodies."""
    start = time.perf_counter()
    n = 0
    for body in bodies:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    n += len(span.trace_id) > 0
    return n / (time.perf_counter() - start)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def through_receiver(bodies: list[bytes], spans: int, concurrency: int) -> float:
    """Spans/s acknowledged by one receiver process (HTTP, protobuf, acks=all)."""
    port = _free_port()
    env = {
        **os.environ,
        "TRACEWATCH_API_KEYS": KEY,
        "TRACEWATCH_TOPIC_PREFIX": f"bench-otlp.{uuid.uuid4().hex[:8]}.",
        "TRACEWATCH_OTLP_HTTP_PORT": str(port),
        "TRACEWATCH_OTLP_GRPC_PORT": "-1",
        "TRACEWATCH_OTLP_METRICS_PORT": "-1",
    }
    subprocess.run([sys.executable, "-m", "stream", "topics", "create"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "stream", "otlp", "--log-level", "WARNING"], env=env)
    url = f"http://127.0.0.1:{port}/v1/traces"
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {KEY}"}
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(300):
                try:
                    await client.post(url, content=b"", headers=headers)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            queue = list(bodies)
            start = time.perf_counter()

            async def feed() -> None:
                while queue:
                    body = queue.pop()
                    r = await client.post(url, content=body, headers=headers)
                    r.raise_for_status()

            await asyncio.gather(*(feed() for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(30)
    return len(bodies) * spans / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-spans", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    bodies = make_batches(args.batches, args.batch_spans)
    plain = decode_loop(bodies)
    ingest = asyncio.run(through_receiver(bodies, args.batch_spans, args.concurrency))
    print(f"plain decode loop : {plain:12,.0f} spans/s")
    print(f"one receiver      : {ingest:12,.0f} spans/s (HTTP protobuf, Kafka acks=all)")
    print(f"ratio             : {ingest / plain:12.3f}")


if __name__ == "__main__":
    main()
