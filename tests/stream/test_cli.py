"""`tracewatch worker`: where its `/metrics` listens (the worker loop itself is faked)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

import stream.worker._runtime as runtime
from sinks import serve_metrics
from stream.cli._app import app
from stream.cli._worker import env_of as _env_of


@pytest.fixture
def started(monkeypatch) -> list[dict[str, Any]]:
    """What each faked worker run got: its settings and the address its /metrics bound."""
    for name in ("TRACEWATCH_METRICS_HOST", "TRACEWATCH_METRICS_PORT"):
        monkeypatch.delenv(name, raising=False)
    runs: list[dict[str, Any]] = []

    async def fake_run_worker(settings, scorers, **kwargs) -> int:
        # The same call run_worker makes, on a free port.
        server = serve_metrics(CollectorRegistry(), settings.metrics_host, 0)
        try:
            runs.append({"settings": settings, "bound": server.server.server_address[0]})
        finally:
            server.shutdown()
        return 0

    monkeypatch.setattr(runtime, "run_worker", fake_run_worker)
    return runs


def test_metrics_bind_loopback_by_default(started) -> None:
    # Its exemplars carry trace ids: nothing off this machine may read them unless asked for.
    result = CliRunner().invoke(app, ["worker", "--scorer", "no_error"])
    assert result.exit_code == 0, result.output
    [run] = started
    assert run["settings"].metrics_host == "127.0.0.1"
    assert run["bound"] == "127.0.0.1"


def test_metrics_host_from_the_flag_and_the_environment(started, monkeypatch) -> None:
    result = CliRunner().invoke(app, ["worker", "--scorer", "no_error", "--metrics-host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("TRACEWATCH_METRICS_HOST", "0.0.0.0")
    result = CliRunner().invoke(app, ["worker", "--scorer", "no_error"])
    assert result.exit_code == 0, result.output
    assert [r["bound"] for r in started] == ["0.0.0.0", "0.0.0.0"]
    # --processes N passes the address on to its children.
    assert _env_of(started[0]["settings"])["TRACEWATCH_METRICS_HOST"] == "0.0.0.0"
