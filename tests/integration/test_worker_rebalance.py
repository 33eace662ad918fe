"""Two worker processes; one paused past its session timeout, then resumed, under steady traffic.

Break 4 of issue 11: on SIGCONT the paused worker's commit was refused (the group had moved
its partitions to the other worker), the failed flush stayed in the commit chain, the next
flush re-raised it and the worker exited with `commit of {...} failed`. A refused commit after
a rebalance is normal: the resumed worker must keep running, and the two together must still
score every trace exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from sinks import RedisSink
from stream import Settings
from stream._kafka import create_topics
from tests.helpers import free_port, synth_traces
from tests.integration.test_worker import expected_pairs, publish, wait_for_coverage
from tests.integration.test_worker_faults import RATES_NAMES, assert_exact, coverage_total, spawn_worker

pytestmark = pytest.mark.integration

SESSION_TIMEOUT = 6.0
PAUSE = 15.0  # well past the session timeout: the group rebalances without the paused worker


async def test_worker_paused_past_session_timeout_keeps_running_and_nothing_doubles(
    settings: Settings, fixture_bytes: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # spawn_worker passes the environment on: short group timeouts keep the test short
    monkeypatch.setenv("TRACEWATCH_CONSUMER_SESSION_TIMEOUT", str(SESSION_TIMEOUT))
    monkeypatch.setenv("TRACEWATCH_CONSUMER_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("TRACEWATCH_CONSUMER_MAX_POLL_INTERVAL", "30")
    await create_topics(settings, partitions=4)
    items = list(synth_traces(fixture_bytes, 24_000, seed=24))
    ids = [t for t, _ in items]
    want = expected_pairs(ids)
    target = sum(len(s) for s in want.values())
    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    files = [log.open("wb") for log in logs]
    procs = [spawn_worker(settings, metrics_port=free_port(), stderr=f) for f in files]
    paused, other = procs

    async def steady_traffic() -> None:
        """About 1,000 traces a second for 24 s: before, during and after the pause."""
        for i in range(0, len(items), 200):
            await publish(settings, items[i : i + 200])
            await asyncio.sleep(0.2)

    try:
        await asyncio.sleep(4)  # both join the group before traffic
        pub = asyncio.create_task(steady_traffic())
        deadline = time.monotonic() + 60
        while await coverage_total(sink, list(RATES_NAMES)) < 0.1 * target:
            assert all(p.poll() is None for p in procs), "a worker died before the pause"
            assert time.monotonic() < deadline, "no progress"
            await asyncio.sleep(0.1)
        paused.send_signal(signal.SIGSTOP)
        await asyncio.sleep(PAUSE)
        paused.send_signal(signal.SIGCONT)
        await asyncio.sleep(2 * SESSION_TIMEOUT)  # it rejoins, is refused its stale commits, goes on
        assert paused.poll() is None, "the resumed worker exited: " + logs[0].read_text()[-2000:]
        await pub
        cov = await wait_for_coverage(sink, {n: len(s) for n, s in want.items()}, timeout=120)
        assert paused.poll() is None, "the resumed worker exited: " + logs[0].read_text()[-2000:]
        assert other.poll() is None, "the other worker exited: " + logs[1].read_text()[-2000:]
        await assert_exact(sink, ids, cov)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in procs]
        for f in files:
            f.close()
        await sink.aclose()
    assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]
    # the paused worker did lose its partitions and was refused a commit (the case under test)
    text = logs[0].read_text()
    assert "rebalance" in text or "not committing revoked partitions" in text, text[-2000:]
