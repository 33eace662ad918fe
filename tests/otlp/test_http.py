"""OTLP/HTTP answers (stream/otlp/_http.py) against a fake producer: statuses, bodies, headers."""

from __future__ import annotations

import asyncio
import gzip
import os

import httpx
import orjson
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CollectorRegistry

from stream._exceptions import KafkaUnavailableError
from stream.otlp import OtlpHttpApp, ReceiverMetrics
from tests.otlp.helpers import FakeProducer, make_receiver, request, span

T1 = os.urandom(16)
PB = {"content-type": "application/x-protobuf"}


def client(receiver, max_body_bytes=1 << 20):
    app = OtlpHttpApp(receiver, max_body_bytes=max_body_bytes)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://otlp")


async def test_protobuf_export_is_acked_then_answered():
    producer = FakeProducer()
    metrics = ReceiverMetrics(CollectorRegistry())
    receiver = make_receiver(producer, metrics=metrics)
    body = request([span(T1), span(T1)]).SerializeToString()
    async with client(receiver) as c:
        r = await c.post("/v1/traces", content=body, headers={**PB, "x-mlflow-experiment-id": "12"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(r.content) == ExportTraceServiceResponse()
    [(topic, key, value, headers)] = producer.sent
    assert (topic, key, value) == ("t.spans", T1.hex().encode(), body)
    assert headers["tw-experiment"] == b"12" and int(headers["tw-received-ms"]) > 0
    reg = metrics.registry
    assert reg.get_sample_value("tracewatch_otlp_spans_received_total", {"transport": "http"}) == 2
    assert reg.get_sample_value("tracewatch_otlp_exports_total", {"transport": "http", "status": "ok"}) == 1


async def test_gzip_json_partial_success_answers_in_json():
    producer = FakeProducer()
    good = {"traceId": T1.hex(), "spanId": "0102030405060708", "name": "ok"}
    bad = {"traceId": "abcd", "spanId": "0102030405060708", "name": "bad"}
    body = gzip.compress(orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [good, bad]}]}]}))
    async with client(make_receiver(producer)) as c:
        r = await c.post(
            "/v1/traces", content=body, headers={"content-type": "application/json", "content-encoding": "gzip"}
        )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "bad_id" in partial["errorMessage"]
    assert len(producer.sent) == 1 and producer.sent[0][3]["tw-experiment"] == b"0"


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"\xff\xff\xff", PB, 400),
        (b"x" * 3000, PB, 413),
        (b"abc", {"content-type": "text/plain"}, 415),
        (b"not gzip", {**PB, "content-encoding": "gzip"}, 400),
        (request([span(os.urandom(8))]).SerializeToString(), PB, 400),
    ],
)
async def test_bad_input_is_refused_and_nothing_written(body, headers, status):
    producer = FakeProducer()
    async with client(make_receiver(producer), max_body_bytes=2048) as c:
        r = await c.post("/v1/traces", content=body, headers=headers)
    assert r.status_code == status
    if r.headers["content-type"] == "application/x-protobuf":
        assert Status.FromString(r.content).message
    assert producer.sent == []


async def test_routes_and_methods():
    async with client(make_receiver()) as c:
        assert (await c.post("/v1/metrics", content=b"")).status_code == 404
        r = await c.get("/v1/traces")
        assert r.status_code == 405 and r.headers["allow"] == "POST"


async def test_api_keys_are_required_when_configured():
    producer = FakeProducer()
    body = request([span(T1)]).SerializeToString()
    async with client(make_receiver(producer, keys=["k1", "k2"])) as c:
        assert (await c.post("/v1/traces", content=body, headers=PB)).status_code == 401
        bad = await c.post("/v1/traces", content=body, headers={**PB, "authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        ok = await c.post("/v1/traces", content=body, headers={**PB, "authorization": "Bearer k2"})
        assert ok.status_code == 200
    assert len(producer.sent) == 1


async def test_kafka_unavailable_is_503_with_retry_after():
    producer = FakeProducer()
    producer.fail = KafkaUnavailableError("down")
    body = request([span(T1)]).SerializeToString()
    async with client(make_receiver(producer)) as c:
        r = await c.post("/v1/traces", content=body, headers=PB)
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
        producer.fail, producer.hang = None, True  # no ack within the timeout: also 503
        r = await c.post("/v1/traces", content=body, headers=PB)
        assert r.status_code == 503 and "did not acknowledge" in Status.FromString(r.content).message


async def test_overload_is_429_with_retry_after():
    producer = FakeProducer()
    producer.hang = True
    receiver = make_receiver(producer, max_in_flight=1, ack_timeout=2.0)
    body = request([span(T1)]).SerializeToString()
    async with client(receiver) as c:
        first = asyncio.create_task(c.post("/v1/traces", content=body, headers=PB))
        while receiver._in_flight == 0:
            await asyncio.sleep(0.01)
        r = await c.post("/v1/traces", content=body, headers=PB)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert (await first).status_code == 503
