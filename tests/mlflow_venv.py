"""One private venv with real MLflow, shared by every test that runs MLflow as a peer.

tracewatch never depends on MLflow: tests that compare with it, or use its exporter, tracking
server or client, run it in this venv (as a subprocess) so its dependencies never meet ours.
The venv is built once per machine under the cache folder (`.ci/run` builds it up front) and
reused; `TRACEWATCH_MLFLOW_PYTHON` points at another interpreter that has MLflow instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MLFLOW_VERSION = "3.17.2"
# MLflow exports OTLP only when an OTLP exporter package is installed beside it (without one it
# records nothing and says so only at DEBUG level), so the venv carries both transports.
PACKAGES = (
    f"mlflow=={MLFLOW_VERSION}",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-exporter-otlp-proto-grpc",
)
CHECK = "import mlflow, opentelemetry.exporter.otlp.proto.http.trace_exporter, opentelemetry.exporter.otlp.proto.grpc"
CACHE = Path(os.environ.get("TRACEWATCH_CACHE_DIR", Path.home() / ".cache" / "tracewatch"))
VENV = CACHE / f"venv-mlflow-{MLFLOW_VERSION}"


def mlflow_python(build: bool = True) -> Path | None:
    """The interpreter of the MLflow venv (built if missing and `build`), or None if unavailable."""
    override = os.environ.get("TRACEWATCH_MLFLOW_PYTHON", "").strip()
    if override:
        return Path(override)
    py = VENV / "bin" / "python"
    if _imports_mlflow(py):
        return py
    if not build:
        return None
    VENV.parent.mkdir(parents=True, exist_ok=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PACKAGES], check=True)
    return py if _imports_mlflow(py) else None


def _imports_mlflow(py: Path) -> bool:
    if not py.exists():
        return False
    done = subprocess.run([str(py), "-c", CHECK], capture_output=True)
    return done.returncode == 0


if __name__ == "__main__":  # `python tests/mlflow_venv.py` builds it (used by .ci/run)
    print(mlflow_python())
