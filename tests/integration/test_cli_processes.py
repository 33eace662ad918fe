"""The CLI against the real stack: `topics create` on existing topics, and SIGTERM to a
multi-process worker (issue 20 items 3-5)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stream._config import Settings
from stream._kafka import topic_partitions

pytestmark = pytest.mark.integration


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TRACEWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TRACEWATCH_REDIS_URL": settings.redis_url,
        "TRACEWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "TRACEWATCH_CONSUMER_GROUP": settings.consumer_group,
        "TRACEWATCH_REDIS_PREFIX": settings.redis_prefix,
        "COLUMNS": "200",
        **extra,
    }


def tracewatch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_topics_create_says_when_partitions_differ_and_adds_them_on_request(settings: Settings) -> None:
    # A variable the command does not use (the Redis URL) does not stop it.
    env = cli_env(settings, TRACEWATCH_REDIS_URL="notaurl")
    first = tracewatch("topics", "create", "--partitions", "2", env=env)
    assert first.returncode == 0, first.stderr
    again = tracewatch("topics", "create", "--partitions", "6", env=env)
    assert again.returncode == 0, again.stderr
    assert "exists: 2 partitions, wanted 6" in again.stdout
    assert "--add-partitions" in again.stderr
    assert asyncio.run(topic_partitions(settings, settings.topics.traces)) == 2
    grown = tracewatch("topics", "create", "--partitions", "6", "--add-partitions", env=env)
    assert grown.returncode == 0, grown.stderr
    assert "partitions: 2 -> 6" in grown.stdout
    for topic in (settings.topics.traces, settings.topics.feedback):
        assert asyncio.run(topic_partitions(settings, topic)) == 6


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found += [int(c) for c in children]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_sigterm_to_a_multi_process_worker_stops_its_children(settings: Settings) -> None:
    env = cli_env(settings, TRACEWATCH_METRICS_PORT="0")
    assert tracewatch("topics", "create", env=env).returncode == 0
    parent = subprocess.Popen(
        [sys.executable, "-m", "stream", "worker", "--processes", "2", "--scorer", "no_error", "--log-level", "INFO"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(iter(parent.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and sum("metrics on http" in line for line in log) < 2:
            time.sleep(0.2)
        children = _children(parent.pid)
        assert len(children) == 2, f"the worker processes did not start: {log}"
        time.sleep(2)  # let them join the group
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=60)
        assert all(not _alive(c) for c in children), "worker processes outlived their parent (orphans)"
        reader.join(timeout=10)
        assert parent.returncode == 0, "".join(log)
        assert sum("worker stopped after" in line for line in log) == 2, "".join(log)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        assert parent.stderr is not None
        parent.stderr.close()
