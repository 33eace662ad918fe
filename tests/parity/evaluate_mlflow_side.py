"""MLflow's half of the `evaluate()` parity test: runs in MLflow's venv, imports only mlflow + stdlib.

Usage: `python evaluate_mlflow_side.py FIXTURE...` prints, after a marker line, JSON `{form: metrics}`: the
`metrics` of real `mlflow.genai.evaluate` (tracking in a throwaway SQLite store from
`MLFLOW_TRACKING_URI`) for each input form of `evaluate_cases`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

os.environ["TRACEWATCH_PARITY_SIDE"] = "mlflow"
os.environ.setdefault("MLFLOW_GENAI_EVAL_ENABLE_SCORER_TRACING", "false")
os.environ.setdefault("MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent))
logging.disable(logging.WARNING)

import evaluate_cases as cases  # noqa: E402
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402  (MLflow's own dependency)
from mlflow.entities import Trace  # noqa: E402

MARKER = "@@tracewatch-evaluate-parity@@"


def main(paths: list[str]) -> None:
    mlflow.set_experiment("evaluate-parity")
    traces = [Trace.from_json(Path(p).read_text()) for p in paths]
    forms = {
        "rows": dict(data=cases.ROWS, scorers=cases.SCORERS),
        "dataframe": dict(data=pd.DataFrame(cases.ROWS), scorers=cases.SCORERS),
        "traces": dict(data=traces, scorers=cases.TRACE_SCORERS),
        "predict_fn": dict(
            data=[{"inputs": r["inputs"]} for r in cases.ROWS], scorers=cases.TRACE_SCORERS, predict_fn=cases.predict
        ),
    }
    out = {"mlflow_version": mlflow.__version__, "metrics": {}}
    for form, kwargs in forms.items():
        result = mlflow.genai.evaluate(**kwargs)
        out["metrics"][form] = {k: float(v) for k, v in result.metrics.items()}
    # MLflow prints its own summary to stdout: the result is the last line, after a marker.
    print("\n" + MARKER + json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
