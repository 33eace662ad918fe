"""The one trace generator (`stream.traffic`) and the one way to find the fixtures."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from scorers import decode_trace
from stream.traffic import (
    PHASES,
    SHARED_ENV,
    TraceFactory,
    build_corpus,
    demo_traffic,
    find_fixtures,
    load_templates,
    synth_traces,
)

REPO = Path(__file__).resolve().parents[1]

# sha256 of a small corpus (seed 42, fixed time base), computed with the generator of bench/_corpus.py
# before the generators were merged: benchmark figures compare across versions only on the same bytes.
CORPUS_SHA256 = "241925bd064683286d9419d780af3959d807cda44e24f738954166b59061fcf9"


def test_find_fixtures_beside_the_repo_or_from_the_env(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(SHARED_ENV, raising=False)
    assert find_fixtures(must_exist=False) == REPO.parent / "shared" / "fixtures" / "mlflow"
    monkeypatch.setenv(SHARED_ENV, str(tmp_path))
    assert find_fixtures(must_exist=False) == tmp_path / "fixtures" / "mlflow"
    with pytest.raises(FileNotFoundError, match=SHARED_ENV):
        find_fixtures()
    assert find_fixtures(tmp_path) == tmp_path  # an explicit path wins


def test_bench_corpus_bytes_are_unchanged(fixtures_dir) -> None:
    c = build_corpus(3000, seed=42, fixtures=fixtures_dir, now_ms=1_780_000_000_123)
    digest = hashlib.sha256(b"".join(c.data) + repr((c.ids, c.request_time, c.duration_ms, c.sizes)).encode())
    assert digest.hexdigest() == CORPUS_SHA256


def test_demo_traffic_is_realistic_and_deterministic(fixtures_dir) -> None:
    one = list(demo_traffic(fixtures_dir, 300, clock=lambda: 1_780_000_000.0))
    two = list(demo_traffic(fixtures_dir, 300, clock=lambda: 1_780_000_000.0))
    assert one == two and len({t.trace_id for t in one}) == 300
    assert [p.name for p in PHASES] == sorted({t.phase for t in one}, key=[p.name for p in PHASES].index)
    bad_share = {p.name: sum(t.bad for t in one if t.phase == p.name) / sum(t.phase == p.name for t in one)
                 for p in PHASES}
    assert bad_share["regression"] > 3 * bad_share["before"]  # the injected regression
    for t in one:
        trace = decode_trace(t.data)
        assert trace.trace_id == t.trace_id and (trace.ok or t.bad)  # a failed trace is a bad one
        raw = orjson.loads(t.data)
        spans = raw["data"]["spans"]
        # Every span belongs to the new trace and lies inside the trace's new time window.
        b64 = base64.b64encode(bytes.fromhex(t.trace_id[3:])).decode()
        assert {s["trace_id"] for s in spans} == {b64}
        start = min(s["start_time_unix_nano"] for s in spans)
        end = max(s["end_time_unix_nano"] for s in spans)
        assert (end - start) // 1_000_000 == raw["info"]["execution_duration_ms"]
        assert abs(start // 1_000_000 + raw["info"]["execution_duration_ms"] - 1_780_000_000_000) <= 1


def test_replay_and_test_streams_use_fresh_ids_everywhere(fixtures_dir, fixture_bytes) -> None:
    templates = load_templates(fixtures_dir, experiments=["1", "2"])
    assert templates.ok and templates.failed and templates.ignored == [str(fixtures_dir / "trace_ids.json")]
    factory = TraceFactory(templates, seed=3, clock=lambda: 1_780_000_000.0)
    made = [factory.next(0.25) for _ in range(40)]
    assert factory.made_failed == 10
    for tid, data in [*made, *synth_traces(fixture_bytes, 20)]:
        trace = decode_trace(data)
        assert trace.trace_id == tid
        for template in (*templates.ok, *templates.failed):
            assert template.hex_id.encode() not in data  # no trace of the template's id is left


def test_the_replayer_script_is_a_thin_caller(fixtures_dir) -> None:
    env = {**os.environ, "TRACEWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "traffic" / "generate.py"), "--fixtures", str(fixtures_dir / "none")],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 2 and "MLflow fixtures not found" in done.stderr
