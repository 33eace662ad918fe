"""`MlflowSink`: write one result to MLflow exactly once, retrying until MLflow takes it.

The dedupe rule (see `_guard.py`): claim the result's guard in Redis; a guard holding an
assessment id means done. Without one, write; if an earlier attempt may have landed (the
guard said `pending`, or our own call failed without an answer), first read the trace's
assessments and accept one with the same name, source id and `tracewatch.result_id`
metadata as ours. The guard gets MLflow's id only after MLflow acknowledged.

Votes and expectations always read the trace first (they are few): the user's current
valid assessment of the same name is what the new one `overrides` (MLflow then marks it
invalid, as `mlflow.override_feedback` does); if it is newer than ours, ours is stale
(`superseded`) and is not written.

A 404 on the trace is not final at once: MLflow's client exports traces asynchronously, so
a fresh result can arrive before its trace. Until `trace_wait_timeout` after the result was
created the write is tried again every `trace_poll_interval` (a result replayed from an old
backlog looks once); only then is it skipped (`trace_not_in_mlflow`) or the trace uploaded.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from scorers import Assessment
from sinks._exceptions import SinkUnavailableError
from sinks.mlflow._guard import PENDING, MlflowGuard
from sinks.mlflow._metrics import SinkMetrics
from sinks.mlflow._otlp import experiment_of, trace_to_otlp_json
from sinks.mlflow._payload import (
    CREATED_MS_KEY,
    RESULT_ID_KEY,
    UserEvent,
    event_payload,
    result_id,
    score_payload,
    source_id_of,
)
from sinks.mlflow._rest import MlflowRest, MlflowUnavailableError, TraceNotInMlflowError

__all__ = ["MlflowSink", "SinkOutcome", "TraceLoader"]

TraceLoader = Callable[[str], Awaitable[dict[str, Any] | None]]
"""Returns the stored MLflow trace JSON (decoded) of a trace id, or None when not stored."""


@dataclass(slots=True, frozen=True)
class SinkOutcome:
    """What became of one result: `written`, `duplicate` or `skipped` (with a reason)."""

    state: Literal["written", "duplicate", "skipped"]
    reason: str = ""
    assessment_id: str = ""


class MlflowSink:
    """Writes scorer results, votes and expectations to an MLflow tracking server.

    Args:
        rest: The REST client (owned by the caller).
        guard: The Redis write guards (owned by the caller).
        metrics: Counters to update.
        load_trace: With `--upload-traces`: reads a trace MLflow lacks, to upload it first.
        backoff_base: First retry delay in seconds (doubles, with jitter, up to `backoff_cap`).
        backoff_cap: Longest delay between retries when the server gives no `Retry-After`.
        trace_wait_timeout: Seconds after a result's creation during which a trace MLflow
            does not have is looked for again before the result is skipped (or the trace uploaded).
        trace_poll_interval: Seconds between those looks.

    `write_*` retry unavailable MLflow or Redis until they answer or `close()` is called.

    Raises (from `write_*`):
        MlflowRejectedError: MLflow refused the result (a 4xx): dead-letter it.
        SinkUnavailableError: Only after `close()`: the result was not written.
    """

    def __init__(
        self,
        rest: MlflowRest,
        guard: MlflowGuard,
        metrics: SinkMetrics,
        *,
        load_trace: TraceLoader | None = None,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        trace_wait_timeout: float = 10.0,
        trace_poll_interval: float = 0.5,
    ) -> None:
        self._rest = rest
        self._guard = guard
        self._m = metrics
        self._load_trace = load_trace
        self._base = backoff_base
        self._cap = backoff_cap
        self._trace_wait = trace_wait_timeout
        self._trace_poll = trace_poll_interval
        self._closing = asyncio.Event()

    def close(self) -> None:
        """Stop waiting: pending retries raise instead of sleeping again."""
        self._closing.set()

    async def _pause(self, exc: SinkUnavailableError, attempt: int) -> None:
        if isinstance(exc, MlflowUnavailableError):
            reason = "http_429" if exc.status == 429 else "http_5xx" if exc.status else "transport"
            wait = exc.retry_after
        else:
            reason, wait = "redis", None
        self._m.retries.labels(reason).inc()
        if wait is None:
            wait = min(self._cap, self._base * 2 ** min(attempt, 10)) * (0.5 + random.random() / 2)
        if self._closing.is_set():
            raise exc
        try:
            await asyncio.wait_for(self._closing.wait(), timeout=wait)
        except TimeoutError:
            return
        raise exc

    async def _trace_may_come(self, created_ms: int, uploaded: bool) -> bool:
        """After a 404: wait a little and return True while the trace may still reach MLflow.

        Raises:
            SinkUnavailableError: `close()` was called while waiting (the result is redelivered).
        """
        left = created_ms / 1000 + self._trace_wait - time.time()
        if uploaded or left <= 0:
            return False
        self._m.retries.labels("trace_not_in_mlflow").inc()
        try:
            await asyncio.wait_for(self._closing.wait(), timeout=min(left, self._trace_poll))
        except TimeoutError:
            return True
        raise SinkUnavailableError("closing while waiting for a trace to reach MLflow", sink="mlflow", operation="wait")

    async def _upload(self, trace_id: str) -> bool:
        """Upload a trace MLflow lacks; False when tracewatch did not keep it either."""
        if self._load_trace is None:
            return False
        trace = await self._load_trace(trace_id)
        if trace is None:
            return False
        try:
            body = trace_to_otlp_json(trace)
        except ValueError:
            return False
        await self._rest.upload_otlp(experiment_of(trace), body)
        return True

    async def _missing(self, trace_id: str, uploaded: bool) -> SinkOutcome | None:
        """A 404 on the trace: skip it, or upload it (None: try the write again)."""
        if self._load_trace is None:
            self._m.skipped.labels("trace_not_in_mlflow").inc()
            return SinkOutcome("skipped", "trace_not_in_mlflow")
        if uploaded or not await self._upload(trace_id):
            self._m.skipped.labels("trace_not_stored").inc()
            return SinkOutcome("skipped", "trace_not_stored")
        return None

    async def write_score(self, a: Assessment) -> SinkOutcome:
        """Write one scorer result as a `Feedback` (skipped pairs have no assessment to write)."""
        if a.state == "skipped":
            self._m.skipped.labels("not_scored").inc()
            return SinkOutcome("skipped", "not_scored")
        rid = result_id(a)
        body = score_payload(a, rid)
        source = source_id_of(a)
        attempt, uploaded, check = 0, False, False
        while True:
            try:
                if attempt == 0:
                    prev = await self._guard.claim(rid)
                    if prev is not None and prev != PENDING:
                        self._m.duplicates.labels("score").inc()
                        return SinkOutcome("duplicate", assessment_id=prev)
                    check = prev == PENDING
                if check:
                    found = await self._rest.trace_assessments(a.trace_id)
                    if found is None:
                        raise TraceNotInMlflowError(a.trace_id, operation="get_trace_info")
                    mine = _ours(found, a.name, source, rid)
                    if mine is not None:
                        await self._guard.done(rid, mine)
                        self._m.duplicates.labels("score").inc()
                        return SinkOutcome("duplicate", assessment_id=mine)
                    check = False
                aid = await self._rest.create_assessment(a.trace_id, body)
                await self._guard.done(rid, aid)
                self._m.written.labels("score").inc()
                return SinkOutcome("written", assessment_id=aid)
            except TraceNotInMlflowError:
                if await self._trace_may_come(a.created_ms, uploaded):
                    attempt += 1
                    continue
                outcome = await self._missing(a.trace_id, uploaded)
                if outcome is not None:
                    return outcome
                uploaded = True
            except SinkUnavailableError as exc:
                # The create may have landed before the answer was lost: look before writing.
                check = True
                await self._pause(exc, attempt)
            attempt += 1

    async def write_event(self, e: UserEvent) -> SinkOutcome:
        """Write a vote (overriding the user's earlier one) or an expectation."""
        kind = "expectation" if e.kind == "expectation" else "vote"
        attempt, uploaded = 0, False
        while True:
            try:
                if attempt == 0:
                    prev = await self._guard.claim(e.event_id)
                    if prev is not None and prev != PENDING:
                        self._m.duplicates.labels(kind).inc()
                        return SinkOutcome("duplicate", assessment_id=prev)
                found = await self._rest.trace_assessments(e.trace_id)
                if found is None:
                    raise TraceNotInMlflowError(e.trace_id, operation="get_trace_info")
                mine = _ours(found, e.name, e.source_id, e.event_id)
                if mine is not None:
                    await self._guard.done(e.event_id, mine)
                    self._m.duplicates.labels(kind).inc()
                    return SinkOutcome("duplicate", assessment_id=mine)
                current = _current(found, e.name, e.source_id, kind, e.span_id)
                if current is not None and current[1] > e.created_ms:
                    self._m.skipped.labels("superseded").inc()
                    return SinkOutcome("skipped", "superseded")
                aid = await self._rest.create_assessment(
                    e.trace_id, event_payload(e, overrides=current[0] if current else None)
                )
                await self._guard.done(e.event_id, aid)
                self._m.written.labels(kind).inc()
                return SinkOutcome("written", assessment_id=aid)
            except TraceNotInMlflowError:
                if await self._trace_may_come(e.created_ms, uploaded):
                    attempt += 1
                    continue
                outcome = await self._missing(e.trace_id, uploaded)
                if outcome is not None:
                    return outcome
                uploaded = True
            except SinkUnavailableError as exc:
                await self._pause(exc, attempt)
            attempt += 1


def _ours(found: list[dict[str, Any]], name: str, source_id: str, rid: str) -> str | None:
    """The id of an assessment an earlier attempt wrote for this result, if any."""
    for a in found:
        if (
            a.get("assessment_name") == name
            and (a.get("source") or {}).get("source_id") == source_id
            and (a.get("metadata") or {}).get(RESULT_ID_KEY) == rid
        ):
            return str(a.get("assessment_id", ""))
    return None


def _current(
    found: list[dict[str, Any]], name: str, source_id: str, kind: str, span_id: str | None = None
) -> tuple[str, int] | None:
    """The user's valid assessment of this name on the same span (or the whole trace): the one a new vote overrides."""
    field = "expectation" if kind == "expectation" else "feedback"
    best: tuple[str, int] | None = None
    for a in found:
        if (
            a.get("assessment_name") != name
            or (a.get("source") or {}).get("source_id") != source_id
            or field not in a
            or (a.get("span_id") or None) != (span_id or None)
            or a.get("valid") is False
        ):
            continue
        try:
            created = int((a.get("metadata") or {}).get(CREATED_MS_KEY, 0))
        except (TypeError, ValueError):
            created = 0
        if best is None or created >= best[1]:
            best = (str(a.get("assessment_id", "")), created)
    return best
