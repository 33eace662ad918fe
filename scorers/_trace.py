"""Trace entities: the decoded form of an MLflow 3 trace, with the helpers scorers need.

The wire form stores every span attribute value as a JSON-encoded string. Decoding all of
them up front would cost more than scoring most traces, so a span keeps its raw attribute
map and decodes a value the first time it is asked for, once.

The accessors mirror `mlflow.entities` (`trace.data.spans`, `span.span_id` in hex,
`span.status`, `trace.info.request_preview`, `trace.search_assessments`, ...) so a scorer
written against MLflow runs unchanged; `tests/parity/` compares them with MLflow's own.
Every MLflow-shaped view is computed when asked for, never at decode time: the decoder's
cost must not grow with the size of the API.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from scorers._assessment import Expectation, Feedback, assessment_from_wire
from scorers._limits import MAX_DURATION_MS, MAX_TIME_MS

__all__ = [
    "Document",
    "Span",
    "SpanEvent",
    "SpanStatus",
    "SpanStatusCode",
    "SpanType",
    "TokenUsage",
    "ToolCall",
    "Trace",
    "TraceData",
    "TraceInfo",
]

_UNSET: Any = object()
_EMPTY_MAP: Mapping[str, Any] = {}


class SpanType:
    """The 15 span types of `mlflow.entities.SpanType` (plain strings, kept open)."""

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
    WORKFLOW = "WORKFLOW"
    TASK = "TASK"
    GUARDRAIL = "GUARDRAIL"
    EVALUATOR = "EVALUATOR"


class SpanStatusCode:
    """`mlflow.entities.SpanStatusCode`'s values; the wire writes them as `STATUS_CODE_<code>`."""

    OK = "OK"
    ERROR = "ERROR"
    UNSET = "UNSET"


_STATUS_CODES: Mapping[str, str] = {
    "STATUS_CODE_OK": SpanStatusCode.OK,
    "STATUS_CODE_ERROR": SpanStatusCode.ERROR,
    "STATUS_CODE_UNSET": SpanStatusCode.UNSET,
    "OK": SpanStatusCode.OK,
    "ERROR": SpanStatusCode.ERROR,
    "UNSET": SpanStatusCode.UNSET,
}


@dataclass(slots=True, frozen=True)
class SpanStatus:
    """A span's status as `mlflow.entities.SpanStatus`: a `SpanStatusCode` and a description."""

    status_code: str
    description: str = ""


