"""The `@scorer` decorator and the `Scorer` object it produces.

A scorer is a plain function of any subset of `inputs`, `outputs`, `expectations` and
`trace`, exactly as in MLflow. The decorator only inspects the signature and attaches
metadata: it registers nothing and runs nothing (the registry lives in `stream`).

The worker calls `Scorer.run` once per sampled (trace, scorer) pair, so the work that does
not depend on the trace (which arguments to build, whether a skip is possible) is decided
once, at decoration time. Whatever the function does, `run`/`arun` return a `ScoreResult`
and never raise: a failed scorer is a data error, recorded as an error feedback.

Results follow `mlflow.genai.evaluate` (checked by `tests/parity/` against MLflow itself):
a missing `inputs`/`outputs` is passed as None and missing ground truth as `{}`, a bad
return value or a raised exception is a `SCORER_ERROR` feedback with a stack trace, and a
returned `Feedback` without a source gets `CODE`/`default`. The deliberate differences (a
code scorer that takes `expectations` is skipped on a trace without any, so production
traffic does not turn into a flood of `KeyError`s) are listed in
`docs/mlflow-compatibility.md`.
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
    DEFAULT_SOURCE,
    AssessmentError,
    AssessmentSource,
    AssessmentSourceType,
    Feedback,
    State,
)
from scorers._exceptions import JudgeError, ScorerDefinitionError
from scorers._limits import MAX_NAME_CHARS
from scorers._registration import RegistrationMixin
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

_ALLOWED_RETURNS = "int, float, bool, str, Feedback, or list[Feedback]"  # MLflow's wording
_SKIPPABLE: Final = frozenset({"inputs", "outputs", "expectations"})


@dataclass(slots=True)
class ScoreResult:
    """What one scorer concluded about one trace.

    `feedbacks` is empty exactly when the pair was skipped; `skip_reason` then says why
    (`missing_inputs`, `missing_outputs`, `missing_expectations` for an argument listed in
    the scorer's `skip_when_missing`, `no_result`, or a reason the caller sets such as
    `budget`).
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
    for item in trace.info.raw_assessments:
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


