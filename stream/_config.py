"""Configuration: one pydantic-settings model, read from `TRACEWATCH_*` env vars and CLI flags.

Flags and variables go through the same validation: a command builds its settings with
`load_settings(flags=..., uses=...)`, which constructs `Settings` (never `model_copy`), so a
bad value stops the command at startup with one line naming the flag or the variable
(`TRACEWATCH_PARTITIONS=0: must be >= 1`), never at run time. A command is not stopped by a
bad value of a setting it does not use. Each knob has its default here and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from stream._exceptions import ConfigError

__all__ = ["Settings", "Topics", "config_error", "load_settings"]

# Fields whose values never appear in an error message.
_SECRETS = frozenset({"judge_api_key", "judge_anthropic_api_key", "api_keys", "feedback_secrets"})


def _split(value: Any) -> Any:
    """Comma-separated env values become lists (`a,b` -> ["a", "b"]); lists pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Topics:
    """The topic names of DESIGN.md under one prefix."""

    __slots__ = ("assessments", "dlq", "feedback", "spans", "traces")

    def __init__(self, prefix: str = "tracewatch.") -> None:
        self.traces = f"{prefix}traces"
        self.feedback = f"{prefix}feedback"
        self.assessments = f"{prefix}assessments"
        self.dlq = f"{prefix}dlq"
        self.spans = f"{prefix}spans"  # OTLP spans before assembly (stream/assembler)

    def all(self) -> list[str]:
        return [self.traces, self.feedback, self.assessments, self.dlq, self.spans]


