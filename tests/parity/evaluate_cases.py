"""Scorers and rows for the `evaluate()` parity test, shared by both sides (only the imports differ).

`evaluate_mlflow_side.py` imports this in MLflow's venv with `TRACEWATCH_PARITY_SIDE=mlflow`;
`test_evaluate_parity.py` imports it in ours. Code scorers only (no LLM): every value kind
`metrics` aggregates or leaves out, every built-in aggregation, a custom aggregation callable,
and a feedback whose name carries a `/` (MLflow picks its aggregations after the slash).
"""

from __future__ import annotations

import os

if os.environ.get("TRACEWATCH_PARITY_SIDE") == "mlflow":
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer
else:
    from scorers import Feedback, scorer


def _text(value):
    """The outputs as text; "" when missing. MLflow's traces form hands a missing output over as
    pandas' NaN rather than None (a listed difference: we pass None), so both read as missing."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def spread(values):
    return max(values) - min(values)


@scorer(aggregations=["min", "max", "mean", "median", "variance", "p90"])
def length(outputs):
    return len(_text(outputs))


@scorer(aggregations=["mean", spread])
def words(outputs):
    return float(len(_text(outputs).split()))


@scorer
def answered(outputs):
    return _text(outputs) != ""


@scorer(aggregations=["median"])
def polite(inputs, outputs):
    return "Yes" if "please" in str(inputs).lower() or "thank" in _text(outputs).lower() else "no"


@scorer
def verdict_text(outputs):
    return "maybe"  # not aggregatable: no metric


@scorer(aggregations=["max"])
def shaky(inputs):
    if "boom" in str(inputs):
        raise ValueError("boom")
    return 1


@scorer
def parts(outputs):
    text = _text(outputs)
    return [
        Feedback(name="parts/length", value=len(text)),  # aggregated as `length` is
        Feedback(name="parts_digits", value=sum(c.isdigit() for c in text)),
    ]


@scorer(aggregations=["mean", "min"])
def matches(outputs, expectations):
    return outputs == expectations.get("expected_response")


SCORERS = [length, words, answered, polite, verdict_text, shaky, parts, matches]
TRACE_SCORERS = [length, words, answered, polite, verdict_text, shaky, parts]

ROWS = [
    {
        "inputs": {"question": "What is MLflow? please"},
        "outputs": "MLflow is an open source platform for the ML lifecycle.",
        "expectations": {"expected_response": "MLflow is an open source platform for the ML lifecycle."},
    },
    {
        "inputs": {"question": "boom"},
        "outputs": "Spark 3 is a data engine, thank you",
        "expectations": {"expected_response": "Spark is a data engine"},
    },
    {
        "inputs": {"question": "How many rows in 2024?"},
        "outputs": "42 rows, 7 columns",
        "expectations": {"expected_response": "42 rows, 7 columns"},
    },
    {
        "inputs": {"question": "Empty answer"},
        "outputs": "",
        "expectations": {"expected_response": "something"},
    },
]


def predict(question):
    """The app under evaluation for the `predict_fn` form: called with the inputs as keywords."""
    return f"answer to {question}" if "boom" not in question else f"{len(question)} things, thank you"
