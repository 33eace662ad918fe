"""Configuration: one pydantic-settings model, read from `TRACEWATCH_*` env vars and CLI flags.

Bad values fail at startup with pydantic's message naming the variable, never at run time.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "Topics"]


def _split(value: Any) -> Any:
    """Comma-separated env values become lists (`a,b` -> ["a", "b"]); lists pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Topics:
    """The four topic names of DESIGN.md under one prefix."""

    __slots__ = ("assessments", "dlq", "feedback", "traces")

    def __init__(self, prefix: str = "tracewatch.") -> None:
        self.traces = f"{prefix}traces"
        self.feedback = f"{prefix}feedback"
        self.assessments = f"{prefix}assessments"
        self.dlq = f"{prefix}dlq"

    def all(self) -> list[str]:
        return [self.traces, self.feedback, self.assessments, self.dlq]


class Settings(BaseSettings):
    """Every knob of tracewatch; env names are `TRACEWATCH_<FIELD>` in upper case."""

    model_config = SettingsConfigDict(env_prefix="TRACEWATCH_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "tracewatch."
    partitions: int = Field(4, ge=1, description="partitions of the traces and feedback topics")
    consumer_group: str = "tracewatch-worker"
    compression: str = Field("lz4", pattern="^(none|gzip|lz4|zstd|snappy)$")
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

    judge_base_url: str = "https://api.openai.com/v1"
    judge_api_key: str | None = None
    judge_max_in_flight: int = Field(32, ge=1)
    judge_timeout_s: float = Field(30.0, gt=0)

    registry_poll_interval_s: float = Field(2.0, gt=0, description="registry change poll (pub/sub is instant)")

    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    feedback_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    scorer_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Loopback by default, like the API: /metrics exemplars carry trace ids. Containers set
    # 0.0.0.0 so Prometheus can reach them (docker-compose.yml).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0, le=65535)
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

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)