class Settings(BaseSettings):
    """Every knob of tracewatch; env names are `TRACEWATCH_<FIELD>` in upper case."""

    model_config = SettingsConfigDict(env_prefix="TRACEWATCH_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "tracewatch."
    partitions: int = Field(4, ge=1, description="partitions of the traces and feedback topics")
    consumer_group: str = "tracewatch-worker"
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "lz4"
    max_trace_bytes: int = Field(1024 * 1024, ge=1024)
    # Group membership (aiokafka's defaults): a worker silent for `consumer_session_timeout`
    # (paused, stuck) loses its partitions to the others; tests lower them to see it quickly.
    consumer_session_timeout: float = Field(10.0, gt=0, description="seconds without heartbeats before a rebalance")
    consumer_heartbeat_interval: float = Field(3.0, gt=0, description="seconds between heartbeats")
    consumer_max_poll_interval: float = Field(300.0, gt=0, description="seconds between polls before a rebalance")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "tw:"
    trace_ttl_s: float = Field(7 * 86400, gt=0)
    aggregate_ttl_s: float = Field(30 * 86400, gt=0)

    # The judge client (`scorers.JudgeClient`, built with `judge_client_options()`) of the
    # worker and of `evaluate`; scorers never reads these variables for us.
    judge_base_url: str = "https://api.openai.com/v1"
    judge_api_key: str | None = None
    # `anthropic:/<model>` judges: the Messages API's base URL and key (sent only there).
    judge_anthropic_base_url: str = "https://api.anthropic.com/v1"
    judge_anthropic_api_key: str | None = None
    judge_max_in_flight: int = Field(32, ge=1, description="judge calls in flight per worker (and per model)")
    judge_timeout: float = Field(30.0, gt=0, description="seconds one judge HTTP attempt may take")
    judge_max_retries: int = Field(4, ge=0, description="retries on 429, 5xx, timeouts, connection errors")
    judge_rpm: float | None = Field(None, gt=0, description="judge requests per minute (unset: unlimited)")
    judge_tpm: float | None = Field(None, gt=0, description="judge tokens per minute (unset: unlimited)")
    judge_prices: Annotated[dict[str, float | tuple[float, float]], NoDecode] = Field(
        default_factory=dict, description='USD per 1k tokens by model, JSON: {"gpt-4.1-mini": [0.0004, 0.0016]}'
    )

    # The OTLP span assembler (stream/assembler): a trace is emitted `assembler_quiet_interval`
    # (event time) after its last span once its root ended and no parent is missing; one still
    # open `assembler_max_age_timeout` after its first span is emitted marked incomplete.
    assembler_group: str = "tracewatch-assembler"
    assembler_quiet_interval: float = Field(2.0, ge=0, description="seconds of quiet after a trace's last span")
    assembler_max_age_timeout: float = Field(
        60.0, gt=0, description="seconds before an open trace is emitted incomplete"
    )
    assembler_max_open_traces: int = Field(
        50_000, ge=1, description="open traces per partition before the oldest is emitted"
    )
    assembler_max_spans_per_trace: int = Field(10_000, ge=1, description="spans of one trace before it is emitted")
    assembler_metrics_port: int = Field(9110, ge=-1, le=65535, description="the assembler's /metrics (-1: off)")

    # The OTLP receiver (`tracewatch otlp`, stream/otlp): the Collector's default ports on
    # loopback; each export becomes one message per trace id on <prefix>spans, acked by Kafka
    # before the exporter is answered.
    otlp_host: str = "127.0.0.1"
    otlp_grpc_port: int = Field(4317, ge=-1, le=65535, description="OTLP/gRPC port; 0 picks a free one, -1 disables")
    otlp_http_port: int = Field(4318, ge=-1, le=65535, description="OTLP/HTTP port; 0 picks a free one, -1 disables")
    otlp_max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest export, also once decompressed")
    otlp_max_span_bytes: int = Field(512 * 1024, ge=1024, description="largest span; bigger ones are rejected")
    otlp_max_in_flight: int = Field(64, ge=1, description="exports handled at once; more get 429/RESOURCE_EXHAUSTED")
    otlp_ack_timeout: float = Field(10.0, gt=0, description="seconds to wait for Kafka's ack before answering 503")
    otlp_default_experiment: str = Field("0", min_length=1, description="experiment if none is named")
    otlp_metrics_port: int = Field(9111, ge=-1, le=65535, description="the receiver's /metrics (-1: off)")

    registry_poll_interval_s: float = Field(2.0, gt=0, description="registry change poll (pub/sub is instant)")

    # The MLflow tracking-server sink (`tracewatch sink mlflow`); the server itself is named by
    # MLflow's own variables (MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN, ...).
    mlflow_sink_group: str = "tracewatch-mlflow-sink"
    mlflow_sink_max_in_flight: int = Field(32, ge=1, description="results written to MLflow at once")
    mlflow_sink_rate_limit: float = Field(0.0, ge=0, description="MLflow requests per second; 0 = no limit")
    mlflow_sink_metrics_port: int = Field(9120, ge=-1, le=65535, description="sink /metrics; -1 disables")
    # MLflow's client exports traces asynchronously, so a result can reach the sink before its
    # trace reaches MLflow: a 404 is looked up again until this long after the result was made.
    mlflow_sink_trace_wait_timeout: float = Field(
        10.0, ge=0, description="seconds after a result's creation a trace MLflow lacks is looked for again"
    )

    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    feedback_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    scorer_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Loopback by default, like the API: /metrics exemplars carry trace ids. Containers set
    # 0.0.0.0 so Prometheus can reach them (docker-compose.yml).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=-1, le=65535, description="worker /metrics; 0 picks a free port, -1 disables")
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535)
    # Slow clients (slowloris): a connection has this long to send each request's headers,
    # and a request this long to send its body (else 408), so a few of them cannot hold the
    # server's connections.
    api_header_timeout: float = Field(10.0, gt=0, description="seconds to receive a request's headers")
    api_body_timeout: float = Field(30.0, gt=0, description="seconds to receive a request's body")

    @field_validator("api_keys", "feedback_secrets", "scorer_modules", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("judge_prices", mode="before")
    @classmethod
    def _json_prices(cls, value: Any) -> Any:
        if isinstance(value, (str, bytes)):
            if not value.strip():
                return {}
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ValueError('must be a JSON object, e.g. {"gpt-4.1-mini": [0.0004, 0.0016]}') from None
        return value

    @field_validator("judge_prices")
    @classmethod
    def _non_negative_prices(cls, value: dict[str, float | tuple[float, float]]) -> Any:
        for model, price in value.items():
            if min(price if isinstance(price, tuple) else (price,)) < 0:
                raise ValueError(f"the price of {model} must be >= 0")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL, e.g. redis://127.0.0.1:6379/0")
        if parts.scheme != "unix":
            try:
                parts.port  # noqa: B018 - raises on a bad port
            except ValueError:
                raise ValueError("has a bad port") from None
            if not parts.hostname:
                raise ValueError("names no host, e.g. redis://127.0.0.1:6379/0")
            db = parts.path.strip("/")
            if db and not db.isdigit():
                raise ValueError(f"database must be a number, got {db!r}")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",")]
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not server or (sep and (not host or not port.isdigit() or not 0 < int(port) < 65536)):
                raise ValueError(f"must be host:port[,host:port...], got {server!r}")
        return ",".join(servers)

    @field_validator("judge_base_url", "judge_anthropic_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL, e.g. https://api.openai.com/v1")
        return value

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def judge_client_options(self) -> dict[str, Any]:
        """Keyword arguments for `scorers.JudgeClient`: the one place judge settings become a client.

        The worker and `tracewatch evaluate` build their client from these (scorers imports
        nothing of ours, so the values are passed in).
        """
        return {
            "base_url": self.judge_base_url,
            "api_key": self.judge_api_key,
            "anthropic_base_url": self.judge_anthropic_base_url,
            "anthropic_api_key": self.judge_anthropic_api_key,
            "max_in_flight": self.judge_max_in_flight,
            "rpm": self.judge_rpm,
            "tpm": self.judge_tpm,
            "timeout": self.judge_timeout,
            "max_retries": self.judge_max_retries,
            "prices": dict(self.judge_prices),
        }


