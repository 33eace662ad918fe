"""Our alert rules on a real Prometheus server, fed by a real worker: a replayed quality regression
fires `ScorerPassRateRegression`, and the baseline before it does not.

Setup: Debian's `prometheus` binary (`--enable-feature=exemplar-storage`, TSDB in tmp, loopback
on a free port) scrapes, every second, an in-process worker (`running_worker`, scorer
`no_error` at rate 1.0, on the real Kafka and Redis) and the HTTP API (`ApiServer`) when it is
importable. It evaluates deploy/prometheus/rules/recording.yml and alerts.yml every second,
with their time windows compressed (the rules themselves are untouched, only durations):

    range windows and offsets     5m -> 6s    10m -> 10s   15m -> 15s   30m -> 20s
                                  1h -> 30s   6h -> 60s    1d -> 120s
    `for:` of the alerts          2m -> 2s    5m -> 3s     10m -> 5s    15m -> 5s
    group `interval:` (1m)        dropped: every group runs at the global 1s

Thresholds and sample-size guards are kept as they are (`increase10m >= 50` becomes "at least
50 verdicts in 10s", met by the traffic rate below). Numeric constants that stand for a
duration (NoTracesReceived's `* 900`) are not scaled: that alert is not under test.

Traffic (`stream.traffic`, behind the compose `traffic` profile's deploy/traffic/generate.py): the MLflow
fixtures under fresh trace ids at RATE traces/s; `no_error` passes on the OK fixtures and fails
on the ERROR one (mlflow_trace_04). Baseline: 5% failed, until the sample guard has held for
a while (so the alert could have fired and did not). Then the failed share jumps to 85%: the
compressed 10m pass rate falls more than 15 points under the compressed 1d baseline, and the
alert must go pending and then firing within a bounded time. Also checked: both targets are
up, every rule evaluates without error, and the trace-id exemplars of
`tracewatch_assessment_value` are queryable.

Typical run: about 40 s (also with both cores of a 2-core machine kept busy). Waits are
generous but each has a limit (start 30 s, targets 30 s, baseline 60 s, firing 60 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream import Settings, TracePublisher
from stream._kafka import create_topics
from stream.traffic import TraceFactory, load_templates, replay
from tests.helpers import free_port
from tests.integration.test_worker import running_worker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules"
PROMETHEUS = shutil.which("prometheus")

ALERT = "ScorerPassRateRegression"
SCORER = "no_error"
EXPERIMENT = "1"  # every fixture's experiment

# The compression (see the module docstring). Every duration in the rules must be listed: an
# unknown one fails the test instead of silently staying hours long.
WINDOWS = {"5m": "6s", "10m": "10s", "15m": "15s", "30m": "20s", "1h": "30s", "6h": "60s", "1d": "120s"}
FOR = {"2m": "2s", "5m": "3s", "10m": "5s", "15m": "5s"}
COMPRESSED_FOR = 5.0  # seconds: ScorerPassRateRegression's `for: 10m`

RATE = 30.0  # traces/s: ~300 verdicts per (compressed) 10m window, the guard asks for 50
BASELINE_SHARE = 0.05
BURST_SHARE = 0.85
GUARD = 50
BASELINE_MIN_S = 20.0  # at least this long, and ...
GUARD_HELD_S = 3 * COMPRESSED_FOR  # ... the guard held this long, so the alert could have fired
BASELINE_MAX_S = 60.0
FIRING_WITHIN_S = 60.0  # from the start of the burst (expected: ~10-15 s)

_DURATION = re.compile(r"\[(\d+[smhdwy])\]|\boffset\s+(\d+[smhdwy])\b")


def compress_expr(expr: str) -> str:
    """`expr` with every range window and offset replaced by its compressed duration."""

    def sub(m: re.Match[str]) -> str:
        window, offset = m.group(1), m.group(2)
        if window is not None:
            return f"[{WINDOWS[window]}]"
        return f"offset {WINDOWS[offset]}"

    return _DURATION.sub(sub, expr)


def compress_rules(src: Path, dest: Path) -> Path:
    """Write `src` with compressed durations to `dest` (see the mapping above)."""
    yaml = pytest.importorskip("yaml", reason="PyYAML (a dev dependency) reads the rule files")
    spec = yaml.safe_load(src.read_text())
    for group in spec["groups"]:
        group.pop("interval", None)
        for rule in group["rules"]:
            rule["expr"] = compress_expr(rule["expr"])
            leftover = re.findall(r"\[\d+[mhdwy]\]|offset\s+\d+[mhdwy]", rule["expr"])
            assert not leftover, f"{rule.get('alert') or rule.get('record')}: uncompressed {leftover}"
            if "for" in rule:
                rule["for"] = FOR[rule["for"]]
    dest.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest




def api_server(settings: Settings) -> Any | None:
    """An `ApiServer` for the API app, or None when the API is not importable in this tree."""
    try:
        from stream.api._app import create_app
        from stream.cli._api import ApiServer
    except ImportError:
        return None
    app = create_app(settings.model_copy(update={"api_keys": ["e2e-test-key"]}))
    return ApiServer(app)


# ------------------------------------------------------------------------------ Prometheus


class Prometheus:
    """A real Prometheus server process on loopback, with a TSDB in `workdir`."""

    def __init__(self, workdir: Path, targets: dict[str, str], rule_files: list[Path]) -> None:
        yaml = pytest.importorskip("yaml")
        self.workdir = workdir
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(p) for p in rule_files],
                    "scrape_configs": [
                        {"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
                        for job, target in targets.items()
                    ],
                },
                sort_keys=False,
            )
        )
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        assert PROMETHEUS is not None
        for _ in range(3):  # a free port can be taken between choosing it and binding it
            self.port = free_port()
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    [
                        PROMETHEUS,
                        f"--config.file={self.config}",
                        f"--storage.tsdb.path={self.workdir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--enable-feature=exemplar-storage",
                        "--storage.tsdb.retention.time=1h",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            async with httpx.AsyncClient(timeout=2.0) as client:
                while self.proc.poll() is None and loop.time() < deadline:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{self.url}/-/ready")).status_code == 200:
                            return
                    await asyncio.sleep(0.2)
            if self.proc.poll() is None:
                self.stop()
                raise AssertionError(f"Prometheus not ready within {timeout}s:\n{self.log_tail()}")
            if "address already in use" not in self.log_tail():
                raise AssertionError(f"Prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
        raise AssertionError(f"Prometheus found no free port:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


async def api_get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    r = await client.get(path, params=params)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]


async def query(client: httpx.AsyncClient, expr: str) -> float | None:
    """The value of an instant query for our experiment and scorer (None: no sample)."""
    data = await api_get(client, "/api/v1/query", query=expr)
    for sample in data["result"]:
        labels = sample["metric"]
        if labels.get("scorer") == SCORER and labels.get("experiment") == EXPERIMENT:
            return float(sample["value"][1])
    return None


async def alert_state(client: httpx.AsyncClient) -> tuple[str | None, dict[str, Any] | None]:
    """(state, alert) of ScorerPassRateRegression for our scorer: pending, firing or (None) inactive."""
    data = await api_get(client, "/api/v1/alerts")
    for alert in data["alerts"]:
        labels = alert["labels"]
        if labels.get("alertname") == ALERT and labels.get("scorer") == SCORER:
            return alert["state"], alert
    return None, None


async def wait_targets_up(client: httpx.AsyncClient, jobs: set[str], timeout: float = 30.0) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        active = (await api_get(client, "/api/v1/targets", state="active"))["activeTargets"]
        if {t["labels"]["job"] for t in active if t["health"] == "up"} >= jobs:
            return list(active)
        if loop.time() > deadline:
            raise AssertionError(f"targets not all up within {timeout}s: {active}")
        await asyncio.sleep(0.5)


# ------------------------------------------------------------------------------------ test


@pytest.mark.skipif(PROMETHEUS is None, reason="`prometheus` not on PATH (Debian package `prometheus`; CI has it)")
async def test_pass_rate_regression_fires_on_a_real_prometheus(
    settings: Settings, fixtures_dir: Path, tmp_path: Path
) -> None:
    t_start = time.monotonic()
    corpus = load_templates(fixtures_dir)
    assert corpus.ok and corpus.failed, "the fixtures need OK traces and the ERROR one (mlflow_trace_04)"
    rule_files = [compress_rules(RULES / name, tmp_path / name) for name in ("recording.yml", "alerts.yml")]
    await create_topics(settings)

    api = api_server(settings)
    prometheus: Prometheus | None = None
    phase = {"share": BASELINE_SHARE}
    stop_traffic = asyncio.Event()
    traffic: asyncio.Task[Any] | None = None
    timeline: list[str] = []
    try:
        if api is not None:
            await asyncio.to_thread(api.start)
        async with running_worker(settings, [f"{SCORER}@1.0"]) as handle:
            targets = {"tracewatch-worker": f"127.0.0.1:{handle.metrics_port}"}
            if api is not None:
                targets["tracewatch-api"] = f"127.0.0.1:{api.port}"
            else:
                timeline.append("API not importable: scraping the worker only")
            prometheus = Prometheus(tmp_path, targets, rule_files)
            await prometheus.start()
            async with (
                httpx.AsyncClient(base_url=prometheus.url, timeout=5.0) as prom,
                TracePublisher(settings=settings) as pub,
            ):
                await wait_targets_up(prom, set(targets))
                timeline.append(f"{time.monotonic() - t_start:5.1f}s targets up: {sorted(targets)}")

                factory = TraceFactory(corpus, seed=20261126)
                traffic = asyncio.create_task(
                    replay(pub, factory, rate=RATE, error_share=lambda _t: phase["share"], stop=stop_traffic)
                )

                # -- baseline: the guard is met, the pass rate is steady, the alert stays quiet
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                guard_since: float | None = None
                baseline_states: set[str] = set()
                while True:
                    await asyncio.sleep(1.0)
                    assert not traffic.done(), traffic.exception()
                    now = loop.time()
                    state, _ = await alert_state(prom)
                    baseline_states.add(state or "inactive")
                    guard = await query(prom, "experiment_scorer:tracewatch_scored:increase10m")
                    if guard is not None and guard >= GUARD:
                        guard_since = now if guard_since is None else guard_since
                    else:
                        guard_since = None
                    if now - t0 >= BASELINE_MIN_S and guard_since is not None and now - guard_since >= GUARD_HELD_S:
                        break
                    assert now - t0 < BASELINE_MAX_S, (
                        f"baseline: the sample guard (>= {GUARD} verdicts per window) did not hold for "
                        f"{GUARD_HELD_S}s within {BASELINE_MAX_S}s (last value {guard})\n{prometheus.log_tail()}"
                    )
                short = await query(prom, "experiment_scorer:tracewatch_pass_rate:ratio_rate10m")
                base = await query(prom, "experiment_scorer:tracewatch_pass_rate:ratio_rate1d")
                timeline.append(
                    f"{time.monotonic() - t_start:5.1f}s baseline done after {loop.time() - t0:.0f}s: "
                    f"{factory.made} traces, pass rate 10m~{short} 1d~{base}, alert states {sorted(baseline_states)}"
                )
                assert "firing" not in baseline_states, timeline
                assert short is not None and base is not None, timeline
                assert short > 0.85 and base > 0.85, timeline  # 95% pass, give or take a batch

                # -- burst: the failed share jumps; the alert goes pending, then firing
                phase["share"] = BURST_SHARE
                t_burst = loop.time()
                pending_at = firing_at = None
                alert: dict[str, Any] | None = None
                while firing_at is None:
                    await asyncio.sleep(0.5)
                    assert not traffic.done(), traffic.exception()
                    state, alert = await alert_state(prom)
                    if state == "pending" and pending_at is None:
                        pending_at = loop.time() - t_burst
                    if state == "firing":
                        firing_at = loop.time() - t_burst
                    if loop.time() - t_burst > FIRING_WITHIN_S:
                        short = await query(prom, "experiment_scorer:tracewatch_pass_rate:ratio_rate10m")
                        base = await query(prom, "experiment_scorer:tracewatch_pass_rate:ratio_rate1d")
                        raise AssertionError(
                            f"{ALERT} not firing {FIRING_WITHIN_S}s into the burst (state {state}, pending "
                            f"after {pending_at}s; pass rate 10m {short} vs 1d {base})\n"
                            + "\n".join(timeline)
                            + f"\n{prometheus.log_tail()}"
                        )
                timeline.append(
                    f"{time.monotonic() - t_start:5.1f}s burst: pending after {pending_at}s, firing after "
                    f"{firing_at:.1f}s"
                )
                assert alert is not None
                assert alert["labels"]["experiment"] == EXPERIMENT and alert["labels"]["severity"] == "critical"
                # Its value is the short-window pass rate, under the baseline's by more than 15 points
                # (the baseline only sinks during the burst; 5 points of slack for extrapolation).
                assert float(alert["value"]) < base - 0.10, (alert, base)

                # -- every rule evaluates cleanly; targets still up; exemplars stored
                groups = (await api_get(prom, "/api/v1/rules"))["groups"]
                rules = [r for g in groups for r in g["rules"]]
                assert len(rules) >= 39, len(rules)
                bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
                assert not bad, bad
                await wait_targets_up(prom, set(targets), timeout=10)
                exemplars = await api_get(
                    prom,
                    "/api/v1/query_exemplars",
                    query=f'tracewatch_assessment_value_bucket{{scorer="{SCORER}"}}',
                    start=str(time.time() - 600),
                    end=str(time.time() + 5),
                )
                found = [e for series in exemplars for e in series["exemplars"]]
                assert found, exemplars
                for e in found:
                    assert re.fullmatch(r"tr-[0-9a-f]{32}", e["labels"]["trace_id"]), e
                    assert float(e["value"]) in (0.0, 1.0), e
                timeline.append(f"{time.monotonic() - t_start:5.1f}s {len(found)} exemplars, {len(rules)} rules ok")
                stop_traffic.set()
                stats = await asyncio.wait_for(traffic, 30)
                timeline.append(f"traffic: {stats.sent} traces, {stats.failed} failed")
    finally:
        stop_traffic.set()
        if traffic is not None and not traffic.done():
            traffic.cancel()
            with contextlib.suppress(BaseException):
                await traffic
        if prometheus is not None:
            prometheus.stop()
        if api is not None:
            await asyncio.to_thread(api.stop)
    print("\n".join(timeline))
