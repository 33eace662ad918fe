"""Where the MLflow fixtures are: the one answer for tests, bench, demo, traffic replayer and CLI."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHARED_ENV", "find_fixtures"]

SHARED_ENV = "TRACEWATCH_SHARED"
_REPO = Path(__file__).resolve().parents[2]


def find_fixtures(path: str | os.PathLike[str] | None = None, *, must_exist: bool = True) -> Path:
    """The folder of MLflow fixture traces.

    `path` when given; otherwise `$TRACEWATCH_SHARED/fixtures/mlflow`; otherwise
    `../shared/fixtures/mlflow` beside the repository (a checkout: `<repo>/../shared`).

    Raises:
        FileNotFoundError: `must_exist` and nothing is there; the message says where it looked
            and how to point elsewhere.
    """
    if path is not None:
        found, how = Path(path), "given path"
    elif os.environ.get(SHARED_ENV):
        found, how = Path(os.environ[SHARED_ENV]) / "fixtures" / "mlflow", f"${SHARED_ENV}/fixtures/mlflow"
    else:
        found, how = _REPO.parent / "shared" / "fixtures" / "mlflow", "beside the repository"
    if must_exist and not found.exists():
        raise FileNotFoundError(
            f"MLflow fixtures not found at {found} ({how}); put the shared folder beside the repository "
            f"or set {SHARED_ENV}=<folder holding fixtures/mlflow>"
        )
    return found
