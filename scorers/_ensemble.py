"""`make_scorer_ensemble` and its built-in ensemble functions, as in MLflow 3.17.

An ensemble runs several scorers on the same trace and reduces their values to one
`Feedback` named after the ensemble: `majority_vote`, `mean`, `minimum`, `maximum`,
`agg_all`, `agg_any` (MLflow's names, semantics and rationale texts), or any callable
taking `values` (or, if its first parameter is named `feedbacks`, the sub-feedbacks).
The sub-feedbacks are kept on the result under `mlflow.ensemble.sub_feedbacks` (JSON), so
an aggregate stays explainable.

Sub-scorers run concurrently through their own `arun` (each keeps its skip rules, timeout
and judge client); a skipped or failed sub-scorer contributes None, which the built-in
functions refuse (the ensemble then records an error naming the failed sub-scorers, as
MLflow does), while a custom function may tolerate it. An ensemble is not a registry
record (it is code around scorers): use it offline (`evaluate`) or from an import reference.
"""

from __future__ import annotations

import asyncio
import inspect
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from time import perf_counter
from typing import Any, Final

import orjson

from scorers._assessment import DEFAULT_SOURCE, AssessmentError, Feedback
from scorers._exceptions import ScorerDefinitionError
from scorers._scorer import Scorer, ScoreResult
from scorers._trace import Trace

__all__ = [
    "BUILTIN_ENSEMBLES",
    "EnsembleScorer",
    "agg_all",
    "agg_any",
    "majority_vote",
    "make_scorer_ensemble",
    "maximum",
    "mean",
    "minimum",
]

SUB_FEEDBACKS_KEY: Final = "mlflow.ensemble.sub_feedbacks"

_AFFIRMATIVE: Final = frozenset(
    [
        "1",
        "1.0",
        "absolutely",
        "accept",
        "accepted",
        "accurate",
        "active",
        "affirmative",
        "agree",
        "approve",
        "approved",
        "certainly",
        "complete",
        "completed",
        "confirmed",
        "correct",
        "enabled",
        "excellent",
        "found",
        "good",
        "great",
        "indeed",
        "match",
        "matched",
        "ok",
        "okay",
        "on",
        "pass",
        "passed",
        "pos",
        "positive",
        "present",
        "right",
        "success",
        "sure",
        "true",
        "valid",
        "validated",
        "validity",
        "y",
        "yea",
        "yeah",
        "yes",
    ]
)
_NEGATIVE: Final = frozenset(
    [
        *[
            "0",
            "0.0",
            "absent",
            "bad",
            "declined",
            "denied",
            "deny",
            "disabled",
            "disagree",
            "disapprove",
            "disapproved",
            "fail",
            "failed",
            "failure",
            "false",
            "inaccurate",
            "inactive",
            "incomplete",
            "incorrect",
            "invalid",
            "mismatch",
            "mismatched",
            "missing",
            "n",
            "nah",
            "neg",
            "negative",
            "nil",
            "no",
            "none",
            "nope",
            "notfound",
            "null",
            "off",
            "poor",
            "reject",
            "rejected",
            "wrong",
        ],
        "not approved",
    ]
)
"""MLflow's `_AFFIRMATIVE_VALUES`/`_NEGATIVE_VALUES`: what counts as yes/no for `agg_all`/`agg_any`."""


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in _AFFIRMATIVE else False if text in _NEGATIVE else None
    return None


def _require_complete(values: Sequence[Any]) -> None:
    if not values:
        raise ValueError("Aggregation failed: no sub-scorer values were provided.")
    if any(v is None for v in values):
        raise ValueError(
            "Aggregation failed: at least one sub-scorer returned no value (it errored or produced an "
            "empty assessment). Built-in aggregation functions require every sub-scorer to return a value."
        )


def _require_numeric(values: Sequence[Any]) -> None:
    for v in values:
        if not isinstance(v, (bool, int, float)):
            raise ValueError(
                f"This ensemble function requires numeric sub-scorer values, but got a value of type "
                f"{type(v).__name__}. Use majority_vote for categorical values."
            )


def majority_vote(values: list[Any]) -> Feedback:
    """The most common value; ties go to the smallest `str(value)` (deterministic)."""
    _require_complete(values)
    counts = Counter(values)
    top = max(counts.values())
    winner = min((v for v, c in counts.items() if c == top), key=str)
    return Feedback(value=winner, rationale=f"Majority vote over {len(values)} scorers: {dict(counts)}")


def mean(values: list[Any]) -> Feedback:
    """The arithmetic mean of numeric (or bool, as 0/1) values."""
    _require_complete(values)
    _require_numeric(values)
    result = statistics.mean(values)
    return Feedback(value=result, rationale=f"Mean over {len(values)} scorers = {result}")


