from __future__ import annotations

import json

import orjson
import pytest

from scorers import DecodeError, SpanType, decode_trace, trace_from_dict


def test_every_fixture_decodes(fixture_bytes: list[bytes], fixtures_dir) -> None:
    ids = json.loads((fixtures_dir / "trace_ids.json").read_text())
    seen = set()
    for data in fixture_bytes:
        t = decode_trace(data)
        seen.add(t.trace_id)
        assert t.trace_id.startswith("tr-") and len(t.trace_id) == 35
        assert t.experiment_id == "1"
        assert t.root_span is not None and t.root_span.parent_id is None
        assert isinstance(t.inputs, dict) and "request" in t.inputs
        assert t.info.timestamp_ms and t.info.timestamp_ms > 1_700_000_000_000
    assert set(ids.values()) <= seen


def test_ok_trace_helpers(fixtures_dir) -> None:
    t = decode_trace((fixtures_dir / "mlflow_trace_01_ok_acme.json").read_bytes())
    assert t.status == "OK" and t.ok
    assert len(t.spans) == 6
    assert [s.name for s in t.search_spans(span_type="RETRIEVER")] == ["retrieve_account_docs"]
    assert t.search_spans(span_type=SpanType.TOOL)[0].name == "lookup_crm_opportunity"
    assert t.search_spans(name="chat_completion")[0].span_type == "CHAT_MODEL"
    docs = t.retrieved_documents
    assert len(docs) == 3 and all(d.page_content and d.doc_uri for d in docs)
    assert [c.name for c in t.tool_calls] == ["lookup_crm_opportunity"]
    assert t.tool_calls[0].ok
    assert t.token_usage is not None and t.token_usage.total_tokens == 189
    assert t.latency_ms == 50.0
    assert isinstance(t.outputs, str) and t.outputs.startswith("Subject:")
    chat = t.search_spans(span_type="CHAT_MODEL")[0]
    assert chat.model == "gpt-4.1-mini"
    assert len(chat.hex_id) == 16
    event = t.search_spans(name="postprocess_email")[0].events[0]
    assert event.name == "pii_check" and event.attributes["pii.found"] is False


def test_outputs_are_full_not_preview(fixtures_dir) -> None:
    t = decode_trace((fixtures_dir / "mlflow_trace_06_ok_long_output.json").read_bytes())
    preview = t.raw["info"]["response_preview"]
    assert len(t.outputs) > len(preview) - 2
    assert len(t.outputs) > 1000


def test_error_trace(fixtures_dir) -> None:
    t = decode_trace((fixtures_dir / "mlflow_trace_04_error_crm_timeout.json").read_bytes())
    assert t.status == "ERROR" and not t.ok
    tool = t.search_spans(span_type="TOOL")[0]
    assert not tool.ok and not tool.has_outputs and tool.outputs is None
    errors = list(t.iter_errors())
    assert errors and all(e.attributes["exception.type"] == "TimeoutError" for e in errors)


def test_assessments_are_kept(fixtures_dir) -> None:
    t = decode_trace((fixtures_dir / "mlflow_trace_05_with_assessments.json").read_bytes())
    assert len(t.info.assessments) == 7


def test_roundtrip_bytes(fixture_bytes: list[bytes]) -> None:
    for data in fixture_bytes:
        assert orjson.loads(decode_trace(data).to_json()) == orjson.loads(data)


GOOD = {"info": {"trace_id": "tr-1"}, "data": {"spans": []}}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (b"{}", "missing_info"),
        (b'{"info": {"state": "OK"}}', "missing_trace_id"),
        (b'{"info": {"trace_id": 12}}', "bad_trace_id"),
        (b'{"info": {"trace_id": "tr-1"}, "data": {"spans": {}}}', "bad_spans"),
        (b'{"info": {"trace_id": "tr-1"}, "data": {"spans": [1]}}', "bad_spans"),
        (b'{"info": {"trace_id": "tr-1"}, "data": {"spans": [{"name": "x"}]}}', "bad_spans"),
    ],
)
def test_invalid_input_has_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_trace(payload)
    assert info.value.reason == reason
    assert info.value.message


def test_too_large() -> None:
    with pytest.raises(DecodeError) as info:
        decode_trace(b" " * 2000, max_bytes=1000)
    assert info.value.reason == "too_large" and "1000" in info.value.message


def test_unknown_fields_and_defaults() -> None:
    t = trace_from_dict(
        {"info": {"trace_id": "tr-x", "brand_new": {"a": 1}}, "data": {"spans": [], "extra": 1}, "more": True}
    )
    assert t.experiment_id == "0"
    assert t.root_span is None and t.inputs is None and t.latency_ms is None


def test_non_json_attribute_value_stays_raw() -> None:
    t = trace_from_dict(
        {
            "info": {"trace_id": "tr-x"},
            "data": {"spans": [{"span_id": "AA==", "attributes": {"mlflow.spanInputs": "plain text"}}]},
        }
    )
    assert t.inputs == "plain text"
