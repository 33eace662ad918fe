"""Fixtures for the scorer tests: decoded MLflow fixtures and a builder of minimal traces.

The fixtures folder itself (`fixtures_dir`, i.e. `<repo>/../shared/fixtures/mlflow`) comes
from `tests/conftest.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from scorers import Trace, decode_trace

FIXTURE_FILES = {
    "ok": "mlflow_trace_01_ok_acme.json",
    "ok2": "mlflow_trace_02_ok_globex.json",
    "ok3": "mlflow_trace_03_ok_initech.json",
    "error": "mlflow_trace_04_error_crm_timeout.json",
    "assessed": "mlflow_trace_05_with_assessments.json",
    "long": "mlflow_trace_06_ok_long_output.json",
    "evaluated": "mlflow_trace_07_after_evaluate_and_judges.json",
}

_MISSING: Any = object()


@pytest.fixture(scope="session")
def fixture_traces(fixtures_dir: Path) -> dict[str, Trace]:
    """Every MLflow fixture, decoded, by a short key (`ok`, `error`, `assessed`, ...)."""
    return {key: decode_trace((fixtures_dir / name).read_bytes()) for key, name in FIXTURE_FILES.items()}


def build_trace_dict(
    inputs: Any = _MISSING,
    outputs: Any = _MISSING,
    *,
    trace_id: str = "tr-" + "ab" * 16,
    spans: list[dict[str, Any]] | None = None,
    assessments: list[dict[str, Any]] | None = None,
    state: str = "OK",
) -> dict[str, Any]:
    """A minimal MLflow 3 trace (wire form) whose root span has these inputs/outputs."""
    attrs: dict[str, str] = {"mlflow.spanType": '"AGENT"'}
    if inputs is not _MISSING:
        attrs["mlflow.spanInputs"] = orjson.dumps(inputs).decode()
    if outputs is not _MISSING:
        attrs["mlflow.spanOutputs"] = orjson.dumps(outputs).decode()
    root = {
        "span_id": "AAAAAAAAAAE=",
        "parent_span_id": None,
        "name": "app",
        "start_time_unix_nano": 1_000_000_000,
        "end_time_unix_nano": 1_250_000_000,
        "status": {"code": "STATUS_CODE_OK" if state == "OK" else "STATUS_CODE_ERROR", "message": ""},
        "attributes": attrs,
        "events": [],
    }
    info: dict[str, Any] = {"trace_id": trace_id, "state": state, "execution_duration_ms": 250}
    if assessments is not None:
        info["assessments"] = assessments
    return {"info": info, "data": {"spans": [root, *(spans or [])]}}


@pytest.fixture
def make_trace() -> Callable[..., Trace]:
    """`make_trace(inputs, outputs, ...)` -> a decoded minimal trace (see `build_trace_dict`)."""

    def make(*args: Any, **kwargs: Any) -> Trace:
        return decode_trace(orjson.dumps(build_trace_dict(*args, **kwargs)))

    return make
