"""Feedback and ground truth through the worker: exact join counts in every order, and re-runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from scorers import Trace, decode_trace, resolve_scorer
from sinks import RedisSink
from stream import Settings
from stream._events import FeedbackEvent
from stream._kafka import create_topics
from stream.registry._scorer_set import ActiveScorer, ScorerSet
from stream.worker._runtime import WorkerHandle, run_worker
from tests.helpers import parse_metrics, synth_traces
from tests.integration.test_worker import publish, running_worker

pytestmark = pytest.mark.integration


async def send_events(settings: Settings, events: list[FeedbackEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        futs = [await producer.send(settings.topics.feedback, key=e.trace_id.encode(), value=e.to_json()) for e in events]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def wait_until(cond, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_feedback_before_after_duplicated_and_redelivered(settings: Settings, fixture_bytes: list[bytes]) -> None:
    await create_topics(settings)
    items = list(synth_traces(fixture_bytes, 140, seed=31))
    ok = {tid: decode_trace(d).status == "OK" for tid, d in items}
    early, late = items[:70], items[70:]
    # users vote on every trace; some change their mind; every event is also sent twice
    events: list[FeedbackEvent] = []
    final: dict[tuple[str, str], bool] = {}
    for i, (tid, _) in enumerate(items):
        for user in ("alice", "bob"):
            up = (i + len(user)) % 3 != 0
            events.append(FeedbackEvent("feedback", tid, "user_satisfaction", up, source_id=user))
            if i % 5 == 0:
                up = not up
                events.append(FeedbackEvent("feedback", tid, "user_satisfaction", up, source_id=user))
            final[(tid, user)] = up
    early_ids = {t for t, _ in early}
    before = [e for e in events if e.trace_id in early_ids]   # feedback first, traces later
    after = [e for e in events if e.trace_id not in early_ids]
    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)

    async def votes_total() -> int:
        v = await sink.votes("1", "user_satisfaction")
        return v.get("up", 0) + v.get("down", 0)

    async with running_worker(settings, ["no_error@1.0"]):
        await send_events(settings, before + before)          # duplicated
        await asyncio.sleep(2)
        await publish(settings, early + late)
        await send_events(settings, after + after)
        await wait_until(lambda: _eq(votes_total, len(final)))
        await wait_until(lambda: _cells_total(sink, len(final)))
    expected: dict[str, int] = {}
    for (tid, _user), up in final.items():
        cell = f"{'pass' if ok[tid] else 'fail'}:{'up' if up else 'down'}"
        expected[cell] = expected.get(cell, 0) + 1
    got = {k: v for k, v in (await sink.agreement("1", "no_error")).items() if v}
    assert got == expected
    votes = await sink.votes("1", "user_satisfaction")
    assert votes.get("up", 0) == sum(final.values()) and votes.get("down", 0) == len(final) - sum(final.values())
    # redelivery: a fresh consumer group replays both topics from the start -> nothing changes
    replay = settings.model_copy(update={"consumer_group": settings.consumer_group + "-replay"})
    async with running_worker(replay, ["no_error@1.0"]) as handle:
        await wait_until(lambda: _processed(handle, len(items) + 2 * len(events)))
    assert {k: v for k, v in (await sink.agreement("1", "no_error")).items() if v} == expected
    doc = await sink.get_trace(items[0][0])
    assert set(doc["feedback"]["user_satisfaction"]) == {"alice", "bob"}
    await sink.aclose()


async def test_separators_in_experiment_and_feedback_names_neither_crash_nor_cross(
    settings: Settings, fixture_bytes: list[bytes]
) -> None:
    """Issue 11, break 3, end to end: an experiment id with `\\x1f` and a feedback name starting
    with `\\x1e` next to a real vote. The worker used to exit on every changed vote (and lose the
    Prometheus counts on replay) and the forged name suppressed the real vote."""
    await create_topics(settings)
    exp, forged = "x\x1fy", "\x1euser_satisfaction"
    (tid, data), = list(synth_traces(fixture_bytes[:1], 1, seed=33))
    doc = orjson.loads(data)
    doc["info"]["trace_location"] = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}}
    ok = decode_trace(orjson.dumps(doc)).status == "OK"
    verdict = "pass" if ok else "fail"
    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    events = [
        FeedbackEvent("feedback", tid, forged, False, source_id="bob"),  # the forgery first
        FeedbackEvent("feedback", tid, "user_satisfaction", True, source_id="bob"),
        FeedbackEvent("feedback", tid, "user_satisfaction", False, source_id="bob"),  # a changed vote
        FeedbackEvent("feedback", tid, "user_satisfaction", True, source_id="alice"),
    ]
    async with running_worker(settings, ["no_error@1.0"]) as handle:
        await publish(settings, [(tid, orjson.dumps(doc))])
        await wait_until(lambda: _has_exp(sink, tid, exp))
        for e in events:  # one batch each: every one moves counts on its own
            await send_events(settings, [e])
            await asyncio.sleep(0.3)
        await wait_until(lambda: _processed(handle, 1 + len(events)))
        metrics_text = httpx.get(f"http://127.0.0.1:{handle.metrics_port}/metrics").text
    # (a worker that exited would have failed the wait above, and re-raised on leaving the block)
    assert await sink.votes(exp, "user_satisfaction") == {"up": 1, "down": 1}  # bob's current down, alice up
    assert await sink.votes(exp, forged) == {"down": 1}
    cells = {k: v for k, v in (await sink.agreement(exp, "no_error")).items() if v}
    assert cells == {f"{verdict}:down": 2, f"{verdict}:up": 1}
    m = parse_metrics(metrics_text)
    fb = {dict(k[1])["name"] + "/" + dict(k[1])["value"]: v for k, v in m.items()
          if k[0] == "tracewatch_feedback_total" and dict(k[1]).get("experiment") == exp}
    assert fb == {forged + "/down": 1, "user_satisfaction/up": 2, "user_satisfaction/down": 1}
    assert m.get(("tracewatch_join_malformed_total", frozenset()), 0) == 0
    await sink.aclose()


async def _has_exp(sink: RedisSink, tid: str, exp: str) -> bool:
    doc = await sink.get_trace(tid)
    return bool(doc and doc["experiment_id"] == exp and doc["assessments"])


async def _eq(f, n: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(await f() == n)


async def _cells_total(sink: RedisSink, n: int) -> bool:
    return sum((await sink.agreement("1", "no_error")).values()) == n


async def _processed(handle, n: int) -> bool:  # type: ignore[no-untyped-def]
    return handle.worker is not None and handle.worker.processed >= n


async def test_expectation_after_trace_produces_expectation_based_assessment(settings: Settings, fixture_bytes: list[bytes]) -> None:
    await create_topics(settings)
    (tid, data), = list(synth_traces(fixture_bytes[:1], 1, seed=32))
    trace = decode_trace(data)
    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    async with running_worker(settings, ["exact_match@1.0", "contains_expected@1.0"]):
        await publish(settings, [(tid, data)])

        async def skipped() -> bool:
            doc = await sink.get_trace(tid)
            return bool(doc and doc["assessments"].get("exact_match", {}).get("skip_reason") == "missing_expectations")

        await wait_until(skipped)
        await send_events(settings, [FeedbackEvent("expectation", tid, "expected_response", trace.outputs, source_id="labeler")])

        async def scored() -> bool:
            doc = await sink.get_trace(tid)
            return bool(doc and doc["assessments"]["exact_match"]["state"] == "scored")

        await wait_until(scored)
    doc = await sink.get_trace(tid)
    assert doc["assessments"]["exact_match"]["value"] is True
    assert doc["assessments"]["exact_match"]["run_id"].startswith("e")
    assert doc["expectations"] == {"expected_response": trace.outputs}
    cov = await sink.coverage("1", "exact_match")
    assert cov.get("skipped") == 1 and cov.get("scored") == 1  # a re-run on ground truth is a new attempt
    await sink.aclose()


async def test_a_filter_raising_on_a_rerun_is_an_error_pair_and_the_worker_goes_on(
    settings: Settings, fixture_bytes: list[bytes]
) -> None:
    """Issue 12: the re-run called the filter unguarded, so a filter that raised there stopped
    the worker, and the expectation was redelivered (and stopped it) on every restart."""
    await create_topics(settings)
    (tid, data), (tid2, data2) = list(synth_traces(fixture_bytes[:2], 2, seed=34))
    trace = decode_trace(data)
    seen: set[str] = set()

    def breaks_on_second_look(t: Trace) -> bool:  # passes the first pass, raises on the re-run
        if t.info.trace_id in seen:
            raise KeyError("metadata.gone")
        seen.add(t.info.trace_id)
        return True

    exact = resolve_scorer("exact_match")
    snapshot = ScorerSet.of([ActiveScorer(exact, exact.name, predicate=breaks_on_second_look)])
    handle = WorkerHandle()
    task = asyncio.create_task(
        run_worker(settings, lambda: snapshot, metrics_port=-1, handle=handle, install_signals=False)
    )
    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)

    async def state_of(t: str) -> str | None:
        doc = await sink.get_trace(t)
        return (doc or {}).get("assessments", {}).get("exact_match", {}).get("state")

    try:
        await asyncio.wait_for(handle.ready.wait(), 60)
        await publish(settings, [(tid, data)])
        await wait_until(lambda: _is(state_of(tid), "skipped"))  # missing_expectations; trace stored
        await send_events(settings, [FeedbackEvent("expectation", tid, "expected_response", trace.outputs)])
        await wait_until(lambda: _is(state_of(tid), "error"), timeout=30)
        await publish(settings, [(tid2, data2)])  # the worker is still consuming
        await wait_until(lambda: _is(state_of(tid2), "skipped"), timeout=30)
        assert handle.worker is not None and not handle.worker.stopping.is_set()
    finally:
        if handle.worker is not None:
            handle.worker.stop()
        await asyncio.wait_for(task, 60)
    doc = await sink.get_trace(tid)
    a = doc["assessments"]["exact_match"]
    assert a["run_id"].startswith("e")
    assert a["error"]["error_code"] == "FILTER_ERROR" and "KeyError" in a["error"]["error_message"]
    cov = await sink.coverage("1", "exact_match")
    assert cov.get("skipped") == 2 and cov.get("error") == 1
    await sink.aclose()


async def _is(value: Awaitable[str | None], want: str) -> bool:
    return await value == want
