"""The MLflow half of the parity suite: run in MLflow's own venv, imports only mlflow + stdlib.

Usage: `python mlflow_side.py FIXTURE...` prints JSON: per fixture, the probe of every trace
accessor and, per scorer, the feedbacks `mlflow.genai.evaluate` records. The scorers run
through evaluate's own steps (`_convert_to_eval_set`, `EvalItem.from_dataset_row`,
`_compute_eval_scores`) rather than `evaluate()` itself, which would also need a tracking
server and log runs: the same calls, without the bookkeeping around them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["TRACEWATCH_PARITY_SIDE"] = "mlflow"
os.environ.setdefault("MLFLOW_GENAI_EVAL_ENABLE_SCORER_TRACING", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases
import mlflow
from mlflow.entities import Trace
from mlflow.genai.evaluation.entities import EvalItem
from mlflow.genai.evaluation.harness import _compute_eval_scores
from mlflow.genai.evaluation.utils import _convert_to_eval_set


def main(paths: list[str]) -> None:
    traces = [Trace.from_json(Path(p).read_text()) for p in paths]
    rows = _convert_to_eval_set(traces).to_dict(orient="records")
    out: dict[str, object] = {"mlflow_version": mlflow.__version__, "traces": {}, "aggregations": {}}
    for s in cases.SCORERS:
        out["aggregations"][s.name] = list(s.aggregations or [])
    for path, trace, row in zip(paths, traces, rows, strict=True):
        item = EvalItem.from_dataset_row(row)
        by_scorer: dict[str, list[dict[str, object]]] = {}
        for s in cases.SCORERS:
            # One scorer per call so each feedback is known to be that scorer's, whatever
            # name it carries; the call is otherwise exactly what evaluate() makes.
            result = _compute_eval_scores(eval_item=item, scorers=[s])
            by_scorer[s.name] = [
                cases.feedback_fields(
                    {
                        "name": fb.name,
                        "value": fb.value,
                        "rationale": fb.rationale,
                        "error": None if fb.error is None else fb.error.to_dictionary(),
                        "source_type": fb.source.source_type,
                        "source_id": fb.source.source_id,
                        "metadata": fb.metadata,
                    }
                )
                for fb in result.assessments
            ]
        out["traces"][Path(path).name] = {"probe": cases.probe(trace), "results": by_scorer}
    json.dump(out, sys.stdout, sort_keys=True, default=repr)


if __name__ == "__main__":
    main(sys.argv[1:])
