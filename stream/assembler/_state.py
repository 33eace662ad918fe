"""Assembly state of one spans partition: when a trace is done, and how far offsets may be committed.

Pure: no clients, no wall clock. Time is **event time**, the spans messages' Kafka timestamps
(set by the receiver when it produced them), so the decisions are a function of the message
sequence and a replay after a crash decides the same way. Only when a partition is caught up
(nothing more to read) does the runner advance time with the wall clock, else a quiet
partition would never finish its last traces.

A trace (all spans of one OTLP trace id; the topic is keyed by it, so one partition sees all)

* is **complete** when its root span has ended and every span named as a parent is present,
  and `quiet` has passed (event time) since its last span message: emitted as is;
* is emitted **incomplete** (`reason`: `max_age`) when still not complete `max_age` after its
  first span message; or `span_cap` when it reaches `max_spans`; or `open_cap` (the oldest
  open trace) when a new trace would exceed `max_open`. Never dropped.

A **late span** (its trace was already emitted, known from a bounded memory of recent trace
ids) is not assembled: the message goes to the DLQ with reason `late_span`, and is counted.

**Commit rule** (`commit_offset`). Open traces live only in memory, so a restart must be able to
rebuild each from redelivery, and re-emit each already-emitted trace *whole* if any of its
messages is redelivered (else a redelivered tail would become a different, partial trace).
So the committed offset C is the largest offset such that every trace with any message at or
after C has all its messages at or after C: start from the first span message of the oldest
open trace (or the next offset when none is open), and lower C to the first message of any
recently emitted trace whose last message (late spans included) is at or after C, until it
holds. Emitted traces are remembered for this only while their last message is at or after C.

Why replays emit the same bytes: the content is a function of the span set (`_build`), and
the span set is decided in event time, message by message, with event time moved to each
message's stamp *before* its spans are added; a wall-clock tick while caught up can only do
what the next message would have done. Known limits, both rare and both visible in metrics:
a span produced more than the runner's clock skew (0.1 s) before it reaches Kafka can be late
in the live run yet on time in a replay; and after a restart, the memory of emitted traces is
gone, so a late span of a trace emitted before the committed offset is assembled alone and
emitted after `max_age` as an incomplete trace with the same id (counted as incomplete; the
worker's Redis guard has already scored that id, so nothing is counted twice).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from stream.assembler._build import build_trace
from stream.assembler._otlp import SpanRecord

__all__ = ["AssemblyLimits", "DeadLetterOut", "Emission", "PartitionState"]


@dataclass(slots=True, frozen=True)
class AssemblyLimits:
    """Timing and memory bounds (milliseconds of event time, counts per partition)."""

    quiet_ms: int = 2000
    max_age_ms: int = 60_000
    max_open: int = 50_000
    max_spans: int = 10_000
    remember_emitted: int = 200_000


@dataclass(slots=True)
class Emission:
    """A trace to produce to the traces topic (key `tr-<hex>`)."""

    trace_hex: str
    trace: dict[str, Any]
    incomplete_reason: str | None
    experiment_id: str
    span_count: int
    last_end_ns: int


@dataclass(slots=True)
class DeadLetterOut:
    """A spans message to copy to the DLQ (`late_span`, or a decode reason)."""

    offset: int
    reason: str
    error: str
    spans: int = 0


@dataclass(slots=True)
class _Open:
    first_offset: int
    first_ts: int
    experiment: str
    last_offset: int = 0
    last_ts: int = 0
    spans: dict[str, SpanRecord] = field(default_factory=dict)
    root_experiment: str | None = None


class PartitionState:
    """Open traces of one partition, fed message by message in offset order."""

    def __init__(self, limits: AssemblyLimits) -> None:
        self.limits = limits
        self.watermark = 0
        self.next_offset: int | None = None
        self.open: dict[str, _Open] = {}  # insertion order = first offset order
        self._emitted: dict[str, list[int]] = {}  # trace -> [first offset, last offset], for the commit rule
        self._recent: dict[str, None] = {}  # bounded memory of emitted traces, for late spans
        self._due: list[tuple[int, int, str]] = []
        self._seq = 0

    # -- input --------------------------------------------------------------------------------

    def add(
        self, offset: int, ts_ms: int, records: list[SpanRecord], experiment: str
    ) -> list[Emission | DeadLetterOut]:
        """Take one message's spans; returns what became due (emissions, a `late_span` dead letter).

        Event time moves to the message's stamp *before* its spans are added: a trace due at or
        before `ts_ms` is emitted first (its spans here are late). A wall-clock tick while caught
        up (`advance`) can only have emitted such traces, so a replay, which has no ticks,
        decides exactly as the original run did.
        """
        self._advance_offset(offset)
        out: list[Emission | DeadLetterOut] = list(self.advance(ts_ms))
        late = 0
        by_trace: dict[str, list[SpanRecord]] = {}
        for r in records:
            by_trace.setdefault(r.trace_hex, []).append(r)
        for trace_hex, spans in by_trace.items():
            if trace_hex in self._recent:
                late += len(spans)
                rec = self._emitted.get(trace_hex)
                if rec is not None:
                    rec[1] = offset
                continue
            t = self.open.get(trace_hex)
            if t is None:
                if len(self.open) >= self.limits.max_open:
                    oldest = next(iter(self.open))
                    out.append(self._emit(oldest, "open_cap"))
                t = self.open[trace_hex] = _Open(first_offset=offset, first_ts=ts_ms, experiment=experiment)
                self._push(ts_ms + self.limits.max_age_ms, trace_hex)
            t.last_offset, t.last_ts = offset, max(t.last_ts, ts_ms)
            for r in spans:
                t.spans.setdefault(r.span_hex, r)  # a resent span: the first copy wins, replays agree
                if r.parent_hex is None and t.root_experiment is None:
                    t.root_experiment = experiment
            if len(t.spans) >= self.limits.max_spans:
                out.append(self._emit(trace_hex, "span_cap"))
            else:
                self._push(t.last_ts + self.limits.quiet_ms, trace_hex)
        if late:
            out.append(DeadLetterOut(offset, "late_span", f"{late} span(s) of a trace already emitted", late))
        return out

    def skip(self, offset: int) -> None:
        """A message that holds no spans (dead-lettered by the caller) still moves the offset."""
        self._advance_offset(offset)

    def advance(self, now_ms: int) -> list[Emission]:
        """Move event time to `now_ms` (never back) and emit every trace that became due."""
        if now_ms > self.watermark:
            self.watermark = now_ms
        out: list[Emission] = []
        due, w = self._due, self.watermark
        while due and due[0][0] <= w:
            _, _, trace_hex = heapq.heappop(due)
            t = self.open.get(trace_hex)
            if t is None:
                continue
            # Complete wins over max age: after a jump of event time (a replay reaching a quiet
            # partition) a trace that was complete is still emitted complete, as it was first.
            if w >= t.last_ts + self.limits.quiet_ms and _complete(t.spans):
                out.append(self._emit(trace_hex, None))
            elif w >= t.first_ts + self.limits.max_age_ms:
                out.append(self._emit(trace_hex, "max_age"))
        return out

    # -- commit rule --------------------------------------------------------------------------

    def commit_offset(self) -> int | None:
        """The offset to commit (see the module docstring); None before the first message."""
        if self.next_offset is None:
            return None
        c = self.next_offset
        if self.open:
            c = min(c, next(iter(self.open.values())).first_offset)
        if self._emitted:
            for first, last in sorted(self._emitted.values(), key=lambda fl: fl[1], reverse=True):
                if last < c:
                    break
                c = min(c, first)
            self._emitted = {k: fl for k, fl in self._emitted.items() if fl[1] >= c}
        return c

    @property
    def span_count(self) -> int:
        return sum(len(t.spans) for t in self.open.values())

    # -- internals ----------------------------------------------------------------------------

    def _advance_offset(self, offset: int) -> None:
        if self.next_offset is not None and offset < self.next_offset:
            raise ValueError(f"offset {offset} after {self.next_offset - 1}: offsets only go up")
        self.next_offset = offset + 1

    def _push(self, due_ms: int, trace_hex: str) -> None:
        self._seq += 1
        heapq.heappush(self._due, (due_ms, self._seq, trace_hex))

    def _emit(self, trace_hex: str, reason: str | None) -> Emission:
        t = self.open.pop(trace_hex)
        self._emitted[trace_hex] = [t.first_offset, t.last_offset]
        self._recent[trace_hex] = None
        if len(self._recent) > self.limits.remember_emitted:
            del self._recent[next(iter(self._recent))]
        experiment = t.root_experiment or t.experiment
        trace = build_trace(trace_hex, t.spans, experiment_id=experiment, incomplete_reason=reason)
        return Emission(
            trace_hex=trace_hex,
            trace=trace,
            incomplete_reason=reason,
            experiment_id=experiment,
            span_count=len(t.spans),
            last_end_ns=max((r.end_ns for r in t.spans.values()), default=0),
        )


def _complete(spans: dict[str, SpanRecord]) -> bool:
    """The root has ended and every span named as a parent is present."""
    root_ended = False
    for r in spans.values():
        if r.parent_hex is None:
            root_ended = r.end_ns > 0
        elif r.parent_hex not in spans:
            return False
    return root_ended
