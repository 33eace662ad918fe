"""Offline evaluation: run scorers over traces or rows, no Kafka or Redis.

`evaluate(data, scorers, predict_fn=None)` takes MLflow's input forms (`mlflow.genai.evaluate`):
a path (see `iter_traces`), traces (ours, MLflow's `Trace` objects, trace dicts or JSON), dict
rows with `inputs`/`outputs`/`expectations` (and optionally `trace`), a pandas DataFrame of
such rows, or rows of `inputs` with a `predict_fn` called as `predict_fn(**inputs)`. The result
carries MLflow's `metrics` (each scorer's `aggregations`, see `scorers._metrics`) and a result
table (`rows`, and `result_df` when pandas is installed).

The same `Scorer` objects as the worker, the same states: every (trace, scorer) pair ends
`scored`, `error` or `skipped`, and a record that does not decode is counted as invalid
with its `DecodeError.reason` instead of stopping the run.

Code scorers run inline through `Scorer.run` (no task, no thread per call: that is where
the throughput comes from); judges and scorers with a timeout run through `Scorer.arun`
as tasks, at most `concurrency` at a time.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, TypeAlias

import orjson

from scorers._assessment import Assessment, assessments_for, numeric_value
from scorers._decode import decode_trace, trace_from_dict
from scorers._exceptions import DecodeError
from scorers._judges import aclose_default_judge_client
from scorers._metrics import compute_metrics
from scorers._resolve import resolve_scorer
from scorers._scorer import Scorer, ScoreResult, expectations_of
from scorers._trace import Span, Trace

__all__ = [
    "EvaluationData",
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
"""A path for `iter_traces`, or traces/raw records/(label, bytes)."""

EvaluationData: TypeAlias = TraceRecords | Iterable[Mapping[str, Any]] | Any
"""What `evaluate` accepts: `TraceRecords`, MLflow `Trace`s or trace dicts, dict rows, a DataFrame."""

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
    """Everything an evaluation produced, in (trace, scorer) order.

    `metrics` are MLflow's (`"<name>/<aggregation>"`, see `scorers._metrics`); `rows` is the
    result table, one dict per evaluated trace or row, and `result_df` the same as a pandas
    DataFrame (None without pandas), as `mlflow.genai.evaluate` returns it.
    """

    assessments: list[Assessment]
    invalid: list[InvalidRecord]
    records: int
    traces: int
    duration_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    _row_ends: list[int] = field(default_factory=list, repr=False)
    _row_data: list[_RowData | None] = field(default_factory=list, repr=False)

    @property
    def traces_per_s(self) -> float:
        return self.records / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> list[ScorerSummary]:
        return summarize(self.assessments)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The result table: per trace or row its `trace_id`, `inputs`, `outputs`,
        `expectations` (when the data was in memory) and, per feedback name, MLflow's
        `<name>/value`, `/rationale`, `/error_message`, `/error_code` columns, plus
        `<name>/skip_reason` for a skipped pair (tracewatch's state). Built on access.
        """
        out: list[dict[str, Any]] = []
        start = 0
        for i, end in enumerate(self._row_ends):
            batch = self.assessments[start:end]
            start = end
            data = self._row_data[i] if i < len(self._row_data) else None
            row: dict[str, Any] = {"trace_id": batch[0].trace_id if batch else None}
            if data is not None:
                row["trace_id"] = data.trace_id
                row["inputs"] = data.inputs
                row["outputs"] = data.outputs
                row["expectations"] = data.expectations
                if data.error_message is not None:
                    row["error_message"] = data.error_message
            for a in batch:
                if a.state == "skipped":
                    row[f"{a.name}/skip_reason"] = a.skip_reason
                    continue
                err = a.error
                row[f"{a.name}/value"] = a.value
                row[f"{a.name}/rationale"] = a.rationale
                row[f"{a.name}/error_message"] = None if err is None else err.error_message
                row[f"{a.name}/error_code"] = None if err is None else err.error_code
            out.append(row)
        return out

    @property
    def result_df(self) -> Any:
        """`rows` as a pandas DataFrame, or None when pandas is not installed."""
        try:
            import pandas as pd
        except ImportError:
            return None
        return pd.DataFrame(self.rows)

    @property
    def tables(self) -> dict[str, Any]:
        """MLflow's older name: `{"eval_results": result_df}` ({} without pandas)."""
        df = self.result_df
        return {} if df is None else {"eval_results": df}


def _assessments(result: ScoreResult, trace: Trace, scorer: Scorer) -> list[Assessment]:
    return assessments_for(
        trace.info.trace_id,
        trace.info.experiment_id,
        scorer.name,
        feedbacks=result.feedbacks,
        skip_reason=result.skip_reason,
        duration_s=result.duration_s,
    )


