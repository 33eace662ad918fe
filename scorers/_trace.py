"""Trace entities: the decoded form of an MLflow 3 trace, with the helpers scorers need.

The wire form stores every span attribute value as a JSON-encoded string. Decoding all of
them up front would cost more than scoring most traces, so a span keeps its raw attribute
map and decodes a value the first time it is asked for, once.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from scorers._limits import MAX_DURATION_MS, MAX_TIME_MS

__all__ = [
    "Document",
    "Span",
    "SpanEvent",
    "SpanType",
    "TokenUsage",
    "ToolCall",
    "Trace",
    "TraceInfo",
]

_UNSET: Any = object()
_EMPTY_MAP: Mapping[str, Any] = {}


class SpanType:
    """The span types MLflow writes in `mlflow.spanType` (plain strings, kept open)."""

    LLM = "LLM"
    CHAT_MODEL = "CHAT_MODEL"
    CHAIN = "CHAIN"
    AGENT = "AGENT"
    TOOL = "TOOL"
    RETRIEVER = "RETRIEVER"
    PARSER = "PARSER"
    EMBEDDING = "EMBEDDING"
    RERANKER = "RERANKER"
    MEMORY = "MEMORY"
    UNKNOWN = "UNKNOWN"


def time_ms(value: object) -> int | None:
    """Epoch milliseconds of a wire request time, or None when it cannot be read as one.

    Accepts an integer, a string of ASCII digits (proto3 JSON writes int64 as a string) or an
    RFC 3339 / ISO 8601 string. No range check here: callers decide what is in range.
    """
    if type(value) is int:
        return value
    if isinstance(value, str):
        if value.isascii() and value.isdigit():
            return int(value) if len(value) <= 20 else None
        try:
            return int(datetime.fromisoformat(value).timestamp() * 1000)
        except (ValueError, OverflowError, OSError):  # unreadable, or past what datetime holds
            return None
    return None


def _decode_attr(raw: Any) -> Any:
    """Decode one MLflow attribute value; a value that is not JSON stays as it came."""
    if isinstance(raw, str):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


@dataclass(slots=True, frozen=True)
class TokenUsage:
    """Token counts of an LLM call or a whole trace."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_value(cls, value: Any) -> TokenUsage | None:
        if not isinstance(value, Mapping):
            return None
        inp = int(value.get("input_tokens") or 0)
        out = int(value.get("output_tokens") or 0)
        total = int(value.get("total_tokens") or (inp + out))
        return cls(inp, out, total)


@dataclass(slots=True, frozen=True)
class Document:
    """One document a retriever span returned."""

    page_content: str
    doc_uri: str | None = None
    id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class ToolCall:
    """One tool invocation, in the order the agent made it."""

    name: str
    inputs: Any
    outputs: Any
    ok: bool
    duration_ms: float


@dataclass(slots=True)
class SpanEvent:
    """A span event (`exception`, or an app's own); its attributes are plain values."""

    name: str
    time_ns: int
    attributes: Mapping[str, Any]


