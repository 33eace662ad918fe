"""The API's boundary types: request and response bodies, the error shape, and API options.

Bodies are validated here once, strictly: unknown fields are refused (a typo such as `val`
must not turn into a vote without a value), strings carry no control characters, numbers are
finite and fit 64 bits, and every value can be written as JSON to Kafka, so a request that
passes validation can always be published.

Every error the API returns has the shape `{"error": <code>, "message": <text>}` (plus
`fields` on 422), whichever layer refuses the request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from starlette.responses import JSONResponse

from scorers import MAX_ID_CHARS, MAX_NAME_CHARS

__all__ = [
    "Accepted",
    "ApiOptions",
    "ErrorBody",
    "ExpectationBody",
    "FeedbackBody",
    "FeedbackErrorBody",
    "FeedbackSource",
    "FieldError",
    "Health",
    "ScorerInfo",
    "ScorerList",
    "Summary",
    "TokenRequest",
    "TokenResponse",
    "TraceAccepted",
    "TraceResults",
    "error_response",
    "error_responses",
    "window_minutes",
]

DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024
MAX_TOKEN_TTL: Final = 30 * 86400


def _json_safe(value: Any) -> Any:
    """Refuse what orjson cannot write (ints beyond 64 bits, lone surrogates, deep nesting)."""
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise ValueError(f"cannot be written as JSON: {exc}") from None
    return value


def _finite(value: Any) -> None:
    """Refuse NaN and infinities anywhere in a JSON tree (orjson would write them as null)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
    elif isinstance(value, list):
        for item in value:
            _finite(item)
    elif isinstance(value, dict):
        for item in value.values():
            _finite(item)


def _json_tree(value: Any) -> Any:
    _json_safe(value)  # first: it also bounds the depth _finite recurses to
    _finite(value)
    return value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def _scalar(value: Any) -> Any:
    if not _is_scalar(value):
        raise ValueError("must be a boolean, a number or a string")
    return _json_tree(value)


def _feedback_value(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be null")
    if isinstance(value, list):
        if not all(_is_scalar(v) for v in value):
            raise ValueError("a list may hold only booleans, numbers and strings")
    elif not (_is_scalar(value) or isinstance(value, dict)):
        raise ValueError("must be a boolean, a number, a string, a list of those, or an object")
    return _json_tree(value)


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be null")
    return _json_tree(value)


_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
_SCALAR_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "boolean"}, {"type": "number"}, {"type": "string"}]}
# Ids and names become Redis keys and metric labels: bounded by the same limits as the
# decoder's (`scorers._limits`), so the API never accepts what a worker would dead-letter.
TraceId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=_PRINTABLE), AfterValidator(_json_safe)
]
Id = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=_PRINTABLE), AfterValidator(_json_safe)
]
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS, pattern=_PRINTABLE), AfterValidator(_json_safe)
]
Text = Annotated[str, StringConstraints(max_length=16 * 1024), AfterValidator(_json_safe)]
Scalar = Annotated[Any, AfterValidator(_scalar), WithJsonSchema(_SCALAR_SCHEMA)]
FeedbackValue = Annotated[
    Any,
    AfterValidator(_feedback_value),
    WithJsonSchema(
        {"anyOf": [*_SCALAR_SCHEMA["anyOf"], {"type": "array", "items": _SCALAR_SCHEMA}, {"type": "object"}]}
    ),
]
AnyValue = Annotated[Any, AfterValidator(_not_null), WithJsonSchema({"not": {"type": "null"}})]
Metadata = Annotated[dict[str, Any], AfterValidator(_json_tree)]
SourceType = Literal["HUMAN", "LLM_JUDGE", "CODE"]

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class FieldError(BaseModel):
    """One invalid field of a 422: where (`trace_id`, `source.id`, `body`) and why."""

    field: str
    message: str
    type: str


