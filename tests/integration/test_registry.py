"""The registry on the real Redis: round trips, versions, live reload, forged records, the CLI.

Each test uses its own key prefix (`twtest:<uuid>:`) and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis
import typer
from typer.testing import CliRunner

from scorers import Scorer, scorer, trace_from_dict
from sinks import RegistryStore
from stream._config import Settings
from stream.cli._scorers import scorers_app
from stream.registry._budget import HourlyBudget
from stream.registry._functions import register_scorer, start_scorer, stop_scorer
from stream.registry._mlflow_api import get_scorer, list_scorers
from stream.registry._records import BudgetConfig, RegistryError, SamplingConfig, utcnow
from stream.registry._registry import Registry
from stream.registry._watch import RegistryWatcher

pytestmark = pytest.mark.integration

MODULE = "tests.integration.test_registry"


@scorer
def long_answer(outputs: Any) -> bool:
    """Importable by reference from this module (on the test allowlist)."""
    return len(str(outputs)) > 20


@pytest.fixture
def reg_settings() -> Iterator[Settings]:
    prefix = f"twtest:{uuid.uuid4().hex}:"
    s = Settings(redis_prefix=prefix, scorer_modules=["tests.integration"])
    try:
        yield s
    finally:
        # Every registry key is a fixed one or named by the index: no SCAN over a shared Redis.
        store = RegistryStore(aioredis.Redis(), prefix=prefix)
        client = redis.Redis.from_url(s.redis_url)
        members = [orjson.loads(m) for m in client.smembers(store.index_key)]
        client.delete(store.index_key, store.versions_key, store.generation_key,
                      *(store.record_key(e, n) for e, n in members))
        client.close()


@pytest.fixture
async def registry(reg_settings: Settings) -> AsyncIterator[Registry]:
    async with Registry.from_settings(reg_settings) as r:
        yield r


@pytest.fixture
async def raw(reg_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(reg_settings.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def get(raw: aioredis.Redis, key: str) -> str:
    value = await raw.get(key)
    assert isinstance(value, str), key
    return value


def trace(outputs: str, span_type: str = "LLM") -> Any:
    span = {"span_id": "s0", "name": "root",
            "attributes": {"mlflow.spanOutputs": orjson.dumps(outputs).decode(), "mlflow.spanType": f'"{span_type}"'}}
    return trace_from_dict({"info": {"trace_id": "tr-1", "state": "OK"}, "data": {"spans": [span]}})


# -- round trips -------------------------------------------------------------------------------


async def test_register_start_update_stop_delete_round_trip(
    registry: Registry, raw: aioredis.Redis, reg_settings: Settings
) -> None:
    p = reg_settings.redis_prefix
    rec = await registry.register(f"{MODULE}:long_answer", experiment_id="1", created_by="ana")
    assert (rec.name, rec.state, rec.current_version) == ("long_answer", "stopped", 1)
    assert rec.current.ref == f"{MODULE}:long_answer" and rec.current.created_by == "ana"

    stored = orjson.loads(await get(raw, f"{p}registry:1:long_answer"))
    assert stored["versions"][0]["kind"] == "code" and stored["state"] == "stopped"
    assert await raw.smembers(f"{p}registry:index") == {'["1","long_answer"]'}
    assert int(await get(raw, f"{p}registry:generation")) == 1

    rec = await registry.start("long_answer", experiment_id="1",
                               sampling_config=SamplingConfig(sample_rate=0.25, filter_string="span.type = 'LLM'"))
    assert (rec.state, rec.sample_rate, rec.filter_string) == ("active", 0.25, "span.type = 'LLM'")

    rec = await registry.update("long_answer", experiment_id="1", sampling_config=SamplingConfig(sample_rate=0.5),
                                budget=BudgetConfig(max_calls_per_hour=10))
    assert (rec.state, rec.sample_rate, rec.filter_string) == ("active", 0.5, None)
    assert rec.budget is not None and rec.budget.max_calls_per_hour == 10

    rec = await registry.stop("long_answer", experiment_id="1")
    assert rec.state == "stopped" and rec.sample_rate == 0.5  # sampling kept for the next start
    rec = await registry.start("long_answer", experiment_id="1")
    assert rec.state == "active" and rec.sample_rate == 0.5

    assert [r.name for r in await registry.list_scorers("1")] == ["long_answer"]
    assert await registry.list_scorers("2") == []
    assert int(await get(raw, f"{p}registry:generation")) == 5  # one per change

    await registry.delete("long_answer", experiment_id="1")
    assert await raw.get(f"{p}registry:1:long_answer") is None
    assert await raw.smembers(f"{p}registry:index") == set()
    with pytest.raises(RegistryError, match="no scorer 'long_answer' in experiment '1'"):
        await registry.get_record("long_answer", experiment_id="1")


async def test_versions_increment_and_are_never_reused(registry: Registry) -> None:
    r1 = await registry.register("latency_under(max_ms=1000)", name="fast", experiment_id="1")
    r2 = await registry.register("latency_under(max_ms=2000)", name="fast", experiment_id="1",
                                 sampling_config=SamplingConfig(sample_rate=0.1))
    assert (r1.current_version, r2.current_version) == (1, 2)
    assert [v.version for v in r2.versions] == [1, 2] and r2.state == "active"
    assert r2.current.reference == "latency_under(max_ms=2000)"
    r3 = await registry.register("latency_under(max_ms=3000)", name="fast", experiment_id="1")
    assert r3.state == "active" and r3.sample_rate == 0.1  # a new version keeps state and sampling

    await registry.delete("fast", experiment_id="1")
    again = await registry.register("no_error", name="fast", experiment_id="1")
    assert [v.version for v in again.versions] == [4]


async def test_concurrent_registrations_lose_no_version(registry: Registry) -> None:
    await asyncio.gather(*(registry.register(f"latency_under(max_ms={ms})", name="lat") for ms in range(100, 108)))
    rec = await registry.get_record("lat")
    assert [v.version for v in rec.versions] == list(range(1, 9))
    assert rec.current_version in range(1, 9)


async def test_get_scorer_loads_a_callable_under_the_registered_name(registry: Registry) -> None:
    await registry.register(f"{MODULE}:long_answer", name="verbose")
    await registry.register("no_error", name="verbose")
    v1 = await registry.get_scorer("verbose", version=1)
    assert isinstance(v1, Scorer) and v1.name == "verbose"
    assert v1(outputs="a much longer answer than twenty characters") is True
    assert long_answer.name == "long_answer"  # the module's object is untouched
    with pytest.raises(RegistryError, match=r"has no version 9 \(versions: 1, 2\)"):
        await registry.get_scorer("verbose", version=9)


async def test_not_found_lists_what_is_there(registry: Registry) -> None:
    await registry.register("no_error", experiment_id="3")
    with pytest.raises(RegistryError, match=r"no scorer 'nope' in experiment '3' \(registered there: no_error\)"):
        await registry.stop("nope", experiment_id="3")
    with pytest.raises(RegistryError, match="sample_rate 0"):
        await registry.start("no_error", experiment_id="3", sampling_config=SamplingConfig(sample_rate=0))


# -- snapshots ---------------------------------------------------------------------------------


async def test_snapshot_builds_active_scorers(registry: Registry) -> None:
    await registry.register(f"{MODULE}:long_answer", name="verbose", experiment_id="1",
                            sampling_config=SamplingConfig(sample_rate=0.5, filter_string="span.type = 'LLM'"),
                            budget=BudgetConfig(max_calls_per_hour=3))
    await registry.register(f"{MODULE}:long_answer", name="verbose", experiment_id="2",
                            sampling_config=SamplingConfig(sample_rate=1.0))
    await registry.register("no_error", experiment_id="1")  # registered, not started

    snap = await registry.snapshot()
    assert snap.generation == 3 and registry.snapshot_errors == ()
    assert [(a.experiment_id, a.name, a.sample_rate) for a in snap.scorers] == [("2", "verbose", 1.0),
                                                                                ("1", "verbose", 0.5)]
    a = snap.scorers[1]
    assert a.scorer.name == "verbose" and a.version == 1
    assert a.predicate is not None and a.predicate(trace("x")) and not a.predicate(trace("x", "TOOL"))
    assert isinstance(a.budget, HourlyBudget) and a.budget.max_calls == 3
    assert snap.scorers[0].predicate is None and snap.scorers[0].budget is None

    # The budget object (and its count) survives a reload; a changed cap is applied to it.
    assert a.budget.take()
    await registry.update("verbose", experiment_id="1", budget=BudgetConfig(max_calls_per_hour=5))
    again = (await registry.snapshot()).scorers[1]
    assert again.budget is a.budget and again.budget.calls == 1 and again.budget.max_calls == 5


async def test_forged_record_outside_the_allowlist_is_refused_and_reported(
    registry: Registry, raw: aioredis.Redis, reg_settings: Settings, tmp_path: Path, monkeypatch, caplog
) -> None:
    (tmp_path / "tw_forged_mod.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    await registry.register("no_error", experiment_id="1", sampling_config=SamplingConfig(sample_rate=1.0))
    p = reg_settings.redis_prefix
    now = utcnow().isoformat()
    forged = {"name": "evil", "experiment_id": "1", "current_version": 1, "state": "active",
              "created_at": now, "updated_at": now,
              "versions": [{"version": 1, "kind": "code", "ref": "tw_forged_mod:run", "created_at": now}]}
    await raw.set(f"{p}registry:1:evil", orjson.dumps(forged))
    await raw.set(f"{p}registry:1:junk", b"{not json")
    await raw.sadd(f"{p}registry:index", '["1","evil"]', '["1","junk"]')
    await raw.incr(f"{p}registry:generation")

    snap = await registry.snapshot()
    assert [a.name for a in snap.scorers] == ["no_error"]
    issues = {i.name: i.message for i in registry.snapshot_errors}
    assert set(issues) == {"evil", "junk"}
    assert "module 'tw_forged_mod' is not allowed" in issues["evil"]
    assert "TRACEWATCH_SCORER_MODULES" in issues["evil"]
    assert "not JSON" in issues["junk"]
    assert "tw_forged_mod" not in sys.modules
    assert any("not running 1/evil" in r.getMessage() for r in caplog.records)
    # Listing skips what cannot be read; the good record is still there.
    assert [r.name for r in await registry.list_scorers()] == ["evil", "no_error"]


# -- live reload ---------------------------------------------------------------------------------


async def wait_until(cond: Any, timeout: float = 5.0) -> float:
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise AssertionError(f"not seen within {timeout} s")
        await asyncio.sleep(0.001)
    return time.perf_counter() - t0


async def test_watcher_sees_changes_at_once_with_pubsub(registry: Registry, capsys) -> None:
    watcher = RegistryWatcher(registry, poll_interval=2.0)
    await watcher.start()
    try:
        assert len(watcher.current()) == 0
        await registry.register("no_error", experiment_id="1", sampling_config=SamplingConfig(sample_rate=0.5))
        started = await wait_until(lambda: "no_error" in watcher.current().names)
        await registry.stop("no_error", experiment_id="1")
        stopped = await wait_until(lambda: len(watcher.current()) == 0)
    finally:
        await watcher.stop()
    with capsys.disabled():
        print(f"\n[registry reload via pub/sub] start: {started * 1000:.1f} ms, stop: {stopped * 1000:.1f} ms")
    assert started < 0.5 and stopped < 0.5  # far below the 2 s poll: the message did it


async def test_watcher_polls_when_pubsub_is_off(registry: Registry, capsys) -> None:
    watcher = RegistryWatcher(registry, poll_interval=0.5, pubsub=False)
    await watcher.start()
    try:
        await registry.register("no_error", sampling_config=SamplingConfig(sample_rate=1.0))
        seen = await wait_until(lambda: len(watcher.current()) == 1)
    finally:
        await watcher.stop()
    with capsys.disabled():
        print(f"\n[registry reload via polling, interval 0.5 s] {seen * 1000:.0f} ms")
    assert seen < 5.0


async def test_watcher_catches_a_change_whose_message_was_lost(
    registry: Registry, raw: aioredis.Redis, reg_settings: Settings
) -> None:
    watcher = RegistryWatcher(registry, poll_interval=0.3)
    await watcher.start()
    try:
        await registry.register("no_error", sampling_config=SamplingConfig(sample_rate=1.0))
        await wait_until(lambda: len(watcher.current()) == 1)
        # Stop it behind the watcher's back: record rewritten, generation bumped, no message.
        p = reg_settings.redis_prefix
        data = orjson.loads(await get(raw, f"{p}registry:0:no_error"))
        data["state"] = "stopped"
        await raw.set(f"{p}registry:0:no_error", orjson.dumps(data))
        await raw.incr(f"{p}registry:generation")
        await wait_until(lambda: len(watcher.current()) == 0, timeout=2.0)
    finally:
        await watcher.stop()


async def test_watcher_start_fails_loudly_without_redis(reg_settings: Settings) -> None:
    from sinks import SinkError

    dead = Registry(RegistryStore.from_url("redis://127.0.0.1:1/0"), reg_settings)
    with pytest.raises(SinkError):
        await RegistryWatcher(dead).start()
    await dead.aclose()


# -- sync API and CLI (plain functions: they run their own event loop) --------------------------


def test_module_level_functions(reg_settings: Settings) -> None:
    rec = register_scorer("no_error", name="ok", experiment_id="5", settings=reg_settings)
    assert rec.state == "stopped"
    start_scorer("ok", experiment_id="5", sampling_config=SamplingConfig(sample_rate=0.2), settings=reg_settings)
    assert [(s.name, s.status.value) for s in list_scorers("5", settings=reg_settings)] == [("ok", "STARTED")]
    assert get_scorer("ok", experiment_id="5", settings=reg_settings).name == "ok"
    assert stop_scorer("ok", experiment_id="5", settings=reg_settings).state == "stopped"


def test_cli_round_trip(reg_settings: Settings, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRACEWATCH_REDIS_PREFIX", reg_settings.redis_prefix)
    monkeypatch.setenv("TRACEWATCH_SCORER_MODULES", "tests.integration")
    monkeypatch.setenv("COLUMNS", "200")  # rich folds long references in a narrow terminal
    app = typer.Typer()
    app.add_typer(scorers_app, name="scorers")
    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(app, ["scorers", *args])
        assert result.exit_code == 0, result.output
        return result

    run("register", f"{MODULE}:long_answer", "--name", "verbose", "-e", "7", "--rate", "0.3",
        "--filter", "attributes.status = 'OK'", "--max-calls-per-hour", "100")
    spec = tmp_path / "judge.json"
    spec.write_text('{"kind": "make_judge", "name": "concise", "instructions": "Is {{ outputs }} concise?"}')
    run("register", "--judge-spec", str(spec), "-e", "7")
    listed = orjson.loads(run("list", "-e", "7", "--json").stdout)
    assert [(r["name"], r["state"], r["sampling"]["sample_rate"]) for r in listed] == [
        ("concise", "stopped", 1.0), ("verbose", "active", 0.3)]
    assert "verbose" in run("list").stdout

    run("update", "verbose", "-e", "7", "--rate", "0.6")  # the filter is kept
    got = orjson.loads(run("get", "verbose", "-e", "7", "--json").stdout)
    assert got["sampling"] == {"sample_rate": 0.6, "filter_string": "attributes.status = 'OK'"}
    assert got["budget"]["max_calls_per_hour"] == 100

    run("register", "no_error", "--name", "verbose", "-e", "7")
    table = run("get", "verbose", "-e", "7").stdout
    assert "2 (current)" in table and f"{MODULE}:long_answer" in table
    assert orjson.loads(run("get", "verbose", "-e", "7", "--version", "1", "--json").stdout)["versions"][0][
        "version"] == 1

    assert "stopped" in run("stop", "verbose", "-e", "7").stdout
    run("start", "verbose", "-e", "7", "--filter", "")
    got = orjson.loads(run("get", "verbose", "-e", "7", "--json").stdout)
    assert got["state"] == "active" and got["sampling"] == {"sample_rate": 0.6, "filter_string": None}

    run("delete", "verbose", "-e", "7", "--yes")
    missing = runner.invoke(app, ["scorers", "get", "verbose", "-e", "7"])
    assert missing.exit_code == 2 and "no scorer 'verbose' in experiment '7'" in missing.output
    refused = runner.invoke(app, ["scorers", "update", "concise", "-e", "7", "--filter", "tags.a.b = 'x'"])
    assert refused.exit_code == 2 and "tags.`a.b`" in refused.output