class Span:
    """One span of a trace: a thin view over its wire dict, built in well under a microsecond.

    Fields are read from the wire dict when asked for, and attribute values (JSON-encoded
    strings on the wire) are decoded the first time each is asked for, once. Most scorers
    touch two or three fields of one or two spans, so this is what keeps decoding cheap.
    """

    __slots__ = ("_decoded", "_events", "_raw", "raw_attributes")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._raw = raw
        attrs = raw.get("attributes")
        self.raw_attributes: Mapping[str, Any] = attrs if attrs is not None else _EMPTY_MAP
        self._decoded: dict[str, Any] | None = None
        self._events: list[SpanEvent] | None = None

    def __repr__(self) -> str:
        return f"Span(name={self.name!r}, span_type={self.span_type!r}, span_id={self.span_id!r})"

    @property
    def span_id(self) -> str:
        return str(self._raw["span_id"])

    @property
    def parent_id(self) -> str | None:
        return self._raw.get("parent_span_id") or None

    @property
    def name(self) -> str:
        return str(self._raw.get("name", ""))

    @property
    def start_ns(self) -> int:
        return int(self._raw.get("start_time_unix_nano") or 0)

    @property
    def end_ns(self) -> int:
        end = self._raw.get("end_time_unix_nano")
        return self.start_ns if end is None else int(end)

    @property
    def status_code(self) -> str:
        status = self._raw.get("status")
        return str(status.get("code") or "STATUS_CODE_UNSET") if isinstance(status, Mapping) else "STATUS_CODE_UNSET"

    @property
    def status_message(self) -> str:
        status = self._raw.get("status")
        return str(status.get("message") or "") if isinstance(status, Mapping) else ""

    @property
    def events(self) -> list[SpanEvent]:
        events = self._events
        if events is None:
            events = self._events = [
                SpanEvent(
                    name=str(e.get("name", "")),
                    time_ns=int(e.get("time_unix_nano") or 0),
                    attributes=e.get("attributes") or _EMPTY_MAP,
                )
                for e in self._raw.get("events") or ()
                if isinstance(e, Mapping)
            ]
        return events

    def attribute(self, key: str, default: Any = None) -> Any:
        """The decoded value of one attribute, or `default` when the span lacks it."""
        decoded = self._decoded
        if decoded is None:
            decoded = self._decoded = {}
        else:
            cached = decoded.get(key, _UNSET)
            if cached is not _UNSET:
                return cached
        raw = self.raw_attributes.get(key, _UNSET)
        if raw is _UNSET:
            return default
        value = _decode_attr(raw)
        decoded[key] = value
        return value

    @property
    def attributes(self) -> dict[str, Any]:
        """All attributes, decoded (prefer `attribute(key)` on hot paths)."""
        return {k: self.attribute(k) for k in self.raw_attributes}

    @property
    def span_type(self) -> str:
        value = self.attribute("mlflow.spanType")
        return value if isinstance(value, str) else SpanType.UNKNOWN

    @property
    def inputs(self) -> Any:
        return self.attribute("mlflow.spanInputs")

    @property
    def outputs(self) -> Any:
        return self.attribute("mlflow.spanOutputs")

    @property
    def has_outputs(self) -> bool:
        return "mlflow.spanOutputs" in self.raw_attributes

    @property
    def model(self) -> str | None:
        value = self.attribute("mlflow.llm.model")
        return value if isinstance(value, str) else None

    @property
    def token_usage(self) -> TokenUsage | None:
        return TokenUsage.from_value(self.attribute("mlflow.chat.tokenUsage"))

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def ok(self) -> bool:
        return self.status_code != "STATUS_CODE_ERROR"

    @property
    def hex_id(self) -> str:
        """The 16-hex form of the span id, as assessments refer to spans."""
        try:
            return base64.b64decode(self.span_id).hex()
        except (ValueError, TypeError):
            return self.span_id

    @property
    def documents(self) -> list[Document]:
        """Documents of a retriever span's output (empty for other spans)."""
        return _documents(self.outputs)


def _documents(value: Any) -> list[Document]:
    if not isinstance(value, list):
        return []
    docs: list[Document] = []
    for item in value:
        if isinstance(item, Mapping):
            meta = item.get("metadata")
            meta = meta if isinstance(meta, Mapping) else {}
            uri = meta.get("doc_uri", item.get("doc_uri"))
            doc_id = item.get("id")
            docs.append(
                Document(
                    page_content=str(item.get("page_content", "")),
                    doc_uri=None if uri is None else str(uri),
                    id=None if doc_id is None else str(doc_id),
                    metadata=meta,
                )
            )
        elif isinstance(item, str):
            docs.append(Document(page_content=item))
    return docs


