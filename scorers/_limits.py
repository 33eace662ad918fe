"""Bounds on what a trace or event may carry, in one place (the decoder and the API share them).

Every id and name that reaches a sink becomes part of a Redis key that may never expire, or a
Prometheus label whose series lives as long as the process. Without a bound, one 7 KB lz4
message with a 1 MB experiment id grew Redis by 12.6 MB, so every such string is capped where
it enters: at decode time (DLQ reason `bad_id`) and in the API's models (422 naming the field).

    MAX_ID_CHARS    256  trace, experiment, session, user/source and event ids
    MAX_NAME_CHARS  128  scorer, assessment, feedback and expectation names (the registry's
                         limit for scorer names, so a name the registry accepts always fits)

Times are bounded so that arithmetic on them stays exact and serialisable: a millisecond value
fits 53 bits (a double, as Lua in Redis and JavaScript dashboards read it, holds it exactly, and
a time plus a duration still fits 64 bits, so JSON can always write it); span nanoseconds fit a
signed 64-bit integer, as OpenTelemetry SDKs hold them (until year 2262).
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_DURATION_MS", "MAX_ID_CHARS", "MAX_NAME_CHARS", "MAX_TIME_MS", "MAX_TIME_NS"]

MAX_ID_CHARS: Final = 256
MAX_NAME_CHARS: Final = 128
MAX_TIME_MS: Final = 2**53 - 1
MAX_DURATION_MS: Final = 2**53 - 1
MAX_TIME_NS: Final = 2**63 - 1
