"""`evaluate()` side by side with MLflow 3.17.2's `mlflow.genai.evaluate`: the same `metrics`.

`evaluate_cases.py` holds the scorers and rows (only its imports differ per side);
`evaluate_mlflow_side.py` runs real `mlflow.genai.evaluate` in MLflow's venv on each input
form (dict rows, a DataFrame, fixture traces, `predict_fn`) with a throwaway SQLite tracking
store. MLflow's output is cached by the hash of its inputs, as in `test_parity.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from scorers import evaluate
from tests.mlflow_venv import CACHE, MLFLOW_VERSION, mlflow_python

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[1].parent / "shared" / "fixtures" / "mlflow"


def fixture_paths() -> list[Path]:
    """The fixture traces with distinct trace ids (07 is 06 again, after an evaluate)."""
    seen: set[str] = set()
    out = []
    for p in sorted(FIXTURES.glob("mlflow_trace_*.json")):
        tid = json.loads(p.read_bytes())["info"]["trace_id"]
        if tid not in seen:
            seen.add(tid)
            out.append(p)
    return out


def mlflow_metrics() -> dict[str, dict[str, float]]:
    paths = fixture_paths()
    digest = hashlib.sha256(MLFLOW_VERSION.encode())
    for p in [HERE / "evaluate_cases.py", HERE / "evaluate_mlflow_side.py", *paths]:
        digest.update(p.name.encode() + b"\0" + p.read_bytes())
    cached = CACHE / "parity" / f"evaluate-{digest.hexdigest()[:32]}.json"
    if cached.exists():
        return dict(json.loads(cached.read_text())["metrics"])
    py = mlflow_python()
    if py is None:
        pytest.fail("no MLflow venv: run `python3 tests/mlflow_venv.py` (needs network once)")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": "", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlruns.db"}
        done = subprocess.run(
            [str(py), str(HERE / "evaluate_mlflow_side.py"), *map(str, paths)],
            capture_output=True, text=True, timeout=600, env=env, cwd=tmp, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = cached.with_suffix(".tmp")
    result = done.stdout.rsplit("@@tracewatch-evaluate-parity@@", 1)[-1]
    tmp_file.write_text(result)
    tmp_file.replace(cached)
    return dict(json.loads(result)["metrics"])


def our_metrics() -> dict[str, dict[str, float]]:
    os.environ.pop("TRACEWATCH_PARITY_SIDE", None)
    sys.modules.pop("tests.parity.evaluate_cases", None)
    from tests.parity import evaluate_cases as cases

    forms: dict[str, dict[str, Any]] = {
        "rows": dict(data=cases.ROWS, scorers=cases.SCORERS),
        "traces": dict(data=[p.read_bytes() for p in fixture_paths()], scorers=cases.TRACE_SCORERS),
        "predict_fn": dict(
            data=[{"inputs": r["inputs"]} for r in cases.ROWS], scorers=cases.TRACE_SCORERS, predict_fn=cases.predict
        ),
    }
    try:
        import pandas as pd

        forms["dataframe"] = dict(data=pd.DataFrame(cases.ROWS), scorers=cases.SCORERS)
    except ImportError:
        pass
    return {form: evaluate(**kwargs).metrics for form, kwargs in forms.items()}


def test_metrics_match_mlflow_evaluate() -> None:
    theirs = mlflow_metrics()
    ours = our_metrics()
    compared = 0
    for form, metrics in ours.items():
        assert sorted(metrics) == sorted(theirs[form]), form
        for key, value in metrics.items():
            assert math.isclose(value, theirs[form][key], rel_tol=1e-12, abs_tol=1e-12), (form, key, value)
            compared += 1
    assert compared >= 60, compared
