"""Parsing and grouping of OTLP exports (stream/otlp/_decode.py)."""

from __future__ import annotations

import gzip
import os

import orjson
import pytest

from stream.otlp import ExportRefused, SpanLimits, group_spans, parse_body
from tests.otlp.helpers import request, span, spans_in

T1, T2 = os.urandom(16), os.urandom(16)
PB = "application/x-protobuf"


def test_one_trace_is_forwarded_as_received():
    req = request([span(T1), span(T1)])
    raw = req.SerializeToString()
    g = group_spans(req, raw=raw, limits=SpanLimits())
    assert [(m.key, m.value, m.spans) for m in g.messages] == [(T1.hex().encode(), raw, 2)]
    assert g.accepted == 2 and not g.rejected and g.message() == ""


def test_spans_are_grouped_by_trace_keeping_resource_and_scope():
    a, b, c = span(T1, name="a"), span(T2, name="b"), span(T1, name="c")
    req = request([a, b], [c], resource={"service.name": "svc", "k": "v"}, scope="mlflow.tracer")
    g = group_spans(req, raw=req.SerializeToString(), limits=SpanLimits())
    by_key = {m.key: m for m in g.messages}
    assert set(by_key) == {T1.hex().encode(), T2.hex().encode()}
    assert [s.name for s in spans_in(by_key[T1.hex().encode()].value)] == ["a", "c"]
    assert [s.name for s in spans_in(by_key[T2.hex().encode()].value)] == ["b"]
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    data = TracesData.FromString(by_key[T1.hex().encode()].value)
    assert len(data.resource_spans) == 2
    assert {kv.key for kv in data.resource_spans[0].resource.attributes} == {"service.name", "k"}
    assert data.resource_spans[0].scope_spans[0].scope.name == "mlflow.tracer"


@pytest.mark.parametrize(
    "bad",
    [
        span(os.urandom(15)),
        span(bytes(16)),
        span(T2, span_id=os.urandom(7)),
        span(T2, span_id=bytes(8)),
        span(T2, parent=os.urandom(4)),
    ],
)
def test_bad_ids_are_partial_success(bad):
    req = request([span(T1), bad])
    g = group_spans(req, raw=req.SerializeToString(), limits=SpanLimits())
    assert g.rejected == {"bad_id": 1} and g.accepted == 1
    assert "rejected 1 span(s) (1 bad_id)" in g.message() and "16 non-zero bytes" in g.message()
    assert [m.key for m in g.messages] == [T1.hex().encode()]
    assert len(spans_in(g.messages[0].value)) == 1


def test_every_span_bad_refuses_the_request():
    req = request([span(os.urandom(8)), span(b"")])
    with pytest.raises(ExportRefused) as info:
        group_spans(req, raw=req.SerializeToString(), limits=SpanLimits())
    assert info.value.kind == "bad_request" and info.value.reason == "bad_id" and info.value.spans == 2


def test_oversized_span_is_rejected_and_big_trace_is_split():
    big = span(T1, attrs={"x": "y" * 70_000})
    small = [span(T1, attrs={"x": "z" * 30_000}) for _ in range(10)]
    req = request([big, *small])
    limits = SpanLimits(max_span_bytes=60_000, max_message_bytes=64 * 1024 + 100_000)
    g = group_spans(req, raw=req.SerializeToString(), limits=limits)
    assert g.rejected == {"too_large": 1} and g.accepted == 10
    assert len(g.messages) > 1 and {m.key for m in g.messages} == {T1.hex().encode()}
    assert sum(m.spans for m in g.messages) == 10
    assert all(len(m.value) <= limits.max_message_bytes for m in g.messages)


def test_experiment_from_header_else_resource_attribute():
    req = request([span(T1)], [span(T2)], resource={"mlflow.experimentId": '"42"'})
    g = group_spans(req, raw=None, limits=SpanLimits())
    assert {m.experiment for m in g.messages} == {"42"}
    g = group_spans(req, raw=None, limits=SpanLimits(), experiment="7")
    assert {m.experiment for m in g.messages} == {"7"}
    g = group_spans(request([span(T1)]), raw=None, limits=SpanLimits())
    assert g.messages[0].experiment is None  # the receiver's default then applies


def test_parse_protobuf_gzip_and_json():
    req = request([span(T1, name="a")])
    raw = req.SerializeToString()
    parsed, forwarded = parse_body(gzip.compress(raw), content_type=PB, content_encoding="gzip", max_bytes=1 << 20)
    assert parsed == req and forwarded == raw
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "s"},
                        "spans": [
                            {
                                "traceId": T1.hex(),
                                "spanId": "0102030405060708",
                                "name": "a",
                                "kind": 1,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000000001000",
                                "status": {"code": 2, "message": "boom"},
                                "links": [{"traceId": T2.hex(), "spanId": "0807060504030201"}],
                                "someFutureField": 1,
                            }
                        ],
                    }
                ],
            }
        ]
    }
    parsed, forwarded = parse_body(
        orjson.dumps(body), content_type="application/json; charset=utf-8", content_encoding=None, max_bytes=1 << 20
    )
    assert forwarded is None
    s = parsed.resource_spans[0].scope_spans[0].spans[0]
    assert s.trace_id == T1 and s.span_id == bytes.fromhex("0102030405060708") and s.status.code == 2
    assert s.links[0].trace_id == T2


@pytest.mark.parametrize(
    ("body", "ctype", "encoding", "kind", "reason"),
    [
        (b"\xff\xff\xff\xff", PB, None, "bad_request", "not_protobuf"),
        (b"\x10\x05\x18\x07", PB, None, "bad_request", "wrong_schema"),  # protobuf, not an export
        (b"not gzip", PB, "gzip", "bad_request", "bad_encoding"),
        (b"x" * 2000, PB, None, "too_large", "too_large"),
        (gzip.compress(b"\0" * 5000), PB, "gzip", "too_large", "too_large"),
        (b"{", "application/json", None, "bad_request", "bad_json"),
        (b'{"resourceSpans": "x"}', "application/json", None, "bad_request", "wrong_schema"),
        (b'{"foo": 1}', "application/json", None, "bad_request", "wrong_schema"),
        (b"[]", "application/json", None, "bad_request", "wrong_schema"),
        (b"", "text/plain", None, "unsupported", "content_type"),
        (b"", PB, "br", "unsupported", "content_encoding"),
    ],
)
def test_bad_bodies_are_refused(body, ctype, encoding, kind, reason):
    with pytest.raises(ExportRefused) as info:
        parse_body(body, content_type=ctype, content_encoding=encoding, max_bytes=1024)
    assert (info.value.kind, info.value.reason) == (kind, reason)
    assert info.value.message


def test_json_bad_hex_is_a_rejected_span():
    good = {"traceId": T1.hex(), "spanId": "0102030405060708", "name": "ok"}
    bad = {"traceId": "zz" * 16, "spanId": "0102030405060708", "name": "bad"}
    body = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [good, bad]}]}]})
    req, _ = parse_body(body, content_type="application/json", content_encoding=None, max_bytes=1 << 20)
    g = group_spans(req, raw=None, limits=SpanLimits())
    assert g.accepted == 1 and g.rejected == {"bad_id": 1}


def test_empty_export_is_a_no_op():
    req, raw = parse_body(b"", content_type=PB, content_encoding=None, max_bytes=1024)
    g = group_spans(req, raw=raw, limits=SpanLimits())
    assert g.messages == [] and g.accepted == 0
