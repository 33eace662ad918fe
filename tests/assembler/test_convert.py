"""OTLP -> MLflow trace JSON, from real captured exports (MLflow 3.17.2, OpenTelemetry SDK 1.45)."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import orjson
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from scorers import decode_trace
from stream.assembler import INCOMPLETE_TAG, SpanDecodeError, build_trace, decode_traces_data
from stream.assembler._translate import encode_attribute
from tests.assembler.spans import span, traces_data

DATA = Path(__file__).parent / "data"


def traces_of(path: str, experiment: str = "7") -> dict[str, dict]:
    by: dict[str, dict] = {}
    for r in decode_traces_data((DATA / path).read_bytes()):
        by.setdefault(r.trace_hex, {})[r.span_hex] = r
    return {h: build_trace(h, spans, experiment_id=experiment) for h, spans in by.items()}


def raw_attrs(path: str) -> dict[tuple[str, str], dict[str, str]]:
    """(trace hex, span hex) -> attributes as the exporter sent them (string values)."""
    data = TracesData()
    data.ParseFromString((DATA / path).read_bytes())
    out = {}
    for rs in data.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                out[(s.trace_id.hex(), s.span_id.hex())] = {kv.key: kv.value.string_value for kv in s.attributes}
    return out


def test_mlflow_export_reads_as_mlflow_wrote_it() -> None:
    traces = traces_of("mlflow_3_17_2_export.bin")
    raw = raw_attrs("mlflow_3_17_2_export.bin")
    assert len(traces) == 2
    states = {}
    for trace_hex, doc in traces.items():
        t = decode_trace(orjson.dumps(doc))
        assert t.info.trace_id == f"tr-{trace_hex}"
        assert t.info.experiment_id == "7"
        states[t.info.state] = [(s.name, s.span_type) for s in t.spans]
        root = t.spans[0]
        assert root.parent_id is None and root.name == "agent"
        assert doc["info"]["tags"]["mlflow.traceName"] == "agent"
        for s in doc["data"]["spans"]:
            # ids as the fixtures write them: base64 of the raw bytes
            assert base64.b64decode(s["trace_id"]).hex() == trace_hex
            span_hex = base64.b64decode(s["span_id"]).hex()
            # MLflow's JSON-encoded values are kept byte for byte
            for k, v in raw[(trace_hex, span_hex)].items():
                assert s["attributes"][k] == v, k
        assert t.inputs == json.loads(doc["data"]["spans"][0]["attributes"]["mlflow.spanInputs"])
    assert states["OK"] == [
        ("agent", "AGENT"),
        ("retrieve", "RETRIEVER"),
        ("tool", "TOOL"),
        ("chat_completion", "CHAT_MODEL"),
    ]
    assert states["ERROR"] == [("agent", "AGENT"), ("retrieve", "RETRIEVER"), ("tool", "TOOL")]
    ok = next(d for d in traces.values() if d["info"]["state"] == "OK")
    assert json.loads(ok["info"]["trace_metadata"]["mlflow.trace.tokenUsage"]) == {
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
    }
    assert ok["info"]["execution_duration_ms"] >= 0
    err = next(d for d in traces.values() if d["info"]["state"] == "ERROR")
    tool = next(s for s in err["data"]["spans"] if s["name"] == "tool")
    assert tool["status"]["code"] == "STATUS_CODE_ERROR"
    assert tool["events"][0]["name"] == "exception"
    assert tool["events"][0]["attributes"]["exception.type"] == "TimeoutError"
    assert isinstance(tool["events"][0]["time_unix_nano"], int)
    assert "mlflow.spanOutputs" not in tool["attributes"]


def test_otel_sdk_genai_and_openinference_mapped() -> None:
    (doc,) = traces_of("otel_sdk_genai_openinference.bin").values()
    t = decode_trace(orjson.dumps(doc))
    assert [(s.name, s.span_type) for s in t.spans] == [
        ("invoke_agent support", "AGENT"),
        ("retrieve", "RETRIEVER"),
        ("chat gpt-4o", "CHAT_MODEL"),
        ("execute_tool lookup", "TOOL"),
    ]
    assert t.info.state == "OK"  # the root's status is UNSET: OK, as MLflow derives it
    assert t.inputs == {"question": "reset password?"}
    assert t.outputs == "Use the reset link."
    by = {s["name"]: s for s in doc["data"]["spans"]}
    chat = by["chat gpt-4o"]["attributes"]
    assert json.loads(chat["mlflow.chat.tokenUsage"]) == {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19}
    assert json.loads(chat["mlflow.llm.model"]) == "gpt-4o"
    assert json.loads(chat["mlflow.llm.provider"]) == "openai"
    assert json.loads(chat["mlflow.spanInputs"])[0]["role"] == "user"
    assert chat["custom.flag"] == "true" and chat["custom.list"] == "[1, 2]"  # unknown attributes kept
    docs = json.loads(by["retrieve"]["attributes"]["mlflow.spanOutputs"])
    assert docs == [{"page_content": "Go to settings", "metadata": {"doc_uri": "kb://1", "score": 0.9}, "id": "kb-1"}]
    tool = by["execute_tool lookup"]
    assert tool["status"] == {"code": "STATUS_CODE_ERROR", "message": "lookup failed"}
    assert json.loads(tool["attributes"]["mlflow.spanInputs"]) == {"id": 3}
    meta, tags = doc["info"]["trace_metadata"], doc["info"]["tags"]
    assert meta["mlflow.trace.user"] == "u-1" and meta["mlflow.trace.session"] == "s-9"
    assert tags["service.name"] == "genai-app" and tags["deployment.environment"] == "test"
    assert not any(k.startswith("telemetry.sdk.") for k in tags)
    assert INCOMPLETE_TAG not in tags


@pytest.mark.parametrize(
    "value,from_mlflow,encoded",
    [
        ('"AGENT"', True, '"AGENT"'),
        ("20", True, "20"),  # MLflow's exporter JSON-encodes: kept as sent
        ("20", False, '"20"'),  # a plain string that happens to parse as a number stays a string (MLflow's rule)
        ("hello", False, '"hello"'),
        ('{"a": 1}', False, '{"a": 1}'),
        (5, False, "5"),
        (True, False, "true"),
        ([1, "x"], False, '[1, "x"]'),
        ("héllo", False, '"héllo"'),
        (b"\x00\x01", False, '"AAE="'),
    ],
)
def test_attribute_encoding(value, from_mlflow, encoded) -> None:
    assert encode_attribute(value, from_mlflow=from_mlflow) == encoded


def test_same_spans_any_order_same_bytes() -> None:
    recs = decode_traces_data((DATA / "mlflow_3_17_2_export.bin").read_bytes())
    trace_hex = recs[0].trace_hex
    mine = [r for r in recs if r.trace_hex == trace_hex]
    want = orjson.dumps(build_trace(trace_hex, {r.span_hex: r for r in mine}, experiment_id="1"))
    for seed in range(5):
        random.Random(seed).shuffle(mine)
        assert orjson.dumps(build_trace(trace_hex, {r.span_hex: r for r in mine}, experiment_id="1")) == want


def test_incomplete_trace_without_root_is_in_progress_and_tagged() -> None:
    t, root = "ab" * 16, "11" * 8
    recs = decode_traces_data(traces_data([span(t, "22" * 8, root, "child", 10, 20)]))
    doc = build_trace(t, {r.span_hex: r for r in recs}, experiment_id="0", incomplete_reason="max_age")
    assert doc["info"]["state"] == "IN_PROGRESS"
    assert doc["info"]["tags"][INCOMPLETE_TAG] == "true"
    assert doc["info"]["tags"]["tracewatch.incomplete_reason"] == "max_age"
    decode_trace(orjson.dumps(doc))


def test_bad_messages_are_refused_with_a_reason() -> None:
    with pytest.raises(SpanDecodeError) as exc:
        decode_traces_data(b"\xff\xff\xff not protobuf")
    assert exc.value.reason == "not_protobuf"
    with pytest.raises(SpanDecodeError) as exc:
        decode_traces_data(TracesData().SerializeToString())
    assert exc.value.reason == "no_spans"
    bad = span("ab" * 16, "11" * 8, None, "x", 1, 2)
    bad.trace_id = b"\x01\x02"
    with pytest.raises(SpanDecodeError) as exc:
        decode_traces_data(traces_data([bad]))
    assert exc.value.reason == "bad_id"
