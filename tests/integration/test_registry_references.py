"""Issue 11, break 5, through Redis: forged records with hostile references never run.

Each reference of `tests.reference_corpus` is written straight into Redis as an active
record (and as a `ref` plus hostile `arguments`), next to one good record. The registry's
`snapshot`, `list_scorers`, `get_scorer` and a live `RegistryWatcher` must skip and report
every forged record, keep running the good one, and never import or call anything: the
allowlisted marker module leaves a mark when imported or called.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from sinks import RegistryStore
from stream._config import Settings
from stream.registry._records import RegistryError, SamplingConfig, utcnow
from stream.registry._registry import Registry
from stream.registry._watch import RegistryWatcher
from tests.reference_corpus import AFTER_IMPORT, ALLOW, BEFORE_IMPORT, MARKER

pytestmark = pytest.mark.integration

PACKAGE = "tests.fixtures_pkg"


def _forget_marker_modules() -> None:
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "marks.txt"
    monkeypatch.setenv("TW_REFERENCE_MARKS", str(path))
    _forget_marker_modules()
    yield path
    _forget_marker_modules()


@pytest.fixture
async def registry(settings: Settings) -> AsyncIterator[Registry]:
    # `settings` (tests/conftest.py) has its own key prefix on the test Redis, deleted afterwards.
    async with Registry.from_settings(settings.model_copy(update={"scorer_modules": list(ALLOW)})) as r:
        yield r


def _record(name: str, ref: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    now = utcnow().isoformat()
    version: dict[str, Any] = {"version": 1, "kind": "code", "ref": ref, "created_at": now}
    if arguments is not None:
        version["arguments"] = arguments
    return {"name": name, "experiment_id": "1", "current_version": 1, "state": "active",
            "sampling": {"sample_rate": 1.0}, "created_at": now, "updated_at": now, "versions": [version]}


async def _forge(store: RegistryStore, url: str, records: dict[str, dict[str, Any]]) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        for name, record in records.items():
            await client.set(store.record_key("1", name), orjson.dumps(record))
            await client.sadd(store.index_key, store.member("1", name))
        await client.incr(store.generation_key)
    finally:
        await client.aclose()


async def test_forged_hostile_references_are_skipped_reported_and_never_run(
    registry: Registry, settings: Settings, marks: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "pwned"
    await registry.register("no_error", name="good", experiment_id="1", sampling_config=SamplingConfig(sample_rate=1.0))
    before = {f"evil{i}": _record(f"evil{i}", r.replace("{flag}", str(flag))) for i, r in enumerate(BEFORE_IMPORT)}
    hostile_arguments = [{"__class__": 1}, {"\uff54hreshold": 1}, {"x)(": 1}, {"lambda": 1}]
    before |= {f"args{i}": _record(f"args{i}", f"{MARKER}:make_good", a) for i, a in enumerate(hostile_arguments)}
    await _forge(registry.store, settings.redis_url, before)

    snap = await registry.snapshot()
    assert [a.name for a in snap.scorers] == ["good"]
    assert {i.name for i in registry.snapshot_errors} == set(before)
    assert not marks.exists() and not flag.exists()
    assert not any(n == PACKAGE or n.startswith(PACKAGE + ".") for n in sys.modules)

    # Records naming things not defined in the module: the module gets imported, nothing called.
    after = {f"late{i}": _record(f"late{i}", r.replace("{flag}", str(flag))) for i, r in enumerate(AFTER_IMPORT)}
    await _forge(registry.store, settings.redis_url, after)
    snap = await registry.snapshot()
    assert [a.name for a in snap.scorers] == ["good"]
    assert {i.name for i in registry.snapshot_errors} == set(before) | set(after)
    assert [e for e in marks.read_text().splitlines() if not e.startswith("import ")] == []
    assert not flag.exists()

    # An argument value is re-read as one literal, however it is quoted: no injection through it.
    sneaky = "x') or __import__('os').system('touch " + str(flag) + "') or ('"
    await _forge(registry.store, settings.redis_url, {"quoted": _record("quoted", f"{MARKER}:make_good",
                                                                          {"threshold": sneaky})})
    snap = await registry.snapshot()
    assert sorted(a.name for a in snap.scorers) == ["good", "quoted"]
    assert marks.read_text().splitlines()[-1] == f"call make_good({sneaky!r})"
    assert not flag.exists()

    # Reads by name refuse them too; a listing skips the unreadable ones and keeps the rest.
    with pytest.raises(RegistryError):
        await registry.get_scorer("evil0", experiment_id="1")
    listed = {r.name for r in await registry.list_scorers("1")}
    assert {"good", "quoted", "late0"} <= listed and "evil0" not in listed  # late0 is grammatical

    # A live watcher starts, runs the good scorer and survives every forged record.
    watcher = RegistryWatcher(registry, poll_interval=0.2, pubsub=False)
    await watcher.start()
    try:
        assert "good" in watcher.current().names
        assert {i.name for i in watcher.errors} >= set(after) | {"evil0"}
        await _forge(registry.store, settings.redis_url, {"evil_again": _record("evil_again", before["evil0"][
            "versions"][0]["ref"])})
        assert await watcher.reload_if_changed()
        assert "good" in watcher.current().names and "evil_again" in {i.name for i in watcher.errors}
    finally:
        await watcher.stop()
    assert not flag.exists()
