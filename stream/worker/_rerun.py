"""The worker's side of the feedback join: feedback-topic messages and ground-truth re-runs.

Votes and verdicts meet in Redis (see `sinks._join`); here a feedback message becomes a
`FeedbackRecord` for the sink, and an expectation message re-runs, on the stored copy of the
trace, the scorers that declare `expectations` and sample that trace.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import cramjam
import orjson

from scorers import DecodeError, decode_trace
from sinks import FeedbackRecord, RedisSink
from stream._events import FeedbackEvent, thumb_of
from stream.registry._scorer_set import ActiveScorer
from stream.worker._checkpoint import Entry
from stream.worker._scoring import Scoring

__all__ = ["compress_trace", "needs_raw", "rerun_with_expectations", "to_record"]

log = logging.getLogger("tracewatch.worker")


def to_record(event: FeedbackEvent) -> FeedbackRecord:
    """The sink's form of an event, names and user ids unchanged.

    They are not cleaned here: the sink encodes every part it puts in a key or packed value
    (`sinks._keys`), and replacing characters instead would make two users, or two names,
    one.
    """
    thumb = thumb_of(event.value) if event.kind == "feedback" else None
    return FeedbackRecord(
        trace_id=event.trace_id,
        name=event.name,
        user=event.source_id,
        thumb=thumb or "",
        payload=event.to_json(),
        event_id=event.event_id,
        kind=event.kind,
    )


def needs_raw(active: tuple[ActiveScorer, ...]) -> bool:
    """Whether any active scorer reads expectations (then sampled traces are kept for re-runs)."""
    return any("expectations" in getattr(a.scorer, "params", ()) for a in active)


def compress_trace(data: bytes) -> bytes:
    return bytes(cramjam.lz4.compress_block(data))


async def rerun_with_expectations(
    event: FeedbackEvent,
    sink: RedisSink,
    active: tuple[ActiveScorer, ...],
    scoring: Scoring,
    entry: Entry,
) -> None:
    """Score the stored trace again with its ground truth, for scorers that need it.

    The scorers go through the same path as on the trace's first pass (`Scoring.score`:
    sampling, the guarded filter, the budget), their pairs going to `entry`, the
    expectation message's entry; judges are started as tasks counted in `entry.pending`.
    The run id is a hash of the expectations, so a redelivered expectation re-runs into the
    same guard in Redis and counts nothing twice; new ground truth is a new run.
    Adds no pairs when the trace was never sampled by such a scorer (nothing stored).

    Raises:
        SinkUnavailableError: Redis did not answer (the caller keeps the message uncommitted).
    """
    wanting = tuple(a for a in active if "expectations" in getattr(a.scorer, "params", ()))
    if not wanting:
        return
    raw = await sink.trace_raw(event.trace_id)
    if raw is None:
        log.info("expectation for %s: trace not stored (not sampled or expired)", event.trace_id)
        return
    try:
        trace = decode_trace(bytes(cramjam.lz4.decompress_block(raw)), max_bytes=1 << 62)
    except DecodeError:
        log.warning("stored trace %s does not decode; expectation not applied", event.trace_id)
        return
    doc = await sink.get_trace(event.trace_id) or {}
    expectations: dict[str, Any] = dict(doc.get("expectations") or {})
    expectations[event.name] = event.value
    run_id = "e" + hashlib.sha1(orjson.dumps(expectations, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
    await scoring.score(trace, entry, wanting, expectations, run_id)