def minimum(values: list[Any]) -> Feedback:
    """The smallest numeric value."""
    _require_complete(values)
    _require_numeric(values)
    result = min(values)
    return Feedback(value=result, rationale=f"Minimum over {len(values)} scorers = {result}")


def maximum(values: list[Any]) -> Feedback:
    """The largest numeric value."""
    _require_complete(values)
    _require_numeric(values)
    result = max(values)
    return Feedback(value=result, rationale=f"Maximum over {len(values)} scorers = {result}")


def _bools(values: list[Any]) -> list[bool]:
    out = []
    for v in values:
        b = _as_bool(v)
        if b is None:
            raise ValueError(
                f"This ensemble function requires boolean sub-scorer values, but got {v!r} (type "
                f"{type(v).__name__}), which has no yes/no reading. Use majority_vote for other "
                "categorical values."
            )
        out.append(b)
    return out


def agg_all(values: list[Any]) -> Feedback:
    """True when every value reads as yes (bools, "yes"/"no" and MLflow's synonyms)."""
    _require_complete(values)
    result = all(_bools(values))
    return Feedback(value=result, rationale=f"all() over {len(values)} scorers = {result}")


def agg_any(values: list[Any]) -> Feedback:
    """True when any value reads as yes."""
    _require_complete(values)
    result = any(_bools(values))
    return Feedback(value=result, rationale=f"any() over {len(values)} scorers = {result}")


BUILTIN_ENSEMBLES: Final[dict[str, Callable[[list[Any]], Feedback]]] = {
    "majority_vote": majority_vote,
    "mean": mean,
    "minimum": minimum,
    "maximum": maximum,
    "agg_all": agg_all,
    "agg_any": agg_any,
}
_NUMERIC: Final = frozenset({"mean", "minimum", "maximum"})
_BOOLEAN: Final = frozenset({"agg_all", "agg_any"})


