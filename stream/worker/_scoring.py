"""The one scoring path: sample -> filter (guarded) -> budget -> score -> assessments.

The worker's main loop and the expectation re-run (`_rerun`) both call `Scoring.score`, so
what a trace goes through cannot drift between them: a filter that raises becomes an `error`
pair (`FILTER_ERROR`) on both paths, and a budgeted scorer spends its budget on both (a
judge re-run on ground truth is a judge call like any other).

Code scorers run inline (they are microseconds); judges and scorers with a timeout run as
tasks under the worker's global in-flight cap, counted in the entry's `pending` so the
entry is not committed before they finish. This is the hot path: no closure and no
allocation beyond the results themselves per trace.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from scorers import Assessment, AssessmentError, Feedback, Trace, assessments_for
from stream.registry._scorer_set import ActiveScorer
from stream.worker._checkpoint import Entry
from stream.worker._sampling import sample_u

__all__ = ["Scoring"]


class Scoring:
    """Scores traces into `Entry`s; holds the judge in-flight cap shared by both paths.

    Args:
        judge_max_in_flight: judge (async) calls allowed at once; `score` waits for a slot.
        tasks: the worker's set of running tasks (judge tasks are added, and removed when done).
    """

    __slots__ = ("_judge_done", "_slots", "_tasks")

    def __init__(self, judge_max_in_flight: int, tasks: set[asyncio.Task[None]]) -> None:
        self._slots = asyncio.Semaphore(judge_max_in_flight)
        self._tasks = tasks
        self._judge_done = self._on_judge_done  # bound once, not per judge call

    async def score(
        self,
        trace: Trace,
        entry: Entry,
        active: Sequence[ActiveScorer],
        expectations: Mapping[str, Any] | None = None,
        run_id: str = "",
    ) -> None:
        """Run every scorer of `active` that samples and matches `trace`; results go to `entry`.

        `active` is ordered by descending sample rate (`ScorerSet.of`). Inline results are in
        `entry.pairs` on return; each judge started adds 1 to `entry.pending` (and its task to
        `entry.tasks`) and appends its pair when done. `expectations` replaces the trace's own
        ground truth and `run_id` marks the pairs as a new run (expectation re-runs).
        Never raises for a scorer's or a filter's fault: those become `error` pairs.
        """
        info = trace.info
        tid = info.trace_id
        exp = info.experiment_id
        u = sample_u(tid)
        end_ms = info.end_ms
        pairs = entry.pairs
        for a in active:
            if u >= a.sample_rate:
                break  # ordered by descending rate: no later scorer samples this trace
            if a.experiment_id is not None and a.experiment_id != exp:
                continue
            if a.predicate is not None:
                try:
                    if not a.predicate(trace):
                        continue
                except Exception as exc:  # a filter bug is counted, never a crash
                    pairs.append(_error_pair(tid, exp, a, "FILTER_ERROR", exc, end_ms, run_id))
                    continue
            if a.budget is not None and not a.budget.take():
                pairs.append(
                    assessments_for(tid, exp, a.name, feedbacks=[], skip_reason="budget",
                                    version=a.version, trace_end_ms=end_ms, run_id=run_id)
                )
                continue
            scorer = a.scorer
            if scorer.is_async or getattr(scorer, "timeout", None):
                await self._slots.acquire()
                entry.pending += 1
                task = asyncio.create_task(self._run_async(a, trace, entry, end_ms, expectations, run_id))
                entry.tasks.append(task)
                self._tasks.add(task)
                task.add_done_callback(self._judge_done)
                continue
            try:
                res = scorer.run(trace, expectations)
                pairs.append(
                    assessments_for(tid, exp, a.name, feedbacks=res.feedbacks, skip_reason=res.skip_reason,
                                    duration_s=res.duration_s, version=a.version, trace_end_ms=end_ms,
                                    run_id=run_id)
                )
            except Exception as exc:  # scorers capture their own errors; this is a safety net
                pairs.append(_error_pair(tid, exp, a, "WORKER_ERROR", exc, end_ms, run_id))

    async def _run_async(
        self,
        a: ActiveScorer,
        trace: Trace,
        entry: Entry,
        end_ms: int | None,
        expectations: Mapping[str, Any] | None,
        run_id: str,
    ) -> None:
        tid = trace.info.trace_id
        exp = trace.info.experiment_id
        try:
            res = await a.scorer.arun(trace, expectations)
            if a.budget is not None:
                a.budget.add_tokens(_tokens_of(res.feedbacks))
            entry.pairs.append(
                assessments_for(tid, exp, a.name, feedbacks=res.feedbacks, skip_reason=res.skip_reason,
                                duration_s=res.duration_s, version=a.version, trace_end_ms=end_ms, run_id=run_id)
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            entry.pairs.append(_error_pair(tid, exp, a, "WORKER_ERROR", exc, end_ms, run_id))
        entry.pending -= 1

    def _on_judge_done(self, task: asyncio.Task[None]) -> None:
        # The slot is released here, not in the coroutine: a task cancelled before it ever
        # ran (a revoke right after it was created) never enters its body, and its slot
        # would otherwise be lost for good.
        self._tasks.discard(task)
        self._slots.release()


def _tokens_of(feedbacks: list[Any]) -> int:
    """Tokens a judge reported in its feedback metadata (for per-scorer token budgets)."""
    total = 0
    for fb in feedbacks:
        meta = fb.metadata or {}
        total += int(meta.get("prompt_tokens") or 0) + int(meta.get("completion_tokens") or 0)
    return total


def _error_pair(
    tid: str, exp: str, a: ActiveScorer, code: str, exc: BaseException, end_ms: int | None, run_id: str
) -> list[Assessment]:
    fb = Feedback(
        name=a.name,
        error=AssessmentError(code, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=5)),
    )
    return assessments_for(tid, exp, a.name, feedbacks=[fb], version=a.version, trace_end_ms=end_ms, run_id=run_id)