@dataclass(slots=True)
class TraceInfo:
    """The `info` part of a trace: identity, status, timing, tags and metadata."""

    trace_id: str
    experiment_id: str
    state: str
    request_time: str | int | None
    execution_duration_ms: int | None
    tags: Mapping[str, str]
    metadata: Mapping[str, str]
    client_request_id: str | None = None
    assessments: list[Mapping[str, Any]] = field(default_factory=list)

    @property
    def timestamp_ms(self) -> int | None:
        """Request time in epoch milliseconds (RFC 3339 string or int on the wire).

        None when absent, unreadable or outside `0..MAX_TIME_MS`: the decoder refuses such
        traces, and a `TraceInfo` built by hand must not smuggle one into a sink either.
        """
        rt = self.request_time
        if rt is None:
            return None
        ms = time_ms(rt)
        return ms if ms is not None and 0 <= ms <= MAX_TIME_MS else None

    @property
    def end_ms(self) -> int | None:
        """When the request ended (request time plus duration), in epoch milliseconds.

        Never raises and never returns a number past `MAX_TIME_MS`: it is stored in every
        assessment, so an overflowing value would make the assessment unwritable and, before
        this bound, crash-looped the worker. A duration out of range counts as zero.
        """
        start = self.timestamp_ms
        if start is None:
            return None
        d = self.execution_duration_ms
        if type(d) is not int or not 0 <= d <= MAX_DURATION_MS:
            d = 0
        end = start + d
        return end if end <= MAX_TIME_MS else None

    @property
    def name(self) -> str | None:
        return self.tags.get("mlflow.traceName")

    @property
    def token_usage(self) -> TokenUsage | None:
        raw = self.metadata.get("mlflow.trace.tokenUsage")
        return TokenUsage.from_value(_decode_attr(raw)) if raw is not None else None

    @property
    def user(self) -> str | None:
        return self.metadata.get("mlflow.trace.user")

    @property
    def session(self) -> str | None:
        return self.metadata.get("mlflow.trace.session")


@dataclass(slots=True)
class Trace:
    """A finished trace: `info` plus its spans; `raw` is the wire dict it came from."""

    info: TraceInfo
    spans: list[Span]
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @property
    def trace_id(self) -> str:
        return self.info.trace_id

    @property
    def experiment_id(self) -> str:
        return self.info.experiment_id

    @property
    def root_span(self) -> Span | None:
        """The span without a parent (the first one if a broken trace has several)."""
        for span in self.spans:
            if span.parent_id is None:
                return span
        return None

    @property
    def inputs(self) -> Any:
        """The root span's full inputs (never the truncated `request_preview`)."""
        root = self.root_span
        return None if root is None else root.inputs

    @property
    def outputs(self) -> Any:
        """The root span's full outputs; None when the root raised."""
        root = self.root_span
        return None if root is None else root.outputs

    @property
    def status(self) -> str:
        """`OK`, `ERROR`, `IN_PROGRESS` or `STATE_UNSPECIFIED`."""
        return self.info.state

    @property
    def ok(self) -> bool:
        return self.info.state == "OK" and all(s.ok for s in self.spans)

    @property
    def latency_ms(self) -> float | None:
        """End-to-end latency: `execution_duration_ms`, else the root span's duration."""
        if self.info.execution_duration_ms is not None:
            return float(self.info.execution_duration_ms)
        root = self.root_span
        return None if root is None else root.duration_ms

    @property
    def token_usage(self) -> TokenUsage | None:
        """Trace-level token usage, else the sum over LLM spans."""
        usage = self.info.token_usage
        if usage is not None:
            return usage
        inp = out = total = 0
        found = False
        for span in self.spans:
            u = span.token_usage
            if u is not None:
                found = True
                inp += u.input_tokens
                out += u.output_tokens
                total += u.total_tokens
        return TokenUsage(inp, out, total) if found else None

    def search_spans(self, span_type: str | None = None, name: str | None = None) -> list[Span]:
        """Spans matching a type and/or name, in trace order (as MLflow's `search_spans`)."""
        st = span_type.upper() if isinstance(span_type, str) else span_type
        return [
            s
            for s in self.spans
            if (st is None or s.span_type == st) and (name is None or s.name == name)
        ]

    def iter_errors(self) -> Iterator[SpanEvent]:
        """Every `exception` event on any span."""
        for span in self.spans:
            for event in span.events:
                if event.name == "exception":
                    yield event

    @property
    def retrieved_documents(self) -> list[Document]:
        """Documents of every retriever span, in order."""
        docs: list[Document] = []
        for span in self.search_spans(span_type=SpanType.RETRIEVER):
            docs.extend(span.documents)
        return docs

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool-call trajectory: every TOOL span in start order."""
        tools = sorted(self.search_spans(span_type=SpanType.TOOL), key=lambda s: s.start_ns)
        return [ToolCall(s.name, s.inputs, s.outputs, s.ok, s.duration_ms) for s in tools]

    def to_json(self) -> bytes:
        """The wire form (MLflow trace JSON) this trace was decoded from."""
        return orjson.dumps(self.raw)
