"""The OTLP receiver against real Kafka and real exporters: the OpenTelemetry SDK and MLflow's own.

Every span an exporter sends must land on `<prefix>spans` keyed by its trace id (32 hex),
with the experiment header; bad input is refused with the right status and leaves nothing
on Kafka. MLflow runs in its own venv (tests/mlflow_venv.py) as a subprocess, configured by
the OTEL_* variables only, as a user would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from stream import Settings
from stream._kafka import create_topics
from stream.otlp import ReceiverHandle, run_receiver
from tests.otlp.helpers import request, span

pytestmark = pytest.mark.integration

KEY = "otlp-test-key"


@pytest.fixture
async def receiver(settings: Settings) -> AsyncIterator[tuple[Settings, ReceiverHandle]]:
    s = Settings(
        **{
            **settings.model_dump(),
            "api_keys": [KEY],
            "otlp_http_port": 0,
            "otlp_grpc_port": 0,
            "otlp_metrics_port": -1,
            "otlp_max_body_bytes": 64 * 1024,
        }
    )
    await create_topics(s)
    handle = ReceiverHandle()
    task = asyncio.create_task(run_receiver(s, handle=handle, install_signals=False))
    await asyncio.wait_for(handle.ready.wait(), 30)
    try:
        yield s, handle
    finally:
        handle.stop()
        await asyncio.wait_for(task, 30)


async def read_spans(settings: Settings, want: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Spans on the spans topic, one dict per span, until `want` spans (then 1 s more, to catch extras)."""
    consumer = AIOKafkaConsumer(
        settings.topics.spans, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for msgs in batch.values():
                for m in msgs:
                    data = TracesData.FromString(m.value)
                    headers = {k: v.decode() for k, v in m.headers}
                    for rs in data.resource_spans:
                        res = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for sp in ss.spans:
                                out.append(
                                    {
                                        "key": m.key.decode(),
                                        "trace": sp.trace_id.hex(),
                                        "span": sp.span_id.hex(),
                                        "name": sp.name,
                                        "attributes": {kv.key for kv in sp.attributes},
                                        "experiment": headers["tw-experiment"],
                                        "resource": res,
                                        "scope": ss.scope.name,
                                    }
                                )
            if len(out) >= want and deadline - time.monotonic() > 1:
                deadline = time.monotonic() + 1
    finally:
        await consumer.stop()
    return out


def sdk_export(endpoint: str, protocol: str, traces: int, spans_per_trace: int) -> set[tuple[str, str]]:
    """Run a plain OpenTelemetry SDK app exporting over OTLP; returns the (trace, span) hex ids it made."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    headers = {"authorization": f"Bearer {KEY}", "x-mlflow-experiment-id": "9"}
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter: Any = GrpcExporter(endpoint=endpoint, headers=headers, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter(endpoint=endpoint, headers=headers)
    provider = TracerProvider(resource=Resource.create({"service.name": "otlp-it"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=7))
    tracer = provider.get_tracer("tests.otlp")
    made = set()
    for i in range(traces):
        with tracer.start_as_current_span(f"root-{i}") as root:
            root.set_attribute("gen_ai.operation.name", "chat")
            made.add(
                (format(root.get_span_context().trace_id, "032x"), format(root.get_span_context().span_id, "016x"))
            )
            for j in range(spans_per_trace - 1):
                with tracer.start_as_current_span(f"child-{j}") as child:
                    ctx = child.get_span_context()
                    made.add((format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")))
    assert provider.force_flush(30_000)
    provider.shutdown()
    return made


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_opentelemetry_sdk_spans_land_keyed_by_trace(receiver, protocol):
    settings, handle = receiver
    if protocol == "grpc":
        endpoint = f"http://127.0.0.1:{handle.grpc_port}"
    else:
        endpoint = f"http://127.0.0.1:{handle.http_port}/v1/traces"
    made = await asyncio.to_thread(sdk_export, endpoint, protocol, 12, 4)
    got = await read_spans(settings, len(made))
    assert {(s["trace"], s["span"]) for s in got} == made
    assert len(got) == len(made)  # each span once
    assert all(s["key"] == s["trace"] for s in got)
    assert {s["experiment"] for s in got} == {"9"}
    assert {s["resource"]["service.name"] for s in got} == {"otlp-it"}
    assert {s["scope"] for s in got} == {"tests.otlp"}


MLFLOW_APP = textwrap.dedent(
    """
    import mlflow

    @mlflow.trace(span_type="RETRIEVER")
    def retrieve(q):
        return [{"page_content": "doc about " + q}]

    @mlflow.trace(span_type="CHAT_MODEL")
    def chat(q, docs):
        return "answer to " + q

    @mlflow.trace(span_type="AGENT")
    def agent(q):
        # OTLP-only export keeps no local trace, so the id is read from the live span.
        print(mlflow.get_current_active_span().trace_id, flush=True)
        if q == "fail":
            raise ValueError("boom")
        return chat(q, retrieve(q))

    for q in ["a", "b", "fail"]:
        try:
            agent(q)
        except ValueError:
            pass
    """
)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_mlflow_exporter_arrives(receiver, protocol, tmp_path):
    from tests.mlflow_venv import mlflow_python

    settings, handle = receiver
    py = await asyncio.to_thread(mlflow_python)
    if py is None:
        pytest.skip("no MLflow venv")
    check = subprocess.run([str(py), "-c", "import opentelemetry.exporter.otlp.proto.grpc"], capture_output=True)
    if check.returncode:
        pytest.skip("the MLflow venv lacks opentelemetry-exporter-otlp-proto-{http,grpc}")
    if protocol == "grpc":
        endpoint = f"http://127.0.0.1:{handle.grpc_port}"
    else:
        endpoint = f"http://127.0.0.1:{handle.http_port}/v1/traces"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLFLOW_"))},
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{KEY},x-mlflow-experiment-id=77",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
    }
    (tmp_path / "app.py").write_text(MLFLOW_APP)
    proc = await asyncio.create_subprocess_exec(
        str(py),
        str(tmp_path / "app.py"),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()[-3000:]
    trace_ids = [line.strip() for line in out.decode().splitlines() if line.startswith("tr-")]
    assert len(trace_ids) == 3, out.decode() + err.decode()[-2000:]
    got = await read_spans(settings, 3 + 3 + 1)  # agent, chat, retrieve for a and b; agent alone for "fail"
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for s in got:
        assert s["key"] == s["trace"] and s["experiment"] == "77"
        by_trace.setdefault(s["trace"], []).append(s)
    assert set(by_trace) == {t[3:] for t in trace_ids}
    names = sorted(s["name"] for s in by_trace[trace_ids[0][3:]])
    assert names == ["agent", "chat", "retrieve"]
    assert all({"mlflow.spanType", "mlflow.spanInputs"} <= s["attributes"] for s in got)


async def test_bad_input_is_refused_and_nothing_reaches_kafka(receiver):
    settings, handle = receiver
    url = f"http://127.0.0.1:{handle.http_port}/v1/traces"
    auth = {"authorization": f"Bearer {KEY}"}
    pb = {**auth, "content-type": "application/x-protobuf"}
    bad_ids = request([span(os.urandom(10)), span(b"")]).SerializeToString()
    cases = [
        (b"\xff\xff\xff\xff", pb, 400),
        (b"\x10\x05", pb, 400),
        (b"garbage", {**pb, "content-encoding": "gzip"}, 400),
        (b"x" * 70_000, pb, 413),
        (b"{oops", {**auth, "content-type": "application/json"}, 400),
        (bad_ids, pb, 400),
        (bad_ids, {"content-type": "application/x-protobuf"}, 401),
        (request([span(os.urandom(16))]).SerializeToString(), {**pb, "authorization": "Bearer wrong"}, 401),
    ]
    sentinel = os.urandom(16)
    async with httpx.AsyncClient(timeout=10) as c:
        for body, headers, status in cases:
            r = await c.post(url, content=body, headers=headers)
            assert r.status_code == status, (body[:20], r.status_code, r.content[:200])
        ok = await c.post(url, content=request([span(sentinel)]).SerializeToString(), headers=pb)
        assert ok.status_code == 200
    got = await read_spans(settings, 1, timeout=10)
    assert [s["trace"] for s in got] == [sentinel.hex()]