def hex_span_id(wire_id: str) -> str:
    """The 16-hex id MLflow shows for a base64 wire span id (a non-base64 id is returned as is).

    Computed on access, never in the decoder: most scorers never read an id.
    """
    try:
        return base64.b64decode(wire_id, validate=True).hex()
    except (binascii.Error, ValueError, TypeError):
        return wire_id


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

    @property
    def timestamp(self) -> int:
        """The event time in epoch nanoseconds (MLflow's name for `time_ns`)."""
        return self.time_ns


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
        """The span id in hex, as MLflow shows it and assessments refer to it (`wire_span_id`: base64)."""
        return hex_span_id(str(self._raw["span_id"]))

    @property
    def wire_span_id(self) -> str:
        """The span id as the wire writes it (base64 of the OTel bytes)."""
        return str(self._raw["span_id"])

    @property
    def parent_id(self) -> str | None:
        """The parent's span id in hex; None for a root span."""
        parent = self._raw.get("parent_span_id")
        return hex_span_id(str(parent)) if parent else None

    @property
    def is_root(self) -> bool:
        """Whether the span has no parent (cheaper than `parent_id is None`: no hex)."""
        return not self._raw.get("parent_span_id")

    @property
    def trace_id(self) -> str:
        """The id of the trace the span belongs to (`tr-...`), as MLflow's `Span.trace_id`."""
        value = self.attribute("mlflow.traceRequestId")
        if isinstance(value, str):
            return value
        raw = self._raw.get("trace_id")
        return "tr-" + hex_span_id(str(raw)) if raw else ""

    @property
    def request_id(self) -> str:
        """MLflow's older name for `trace_id`."""
        return self.trace_id

    @property
    def start_time_ns(self) -> int:
        """Start time in epoch nanoseconds."""
        return self.start_ns

    @property
    def end_time_ns(self) -> int | None:
        """End time in epoch nanoseconds; None for a span that has not ended (as MLflow)."""
        end = self._raw.get("end_time_unix_nano")
        return None if end is None else int(end)

    @property
    def status(self) -> SpanStatus:
        """The status as `mlflow.entities.SpanStatus` (`status_code` `OK`, `ERROR` or `UNSET`)."""
        code = self.status_code
        return SpanStatus(_STATUS_CODES.get(code, code), self.status_message)

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

    def get_attribute(self, key: str) -> Any:
        """The decoded value of one attribute, None when absent (MLflow's `Span.get_attribute`)."""
        return self.attribute(key)

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
        """The 16-hex form of the span id, as assessments refer to spans (same as `span_id`)."""
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
    """The `info` part of a trace: identity, status, timing, tags and metadata.

    `request_time` is epoch milliseconds for a decoded trace (as MLflow's), `raw_assessments`
    the wire assessments (`assessments` builds MLflow's entities from them on access) and
    `raw` the wire `info` dict the previews are read from.
    """

    trace_id: str
    experiment_id: str
    state: str
    request_time: str | int | None
    execution_duration_ms: int | None
    tags: Mapping[str, str]
    metadata: Mapping[str, str]
    client_request_id: str | None = None
    raw_assessments: list[Mapping[str, Any]] = field(default_factory=list)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def request_id(self) -> str:
        """MLflow's older name for `trace_id`."""
        return self.trace_id

    @property
    def trace_metadata(self) -> Mapping[str, str]:
        """MLflow's name for `metadata`."""
        return self.metadata

    @property
    def request_metadata(self) -> Mapping[str, str]:
        """MLflow's older name for `metadata`."""
        return self.metadata

    @property
    def execution_duration(self) -> int | None:
        """Duration in milliseconds (MLflow's name for `execution_duration_ms`)."""
        return self.execution_duration_ms

    @property
    def execution_time_ms(self) -> int | None:
        """MLflow's older name for `execution_duration_ms`."""
        return self.execution_duration_ms

    @property
    def request_preview(self) -> str | None:
        """The request, cut at 1,000 characters by MLflow: display only, never score it."""
        value = self.raw.get("request_preview")
        return value if isinstance(value, str) else None

    @property
    def response_preview(self) -> str | None:
        """The response, cut at 1,000 characters by MLflow (None when the trace raised)."""
        value = self.raw.get("response_preview")
        return value if isinstance(value, str) else None

    @property
    def assessments(self) -> list[Feedback | Expectation]:
        """The trace's assessments as `Feedback`/`Expectation` entities (built on each access)."""
        out: list[Feedback | Expectation] = []
        for item in self.raw_assessments:
            if isinstance(item, Mapping):
                entity = assessment_from_wire(item)
                if entity is not None:
                    out.append(entity)
        return out

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
class TraceData:
    """`mlflow.entities.TraceData`: the spans, plus the root span's raw request and response."""

    spans: list[Span]

    def _get_root_span(self) -> Span | None:
        for span in self.spans:
            if span.is_root:
                return span
        return None

    @property
    def request(self) -> str | None:
        """The root span's inputs as the JSON string the wire holds (None without a root)."""
        root = self._get_root_span()
        value = None if root is None else root.raw_attributes.get("mlflow.spanInputs")
        return value if isinstance(value, str) or value is None else orjson.dumps(value).decode()

    @property
    def response(self) -> str | None:
        """The root span's outputs as the JSON string the wire holds (None when it raised)."""
        root = self._get_root_span()
        value = None if root is None else root.raw_attributes.get("mlflow.spanOutputs")
        return value if isinstance(value, str) or value is None else orjson.dumps(value).decode()


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
    def data(self) -> TraceData:
        """`trace.data` as in MLflow: a view over the same spans (built on access, no copy)."""
        return TraceData(self.spans)

    @property
    def root_span(self) -> Span | None:
        """The span without a parent (the first one if a broken trace has several)."""
        for span in self.spans:
            if span.is_root:
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

    def search_spans(
        self,
        span_type: str | None = None,
        name: str | re.Pattern[str] | None = None,
        span_id: str | None = None,
    ) -> list[Span]:
        """Spans matching a type, a name and/or an id, in trace order (as MLflow's `search_spans`).

        `name` is an exact string or a compiled pattern (matched with `search`, as MLflow);
        `span_id` is the hex id (`span.span_id`). A lower-case `span_type` is accepted too.

        Raises:
            TypeError: `name` is neither a string nor a compiled pattern, or `span_type` is
                not a string (a wrong type must not silently match nothing).
        """
        if span_type is not None and not isinstance(span_type, str):
            raise TypeError(f"Invalid type for 'span_type'. Expected str or SpanType. Got: {type(span_type)}")
        if name is not None and not isinstance(name, (str, re.Pattern)):
            raise TypeError(f"Invalid type for 'name'. Expected str or re.Pattern. Got: {type(name)}")
        st = span_type.upper() if span_type is not None else None
        out: list[Span] = []
        for s in self.spans:
            if st is not None and s.span_type != st:
                continue
            if name is not None:
                if isinstance(name, str):
                    if s.name != name:
                        continue
                elif name.search(s.name) is None:
                    continue
            if span_id is not None and s.span_id != span_id:
                continue
            out.append(s)
        return out

    def search_assessments(
        self,
        name: str | None = None,
        *,
        span_id: str | None = None,
        all: bool = False,  # MLflow's keyword (shadows the builtin)
        type: str | None = None,  # MLflow's keyword (shadows the builtin)
    ) -> list[Feedback | Expectation]:
        """The trace's assessments matching a name, a span and a kind (as MLflow's).

        Overridden ones (`valid: false`) only with `all=True`; `type` is `"feedback"` or
        `"expectation"`.

        Raises:
            ValueError: `type` is something else.
        """
        if type not in (None, "feedback", "expectation"):
            raise ValueError(f"type must be 'feedback' or 'expectation', got {type!r}")
        kind = None if type is None else (Feedback if type == "feedback" else Expectation)
        return [
            a
            for a in self.info.assessments
            if (name is None or a.name == name)
            and (span_id is None or a.span_id == span_id)
            and (all or a.valid in (True, None))
            and (kind is None or isinstance(a, kind))
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
