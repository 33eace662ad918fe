"""The `@scorer` decorator and the `Scorer` object it produces.

A scorer is a plain function of any subset of `inputs`, `outputs`, `expectations` and
`trace`, exactly as in MLflow. The decorator only inspects the signature and attaches
metadata: it registers nothing and runs nothing (the registry lives in `stream`).

The worker calls `Scorer.run` once per sampled (trace, scorer) pair, so the work that does
not depend on the trace (which arguments to build, whether a skip is possible) is decided
once, at decoration time. Whatever the function does, `run`/`arun` return a `ScoreResult`
and never raise: a failed scorer is a data error, recorded as an error feedback.
"""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final, overload

import orjson

from scorers._assessment import (
    AssessmentError,
    AssessmentSource,
    AssessmentSourceType,
    Feedback,
    State,
)
from scorers._exceptions import JudgeError, ScorerDefinitionError
from scorers._limits import MAX_NAME_CHARS
from scorers._trace import Trace

__all__ = [
    "AGGREGATIONS",
    "SCORER_PARAMS",
    "ScoreResult",
    "Scorer",
    "expectations_of",
    "scorer",
]

SCORER_PARAMS: Final = ("inputs", "outputs", "expectations", "trace")
"""The only parameter names a scorer function may declare (as in MLflow)."""

AGGREGATIONS: Final = frozenset({"min", "max", "mean", "median", "variance", "p90", "p99"})
"""Aggregation names accepted by `@scorer(aggregations=...)` (MLflow's set plus p99)."""

_ALLOWED_RETURNS = "bool, int, float, str, Feedback, list[Feedback] or None"


@dataclass(slots=True)
class ScoreResult:
    """What one scorer concluded about one trace.

    `feedbacks` is empty exactly when the pair was skipped; `skip_reason` then says why
    (`missing_inputs`, `missing_outputs`, `missing_expectations`, `no_result`, or a reason
    the caller sets such as `budget`).
    """

    feedbacks: list[Feedback]
    skip_reason: str | None = None
    duration_s: float = 0.0

    @property
    def state(self) -> State:
        """`skipped` if a skip reason is set, `error` if every feedback failed, else `scored`."""
        if self.skip_reason is not None or not self.feedbacks:
            return "skipped"
        for fb in self.feedbacks:
            if fb.error is None:
                return "scored"
        return "error"


def expectations_of(trace: Trace) -> dict[str, Any]:
    """The ground truth attached to a trace: its valid `expectation` assessments by name.

    MLflow stores an expectation either as `{"value": v}` or, for structured values, as
    `{"serialized_value": {"serialization_format": "JSON_FORMAT", "value": "<json>"}}`; both
    forms are read. Overridden (`valid: false`) expectations are ignored, and a later one of
    the same name wins.
    """
    out: dict[str, Any] = {}
    for item in trace.info.assessments:
        exp = item.get("expectation")
        if not isinstance(exp, Mapping) or item.get("valid") is False:
            continue
        name = item.get("assessment_name")
        if not isinstance(name, str):
            continue
        if "value" in exp:
            out[name] = exp["value"]
            continue
        ser = exp.get("serialized_value")
        if isinstance(ser, Mapping) and isinstance(ser.get("value"), str):
            try:
                out[name] = orjson.loads(ser["value"])
            except orjson.JSONDecodeError:
                out[name] = ser["value"]
    return out