def _feedbacks_mode(fn: Callable[..., Any]) -> bool:
    """MLflow's rule: the first positional parameter named `feedbacks` asks for Feedback objects."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
    )
    first = next((p for p in params if p.kind in kinds), None)
    return first is not None and first.name == "feedbacks"


def _feedback_dict(fb: Feedback) -> dict[str, Any]:
    err = fb.error if isinstance(fb.error, AssessmentError) else None
    return {
        "name": fb.name,
        "value": fb.value,
        "rationale": fb.rationale,
        "source": fb.source.to_dict() if fb.source is not None else None,
        "error": err.to_dict() if err is not None else None,
    }


class EnsembleScorer(Scorer):
    """A scorer that runs `scorers` and reduces their values with `ensemble_fn`."""

    def __init__(
        self,
        name: str,
        scorers: Sequence[Scorer],
        ensemble_fn: Callable[..., Any],
        *,
        ensemble_fn_name: str | None = None,
        description: str | None = None,
        aggregations: Iterable[str] | None = None,
    ) -> None:
        self.scorers = list(scorers)
        self.ensemble_fn = ensemble_fn
        self.ensemble_fn_name = ensemble_fn_name
        self.description = description
        self._feedbacks_mode = _feedbacks_mode(ensemble_fn)
        params = frozenset().union(*(s.params for s in self.scorers))
        super().__init__(
            self._unused,
            name=name,
            aggregations=aggregations,
            is_judge=any(s.is_judge for s in self.scorers),
            params=params,
            source=DEFAULT_SOURCE,
            skip_when_missing=(),
        )
        self.is_async = any(s.is_async or s.is_judge for s in self.scorers)

    def _unused(self, **_: Any) -> None:  # never called: `run`/`arun` are overridden
        raise NotImplementedError

    def __call__(self, **kwargs: Any) -> Any:
        raise TypeError(f"ensemble {self.name!r} scores traces: call `run(trace)` or `await arun(trace)`")

    def run(self, trace: Trace, expectations: Any = None) -> ScoreResult:
        """Score synchronously (every sub-scorer must be sync code)."""
        if self.is_async:
            raise TypeError(f"ensemble {self.name!r} holds async scorers or judges: call `await arun(trace)`")
        start = perf_counter()
        return self._combine([s.run(trace, expectations) for s in self.scorers], start)

    async def arun(self, trace: Trace, expectations: Any = None) -> ScoreResult:
        """Score with every sub-scorer concurrently, then reduce."""
        start = perf_counter()
        results = await asyncio.gather(*(s.arun(trace, expectations) for s in self.scorers))
        return self._combine(list(results), start)

    def _combine(self, results: list[ScoreResult], start: float) -> ScoreResult:
        subs: list[Feedback] = []
        values: list[Any] = []
        try:
            for scorer, result in zip(self.scorers, results, strict=True):
                if len(result.feedbacks) > 1:
                    raise ValueError(
                        "make_scorer_ensemble does not support sub-scorers that return a list of Feedback objects."
                    )
                fb = result.feedbacks[0] if result.feedbacks else Feedback(name=scorer.name, value=None)
                if result.skip_reason is not None:
                    fb = Feedback(name=scorer.name, error=AssessmentError("SKIPPED", f"skipped: {result.skip_reason}"))
                value = None if fb.error is not None else fb.value
                if not self._feedbacks_mode and value is not None and not isinstance(value, (bool, int, float, str)):
                    raise ValueError(
                        "make_scorer_ensemble only supports sub-scorers returning bool, numeric, or categorical "
                        f"(str) values. Sub-scorer '{scorer.name}' returned {type(value).__name__}."
                    )
                subs.append(fb)
                values.append(value)
            metadata = {SUB_FEEDBACKS_KEY: orjson.dumps([_feedback_dict(f) for f in subs], default=str).decode()}
            try:
                out = self.ensemble_fn(subs if self._feedbacks_mode else values)
            except Exception as exc:
                failed = "; ".join(
                    f"'{f.name}': {f.error.error_message or f.error.error_code}"
                    for f in subs
                    if isinstance(f.error, AssessmentError)
                )
                suffix = f" Failed sub-scorers -- {failed}." if failed else ""
                raise ValueError(
                    f"Ensemble scorer '{self.name}' failed to aggregate its sub-scorer results: {exc}{suffix}"
                ) from exc
        except ValueError as exc:
            return ScoreResult([self._error_feedback(exc)], None, perf_counter() - start)
        if isinstance(out, Feedback):
            if not out.name or out.name == "feedback":
                out.name = self.name
            out.metadata = {**metadata, **(out.metadata or {})}
            if out.source is None:
                out.source = DEFAULT_SOURCE
            return ScoreResult([out], None, perf_counter() - start)
        fb = Feedback(value=out, name=self.name, metadata=metadata, source=DEFAULT_SOURCE)
        return ScoreResult([fb], None, perf_counter() - start)


def make_scorer_ensemble(
    *,
    name: str,
    scorers: Sequence[Scorer],
    ensemble_fn: str | Callable[..., Any],
    description: str | None = None,
    aggregations: Iterable[str] | None = None,
) -> EnsembleScorer:
    """Combine `scorers` into one scorer whose value is `ensemble_fn` of theirs (MLflow's signature).

    Raises:
        ScorerDefinitionError: no scorers, an unknown built-in name, or a built-in numeric
            (boolean) function over a scorer that declares non-numeric (non-yes/no) values.

    Example:
        >>> from scorers import RegexMatch, ResponseLength
        >>> ens = make_scorer_ensemble(
        ...     name="format", scorers=[RegexMatch(r"^A"), ResponseLength(max_length=9)], ensemble_fn="agg_all"
        ... )
        >>> ens.name, ens.ensemble_fn_name
        ('format', 'agg_all')
    """
    if not scorers:
        raise ScorerDefinitionError("make_scorer_ensemble requires at least one sub-scorer.")
    for s in scorers:
        if not isinstance(s, Scorer):
            raise ScorerDefinitionError(f"make_scorer_ensemble: {s!r} is not a scorer")
    if isinstance(ensemble_fn, str):
        if ensemble_fn not in BUILTIN_ENSEMBLES:
            raise ScorerDefinitionError(
                f"'{ensemble_fn}' is not a built-in ensemble function. Available: {sorted(BUILTIN_ENSEMBLES)}."
            )
        fn_name: str | None = ensemble_fn
        fn = BUILTIN_ENSEMBLES[ensemble_fn]
    elif callable(ensemble_fn):
        fn = ensemble_fn
        fn_name = next((n for n, f in BUILTIN_ENSEMBLES.items() if f is fn), None)
    else:
        raise ScorerDefinitionError("ensemble_fn must be a built-in name or a callable")
    for s in scorers:
        declared = getattr(s, "value_type", None)
        if declared is None:
            continue  # code scorers declare nothing: checked on their values at run time
        if fn_name in _NUMERIC and declared not in ("bool", "int", "float"):
            raise ScorerDefinitionError(
                f"Ensemble function '{fn_name}' requires numeric sub-scorer values, but sub-scorer '{s.name}' "
                f"declares a non-numeric feedback_value_type ({declared!r}). Use majority_vote for categorical scorers."
            )
        if fn_name in _BOOLEAN and declared not in ("bool", "yes/no"):
            raise ScorerDefinitionError(
                f"Ensemble function '{fn_name}' requires sub-scorer values with a yes/no reading, but sub-scorer "
                f"'{s.name}' declares a feedback_value_type of {declared!r}. Use majority_vote for other "
                "categorical scorers."
            )
    return EnsembleScorer(
        name, scorers, fn, ensemble_fn_name=fn_name, description=description, aggregations=aggregations
    )