class ErrorBody(BaseModel):
    """Every error response: a stable machine code and a message for people."""

    error: str = Field(examples=["unauthorized"])
    message: str
    fields: list[FieldError] | None = None
    reason: str | None = Field(None, description="why a trace was refused (`DecodeError.reason`)")


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    fields: list[FieldError] | None = None,
    reason: str | None = None,
) -> JSONResponse:
    """The JSON error response of the API (usable as an ASGI app by middleware)."""
    body: dict[str, Any] = {"error": code, "message": message}
    if fields is not None:
        body["fields"] = [f.model_dump() for f in fields]
    if reason is not None:
        body["reason"] = reason
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route that can refuse with these statuses (`ErrorBody` each)."""
    return {status: {"model": ErrorBody} for status in statuses}


class FeedbackSource(BaseModel):
    """Who gave the feedback (MLflow's `AssessmentSource`; `source_type`/`source_id` accepted)."""

    model_config = _STRICT

    type: SourceType = Field("HUMAN", validation_alias=AliasChoices("type", "source_type"))
    id: Id | None = Field(None, validation_alias=AliasChoices("id", "source_id"))

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        # Both spellings are fine, both at once is not: which one would win is a guess.
        if isinstance(data, dict):
            for short, long in (("type", "source_type"), ("id", "source_id")):
                if short in data and long in data:
                    raise ValueError(f"give `{short}` or `{long}`, not both")
        return data


def _lift_source(data: Any) -> Any:
    """MLflow-style top-level `source_type`/`source_id` become `source`."""
    if isinstance(data, dict) and ("source_type" in data or "source_id" in data):
        if "source" in data:
            raise ValueError("give `source` or `source_type`/`source_id`, not both")
        data = dict(data)
        data["source"] = {k: data.pop(k) for k in ("source_type", "source_id") if k in data}
    return data


class FeedbackErrorBody(BaseModel):
    """Why a feedback has no value (MLflow's `AssessmentError`)."""

    model_config = _STRICT

    error_code: Name
    error_message: Text | None = None
    stack_trace: Text | None = None


class FeedbackBody(BaseModel):
    """`POST /v1/feedback`: one vote on a trace, as `mlflow.log_feedback` names the fields.

    `source` may also be given MLflow-style as top-level `source_type` and `source_id`.
    `value` or `error` is required (MLflow's rule); `span_id` ties it to one span.
    """

    model_config = _STRICT

    trace_id: TraceId
    name: Name = "user_satisfaction"
    # `error` first: the check on `value` reads it.
    error: FeedbackErrorBody | None = None
    value: FeedbackValue | None = Field(None, validate_default=True)
    rationale: Text | None = None
    source: FeedbackSource = Field(default_factory=FeedbackSource)
    metadata: Metadata | None = None
    span_id: Id | None = None

    @model_validator(mode="before")
    @classmethod
    def _flat_source(cls, data: Any) -> Any:
        return _lift_source(data)

    @field_validator("value")
    @classmethod
    def _value_or_error(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.data.get("error") is None:
            raise ValueError("required, unless an `error` says why there is none")
        return value


class ExpectationBody(BaseModel):
    """`POST /v1/expectations`: ground truth for a trace (`mlflow.log_expectation`)."""

    model_config = _STRICT

    trace_id: TraceId
    name: Name
    value: AnyValue
    source: FeedbackSource = Field(default_factory=FeedbackSource)
    metadata: Metadata | None = None
    span_id: Id | None = None

    @model_validator(mode="before")
    @classmethod
    def _flat_source(cls, data: Any) -> Any:
        return _lift_source(data)


class TokenRequest(BaseModel):
    """`POST /v1/feedback-tokens`: what the token allows (see `stream.sdk._tokens`)."""

    model_config = _STRICT

    trace_id: TraceId
    names: Annotated[list[Name], Field(min_length=1, max_length=32)] = ["user_satisfaction"]
    values: Annotated[list[Scalar], Field(min_length=1, max_length=32)] | None = None
    user_id: Id | None = None
    ttl_s: Annotated[int, Field(strict=True, ge=1, le=MAX_TOKEN_TTL)] = 3600


class TokenResponse(BaseModel):
    """A minted token and when it expires (Unix seconds)."""

    token: str
    expires_at: int


class Accepted(BaseModel):
    """202: the event is in Kafka (acknowledged by all in-sync replicas)."""

    event_id: str
    trace_id: str


class TraceAccepted(BaseModel):
    """202: the trace is in Kafka, on its way to the workers."""

    trace_id: str


class TraceResults(BaseModel):
    """`GET /v1/traces/{trace_id}`: what the serving store holds for a trace, joined.

    The latest assessment per name, the feedback and expectations the worker joined in
    (shapes as `RedisSink.get_trace` returns them); fields the store adds later pass through.
    """

    model_config = ConfigDict(extra="allow")

    trace_id: str
    experiment_id: str | None
    assessments: dict[str, Any]
    feedback: dict[str, Any]
    expectations: dict[str, Any] = Field(default_factory=dict)


class ScorerInfo(BaseModel):
    """A scorer: name and experiment always; the registry's fields when it is the source."""

    model_config = ConfigDict(extra="allow")

    name: str
    experiment_id: str


class ScorerList(BaseModel):
    """`GET /v1/scorers`."""

    scorers: list[ScorerInfo]


class Summary(BaseModel):
    """`GET /v1/scorers/{name}/summary`: counts over a window of whole minutes.

    `pass_rate` is over pass and fail results, `mean` over numeric ones (booleans as 1/0),
    `error_rate` over everything counted; each is null when there is nothing to divide.
    """

    scorer: str
    experiment_id: str
    window: str
    start_ms: int
    end_ms: int
    count: int
    pass_: int = Field(alias="pass", serialization_alias="pass")
    fail: int
    error: int
    value: int
    sum: float
    pass_rate: float | None
    mean: float | None
    error_rate: float | None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class Health(BaseModel):
    """`/healthz` and `/readyz`."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


_WINDOW = re.compile(r"([1-9][0-9]{0,5})([mhd])")
_WINDOW_MINUTES: Final = {"m": 1, "h": 60, "d": 1440}
MAX_WINDOW_MINUTES: Final = 30 * 1440
WINDOW_PATTERN: Final = "^" + _WINDOW.pattern + "$"


def window_minutes(text: str) -> int:
    """Minutes in a summary window: `5m`, `1h`, `7d`; at most 30 days.

    Raises:
        ValueError: Not of that form, or longer than 30 days.
    """
    match = _WINDOW.fullmatch(text)
    if match is None:
        raise ValueError("window must be a whole number of minutes, hours or days, such as 5m, 1h or 7d")
    minutes = int(match.group(1)) * _WINDOW_MINUTES[match.group(2)]
    if minutes > MAX_WINDOW_MINUTES:
        raise ValueError("window must be at most 30d")
    return minutes


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ApiOptions(BaseSettings):
    """Knobs of the HTTP API only, from `TRACEWATCH_API_*` env vars (or passed to `create_app`).

    Rates are requests per second per client; 0 turns a limit off. Clients holding an API
    key are app backends and get the larger `key_rate_limit`; browsers (feedback tokens) and
    unauthenticated callers (keyed by IP) get `rate_limit`.
    """

    model_config = SettingsConfigDict(env_prefix="TRACEWATCH_API_", extra="ignore")

    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024, description="feedback, expectations, tokens")
    max_trace_body_bytes: int | None = Field(None, ge=1024, description="POST /v1/traces; default max_trace_bytes")
    rate_limit: float = Field(10.0, ge=0)
    rate_burst: int = Field(20, ge=1)
    key_rate_limit: float = Field(2000.0, ge=0)
    key_rate_burst: int = Field(4000, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    publish_timeout: float = Field(10.0, gt=0, description="seconds to wait for Kafka's ack")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value)
