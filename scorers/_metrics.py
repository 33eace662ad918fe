"""`metrics` of an evaluation, computed as `mlflow.genai.evaluate` computes them.

As MLflow's `compute_aggregated_metrics`: every feedback with a value that casts to a number
(numbers, bools as 1/0, "yes"/"no" in any case as 1/0; errors, None and other values left
out) is grouped by feedback name; each group is aggregated with the aggregations of the
scorer named by the part of the name after its first `/` (the whole name when it has none),
`["mean"]` by default, and reported as `"<feedback name>/<aggregation>"` (a callable's
`__name__`). The built-in aggregations reproduce numpy's (`np.mean`, `np.median`, `np.var`,
`np.percentile(x, 90)`, linear interpolation) to the last bit or within rounding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from scorers._assessment import Assessment
from scorers._scorer import Scorer

__all__ = ["AGGREGATE_FUNCTIONS", "compute_metrics", "metric_value"]

log = logging.getLogger("tracewatch.evaluate")


def metric_value(value: Any) -> float | None:
    """The number MLflow aggregates for a feedback value, or None when it is left out."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, str):
        low = value.lower()
        if low == "yes":
            return 1.0
        if low == "no":
            return 0.0
    return None


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


def _variance(values: Sequence[float]) -> float:
    """Population variance (numpy's `var`, ddof 0)."""
    m = _mean(values)
    return math.fsum((x - m) ** 2 for x in values) / len(values)


def _percentile(values: Sequence[float], q: float) -> float:
    """numpy's default (linear) percentile, with its interpolation formula."""
    s = sorted(values)
    pos = q / 100 * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    t = pos - lo
    a, b = s[lo], s[hi]
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


AGGREGATE_FUNCTIONS: Final[dict[str, Callable[[Sequence[float]], float]]] = {
    "min": lambda v: float(min(v)),
    "max": lambda v: float(max(v)),
    "mean": _mean,
    "median": _median,
    "variance": _variance,
    "p90": lambda v: _percentile(v, 90),
    "p99": lambda v: _percentile(v, 99),
}


def compute_metrics(assessments: Iterable[Assessment], scorers: Iterable[Scorer]) -> dict[str, float]:
    """`{"<name>/<aggregation>": value}` over the assessments, as MLflow's evaluate reports.

    A custom aggregation that raises is logged and left out, as in MLflow.
    """
    values: dict[str, list[float]] = {}
    for a in assessments:
        if a.error is not None or a.state == "skipped":
            continue
        number = metric_value(a.value)
        if number is None:
            continue
        group = values.get(a.name)
        if group is None:
            group = values[a.name] = []
        group.append(number)
    wanted: dict[str, Sequence[Any]] = {s.name: (s.aggregations or ("mean",)) for s in scorers}
    out: dict[str, float] = {}
    for name, group in values.items():
        for agg in wanted.get(name.split("/", 1)[-1], ("mean",)):
            if isinstance(agg, str):
                out[f"{name}/{agg}"] = AGGREGATE_FUNCTIONS[agg](group)
                continue
            try:
                out[f"{name}/{getattr(agg, '__name__', repr(agg))}"] = agg(group)
            except Exception as exc:
                log.error("Error computing aggregation %r due to: %s", agg, exc)
    return out
