"""The demo end to end, small: stack, worker, API, judge, traffic with a regression, feedback."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import httpx
import pytest
from rich.console import Console

from stream.cli._demo import API_KEY, STACK, STACK_MARK, DemoOptions, run_demo, stop_demo
from tests.helpers import free_port

pytestmark = pytest.mark.integration


def _stack_up() -> bool:
    return subprocess.run([sys.executable, str(STACK), "status"], capture_output=True).returncode == 0


async def test_demo_shows_the_injected_regression_and_every_printed_link_answers(fixtures_dir) -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=False)
    opts = DemoOptions(traces=600, duration_s=12, fixtures=fixtures_dir, api_port=free_port(), metrics_port=free_port())
    stack_was_up = _stack_up()
    try:
        code = await run_demo(opts, console)
        out = buf.getvalue()
        # The links the demo prints for exploring must all answer while its processes run
        # (with the API key it prints beside them).
        links = sorted(set(re.findall(r"https?://[^\s'\"]+", out)))
        assert links, out
        async with httpx.AsyncClient(timeout=5, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            statuses = {url: (await client.get(url)).status_code for url in links}
    finally:
        stop_demo(console)
    assert code == 0, out
    assert {url for url, status in statuses.items() if status != 200} == set(), statuses
    assert any(url.endswith("/openapi.json") for url in links) and not any(url.endswith("/docs") for url in links)
    assert "600 traces" in out and "0 refused" in out and "0 traces not scored yet" in out
    assert "regression visible in no_error" in out
    assert "SIMULATED" in out
    # The stack is left as the demo found it (the test run's stack is up: the demo neither
    # restarts nor stops it).
    assert _stack_up() == stack_was_up and not STACK_MARK.exists()