class Scorer(RegistrationMixin):
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
        aggregations: the aggregates `evaluate` reports for numeric values: names from
            `AGGREGATIONS` or callables (list of values -> number), as in MLflow.
        source: the source of the feedback this scorer builds itself (plain values, errors):
            `CODE`/<name> for code, the judge's model for judges, as in MLflow.
        skip_when_missing: the arguments whose absence records a skip (`missing_<arg>`)
            instead of calling the function. MLflow calls with None/`{}`; tracewatch does too,
            except for `expectations` on code scorers and every argument of judges (see
            `docs/mlflow-compatibility.md`). Pass `skip_when_missing=()` for MLflow's behaviour.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        timeout: float | None = None,
        aggregations: Iterable[str | Callable[[list[float]], float]] | None = None,
        is_judge: bool = False,
        params: Iterable[str] | None = None,
        source: AssessmentSource | None = None,
        skip_when_missing: Iterable[str] | None = None,
    ) -> None:
        """Wrap `fn`; `params` overrides signature inspection (for `**kwargs` functions).

        Raises:
            ScorerDefinitionError: `fn` declares a parameter other than the four allowed,
                the name, timeout or aggregations are invalid, or `skip_when_missing` names
                something other than `inputs`, `outputs`, `expectations`.
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
        # A callable (list of values -> number) is a custom aggregation, as in MLflow.
        unknown = sorted(str(a) for a in aggs if not callable(a) and a not in AGGREGATIONS)
        if unknown:
            raise ScorerDefinitionError(
                f"scorer {self.name!r}: unknown aggregation {unknown[0]!r}; "
                f"choose from {', '.join(sorted(AGGREGATIONS))}"
            )
        if skip_when_missing is None:
            # Ground truth is absent on most production traces: calling every scorer that needs
            # it with `{}` would record an error per trace, not a measurement. A judge would
            # also spend tokens judging an answer that does not exist.
            skip = (declared & _SKIPPABLE) if is_judge else (declared & {"expectations"})
        else:
            skip = frozenset(skip_when_missing)
            if not skip <= _SKIPPABLE:
                raise ScorerDefinitionError(
                    f"scorer {self.name!r}: skip_when_missing may only name inputs, outputs, expectations; "
                    f"got {sorted(skip - _SKIPPABLE)}"
                )
        self.skip_when_missing: frozenset[str] = frozenset(skip)
        self.params: frozenset[str] = declared
        self.is_async: bool = inspect.iscoroutinefunction(fn)
        self.is_judge: bool = is_judge
        self.timeout: float | None = timeout
        self.aggregations: tuple[str | Callable[[list[float]], float], ...] = aggs
        self.source: AssessmentSource = source or AssessmentSource(AssessmentSourceType.CODE, self.name)
        self._fn = fn
        # Decided once so the hot path is a handful of attribute reads and `if`s.
        self._wants_inputs = "inputs" in declared
        self._wants_outputs = "outputs" in declared
        self._wants_expectations = "expectations" in declared
        self._wants_trace = "trace" in declared
        self._skip_inputs = "inputs" in skip
        self._skip_outputs = "outputs" in skip
        self._skip_expectations = "expectations" in skip
        # A feedback the function returns without a source: MLflow leaves `Feedback`'s own
        # default (CODE/default); a judge's feedback is the judge's.
        self._returned_source = self.source if is_judge else DEFAULT_SOURCE
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
        """The keyword arguments for this trace, or the skip reason when a required one is missing.

        As `mlflow.genai.evaluate` builds them from a trace: the root span's inputs and
        outputs (None when absent) and the trace's expectations (`{}` when none), unless the
        argument is in `skip_when_missing`.
        """
        kwargs: dict[str, Any] = {}
        if self._wants_inputs:
            inputs = trace.inputs
            if inputs is None and self._skip_inputs:
                return "missing_inputs"
            kwargs["inputs"] = inputs
        if self._wants_outputs:
            root = trace.root_span
            # `has_outputs` rather than `is None`: a root that returned JSON null did answer.
            if root is None or not root.has_outputs:
                if self._skip_outputs:
                    return "missing_outputs"
                kwargs["outputs"] = None
            else:
                kwargs["outputs"] = root.outputs
        if self._wants_expectations:
            exp = expectations_of(trace) if expectations is None else expectations
            if not exp and self._skip_expectations:
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
                value.source = self._returned_source
            return ScoreResult([value], None, perf_counter() - start)
        if isinstance(value, list):
            return ScoreResult(
                self._list_result(value), None if value else "no_result", perf_counter() - start
            )
        return ScoreResult([self._bad_return(type(value).__name__)], None, perf_counter() - start)

    def _list_result(self, items: list[Any]) -> list[Feedback]:
        for i, item in enumerate(items):
            if not isinstance(item, Feedback):
                # MLflow names the first item's type, whichever item is wrong.
                return [self._bad_return(f"list[{type(items[0]).__name__}]")]
            if not item.name:
                # MLflow names each after the scorer; two results of one name would overwrite
                # each other in keyed storage, so this is an error here (a listed difference).
                return [
                    self._raised_error(
                        f"scorer {self.name!r} returned a list of Feedback; each needs a distinct `name` "
                        f"so they can be told apart, but item {i} has none"
                    )
                ]
            if not _good_name(item.name):
                return [self._bad_name(item.name, i)]
        for item in items:
            if item.source is None:
                item.source = self._returned_source
        return items

    def _bad_return(self, kind: str) -> Feedback:
        """The `SCORER_ERROR` feedback for a return value of a type MLflow refuses."""
        return self._raised_error(f"{self.name} must return one of {_ALLOWED_RETURNS}. Got {kind}")

    def _raised_error(self, message: str) -> Feedback:
        """A `SCORER_ERROR` feedback whose stack trace points here, as MLflow's raised check gives.

        The error path only: raising costs microseconds, and a stack trace is what tells a
        user reading the feedback that tracewatch, not their code, refused the value.
        """
        try:
            raise TypeError(message)
        except TypeError as exc:
            return self._error_feedback(exc)

    def _bad_name(self, name: object, index: int) -> Feedback:
        """The error feedback for a returned name that cannot be a key part or a label."""
        what = f"{len(name)} characters" if isinstance(name, str) else f"a {type(name).__name__}"
        return self._raised_error(
            f"scorer {self.name!r}: feedback {index} has a name of {what}; "
            f"names must be strings of at most {MAX_NAME_CHARS} characters"
        )

    def _error_feedback(self, exc: BaseException) -> Feedback:
        """The feedback for an exception: `SCORER_ERROR`, `str(exc)` and the stack trace (as MLflow)."""
        if isinstance(exc, JudgeError):
            error = AssessmentError(exc.code, str(exc))
        else:
            error = AssessmentError("SCORER_ERROR", str(exc), traceback.format_exc())
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
    aggregations: Iterable[str | Callable[[list[float]], float]] | None = None,
    skip_when_missing: Iterable[str] | None = None,
) -> Callable[[Callable[..., Any]], Scorer]: ...


def scorer(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    aggregations: Iterable[str | Callable[[list[float]], float]] | None = None,
    skip_when_missing: Iterable[str] | None = None,
) -> Scorer | Callable[[Callable[..., Any]], Scorer]:
    """Turn a function into a `Scorer`; usable bare (`@scorer`) or with arguments.

    The function may declare any subset of `inputs`, `outputs`, `expectations`, `trace`
    and return bool, int, float, str, `Feedback`, `list[Feedback]` or None (nothing to
    record). It may be `async def`.

    A missing `inputs`/`outputs` is passed as None, as MLflow does; a trace without ground
    truth skips a scorer that takes `expectations` (`missing_expectations`) unless
    `skip_when_missing=()` asks for MLflow's call with `{}`.

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
        return Scorer(
            fn, name=name, timeout=timeout, aggregations=aggregations, skip_when_missing=skip_when_missing
        )

    return wrap(func) if func is not None else wrap