class Scorer:
    """A scoring function plus the metadata the pipeline needs to call it.

    Create one with `@scorer`; judges (`Guidelines`, `make_judge`, ...) are `Scorer`s too,
    with `is_judge=True`. Calling the object calls the function itself, with only the
    arguments it declares, and returns whatever it returns (as MLflow does); `run` and
    `arun` are what the pipeline uses: they build the arguments from a trace and always
    return a normalised `ScoreResult`.

    Attributes:
        name: the scorer's name, also the default feedback name and the metric label.
        params: which of `inputs`, `outputs`, `expectations`, `trace` the function takes.
        is_async: the function is a coroutine function (call `arun`, not `run`).
        is_judge: an LLM judge (network calls, token costs) rather than code.
        timeout: seconds after which `arun` gives up with `SCORER_TIMEOUT` (None: never).
        aggregations: names of the aggregates to report for numeric values.
        source: the default source of the feedback this scorer produces.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        timeout: float | None = None,
        aggregations: Iterable[str] | None = None,
        is_judge: bool = False,
        params: Iterable[str] | None = None,
        source: AssessmentSource | None = None,
    ) -> None:
        """Wrap `fn`; `params` overrides signature inspection (for `**kwargs` functions).

        Raises:
            ScorerDefinitionError: `fn` declares a parameter other than the four allowed,
                or the name, timeout or aggregations are invalid.
        """
        declared = frozenset(params) if params is not None else _declared_params(fn)
        bad = sorted(declared.difference(SCORER_PARAMS))
        if bad:
            raise ScorerDefinitionError(
                f"scorer {_fn_name(fn)!r} declares unsupported parameter {bad[0]!r}; "
                f"a scorer may only take {', '.join(SCORER_PARAMS)}"
            )
        self.name: str = name if name is not None else _fn_name(fn)
        if not self.name or not isinstance(self.name, str):
            raise ScorerDefinitionError("a scorer needs a non-empty string name")
        if len(self.name) > MAX_NAME_CHARS:  # it becomes a Redis key part and a metric label
            raise ScorerDefinitionError(f"scorer name is {len(self.name)} characters, the limit is {MAX_NAME_CHARS}")
        if timeout is not None and not timeout > 0:
            raise ScorerDefinitionError(f"scorer {self.name!r}: timeout must be > 0 seconds, got {timeout!r}")
        aggs = tuple(aggregations) if aggregations is not None else ()
        unknown = sorted(set(aggs).difference(AGGREGATIONS))
        if unknown:
            raise ScorerDefinitionError(
                f"scorer {self.name!r}: unknown aggregation {unknown[0]!r}; "
                f"choose from {', '.join(sorted(AGGREGATIONS))}"
            )
        self.params: frozenset[str] = declared
        self.is_async: bool = inspect.iscoroutinefunction(fn)
        self.is_judge: bool = is_judge
        self.timeout: float | None = timeout
        self.aggregations: tuple[str, ...] = aggs
        self.source: AssessmentSource = source or AssessmentSource(AssessmentSourceType.CODE, self.name)
        self._fn = fn
        # Decided once so the hot path is a handful of attribute reads and `if`s.
        self._wants_inputs = "inputs" in declared
        self._wants_outputs = "outputs" in declared
        self._wants_expectations = "expectations" in declared
        self._wants_trace = "trace" in declared
        self.__wrapped__ = fn
        if getattr(fn, "__doc__", None):
            self.__doc__ = fn.__doc__
        self.__module__ = getattr(fn, "__module__", __name__)
        self.__qualname__ = getattr(fn, "__qualname__", self.name)

    def __repr__(self) -> str:
        kind = "judge" if self.is_judge else "code"
        return f"<Scorer {self.name!r} ({kind}) params={sorted(self.params)}>"

    def __call__(
        self,
        *,
        inputs: Any = None,
        outputs: Any = None,
        expectations: Any = None,
        trace: Trace | None = None,
    ) -> Any:
        """Call the function with the arguments it declares; return its raw result.

        Like MLflow's `Scorer.__call__`: undeclared arguments are dropped and declared ones
        that were not given are passed as None. For an async scorer this is a coroutine.
        """
        given = {"inputs": inputs, "outputs": outputs, "expectations": expectations, "trace": trace}
        return self._fn(**{k: v for k, v in given.items() if k in self.params})

    # -- pipeline entry points -------------------------------------------------------------

    def run(self, trace: Trace, expectations: Mapping[str, Any] | None = None) -> ScoreResult:
        """Score one trace synchronously: the worker's hot path for code scorers.

        No event loop and no thread: the function runs inline. A `timeout` is not enforced
        here (a sync call cannot be interrupted); use `arun` for that.

        Args:
            trace: the decoded trace.
            expectations: ground truth; when None, the trace's own expectations are used.

        Raises:
            TypeError: the scorer is async (use `arun`).
        """
        if self.is_async:
            raise TypeError(f"scorer {self.name!r} is async: call `await scorer.arun(trace)`")
        start = perf_counter()
        kwargs = self._arguments(trace, expectations)
        if isinstance(kwargs, str):
            return ScoreResult([], kwargs, perf_counter() - start)
        try:
            value = self._fn(**kwargs)
        except Exception as exc:
            return ScoreResult([self._error_feedback(exc)], None, perf_counter() - start)
        return self._result(value, start)

    async def arun(self, trace: Trace, expectations: Mapping[str, Any] | None = None) -> ScoreResult:
        """Score one trace from async code; works for sync and async scorers.

        With a `timeout`, an async scorer runs under `asyncio.timeout` and a sync one in a
        worker thread (`asyncio.to_thread`) under the same deadline; a scorer still running at the
        deadline yields an error feedback with code `SCORER_TIMEOUT`. (A timed-out thread
        cannot be killed: it finishes in the background and its result is discarded.) A sync
        scorer without a timeout runs inline, exactly like `run`.
        """
        if not self.is_async and self.timeout is None:
            return self.run(trace, expectations)
        start = perf_counter()
        kwargs = self._arguments(trace, expectations)
        if isinstance(kwargs, str):
            return ScoreResult([], kwargs, perf_counter() - start)
        # `asyncio.timeout` rather than `wait_for`: same cancellation, but `expired()` tells
        # our deadline apart from a TimeoutError the scorer raised itself.
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                if self.is_async:
                    value = await self._fn(**kwargs)
                else:
                    value = await asyncio.to_thread(self._fn, **kwargs)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                error = AssessmentError(
                    "SCORER_TIMEOUT", f"scorer {self.name!r} did not finish within {self.timeout} s"
                )
                return ScoreResult([self._feedback_error(error)], None, perf_counter() - start)
            return ScoreResult([self._error_feedback(exc)], None, perf_counter() - start)
        return self._result(value, start)

    # -- internals ---------------------------------------------------------------------------

    def _arguments(self, trace: Trace, expectations: Mapping[str, Any] | None) -> dict[str, Any] | str:
        """The keyword arguments for this trace, or the skip reason when one is missing."""
        kwargs: dict[str, Any] = {}
        if self._wants_inputs:
            inputs = trace.inputs
            if inputs is None:
                return "missing_inputs"
            kwargs["inputs"] = inputs
        if self._wants_outputs:
            root = trace.root_span
            # `has_outputs` rather than `is None`: a root that returned JSON null did answer.
            if root is None or not root.has_outputs:
                return "missing_outputs"
            kwargs["outputs"] = root.outputs
        if self._wants_expectations:
            exp = expectations_of(trace) if expectations is None else expectations
            if not exp:
                return "missing_expectations"
            kwargs["expectations"] = exp
        if self._wants_trace:
            kwargs["trace"] = trace
        return kwargs

    def _result(self, value: Any, start: float) -> ScoreResult:
        """Normalise a raw return value as MLflow does."""
        if value is None:
            return ScoreResult([], "no_result", perf_counter() - start)
        if isinstance(value, (bool, int, float, str)):
            fb = Feedback(value=value, name=self.name, source=self.source)
            return ScoreResult([fb], None, perf_counter() - start)
        if isinstance(value, Feedback):
            if value.name is None:
                value.name = self.name
            elif value.name and not _good_name(value.name):  # "" falls back to the scorer name
                return ScoreResult([self._bad_name(value.name, 0)], None, perf_counter() - start)
            if value.source is None:
                value.source = self.source
            return ScoreResult([value], None, perf_counter() - start)
        if isinstance(value, list):
            return ScoreResult(
                self._list_result(value), None if value else "no_result", perf_counter() - start
            )
        error = AssessmentError(
            "SCORER_BAD_RETURN",
            f"scorer {self.name!r} must return one of {_ALLOWED_RETURNS}; got {type(value).__name__}",
        )
        return ScoreResult([self._feedback_error(error)], None, perf_counter() - start)

    def _list_result(self, items: list[Any]) -> list[Feedback]:
        for i, item in enumerate(items):
            if not isinstance(item, Feedback):
                kinds = sorted({type(x).__name__ for x in items})
                error = AssessmentError(
                    "SCORER_BAD_RETURN",
                    f"scorer {self.name!r} must return one of {_ALLOWED_RETURNS}; "
                    f"got list[{' | '.join(kinds)}] (item {i} is {type(item).__name__})",
                )
                return [self._feedback_error(error)]
            if not item.name:
                error = AssessmentError(
                    "SCORER_BAD_RETURN",
                    f"scorer {self.name!r} returned a list of Feedback; each needs a distinct `name` "
                    f"so they can be told apart, but item {i} has none",
                )
                return [self._feedback_error(error)]
            if not _good_name(item.name):
                return [self._bad_name(item.name, i)]
        for item in items:
            if item.source is None:
                item.source = self.source
        return items

    def _bad_name(self, name: object, index: int) -> Feedback:
        """The error feedback for a returned name that cannot be a key part or a label."""
        what = f"{len(name)} characters" if isinstance(name, str) else f"a {type(name).__name__}"
        error = AssessmentError(
            "SCORER_BAD_RETURN",
            f"scorer {self.name!r}: feedback {index} has a name of {what}; "
            f"names must be strings of at most {MAX_NAME_CHARS} characters",
        )
        return self._feedback_error(error)

    def _error_feedback(self, exc: BaseException) -> Feedback:
        if isinstance(exc, JudgeError):
            error = AssessmentError(exc.code, str(exc))
        else:
            message = str(exc) or type(exc).__name__
            error = AssessmentError("SCORER_ERROR", message, traceback.format_exc())
        return self._feedback_error(error)

    def _feedback_error(self, error: AssessmentError) -> Feedback:
        return Feedback(name=self.name, error=error, source=self.source)


def _good_name(name: object) -> bool:
    """Whether a returned feedback name can be stored: a string of at most `MAX_NAME_CHARS`."""
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS


def _fn_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__name__", type(fn).__name__))


def _declared_params(fn: Callable[..., Any]) -> frozenset[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ScorerDefinitionError(f"cannot read the signature of {fn!r}: {exc}") from exc
    names: list[str] = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ScorerDefinitionError(
                f"scorer {_fn_name(fn)!r} declares unsupported parameter {p.name!r} "
                f"(*args/**kwargs); a scorer may only take {', '.join(SCORER_PARAMS)}"
            )
        if p.kind is p.POSITIONAL_ONLY and p.name in SCORER_PARAMS:
            raise ScorerDefinitionError(
                f"scorer {_fn_name(fn)!r}: parameter {p.name!r} must not be positional-only"
            )
        names.append(p.name)
    return frozenset(names)


@overload
def scorer(func: Callable[..., Any], /) -> Scorer: ...


@overload
def scorer(
    func: None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    aggregations: Iterable[str] | None = None,
) -> Callable[[Callable[..., Any]], Scorer]: ...


def scorer(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    aggregations: Iterable[str] | None = None,
) -> Scorer | Callable[[Callable[..., Any]], Scorer]:
    """Turn a function into a `Scorer`; usable bare (`@scorer`) or with arguments.

    The function may declare any subset of `inputs`, `outputs`, `expectations`, `trace`
    and return bool, int, float, str, `Feedback`, `list[Feedback]` or None (nothing to
    record). It may be `async def`.

    Raises:
        ScorerDefinitionError: at decoration time, naming the offending parameter, if the
            function declares anything else.

    Example:
        >>> @scorer
        ... def exact_match(outputs, expectations):
        ...     return outputs == expectations["expected_response"]
        >>> exact_match(outputs="195", expectations={"expected_response": "195"})
        True
    """

    def wrap(fn: Callable[..., Any]) -> Scorer:
        return Scorer(fn, name=name, timeout=timeout, aggregations=aggregations)

    return wrap(func) if func is not None else wrap
