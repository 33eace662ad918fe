"""The publisher's few settings, read from the same `TRACEWATCH_*` variables as `stream.Settings`.

An app that only publishes should not pay for pydantic-settings (about 120 ms of import), so
the SDK reads its four knobs itself: the same names, the same defaults and the same checks as
`stream.Settings` (a test keeps the two in step). A bad value raises `ConfigError` naming the
variable, as `Settings` would.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from stream._exceptions import ConfigError

__all__ = ["COMPRESSIONS", "PublisherConfig"]

COMPRESSIONS: Final = frozenset({"none", "gzip", "lz4", "zstd", "snappy"})
_MIN_TRACE_BYTES: Final = 1024


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    """Where and how the SDK publishes; `stream.Settings` has the same fields and defaults.

    Example:
        >>> PublisherConfig(kafka_bootstrap="kafka:9092").traces_topic
        'tracewatch.traces'
    """

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "tracewatch."
    compression: str = "lz4"
    max_trace_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"TRACEWATCH_COMPRESSION={self.compression!r}: expected one of {', '.join(sorted(COMPRESSIONS))}"
            )
        if isinstance(self.max_trace_bytes, bool) or not isinstance(self.max_trace_bytes, int):
            raise ConfigError(f"TRACEWATCH_MAX_TRACE_BYTES={self.max_trace_bytes!r}: expected an integer")
        if self.max_trace_bytes < _MIN_TRACE_BYTES:
            raise ConfigError(
                f"TRACEWATCH_MAX_TRACE_BYTES={self.max_trace_bytes}: must be at least {_MIN_TRACE_BYTES}"
            )

    @property
    def traces_topic(self) -> str:
        return f"{self.topic_prefix}traces"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PublisherConfig:
        """Read `TRACEWATCH_KAFKA_BOOTSTRAP`, `_TOPIC_PREFIX`, `_COMPRESSION`, `_MAX_TRACE_BYTES`.

        Names match in any case, as pydantic-settings matches them.

        Raises:
            ConfigError: A variable holds a value `stream.Settings` would refuse.
        """
        env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
        kwargs: dict[str, Any] = {}
        for field in ("kafka_bootstrap", "topic_prefix", "compression"):
            value = env.get(f"TRACEWATCH_{field.upper()}")
            if value is not None:
                kwargs[field] = value
        raw = env.get("TRACEWATCH_MAX_TRACE_BYTES")
        if raw is not None:
            try:
                kwargs["max_trace_bytes"] = int(raw.strip())
            except ValueError:
                raise ConfigError(f"TRACEWATCH_MAX_TRACE_BYTES={raw!r}: expected an integer") from None
        return cls(**kwargs)

    @classmethod
    def of(cls, settings: Any) -> PublisherConfig:
        """The publisher's part of a `stream.Settings` (or of anything with the same attributes)."""
        if isinstance(settings, PublisherConfig):
            return settings
        return cls(
            kafka_bootstrap=settings.kafka_bootstrap,
            topic_prefix=settings.topic_prefix,
            compression=settings.compression,
            max_trace_bytes=settings.max_trace_bytes,
        )
