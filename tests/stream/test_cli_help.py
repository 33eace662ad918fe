"""`--help` shows what was written (no Rich markup eating `[...]`) and stays light to load
(issue 20 item 4, issue 12 item 2)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from stream.cli._app import app


def help_of(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = re.sub(r"(\w)-\n\s+", r"\1-", result.output)  # click wraps after hyphens
    return " ".join(text.split())  # unwrap


def test_worker_help_keeps_brackets() -> None:
    text = help_of("worker")
    assert "REF[@RATE]" in text
    for hint in (
        "[env TRACEWATCH_SCORERS, comma-separated]",
        "[env TRACEWATCH_METRICS_PORT: 9108]",
        "[env TRACEWATCH_METRICS_HOST: 127.0.0.1]",
        "[env TRACEWATCH_JUDGE_MAX_IN_FLIGHT: 32]",
        "[env TRACEWATCH_KAFKA_BOOTSTRAP]",
        "[default: 2000; x>=1]",
    ):
        assert hint in text, hint
    assert "--redis-url" in text and "Redis URL, e.g. redis://127.0.0.1:6379/0 [env TRACEWATCH_REDIS_URL]" in text


def test_scorers_help_reads_properly() -> None:
    text = help_of("scorers", "register")
    assert "Name to register it under [default: the scorer's own name]." in text
    assert "Redis URL, e.g. redis://127.0.0.1:6379/0 [env TRACEWATCH_REDIS_URL]" in text
    assert "[default: all]" in help_of("scorers", "get")


def test_other_hints_are_shown() -> None:
    assert "[default: <prefix>traces]" in help_of("publish")
    assert "[env TRACEWATCH_API_PORT: 8080]" in help_of("api")
    assert "[env TRACEWATCH_JUDGE_RPM]" in help_of("evaluate")


def test_topics_help_says_what_it_has() -> None:
    text = help_of("topics")
    assert "inspect" not in text and "create" in text
    create = help_of("topics", "create")
    assert "--add-partitions" in create and "[env TRACEWATCH_PARTITIONS, default 4]" in create


@pytest.mark.parametrize("args", [["--help"], ["worker", "--help"], ["scorers", "--help"], ["api", "--help"]])
def test_help_imports_no_fastapi_uvicorn_or_redis(args) -> None:
    code = (
        "import sys\n"
        "from stream.cli import app\n"
        "try:\n"
        f"    app({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('fastapi', 'uvicorn', 'redis', 'starlette') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "HEAVY []" in out.stderr, out.stderr
