"""Metrics on a fresh CollectorRegistry per test, read back with get_sample_value."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

import sinks
from scorers import Assessment, AssessmentError
from sinks import Metrics, metrics_asgi_app, serve_metrics

T0 = 1_750_000_000_000
TRACE = "tr-" + "ab" * 16


def make(
    scorer: str = "is_polite",
    *,
    name: str | None = None,
    value: object = True,
    exp: str = "1",
    trace: str = TRACE,
    error: str | None = None,
    skip: str | None = None,
    end: int | None = T0,
) -> Assessment:
    return Assessment(
        trace_id=trace,
        experiment_id=exp,
        scorer=scorer,
        name=name or scorer,
        value=None if (error or skip) else value,
        error=AssessmentError(error) if error else None,
        duration_s=0.03,
        created_ms=T0 + 100,
        state="skipped" if skip else ("error" if error else "scored"),
        skip_reason=skip,
        trace_end_ms=end,
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def v(registry: CollectorRegistry, metric: str, /, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


def test_record_pairs_counts_states_outcomes_values_and_latency(registry):
    m = Metrics(registry)
    m.record_pairs(
        [
            [make(value=True)],
            [make(value=False, end=None)],
            [make("quality", name="quality.relevance", value=0.8), make("quality", name="q.safe", error="E")],
            [make("length", value=42)],
            [make(skip="budget")],
            [make("judge", error="JUDGE_TIMEOUT")],
        ],
        now_ms=T0 + 2_000,
    )
    assert v(registry, "tracewatch_sampled_total", experiment="1", scorer="is_polite", state="scored") == 2
    assert v(registry, "tracewatch_sampled_total", experiment="1", scorer="is_polite", state="skipped") == 1
    assert v(registry, "tracewatch_sampled_total", experiment="1", scorer="quality", state="scored") == 1
    assert v(registry, "tracewatch_sampled_total", experiment="1", scorer="judge", state="error") == 1
    assert v(registry, "tracewatch_assessments_total", experiment="1", scorer="is_polite", result="pass") == 1
    assert v(registry, "tracewatch_assessments_total", experiment="1", scorer="is_polite", result="fail") == 1
    labels = {"experiment": "1", "scorer": "quality.relevance", "result": "value"}
    assert v(registry, "tracewatch_assessments_total", **labels) == 1
    assert v(registry, "tracewatch_assessments_total", experiment="1", scorer="q.safe", result="error") == 1
    assert v(registry, "tracewatch_assessments_total", experiment="1", scorer="judge", result="error") == 1
    # Booleans as 0/1, numbers as they are, errors not at all.
    assert v(registry, "tracewatch_assessment_value_count", experiment="1", scorer="is_polite") == 2
    assert v(registry, "tracewatch_assessment_value_sum", experiment="1", scorer="is_polite") == 1
    le = {"experiment": "1", "scorer": "quality.relevance"}
    assert v(registry, "tracewatch_assessment_value_bucket", **le, le="0.75") == 0
    assert v(registry, "tracewatch_assessment_value_bucket", **le, le="0.9") == 1
    assert v(registry, "tracewatch_assessment_value_sum", experiment="1", scorer="length") == 42
    assert v(registry, "tracewatch_assessment_value_count", experiment="1", scorer="q.safe") == 0
    # Durations once per pair that ran; end-to-end once per such pair with a known trace end.
    assert v(registry, "tracewatch_scorer_duration_seconds_count", scorer="is_polite") == 2
    assert v(registry, "tracewatch_scorer_duration_seconds_count", scorer="quality") == 1
    assert v(registry, "tracewatch_end_to_end_seconds_count") == 4
    assert v(registry, "tracewatch_end_to_end_seconds_sum") == pytest.approx(8.0)
    assert v(registry, "tracewatch_end_to_end_seconds_bucket", le="1.0") == 0
    assert v(registry, "tracewatch_end_to_end_seconds_bucket", le="2.5") == 4


def test_exemplar_carries_the_trace_id(registry):
    m = Metrics(registry)
    m.record_pairs([[make("relevance", value=0.42)]])
    text = generate_latest(registry).decode()
    bucket = next(
        line
        for line in text.splitlines()
        if line.startswith('tracewatch_assessment_value_bucket{experiment="1",le="0.5",scorer="relevance"}')
    )
    assert f'# {{trace_id="{TRACE}"}} 0.42' in bucket


def test_over_long_trace_id_is_observed_without_exemplar(registry):
    m = Metrics(registry)
    m.record_pairs([[make("relevance", value=0.42, trace="t" * 200)]])
    assert v(registry, "tracewatch_assessment_value_count", experiment="1", scorer="relevance") == 1
    assert "trace_id=" not in generate_latest(registry).decode()


def test_labels_beyond_the_limit_collapse_to_other(registry):
    m = Metrics(registry, max_label_values=2)
    m.record_pairs([[make(exp=e)] for e in ("1", "2", "3", "4", "1")])
    scored = {"scorer": "is_polite", "state": "scored"}
    assert v(registry, "tracewatch_sampled_total", experiment="1", **scored) == 2
    assert v(registry, "tracewatch_sampled_total", experiment="2", **scored) == 1
    assert v(registry, "tracewatch_sampled_total", experiment="other", **scored) == 2
    assert v(registry, "tracewatch_sampled_total", experiment="3", **scored) is None
    passed = {"scorer": "is_polite", "result": "pass"}
    assert v(registry, "tracewatch_assessments_total", experiment="other", **passed) == 2
    # Each collapsed observation counts: the pair's and its assessment's labels.
    assert v(registry, "tracewatch_label_overflow_total", label="experiment") == 4
    m.trace_received("5", 3)
    m.trace_received("1")
    assert v(registry, "tracewatch_traces_received_total", experiment="other") == 3
    assert v(registry, "tracewatch_traces_received_total", experiment="1") == 1
    for name in ("a", "b", "c"):
        m.feedback("1", name, True)
    assert v(registry, "tracewatch_feedback_total", experiment="1", name="other", value="up") == 1
    assert v(registry, "tracewatch_label_overflow_total", label="name") == 1


def test_cached_children_keep_counting(registry):
    m = Metrics(registry)
    for _ in range(3):
        m.record_pairs([[make()], [make("other_scorer", value=0.5)]])
    assert v(registry, "tracewatch_sampled_total", experiment="1", scorer="is_polite", state="scored") == 3
    assert v(registry, "tracewatch_assessment_value_count", experiment="1", scorer="other_scorer") == 3


def test_judge_feedback_lag_and_worker_metrics(registry):
    m = Metrics(registry)
    m.judge_request("gpt-4o-mini", "ok", 0.8, prompt_tokens=120, completion_tokens=30, cost=0.001)
    m.judge_request("gpt-4o-mini", "timeout", 30.0)
    assert v(registry, "tracewatch_judge_requests_total", model="gpt-4o-mini", status="ok") == 1
    assert v(registry, "tracewatch_judge_requests_total", model="gpt-4o-mini", status="timeout") == 1
    assert v(registry, "tracewatch_judge_tokens_total", model="gpt-4o-mini", kind="prompt") == 120
    assert v(registry, "tracewatch_judge_tokens_total", model="gpt-4o-mini", kind="completion") == 30
    assert v(registry, "tracewatch_judge_cost_usd_total", model="gpt-4o-mini") == pytest.approx(0.001)
    assert v(registry, "tracewatch_judge_request_duration_seconds_count", model="gpt-4o-mini") == 2

    m.feedback("1", "user_satisfaction", True)
    m.feedback("1", "user_satisfaction", False)
    m.feedback("1", "stars", 4)
    sat = {"experiment": "1", "name": "user_satisfaction"}
    assert v(registry, "tracewatch_feedback_total", **sat, value="up") == 1
    assert v(registry, "tracewatch_feedback_total", **sat, value="down") == 1
    assert v(registry, "tracewatch_feedback_total", experiment="1", name="stars", value="4") == 1

    m.agreement("1", "is_polite", "pass", "down")
    m.agreement("1", "is_polite", True, True)
    labels = {"experiment": "1", "scorer": "is_polite"}
    assert v(registry, "tracewatch_feedback_agreement_total", **labels, judge="pass", user="down") == 1
    assert v(registry, "tracewatch_feedback_agreement_total", **labels, judge="pass", user="up") == 1
    with pytest.raises(ValueError):
        m.agreement("1", "is_polite", "maybe", "up")

    m.set_lag("tracewatch.traces", 3, 17)
    m.set_lag("tracewatch.traces", 3, 5)
    assert v(registry, "tracewatch_consumer_lag", topic="tracewatch.traces", partition="3") == 5
    m.trace_invalid("not_json")
    m.dead_lettered("too_large")
    m.batch_done(0.02)
    m.set_in_flight(7)
    m.redis_retry()
    assert v(registry, "tracewatch_traces_invalid_total", reason="not_json") == 1
    assert v(registry, "tracewatch_dlq_total", reason="too_large") == 1
    assert v(registry, "tracewatch_batches_total") == 1
    assert v(registry, "tracewatch_batch_duration_seconds_count") == 1
    assert v(registry, "tracewatch_worker_in_flight") == 7
    assert v(registry, "tracewatch_redis_retries_total") == 1
    m.join_malformed(2)
    assert v(registry, "tracewatch_join_malformed_total") == 2


def test_registries_are_independent():
    a, b = Metrics(), Metrics()
    a.trace_received("1")
    assert a.registry.get_sample_value("tracewatch_traces_received_total", {"experiment": "1"}) == 1
    assert b.registry.get_sample_value("tracewatch_traces_received_total", {"experiment": "1"}) is None
    with pytest.raises(ValueError):
        Metrics(a.registry)  # one Metrics per registry: names would be duplicated


def test_served_metrics_negotiate_openmetrics_and_free_the_port(registry):
    m = Metrics(registry)
    m.record_pairs([[make("relevance", value=0.42)]])
    served = serve_metrics(registry, "127.0.0.1", 0)
    try:
        server, thread = served  # unpacks like start_http_server's tuple
        assert thread.is_alive() and served.port == server.server_port
        url = f"http://127.0.0.1:{served.port}/metrics"
        accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
        with urllib.request.urlopen(urllib.request.Request(url, headers=accept), timeout=5) as resp:
            body = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert f'trace_id="{TRACE}"' in body
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert "trace_id=" not in resp.read().decode()  # the classic format has no exemplars
    finally:
        served.shutdown()
    assert not served.thread.is_alive()
    again = serve_metrics(registry, "127.0.0.1", served.port)  # the listening socket is closed
    again.shutdown()


def test_asgi_app_serves_the_registry(registry):
    Metrics(registry).trace_received("1")
    app = metrics_asgi_app(registry)
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    assert b'tracewatch_traces_received_total{experiment="1"} 1.0' in b"".join(
        msg.get("body", b"") for msg in sent
    )


def test_package_exports_are_sorted_and_complete():
    assert sinks.__all__ == sorted(sinks.__all__)
    public = {n for n in vars(sinks) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if type(getattr(sinks, n)).__name__ == "module"}
    assert set(sinks.__all__) == public - modules
