"""Every metric the docs, dashboards and rules name is produced by the running code.

Names are read from /work/shared/DESIGN.md (or `$TRACEWATCH_SHARED/DESIGN.md`), README.md,
docs/*.md, the Prometheus rules (deploy/prometheus/rules/*.yml) and the Grafana dashboards
(deploy/grafana/dashboards/*.json): every `tracewatch_*` token. A name with a colon is a recording
rule (`experiment_scorer:tracewatch_pass_rate:ratio_rate10m`) and must be recorded by
rules/recording.yml; any other name must appear in a scrape, as itself or as one of its
samples (`_total`, `_bucket`, `_sum`, `_count`).

The scrape comes from a real worker, API, OTLP receiver and assembler, each started as its CLI
command (`python -m stream worker`, `api`, `otlp`, `assemble`) on the test stack's Kafka and
Redis, after a scenario touching every path: good traces and one failing trace (`no_error` pass and fail), an
undecodable message (DLQ), a judge (`Safety`) against our judge test server
(stream/cli/judge_server.py) with prices set (tokens and cost), a code scorer that raises
(`error`), scorers that skip (`exact_match` without expectations, `RetrievalGroundedness` on
traces without a retriever span), user votes (feedback and judge-user agreement) and an
expectation through the API (a re-run); on the OTLP side, an OTLP/HTTP export of complete traces
(root + child), an export with one bad span id (partial success, `bad_id`), an unauthenticated
export (refused, `unauthorized`), a trace whose parent never arrives (emitted incomplete after
the assembler's short max age, `max_age`) and a late span of an emitted trace (`late_span` dead
letter); the worker scores the assembled traces too. The test fails on any named metric
without a sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream._config import Settings
from stream._kafka import create_topics
from tests.conftest import TEST_REDIS_URL
from tests.helpers import free_port, synth_traces

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TRACEWATCH_SHARED", REPO.parent / "shared"))
DESIGN = SHARED / "DESIGN.md"
NAME = re.compile(r"[A-Za-z0-9_:]*tracewatch_[a-z0-9][a-z0-9_]*[A-Za-z0-9_:]*")
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")
MLFLOW_SINK_PREFIX = "tracewatch_mlflow_"
JUDGE_MODEL = "gpt-4.1-mini"
API_KEY = "metrics-coverage-key"
ASSEMBLER_QUIET = 0.3  # seconds: complete traces are emitted quickly
ASSEMBLER_MAX_AGE = 2.0  # seconds: the orphan trace is emitted incomplete soon


def named_sources() -> list[Path]:
    files = [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml")),
        *sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json")),
    ]
    if DESIGN.exists():
        files.append(DESIGN)
    return files


def named_metrics() -> dict[str, list[str]]:
    """Every `tracewatch_*` name in the docs, dashboards and rules -> the files naming it."""
    out: dict[str, list[str]] = {}
    for path in named_sources():
        for name in set(NAME.findall(path.read_text())):
            out.setdefault(name, []).append(path.name)
    return out


def recorded_rules() -> set[str]:
    text = (REPO / "deploy" / "prometheus" / "rules" / "recording.yml").read_text()
    return set(re.findall(r"^\s*-?\s*record:\s*(\S+)", text, re.MULTILINE))


def test_names_are_found_in_every_kind_of_source() -> None:
    """The parser sees the sources the test is about (an empty set would pass vacuously)."""
    named = named_metrics()
    assert "tracewatch_dlq_total" in named
    assert any(":" in n for n in named), "no recording rule names found"
    kinds = {Path(f).suffix for files in named.values() for f in files}
    assert {".md", ".yml", ".json"} <= kinds


def test_recording_rule_names_are_recorded() -> None:
    rules = recorded_rules()
    unknown = {n: f for n, f in named_metrics().items() if ":" in n and n not in rules}
    assert not unknown, f"recording-rule names no rule records: {unknown}"


def missing_from(named: dict[str, list[str]], samples: set[str]) -> dict[str, list[str]]:
    return {
        n: files for n, files in sorted(named.items())
        if ":" not in n and not any(n + s in samples for s in SUFFIXES)
    }


def test_missing_from_accounts_for_suffixes() -> None:
    named = {"tracewatch_a_total": ["x"], "tracewatch_h": ["x"], "tracewatch_h_bucket": ["x"], "tracewatch_g": ["x"],
             "r:tracewatch_x:rate5m": ["x"]}
    assert missing_from(named, {"tracewatch_a_total", "tracewatch_h_bucket", "tracewatch_h_sum"}) == {"tracewatch_g": ["x"]}


# ------------------------------------------------------------------------------ the scrape


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "stream", *args], env=env, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"{url} not up within {timeout} s:\n{log.read_text()[-4000:]}")


def scrape(url: str) -> tuple[set[str], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    text = httpx.get(url, timeout=5.0).text
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            values[(s.name, frozenset(s.labels.items()))] = s.value
    return {name for name, _ in values}, values


def total(values: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in values.items() if n == name and want <= ls)


@pytest.fixture
def stack_env(settings: Settings, judge_server, tmp_path: Path) -> Iterator[dict[str, str]]:
    from tests.helpers import fresh_judge

    fresh_judge(judge_server)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEWATCH_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        TRACEWATCH_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        TRACEWATCH_REDIS_URL=TEST_REDIS_URL,
        TRACEWATCH_REDIS_PREFIX=settings.redis_prefix,
        TRACEWATCH_TOPIC_PREFIX=settings.topic_prefix,
        TRACEWATCH_CONSUMER_GROUP=settings.consumer_group,
        TRACEWATCH_PARTITIONS=str(settings.partitions),
        TRACEWATCH_SCORER_MODULES="tests.fixtures_pkg",
        TRACEWATCH_JUDGE_BASE_URL=judge_server.base_url,
        TRACEWATCH_JUDGE_API_KEY="test-key",
        TRACEWATCH_JUDGE_PRICES=f'{{"{JUDGE_MODEL}": [0.0004, 0.0016]}}',
        TRACEWATCH_API_KEYS=API_KEY,
        TRACEWATCH_METRICS_PORT=str(free_port()),
        TRACEWATCH_API_PORT=str(free_port()),
        TRACEWATCH_OTLP_HOST="127.0.0.1",
        TRACEWATCH_OTLP_HTTP_PORT=str(free_port()),
        TRACEWATCH_OTLP_GRPC_PORT="-1",
        TRACEWATCH_OTLP_METRICS_PORT=str(free_port()),
        TRACEWATCH_ASSEMBLER_GROUP=f"{settings.consumer_group}-asm",
        TRACEWATCH_ASSEMBLER_QUIET_INTERVAL=str(ASSEMBLER_QUIET),
        TRACEWATCH_ASSEMBLER_MAX_AGE_TIMEOUT=str(ASSEMBLER_MAX_AGE),
        TRACEWATCH_ASSEMBLER_METRICS_PORT=str(free_port()),
    )
    yield env


SCORERS = ["no_error@1.0", "Safety@1.0", "exact_match@1.0", "RetrievalGroundedness@1.0",
           "tests.fixtures_pkg.failing_scorers:always_raises@1.0"]
N_GOOD = 28  # 4 of each of the 7 fixtures; mlflow_trace_04 is a failed request (no_error fails)


@pytest.mark.integration
def test_every_named_metric_is_produced(stack_env: dict[str, str], settings: Settings, fixture_bytes: list[bytes],
                                        tmp_path: Path) -> None:
    asyncio.run(create_topics(settings))
    worker_url = f"http://127.0.0.1:{stack_env['TRACEWATCH_METRICS_PORT']}/metrics"
    api = f"http://127.0.0.1:{stack_env['TRACEWATCH_API_PORT']}"
    otlp_url = f"http://127.0.0.1:{stack_env['TRACEWATCH_OTLP_METRICS_PORT']}/metrics"
    asm_url = f"http://127.0.0.1:{stack_env['TRACEWATCH_ASSEMBLER_METRICS_PORT']}/metrics"
    worker_log, api_log = tmp_path / "worker.log", tmp_path / "api.log"
    otlp_log, asm_log = tmp_path / "otlp.log", tmp_path / "assembler.log"
    worker = _start(["worker", *[a for s in SCORERS for a in ("--scorer", s)]], stack_env, worker_log)
    api_proc = _start(["api"], stack_env, api_log)
    otlp_proc = _start(["otlp"], stack_env, otlp_log)
    asm_proc = _start(["assemble"], stack_env, asm_log)
    try:
        _wait_http(worker_url, worker, worker_log)
        _wait_http(f"{api}/readyz", api_proc, api_log)
        _wait_http(otlp_url, otlp_proc, otlp_log)
        _wait_tcp(int(stack_env["TRACEWATCH_OTLP_HTTP_PORT"]), otlp_proc, otlp_log)
        _wait_http(asm_url, asm_proc, asm_log)
        items = list(synth_traces(fixture_bytes, N_GOOD, seed=20, prefix="mc"))
        asyncio.run(_publish(settings, [d for _, d in items]))

        # The OTLP side: exports (ok, partial, refused), assembled complete and incomplete, a late span.
        otlp_values, asm_values = _otlp_scenario(
            f"http://127.0.0.1:{stack_env['TRACEWATCH_OTLP_HTTP_PORT']}/v1/traces", otlp_url, asm_url, asm_log)
        otlp_names, asm_names = {n for n, _ in otlp_values}, {n for n, _ in asm_values}
        assembled = total(asm_values, "tracewatch_assembler_traces_emitted_total")

        # Every pair of every good and assembled trace ends in a state, and the bad message is dead-lettered.
        want_pairs = int(N_GOOD + assembled) * len(SCORERS)
        values = _until(worker_url, lambda v: total(v, "tracewatch_sampled_total") >= want_pairs
                        and total(v, "tracewatch_dlq_total") >= 1, worker_log)
        want_pairs = int(total(values, "tracewatch_sampled_total"))

        # Votes on judged traces (agreement) and an expectation (re-runs exact_match).
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10) as http:
            for i, (tid, _) in enumerate(items[:10]):
                r = http.post("/v1/feedback", json={"trace_id": tid, "value": i % 3 != 0,
                                                    "source": {"type": "HUMAN", "id": f"u-{i}"}})
                assert r.status_code == 202, r.text
            r = http.post("/v1/expectations", json={"trace_id": items[0][0], "name": "expected_response",
                                                    "value": "anything"})
            assert r.status_code == 202, r.text
        values = _until(worker_url, lambda v: total(v, "tracewatch_feedback_total") >= 10
                        and total(v, "tracewatch_sampled_total") > want_pairs, worker_log)

        worker_names, values = scrape(worker_url)
        api_names, _ = scrape(f"{api}/metrics")
        otlp_names |= scrape(otlp_url)[0]
        asm_names |= scrape(asm_url)[0]
    finally:
        for proc in (otlp_proc, asm_proc, worker, api_proc):
            _stop(proc)

    # The scenario reached every path it is meant to.
    assert total(values, "tracewatch_sampled_total", state="scored") > 0
    assert total(values, "tracewatch_sampled_total", state="error") > 0
    assert total(values, "tracewatch_sampled_total", state="skipped") > 0
    assert total(values, "tracewatch_assessments_total", result="fail") > 0
    assert total(values, "tracewatch_dlq_total", reason="not_json") == 1
    assert total(values, "tracewatch_traces_invalid_total", reason="not_json") == 1
    assert total(values, "tracewatch_judge_requests_total") > 0
    assert total(otlp_values, "tracewatch_otlp_exports_total", transport="http", status="ok") >= 1
    assert total(otlp_values, "tracewatch_otlp_exports_total", transport="http", status="partial") >= 1
    assert total(otlp_values, "tracewatch_otlp_spans_refused_total", reason="bad_id") >= 1
    assert total(otlp_values, "tracewatch_otlp_export_refusals_total", reason="unauthorized") >= 1
    assert total(asm_values, "tracewatch_assembler_traces_emitted_total", state="complete") >= 3
    assert total(asm_values, "tracewatch_assembler_incomplete_total", reason="max_age") >= 1
    assert total(asm_values, "tracewatch_assembler_dead_letters_total", reason="late_span") >= 1

    # The MLflow sink's names (`tracewatch_mlflow_*`) come from `tracewatch sink mlflow`, which
    # needs a real MLflow server: tests/integration/test_mlflow_sink.py scrapes a running sink.
    named = {n: f for n, f in named_metrics().items() if not n.startswith(MLFLOW_SINK_PREFIX)}
    missing = missing_from(named, worker_names | api_names | otlp_names | asm_names)
    assert not missing, (
        "metrics named in the docs, dashboards or rules that none of the worker, API, OTLP receiver "
        f"and assembler produced after the scenario: {missing}\n"
        f"worker log tail:\n{worker_log.read_text()[-2000:]}"
    )


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return
        time.sleep(0.2)
    raise AssertionError(f"port {port} not listening within {timeout} s:\n{log.read_text()[-4000:]}")


Values = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _otlp_scenario(url: str, otlp_url: str, asm_url: str, asm_log: Path) -> tuple[Values, Values]:
    """Drive every labelled path of the receiver's and the assembler's named metrics."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from tests.otlp.helpers import request, span

    now = time.time_ns()

    def timed(s: Span) -> Span:
        s.start_time_unix_nano, s.end_time_unix_nano = now - 2_000_000, now - 1_000_000
        return s

    def pair(name: str) -> tuple[bytes, list[Span]]:
        tid, root_id = os.urandom(16), os.urandom(8)
        return tid, [timed(span(tid, root_id, name=f"{name}-root")), timed(span(tid, parent=root_id, name=f"{name}-child"))]

    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/x-protobuf"}
    (t1, spans1), (_, spans2), (_, spans3) = pair("mc-otlp-1"), pair("mc-otlp-2"), pair("mc-otlp-3")
    orphan = os.urandom(16)
    with httpx.Client(timeout=15) as http:
        # Two complete traces: ok.
        r = http.post(url, content=request(spans1 + spans2).SerializeToString(), headers=auth)
        assert r.status_code == 200, r.text
        # A complete trace and one span with a zero span id: partial success (`bad_id`).
        bad = timed(span(os.urandom(16), b"\0" * 8, name="mc-otlp-bad"))
        r = http.post(url, content=request([*spans3, bad]).SerializeToString(), headers=auth)
        assert r.status_code == 200, r.text
        # No key: refused whole (`unauthorized`).
        r = http.post(url, content=request(spans1).SerializeToString(),
                      headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 401, r.text
        # A child whose parent never arrives: emitted incomplete after the max age.
        r = http.post(url, content=request([timed(span(orphan, parent=os.urandom(8), name="mc-otlp-orphan"))])
                      .SerializeToString(), headers=auth)
        assert r.status_code == 200, r.text

        _until(asm_url, lambda v: total(v, "tracewatch_assembler_traces_emitted_total", state="complete") >= 3, asm_log,
               timeout=30)
        # A span of an already-emitted trace: a `late_span` dead letter.
        r = http.post(url, content=request([timed(span(t1, parent=spans1[0].span_id, name="mc-otlp-late"))])
                      .SerializeToString(), headers=auth)
        assert r.status_code == 200, r.text

    asm_values = _until(asm_url, lambda v: total(v, "tracewatch_assembler_incomplete_total", reason="max_age") >= 1
                        and total(v, "tracewatch_assembler_dead_letters_total", reason="late_span") >= 1, asm_log,
                        timeout=30)
    _, otlp_values = scrape(otlp_url)
    return otlp_values, asm_values


async def _publish(settings: Settings, good: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    from stream import TracePublisher

    async with TracePublisher(settings=settings) as pub:
        for data in good:
            await pub.publish(data)
    raw = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await raw.start()
    try:
        await raw.send_and_wait(settings.topics.traces, b"this is not json", key=b"tr-not-json")
    finally:
        await raw.stop()


def _until(url: str, done, log: Path, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            _, values = scrape(url)
            if done(values):
                return values
        time.sleep(0.5)
    sampled = {k: v for k, v in values.items() if k[0] in ("tracewatch_sampled_total", "tracewatch_dlq_total",
                                                             "tracewatch_feedback_total")}
    raise AssertionError(f"scenario not done within {timeout} s: {sampled}\n{log.read_text()[-3000:]}")