@dataclass(slots=True)
class _RowData:
    """What the result table shows of one in-memory row or trace."""

    trace_id: str
    inputs: Any
    outputs: Any
    expectations: Any
    error_message: str | None = None


_UNSET: Any = object()


@dataclass(slots=True)
class _Row:
    """One dict row (MLflow's `inputs`/`outputs`/`expectations`/`trace` columns), not yet a trace."""

    inputs: Any = _UNSET
    outputs: Any = _UNSET
    expectations: Any = _UNSET
    trace: Any = None
    error_message: str | None = None


def _missing(value: Any) -> bool:
    """None, or pandas' NaN for a column a row lacks (as MLflow's `is_none_or_nan`)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_dataframe(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "to_dict") and hasattr(data, "columns")


def _is_trace_dict(item: Mapping[str, Any]) -> bool:
    """An MLflow trace as a dict (`Trace.to_dict()`), rather than a row."""
    return "info" in item and not ({"inputs", "outputs", "trace"} & item.keys())


def _mlflow_trace(item: Any) -> dict[str, Any] | None:
    """The wire dict of an `mlflow.entities.Trace` (duck-typed: MLflow is never imported)."""
    to_dict = getattr(item, "to_dict", None)
    if callable(to_dict) and hasattr(item, "info") and hasattr(item, "data"):
        d = to_dict()
        return d if isinstance(d, dict) else None
    return None


def _row(item: Mapping[str, Any]) -> _Row:
    row = _Row()
    for key in ("inputs", "outputs", "expectations"):
        if key in item and not _missing(item[key]):
            setattr(row, key, item[key])
    trace = item.get("trace")
    row.trace = None if _missing(trace) else trace
    return row


def _records(data: EvaluationData) -> Iterable[tuple[str, Any]]:
    """`(label, record)`: a Trace, raw JSON (bytes/str), a trace dict or a `_Row`."""
    if isinstance(data, (str, os.PathLike)):
        yield from iter_traces(data)
        return
    if _is_dataframe(data):
        try:
            import pandas  # noqa: F401  (only to say clearly what is missing)
        except ImportError:
            raise ImportError(
                "evaluate got a DataFrame but pandas is not installed: `pip install pandas`, or pass a list of dicts"
            ) from None
        frame: Any = data
        data = frame.to_dict(orient="records")
    if isinstance(data, Mapping):
        raise TypeError("data must be a list of rows or traces (or a DataFrame or a path), not a single dict")
    for i, item in enumerate(data):
        if isinstance(item, tuple):
            yield item
        elif isinstance(item, Trace):
            yield item.trace_id, item
        elif isinstance(item, Mapping):
            yield f"#{i}", (dict(item) if _is_trace_dict(item) else _row(item))
        elif isinstance(item, (bytes, bytearray, memoryview, str)):
            yield f"#{i}", item
        else:
            d = _mlflow_trace(item)
            if d is None:
                raise TypeError(
                    f"data item {i} is a {type(item).__name__}: expected a dict row, a trace "
                    "(tracewatch's or MLflow's), or trace JSON"
                )
            yield f"#{i}", d


def _to_trace(record: Any) -> Trace:
    """A record as a Trace.

    Raises:
        DecodeError: trace JSON or a trace dict that does not decode.
    """
    if isinstance(record, Trace):
        return record
    if isinstance(record, dict):
        return trace_from_dict(record)
    if isinstance(record, (bytes, bytearray, memoryview, str)):
        return decode_trace(record)
    d = _mlflow_trace(record)
    if d is None:
        raise DecodeError(
            "not_object", f"a row's trace must be a trace, a trace dict or JSON, not {type(record).__name__}"
        )
    return trace_from_dict(d)


def _b64_id() -> str:
    return base64.b64encode(uuid.uuid4().bytes[:8]).decode()


def _json_attr(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(repr(value)).decode()


def _root_span(
    trace_id: str, name: str, span_type: str, inputs: Any, outputs: Any, *, ok: bool, base: Mapping[str, Any] | None
) -> Span:
    """A root span holding exactly these inputs and outputs (the objects themselves, for scorers).

    Without `base`, new (as MLflow's `create_minimal_trace`); with it, a copy of that span
    whose inputs/outputs are replaced (a row's columns win over its trace, as in MLflow).
    """
    now = time.time_ns()
    raw: dict[str, Any] = (
        dict(base)
        if base is not None
        else {
            "trace_id": "",
            "span_id": _b64_id(),
            "parent_span_id": "",
            "name": name,
            "start_time_unix_nano": now,
            "end_time_unix_nano": now,
            "status": {"code": "STATUS_CODE_OK" if ok else "STATUS_CODE_ERROR"},
        }
    )
    attrs = dict(raw.get("attributes") or {})
    if base is None:
        attrs["mlflow.traceRequestId"] = _json_attr(trace_id)
        attrs["mlflow.spanType"] = _json_attr(span_type)
    decoded: dict[str, Any] = {}
    if inputs is not _UNSET:
        attrs["mlflow.spanInputs"] = _json_attr(inputs)
        decoded["mlflow.spanInputs"] = inputs
    if outputs is not _UNSET:
        attrs["mlflow.spanOutputs"] = _json_attr(outputs)
        decoded["mlflow.spanOutputs"] = outputs
    elif base is None:
        attrs.pop("mlflow.spanOutputs", None)
    raw["attributes"] = attrs
    span = Span(raw)
    # The row's own objects, not a JSON round trip of them: MLflow hands scorers the row's
    # values. (The JSON attributes above are what `trace.data.request/response` read.)
    cache = getattr(span, "_decoded", _UNSET)
    if cache is None or isinstance(cache, dict):
        span._decoded = decoded
    return span


def _row_trace(row: _Row, name: str = "root_span", span_type: str = "CHAIN") -> Trace:
    """The trace a row is scored on: its own (its columns overriding the root's) or a minimal one.

    Raises:
        DecodeError: the row's `trace` does not decode.
    """
    if row.trace is not None:
        trace = _to_trace(row.trace)
        if row.inputs is _UNSET and row.outputs is _UNSET:
            return trace
        root = trace.root_span
        if root is None:
            return trace
        span = _root_span(trace.trace_id, root.name, root.span_type, row.inputs, row.outputs, ok=True, base=root._raw)
        spans = [span if s is root else s for s in trace.spans]
        return Trace(info=trace.info, spans=spans, raw=trace.raw)
    trace_id = "tr-" + uuid.uuid4().hex
    ok = row.error_message is None
    span = _root_span(trace_id, name, span_type, row.inputs, row.outputs, ok=ok, base=None)
    now_ms = time.time_ns() // 1_000_000
    info = {
        "trace_id": trace_id,
        "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "0"}},
        "request_time": now_ms,
        "execution_duration_ms": 0,
        "state": "OK" if ok else "ERROR",
        "trace_metadata": {},
        "tags": {},
        "assessments": [],
    }
    trace = trace_from_dict({"info": info, "data": {"spans": []}})
    trace.spans.append(span)
    return trace


async def _predict(predict_fn: Callable[..., Any], row: _Row) -> None:
    """Fill a row's outputs from `predict_fn(**inputs)` (MLflow's call); a failure is noted on the row."""
    inputs = row.inputs
    if not isinstance(inputs, Mapping):
        raise ValueError(
            "with predict_fn, every row's 'inputs' must be a dictionary of field names and values, "
            "for example {'query': 'What is MLflow?'}"
        )
    try:
        out = predict_fn(**inputs)
        if inspect.isawaitable(out):
            out = await out
    except Exception as exc:
        row.error_message = f"Failed to invoke the predict_fn with {inputs}: {exc}"
        row.outputs = _UNSET
        return
    row.outputs = out


async def aevaluate(
    data: EvaluationData,
    scorers: Iterable[Scorer | str],
    predict_fn: Callable[..., Any] | None = None,
    *,
    concurrency: int = 16,
    on_progress: Callable[[int], Any] | None = None,
) -> EvaluationResult:
    """Score every trace or row with every scorer; the async core of `evaluate`.

    Args:
        data: a path (see `iter_traces`); or a list (any iterable) of `Trace`s, MLflow
            `Trace`s, trace dicts, raw trace JSON, `(label, bytes)` pairs, or dict rows with
            `inputs`, `outputs`, `expectations` and optionally `trace`; or a pandas DataFrame
            of such rows. A row without a `trace` is scored on a minimal trace whose root span
            holds its inputs and outputs; a row's columns win over its trace's root span.
        scorers: `Scorer`s or references for `resolve_scorer`.
        predict_fn: called as `predict_fn(**inputs)` for each row (sync or async); what it
            returns becomes the row's `outputs` (a raise: outputs None, the row's
            `error_message` says why, and the scorers still run, as in MLflow).
        concurrency: how many async scorer calls (judges, scorers with a timeout) may run
            at once; judges are further capped by their client's `max_in_flight`.
        on_progress: called with the number of records finished so far, after each one.

    Raises:
        ValueError: no scorers, `concurrency < 1`, `predict_fn` with traces (or rows with a
            `trace`) or with `inputs` that are not dictionaries.
        TypeError: `data` holds something that is neither a row nor a trace.
        ImportError: a DataFrame was passed and pandas is not installed.
        ScorerDefinitionError: a scorer reference does not resolve.
        FileNotFoundError: the path does not exist.
    """
    scorer_list = [resolve_scorer(s) if isinstance(s, str) else s for s in scorers]
    if not scorer_list:
        raise ValueError("evaluate needs at least one scorer")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    in_memory = not isinstance(data, (str, os.PathLike))
    if predict_fn is not None and not in_memory:
        raise ValueError("predict_fn needs rows of inputs, not trace files")
    predict_name = getattr(predict_fn, "__name__", "predict_fn") if predict_fn is not None else "root_span"
    inline = [(i, s) for i, s in enumerate(scorer_list) if not s.is_async and s.timeout is None]
    deferred = [(i, s) for i, s in enumerate(scorer_list) if s.is_async or s.timeout is not None]
    wants_expectations = any("expectations" in s.params for s in scorer_list)
    results: list[tuple[int, int, list[Assessment]]] = []
    invalid: list[InvalidRecord] = []
    row_data: list[_RowData | None] = []
    trace_index: list[int] = []  # record index of each decoded trace, in order
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
    for label, raw in _records(data):
        ti = n_records
        n_records += 1
        row = raw if isinstance(raw, _Row) else None
        if predict_fn is not None:
            if row is None or row.trace is not None:
                raise ValueError("predict_fn makes the traces: pass rows of inputs, without traces")
            await _predict(predict_fn, row)
        try:
            if row is not None:
                trace = _row_trace(row, predict_name, "UNKNOWN" if predict_fn is not None else "CHAIN")
            else:
                trace = raw if isinstance(raw, Trace) else _to_trace(raw)
        except DecodeError as exc:
            invalid.append(InvalidRecord(label, exc.reason, exc.message))
            finished()
            continue
        n_traces += 1
        trace_index.append(ti)
        if row is not None:
            # A row's expectations column (MLflow: {} when absent); a trace's own otherwise.
            exp = row.expectations if row.expectations is not _UNSET else ({} if row.trace is None else None)
        else:
            exp = None
        if exp is None and wants_expectations:
            exp = expectations_of(trace)  # once per trace, not once per scorer; {} makes some skip
        if in_memory:
            row_data.append(
                _RowData(
                    trace.trace_id,
                    trace.inputs if row is None or row.inputs is _UNSET else row.inputs,
                    trace.outputs if row is None or row.outputs is _UNSET else row.outputs,
                    exp if exp is not None else expectations_of(trace),
                    None if row is None else row.error_message,
                )
            )
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
    assessments: list[Assessment] = []
    row_ends: list[int] = []
    by_record = iter(trace_index)
    current = next(by_record, None)
    for ti, _, batch in results:
        while current is not None and ti > current:
            row_ends.append(len(assessments))
            current = next(by_record, None)
        assessments.extend(batch)
    while current is not None:
        row_ends.append(len(assessments))
        current = next(by_record, None)
    return EvaluationResult(
        assessments,
        invalid,
        n_records,
        n_traces,
        perf_counter() - start,
        metrics=compute_metrics(assessments, scorer_list),
        _row_ends=row_ends,
        _row_data=row_data,
    )


def evaluate(
    data: EvaluationData,
    scorers: Iterable[Scorer | str],
    predict_fn: Callable[..., Any] | None = None,
    *,
    concurrency: int = 16,
    on_progress: Callable[[int], Any] | None = None,
) -> EvaluationResult:
    """Synchronous `aevaluate`, shaped as `mlflow.genai.evaluate(data=, scorers=, predict_fn=)`.

    Runs its own event loop (do not call from async code; use `aevaluate` there).

    Example:
        >>> result = evaluate("traces.jsonl", ["no_error", "output_word_count"])  # doctest: +SKIP
        >>> result.metrics  # doctest: +SKIP
        {'no_error/mean': 0.98, 'output_word_count/mean': 41.5}
        >>> rows = [{"inputs": {"q": "2+2?"}, "outputs": "4", "expectations": {"expected_response": "4"}}]
        >>> evaluate(data=rows, scorers=[exact_match]).metrics  # doctest: +SKIP
        {'exact_match/mean': 1.0}
    """

    async def run() -> EvaluationResult:
        try:
            return await aevaluate(data, scorers, predict_fn, concurrency=concurrency, on_progress=on_progress)
        finally:
            # The loop ends here, so a default judge client created on it must close too.
            await aclose_default_judge_client()

    return asyncio.run(run())
