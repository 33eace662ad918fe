"""Offline evaluation: run scorers over traces from files, no Kafka or Redis.

The same `Scorer` objects as the worker, the same states: every (trace, scorer) pair ends
`scored`, `error` or `skipped`, and a record that does not decode is counted as invalid
with its `DecodeError.reason` instead of stopping the run.

Code scorers run inline through `Scorer.run` (no task, no thread per call: that is where
the throughput comes from); judges and scorers with a timeout run through `Scorer.arun`
as tasks, at most `concurrency` at a time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, TypeAlias

from scorers._assessment import Assessment, assessments_for, numeric_value
from scorers._decode import decode_trace
from scorers._exceptions import DecodeError
from scorers._judges import aclose_default_judge_client
from scorers._resolve import resolve_scorer
from scorers._scorer import Scorer, ScoreResult, expectations_of
from scorers._trace import Trace

__all__ = [
    "EvaluationResult",
    "InvalidRecord",
    "ScorerSummary",
    "TraceRecords",
    "aevaluate",
    "evaluate",
    "iter_traces",
    "summarize",
]

TraceRecords: TypeAlias = str | os.PathLike[str] | Iterable[Trace | bytes | str | tuple[str, bytes]]
"""What `evaluate` accepts: a path for `iter_traces`, or traces/raw records/(label, bytes)."""

_LINE_SUFFIXES = frozenset({".jsonl", ".ndjson"})


def _iter_file(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.suffix.lower() in _LINE_SUFFIXES:
        with path.open("rb") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if line:
                    yield f"{path}:{lineno}", line
    else:
        yield str(path), path.read_bytes()


def iter_traces(path: str | os.PathLike[str]) -> Iterator[tuple[str, bytes]]:
    """Yield `(source label, raw bytes)` for each trace under `path`.

    A `.jsonl`/`.ndjson` file gives one record per non-blank line (labelled `file:line`);
    any other file is one JSON document; a folder gives its `*.json` and `*.jsonl` files
    in sorted name order (not recursive). Nothing is decoded here.

    Raises:
        FileNotFoundError: `path` does not exist.
    """
    p = Path(path)
    if p.is_dir():
        for child in sorted(p.iterdir()):
            if child.is_file() and child.suffix.lower() in {".json", *_LINE_SUFFIXES}:
                yield from _iter_file(child)
    elif p.is_file():
        yield from _iter_file(p)
    else:
        raise FileNotFoundError(f"no trace file or folder at {p}")


@dataclass(slots=True, frozen=True)
class InvalidRecord:
    """A record that did not decode: where it came from and why (`DecodeError.reason`)."""

    source: str
    reason: str
    message: str


@dataclass(slots=True)
class ScorerSummary:
    """Aggregates of one scorer's assessments of one name (a scorer may emit several names).

    `pass_rate` is over pass/fail outcomes (bools, "yes"/"no"); `mean` over numeric values.
    Either is None when the scorer produced none of that kind.
    """

    scorer: str
    name: str
    count: int = 0
    scored: int = 0
    errors: int = 0
    skipped: int = 0
    passed: int = 0
    failed: int = 0
    pass_rate: float | None = None
    mean: float | None = None
    _total: float = field(default=0.0, repr=False)
    _numeric: int = field(default=0, repr=False)


def summarize(assessments: Iterable[Assessment]) -> list[ScorerSummary]:
    """Group assessments by (scorer, name), in first-seen order, and aggregate them."""
    groups: dict[tuple[str, str], ScorerSummary] = {}
    for a in assessments:
        key = (a.scorer, a.name)
        s = groups.get(key)
        if s is None:
            s = groups[key] = ScorerSummary(a.scorer, a.name)
        s.count += 1
        if a.state == "skipped":
            s.skipped += 1
            continue
        if a.error is not None:
            s.errors += 1
            continue
        s.scored += 1
        outcome = a.outcome
        if outcome == "pass":
            s.passed += 1
        elif outcome == "fail":
            s.failed += 1
        else:
            number = numeric_value(a.value)
            if number is not None:
                s._total += number
                s._numeric += 1
    for s in groups.values():
        judged = s.passed + s.failed
        s.pass_rate = s.passed / judged if judged else None
        s.mean = s._total / s._numeric if s._numeric else None
    return list(groups.values())


@dataclass(slots=True)
class EvaluationResult:
    """Everything an evaluation produced, in (trace, scorer) order."""

    assessments: list[Assessment]
    invalid: list[InvalidRecord]
    records: int
    traces: int
    duration_s: float

    @property
    def traces_per_s(self) -> float:
        return self.records / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> list[ScorerSummary]:
        return summarize(self.assessments)


def _assessments(result: ScoreResult, trace: Trace, scorer: Scorer) -> list[Assessment]:
    return assessments_for(
        trace.info.trace_id,
        trace.info.experiment_id,
        scorer.name,
        feedbacks=result.feedbacks,
        skip_reason=result.skip_reason,
        duration_s=result.duration_s,
    )


def _records(traces: TraceRecords) -> Iterable[tuple[str, Trace | bytes | str]]:
    if isinstance(traces, (str, os.PathLike)):
        yield from iter_traces(traces)
        return
    for i, item in enumerate(traces):
        if isinstance(item, tuple):
            yield item
        elif isinstance(item, Trace):
            yield item.trace_id, item
        else:
            yield f"#{i}", item


async def aevaluate(
    traces: TraceRecords,
    scorers: Iterable[Scorer | str],
    *,
    concurrency: int = 16,
    on_progress: Callable[[int], Any] | None = None,
) -> EvaluationResult:
    """Score every trace with every scorer; the async core of `evaluate`.

    Args:
        traces: a path (see `iter_traces`) or an iterable of `Trace`s, raw JSON records,
            or `(label, bytes)` pairs.
        scorers: `Scorer`s or references for `resolve_scorer`.
        concurrency: how many async scorer calls (judges, scorers with a timeout) may run
            at once; judges are further capped by their client's `max_in_flight`.
        on_progress: called with the number of records finished so far, after each one.

    Raises:
        ValueError: no scorers, or `concurrency < 1`.
        ScorerDefinitionError: a scorer reference does not resolve.
        FileNotFoundError: the path does not exist.
    """
    scorer_list = [resolve_scorer(s) if isinstance(s, str) else s for s in scorers]
    if not scorer_list:
        raise ValueError("evaluate needs at least one scorer")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    inline = [(i, s) for i, s in enumerate(scorer_list) if not s.is_async and s.timeout is None]
    deferred = [(i, s) for i, s in enumerate(scorer_list) if s.is_async or s.timeout is not None]
    wants_expectations = any("expectations" in s.params for s in scorer_list)
    results: list[tuple[int, int, list[Assessment]]] = []
    invalid: list[InvalidRecord] = []
    sem = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []
    done = 0

    def finished() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done)

    async def run_deferred(ti: int, si: int, scorer: Scorer, trace: Trace, exp: Any, left: list[int]) -> None:
        try:
            result = await scorer.arun(trace, exp)
        finally:
            sem.release()
        results.append((ti, si, _assessments(result, trace, scorer)))
        left[0] -= 1
        if left[0] == 0:
            finished()

    def task_done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]

    start = perf_counter()
    n_records = n_traces = 0
    for label, raw in _records(traces):
        ti = n_records
        n_records += 1
        try:
            trace = raw if isinstance(raw, Trace) else decode_trace(raw)
        except DecodeError as exc:
            invalid.append(InvalidRecord(label, exc.reason, exc.message))
            finished()
            continue
        n_traces += 1
        # Computed once per trace, not once per scorer; {} makes those scorers skip.
        exp = expectations_of(trace) if wants_expectations else None
        for si, s in inline:
            results.append((ti, si, _assessments(s.run(trace, exp), trace, s)))
        if not deferred:
            finished()
            continue
        left = [len(deferred)]
        for si, s in deferred:
            await sem.acquire()
            task = asyncio.create_task(run_deferred(ti, si, s, trace, exp, left))
            tasks.add(task)
            task.add_done_callback(task_done)
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    if failures:
        raise failures[0]
    results.sort(key=lambda r: (r[0], r[1]))
    assessments = [a for _, _, batch in results for a in batch]
    return EvaluationResult(assessments, invalid, n_records, n_traces, perf_counter() - start)


def evaluate(
    traces: TraceRecords,
    scorers: Iterable[Scorer | str],
    *,
    concurrency: int = 16,
    on_progress: Callable[[int], Any] | None = None,
) -> EvaluationResult:
    """Synchronous `aevaluate`: runs its own event loop (do not call from async code).

    Example:
        >>> result = evaluate("traces.jsonl", ["no_error", "output_word_count"])  # doctest: +SKIP
        >>> for row in result.summary(): print(row.scorer, row.pass_rate, row.mean)  # doctest: +SKIP
    """

    async def run() -> EvaluationResult:
        try:
            return await aevaluate(traces, scorers, concurrency=concurrency, on_progress=on_progress)
        finally:
            # The loop ends here, so a default judge client created on it must close too.
            await aclose_default_judge_client()

    return asyncio.run(run())
