"""The demo end to end, small: stack, worker, API, judge, traffic with a regression, feedback."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from stream.cli._demo import DemoOptions, run_demo, stop_demo
from tests.helpers import free_port

pytestmark = pytest.mark.integration


async def test_demo_shows_the_injected_regression(fixtures_dir) -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=False)
    opts = DemoOptions(traces=600, duration_s=12, fixtures=fixtures_dir,
                       api_port=free_port(), metrics_port=free_port(), judge_port=free_port())
    try:
        code = await run_demo(opts, console)
    finally:
        stop_demo(console)
    out = buf.getvalue()
    assert code == 0, out
    assert "600 traces" in out and "0 refused" in out and "0 traces not scored yet" in out
    assert "regression visible in no_error" in out
    assert "SIMULATED" in out
