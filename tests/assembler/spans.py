"""Build OTLP `TracesData` messages for assembler tests (the spans topic's value format)."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status, TracesData

from stream.assembler import SpanRecord, decode_traces_data


def any_value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(x) for x in v)
        return out
    return AnyValue(string_value=v if isinstance(v, str) else json.dumps(v))


def span(
    trace_hex: str,
    span_hex: str,
    parent_hex: str | None,
    name: str,
    start: int,
    end: int,
    attrs: dict[str, Any] | None = None,
    error: bool = False,
) -> Span:
    s = Span(
        trace_id=bytes.fromhex(trace_hex),
        span_id=bytes.fromhex(span_hex),
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
    )
    if parent_hex:
        s.parent_span_id = bytes.fromhex(parent_hex)
    for k, v in (attrs or {}).items():
        s.attributes.append(KeyValue(key=k, value=any_value(v)))
    s.status.code = Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK
    return s


def traces_data(spans: list[Span], resource: dict[str, Any] | None = None, scope: str = "test") -> bytes:
    rs = ResourceSpans()
    for k, v in (resource or {"service.name": "app"}).items():
        rs.resource.attributes.append(KeyValue(key=k, value=any_value(v)))
    ss = ScopeSpans()
    ss.scope.name = scope
    ss.spans.extend(spans)
    rs.scope_spans.append(ss)
    return TracesData(resource_spans=[rs]).SerializeToString()


def trace_spans(i: int, *, base_ns: int = 1_800_000_000_000_000_000, children: int = 3) -> tuple[str, list[Span]]:
    """Trace number `i`: a root AGENT span and `children` spans (CHAT_MODEL, RETRIEVER, TOOL...)."""
    trace_hex = f"{i + 1:032x}"
    root = f"{(i + 1) * 16:016x}"
    t0 = base_ns + i * 1_000_000
    kinds = ["chat", "execute_tool", "embeddings"]
    out = [
        span(
            trace_hex,
            root,
            None,
            "agent",
            t0,
            t0 + 50_000_000,
            {
                "gen_ai.operation.name": "invoke_agent",
                "input.value": json.dumps({"q": f"question {i}"}),
                "output.value": json.dumps(f"answer {i} " * 3),
            },
        )
    ]
    for c in range(children):
        out.append(
            span(
                trace_hex,
                f"{(i + 1) * 16 + c + 1:016x}",
                root,
                f"step{c}",
                t0 + (c + 1) * 1_000_000,
                t0 + (c + 2) * 1_000_000,
                {
                    "gen_ai.operation.name": kinds[c % 3],
                    "gen_ai.usage.input_tokens": 5 + c,
                    "gen_ai.usage.output_tokens": 3,
                },
            )
        )
    return trace_hex, out


def records(data: bytes) -> list[SpanRecord]:
    return decode_traces_data(data)