def load_settings(
    *,
    flags: Mapping[str, tuple[str, object]] | None = None,
    uses: Collection[str] | None = None,
) -> Settings:
    """Settings from `TRACEWATCH_*` variables and command-line flags, validated together.

    Args:
        flags: field -> (flag as typed, value); a value of None means the flag was not given.
            Given flags win over variables and are validated as the variables are.
        uses: the fields the caller needs (None: all). A bad variable of any other field does
            not stop the caller: that field keeps its default, which the caller never reads.

    Raises:
        ConfigError: a bad value of a used field; one line per value, naming the flag or
            variable (`TRACEWATCH_PARTITIONS=0: must be >= 1`).
    """
    flags = flags or {}
    given: dict[str, Any] = {field: value for field, (_, value) in flags.items() if value is not None}
    flag_names = {field: name for field, (name, value) in flags.items() if value is not None}
    fallback: dict[str, Any] = {}
    while True:
        try:
            return Settings(**given, **fallback)
        except ValidationError as exc:
            errors = exc.errors()
            bad = {str(err["loc"][0]) for err in errors if err["loc"]}
            unused = set() if uses is None else bad - set(uses) - set(given) - set(fallback)
            if not unused or bad - unused:
                shown = [err for err in errors if not err["loc"] or str(err["loc"][0]) not in unused]
                raise config_error(shown, Settings, flags=flag_names) from None
            for field in unused:
                fallback[field] = Settings.model_fields[field].get_default(call_default_factory=True)


def config_error(
    errors: ValidationError | Collection[Any], model: type[BaseSettings], *, flags: Mapping[str, str] | None = None
) -> ConfigError:
    """A `ConfigError` with one line per bad value, naming the flag (when given) or the variable.

    Works for any settings model with an `env_prefix` (`Settings`, the API's `ApiOptions`).
    Secret values (keys, tokens) are never echoed.
    """
    flags = flags or {}
    prefix = str(model.model_config.get("env_prefix") or "")
    lines = []
    for err in errors.errors() if isinstance(errors, ValidationError) else errors:
        field = str(err["loc"][0]) if err["loc"] else ""
        if field in flags:
            where, sep = flags[field], " "
        else:
            where, sep = f"{prefix}{field}".upper(), "="
        raw = err.get("input")
        if field not in flags and where in os.environ:
            raw = os.environ[where]
        shown = "<hidden>" if field in _SECRETS else _show(raw)
        lines.append(f"{where}{sep}{shown}: {_reason(err)}")
    return ConfigError("\n".join(dict.fromkeys(lines)))


def _show(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return orjson.dumps(value, default=str).decode()
    return str(value)


_REASONS = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "literal_error": "must be {expected}",
    "string_pattern_mismatch": "must match {pattern}",
}


def _reason(err: Any) -> str:
    # Bounds as written (`>= 0`, not `>= 0.0`).
    ctx = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in (err.get("ctx") or {}).items()}
    template = _REASONS.get(err["type"])
    if template is not None:
        try:
            return template.format(**ctx)
        except KeyError:
            pass
    if err["type"] == "value_error" and "error" in ctx:
        return str(ctx["error"])
    msg = str(err.get("msg", "invalid"))
    return msg[:1].lower() + msg[1:]
