"""A running worker follows the registry live: rate changes, stop/start and versions within 5 s."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from sinks import RedisSink
from stream import Settings, sample_u
from stream._kafka import create_topics
from stream.registry._records import SamplingConfig
from stream.registry._registry import Registry
from stream.worker._runtime import WorkerHandle, run_worker
from tests.helpers import synth_traces
from tests.integration.test_worker import publish

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def registry_worker(settings: Settings) -> AsyncIterator[WorkerHandle]:
    handle = WorkerHandle()
    task = asyncio.create_task(run_worker(settings, None, metrics_port=-1, handle=handle, install_signals=False))
    await asyncio.wait({task, asyncio.create_task(handle.ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield handle
    finally:
        assert handle.worker is not None
        handle.worker.stop()
        await asyncio.wait_for(task, 60)


async def batch_results(sink: RedisSink, ids: list[str], timeout: float = 5.0) -> dict[str, dict | None]:
    """Wait (at most `timeout`) until every trace of the batch was processed; return its no_error result."""
    deadline = time.monotonic() + timeout
    while True:
        docs = {t: await sink.get_trace(t) for t in ids}
        out = {t: (d or {}).get("assessments", {}).get("no_error") for t, d in docs.items()}
        if time.monotonic() > deadline:
            return out
        await asyncio.sleep(0.25)


async def test_live_changes_reach_a_running_worker(settings: Settings, fixture_bytes: list[bytes]) -> None:
    settings = settings.model_copy(update={"registry_poll_interval_s": 1.0})
    await create_topics(settings)
    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    registry = Registry.from_settings(settings)
    batches = iter([list(synth_traces(fixture_bytes, 300, seed=40 + i)) for i in range(4)])
    async with registry_worker(settings):
        # v1 at rate 0.2
        await registry.register("no_error", name="no_error", experiment_id="1",
                                sampling_config=SamplingConfig(sample_rate=0.2))
        await asyncio.sleep(0.2)
        a = next(batches)
        await publish(settings, a)
        res = await batch_results(sink, [t for t, _ in a])
        assert {t for t, r in res.items() if r} == {t for t, _ in a if sample_u(t) < 0.2}
        assert {r["scorer_version"] for r in res.values() if r} == {1}
        # update to 1.0
        await registry.update("no_error", experiment_id="1", sampling_config=SamplingConfig(sample_rate=1.0))
        await asyncio.sleep(0.2)
        b = next(batches)
        await publish(settings, b)
        res = await batch_results(sink, [t for t, _ in b])
        assert all(res.values()), "after update to 1.0 every trace is scored"
        # stop: nothing new is sampled
        await registry.stop("no_error", experiment_id="1")
        await asyncio.sleep(0.2)
        c = next(batches)
        await publish(settings, c)
        res = await batch_results(sink, [t for t, _ in c])
        assert not any(res.values()), "a stopped scorer samples nothing"
        # a new version, started again: results name version 2
        await registry.register("no_error", name="no_error", experiment_id="1",
                                sampling_config=SamplingConfig(sample_rate=1.0))
        await asyncio.sleep(0.2)
        d = next(batches)
        await publish(settings, d)
        res = await batch_results(sink, [t for t, _ in d])
        assert all(res.values()) and {r["scorer_version"] for r in res.values() if r} == {2}
    await registry.aclose()
    await sink.aclose()


async def test_judge_budget_skips_with_reason_once_spent(settings: Settings, fixture_bytes: list[bytes]) -> None:
    from stream.cli.judge_server import JudgeServer
    from stream.registry._records import BudgetConfig

    await create_topics(settings)
    items = list(synth_traces(fixture_bytes, 40, seed=50))
    with JudgeServer(latency=0.0) as server:
        s = settings.model_copy(update={"judge_base_url": server.base_url, "registry_poll_interval_s": 1.0})
        sink = RedisSink.from_url(s.redis_url, prefix=s.redis_prefix)
        registry = Registry.from_settings(s)
        await registry.register("Safety", name="safety", experiment_id="1",
                                sampling_config=SamplingConfig(sample_rate=1.0),
                                budget=BudgetConfig(max_calls_per_hour=5))
        async with registry_worker(s):
            await publish(s, items)
            deadline = time.monotonic() + 30
            while True:
                cov = await sink.coverage("1", "safety")
                if sum(v for k, v in cov.items() if ":" not in k) >= 40 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        await registry.aclose()
        await sink.aclose()
    assert cov.get("skipped:budget") == 35, cov   # 5 calls an hour, then skipped and counted
    assert cov.get("scored", 0) + cov.get("skipped:missing_outputs", 0) == 5
    assert server.stats()["requests"] <= 5
