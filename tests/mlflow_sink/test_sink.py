"""The MLflow sink's logic against `httpx.MockTransport` and an in-memory Redis: no services.

Covers the payload of each kind of result, what each MLflow answer leads to (404 skip after
the trace-wait grace, other 4xx rejected, 429/5xx retried after `Retry-After`), the guard's
three states and the look-up that finds an earlier attempt's assessment.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from scorers import Assessment, AssessmentError, AssessmentSource, AssessmentSourceType
from sinks import SinkUnavailableError
from sinks.mlflow import (
    PENDING,
    RESULT_ID_KEY,
    MlflowConfig,
    MlflowGuard,
    MlflowRejectedError,
    MlflowRest,
    MlflowSink,
    MlflowUnavailableError,
    SinkMetrics,
    UserEvent,
    event_payload,
    result_id,
    score_payload,
)

URI = "http://mlflow.test"
NOW_MS = int(time.time() * 1000)


class FakeRedis:
    """The slice of `redis.asyncio.Redis` the guard uses: `SET key value PX NX GET`."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def set(self, key: str, value: str, *, px: int | None = None, nx: bool = False, get: bool = False) -> Any:
        prev = self.data.get(key)
        if not (nx and prev is not None):
            self.data[key] = value.encode()
        return prev if get else True

    async def aclose(self) -> None:
        pass


class FakeMlflow:
    """An MLflow tracking server's assessment endpoints, with scripted failures.

    `script` maps an operation (`create`, `get`) to a list of responses to give first
    (a status int, or (status, headers)); after those the call succeeds.
    """

    def __init__(self, traces: set[str]) -> None:
        self.traces = {t: [] for t in traces}  # type: dict[str, list[dict[str, Any]]]
        self.script: dict[str, list[Any]] = {"create": [], "get": []}
        self.calls: list[tuple[str, float]] = []
        self.created: list[dict[str, Any]] = []
        self.lose_answer = 0  # create lands, then the answer is "lost" as a 503

    def _scripted(self, op: str) -> httpx.Response | None:
        self.calls.append((op, time.monotonic()))
        if self.script[op]:
            step = self.script[op].pop(0)
            status, headers = step if isinstance(step, tuple) else (step, {})
            return httpx.Response(status, headers=headers, json={"error_code": "X", "message": f"scripted {status}"})
        return None

    def handler(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")  # /api/3.0/mlflow/traces/{id}[/assessments]
        trace_id = parts[5]
        if request.method == "GET":
            answer = self._scripted("get")
            if answer is not None:
                return answer
            if trace_id not in self.traces:
                return httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST"})
            info = {"trace_id": trace_id, "assessments": self.traces[trace_id]}
            return httpx.Response(200, json={"trace": {"trace_info": info}})
        answer = self._scripted("create")
        if answer is not None:
            return answer
        if trace_id not in self.traces:
            return httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST"})
        body = orjson.loads(request.content)["assessment"]
        aid = f"a-{len(self.created) + 1}"
        stored = {**body, "assessment_id": aid, "valid": True}
        if body.get("overrides"):
            for old in self.traces[trace_id]:
                if old["assessment_id"] == body["overrides"]:
                    old["valid"] = False
        self.traces[trace_id].append(stored)
        self.created.append(body)
        if self.lose_answer:
            self.lose_answer -= 1
            return httpx.Response(503, text="lost")
        return httpx.Response(200, json={"assessment": stored})


def make_sink(server: FakeMlflow, **kw: Any) -> tuple[MlflowSink, FakeRedis, SinkMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = SinkMetrics(registry)
    rest = MlflowRest(MlflowConfig(URI), transport=httpx.MockTransport(server.handler), observe=metrics.observe)
    redis = FakeRedis()
    guard = MlflowGuard(redis, prefix="t:")  # type: ignore[arg-type]
    opts = {"backoff_base": 0.01, "backoff_cap": 0.05, "trace_wait_timeout": 0.0, **kw}
    return MlflowSink(rest, guard, metrics, **opts), redis, metrics, registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def score(**kw: Any) -> Assessment:
    base: dict[str, Any] = {
        "trace_id": "tr-1",
        "experiment_id": "1",
        "scorer": "relevance",
        "name": "relevance",
        "scorer_version": 3,
        "value": "yes",
        "rationale": "on topic",
        "source": AssessmentSource(AssessmentSourceType.LLM_JUDGE, "gpt-4.1-mini"),
        "created_ms": NOW_MS,
        "run_id": "r1",
    }
    return Assessment(**{**base, **kw})


def vote(value: Any = True, *, created_ms: int = 1_000, event_id: str = "ev-1", **kw: Any) -> UserEvent:
    base: dict[str, Any] = {
        "kind": "feedback",
        "trace_id": "tr-1",
        "name": "user_satisfaction",
        "value": value,
        "source_type": "HUMAN",
        "source_id": "u-1",
        "event_id": event_id,
        "created_ms": created_ms,
    }
    return UserEvent(**{**base, **kw})


# ------------------------------------------------------------------------------ payloads


def test_score_payload_with_an_error() -> None:
    a = score(value=None, rationale=None, error=AssessmentError("TIMEOUT", "judge took 30 s"), metadata={"k": 1})
    rid = result_id(a)
    body = score_payload(a, rid)
    assert body["assessment_name"] == "relevance" and body["trace_id"] == "tr-1"
    assert body["source"] == {"source_type": "LLM_JUDGE", "source_id": "relevance@v3"}
    assert body["feedback"] == {"value": None, "error": {"error_code": "TIMEOUT", "error_message": "judge took 30 s"}}
    assert "rationale" not in body
    meta = body["metadata"]
    assert meta[RESULT_ID_KEY] == rid and meta["k"] == "1"  # metadata is a string map
    assert meta["tracewatch.source_id"] == "gpt-4.1-mini" and meta["tracewatch.run_id"] == "r1"
    assert body["create_time"].endswith("Z")


def test_score_payload_value_and_a_stable_result_id() -> None:
    a = score()
    body = score_payload(a, result_id(a))
    assert body["feedback"] == {"value": "yes"} and body["rationale"] == "on topic"
    assert result_id(score(created_ms=1, value="no")) == result_id(a)  # same pair: same result
    assert result_id(score(run_id="r2")) != result_id(a)  # a re-run is a new result
    code = score(source=AssessmentSource("SOMETHING_ELSE", "x"))
    assert score_payload(code, "r")["source"]["source_type"] == "CODE"


def test_vote_payload_and_a_changed_vote_overrides() -> None:
    body = event_payload(vote(False), overrides="a-7")
    assert body["source"] == {"source_type": "HUMAN", "source_id": "u-1"}
    assert body["feedback"] == {"value": False}
    assert body["overrides"] == "a-7"
    assert body["metadata"][RESULT_ID_KEY] == "ev-1"
    assert "overrides" not in event_payload(vote(True))


def test_expectation_payload() -> None:
    scalar = event_payload(vote("Paris", kind="expectation", name="expected_response", source_id="ops"))
    assert scalar["expectation"] == {"value": "Paris"} and "feedback" not in scalar
    listed = event_payload(vote(["a", "b"], kind="expectation", name="expected_facts"))
    assert listed["expectation"] == {"serialized_value": {"serialization_format": "JSON_FORMAT", "value": '["a","b"]'}}


# ----------------------------------------------------------------------- MLflow's answers


async def test_written_once_then_a_replay_is_a_duplicate() -> None:
    server = FakeMlflow({"tr-1"})
    sink, _, _, reg = make_sink(server)
    first = await sink.write_score(score())
    assert (first.state, first.assessment_id) == ("written", "a-1")
    again = await sink.write_score(score())
    assert (again.state, again.assessment_id) == ("duplicate", "a-1")
    assert len(server.created) == 1
    assert value(reg, "tracewatch_mlflow_sink_written_total", kind="score") == 1
    assert value(reg, "tracewatch_mlflow_sink_duplicates_total", kind="score") == 1
    assert value(reg, "tracewatch_mlflow_request_duration_seconds_count", operation="create_assessment") == 1


async def test_404_skips_with_trace_not_in_mlflow() -> None:
    server = FakeMlflow(set())
    sink, _, _, reg = make_sink(server)
    out = await sink.write_score(score())
    assert (out.state, out.reason) == ("skipped", "trace_not_in_mlflow")
    assert value(reg, "tracewatch_mlflow_sink_skipped_total", reason="trace_not_in_mlflow") == 1
    assert server.created == []


async def test_other_4xx_is_rejected_with_a_reason() -> None:
    server = FakeMlflow({"tr-1"})
    server.script["create"] = [400]
    sink, _, _, _ = make_sink(server)
    with pytest.raises(MlflowRejectedError) as info:
        await sink.write_score(score())
    assert info.value.status == 400 and info.value.error_code == "X"
    assert info.value.operation == "create_assessment"


@pytest.mark.parametrize("status", [429, 503])
async def test_429_and_5xx_wait_for_retry_after(status: int) -> None:
    server = FakeMlflow({"tr-1"})
    server.script["create"] = [(status, {"Retry-After": "0.3"})]
    sink, _, _, reg = make_sink(server)
    out = await sink.write_score(score())
    assert out.state == "written"
    creates = [t for op, t in server.calls if op == "create"]
    assert len(creates) == 2
    assert creates[1] - creates[0] >= 0.28  # Retry-After, not our 0.01 s backoff
    reason = "http_429" if status == 429 else "http_5xx"
    assert value(reg, "tracewatch_mlflow_sink_retries_total", reason=reason) == 1


async def test_retry_after_is_parsed_and_dates_fall_back() -> None:
    server = FakeMlflow({"tr-1"})
    server.script["create"] = [(429, {"Retry-After": "2"}), (502, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})]
    rest = MlflowRest(MlflowConfig(URI), transport=httpx.MockTransport(server.handler))
    for want in (2.0, None):
        with pytest.raises(MlflowUnavailableError) as info:
            await rest.create_assessment("tr-1", {"assessment_name": "x"})
        assert info.value.retry_after == want


async def test_a_lost_answer_is_found_by_the_look_up_not_written_twice() -> None:
    server = FakeMlflow({"tr-1"})
    server.lose_answer = 1  # the create lands, its answer is a 503
    sink, _, _, reg = make_sink(server)
    out = await sink.write_score(score())
    assert (out.state, out.assessment_id) == ("duplicate", "a-1")
    assert len(server.created) == 1
    assert [op for op, _ in server.calls] == ["create", "get"]
    assert value(reg, "tracewatch_mlflow_sink_retries_total", reason="http_5xx") == 1


# -------------------------------------------------------------------------------- the guard


async def test_guard_three_states() -> None:
    redis = FakeRedis()
    guard = MlflowGuard(redis, prefix="t:")  # type: ignore[arg-type]
    assert await guard.claim("r1") is None  # absent: claimed
    assert redis.data["t:mlflow:r:r1"] == PENDING.encode()
    assert await guard.claim("r1") == PENDING  # an earlier attempt may have landed
    await guard.done("r1", "a-9")
    assert await guard.claim("r1") == "a-9"  # acknowledged: done


async def test_pending_guard_looks_first_and_adopts_the_earlier_write() -> None:
    server = FakeMlflow({"tr-1"})
    a = score()
    rid = result_id(a)
    server.traces["tr-1"].append({**score_payload(a, rid), "assessment_id": "a-0", "valid": True})
    sink, redis, _, _ = make_sink(server)
    redis.data[f"t:mlflow:r:{rid}"] = PENDING.encode()  # a crash after the create, before done()
    out = await sink.write_score(a)
    assert (out.state, out.assessment_id) == ("duplicate", "a-0")
    assert server.created == [] and redis.data[f"t:mlflow:r:{rid}"] == b"a-0"


async def test_pending_guard_with_nothing_in_mlflow_writes() -> None:
    server = FakeMlflow({"tr-1"})
    other = score(name="other", scorer="other")  # same trace, another result: not ours
    server.traces["tr-1"].append({**score_payload(other, result_id(other)), "assessment_id": "a-0"})
    sink, redis, _, _ = make_sink(server)
    a = score()
    redis.data[f"t:mlflow:r:{result_id(a)}"] = PENDING.encode()
    out = await sink.write_score(a)
    assert out.state == "written" and len(server.created) == 1


# ------------------------------------------------------------------------ votes, overrides


async def test_changed_vote_overrides_and_a_stale_one_is_superseded() -> None:
    server = FakeMlflow({"tr-1"})
    sink, _, _, reg = make_sink(server)
    up = await sink.write_event(vote(True, created_ms=1_000, event_id="e1"))
    down = await sink.write_event(vote(False, created_ms=2_000, event_id="e2"))
    assert up.state == down.state == "written"
    assert server.created[1]["overrides"] == up.assessment_id
    assert [x["valid"] for x in server.traces["tr-1"]] == [False, True]
    late = await sink.write_event(vote(True, created_ms=1_500, event_id="e3"))  # older than the current vote
    assert (late.state, late.reason) == ("skipped", "superseded")
    assert value(reg, "tracewatch_mlflow_sink_written_total", kind="vote") == 2


async def test_a_vote_with_an_error_is_sent_as_mlflow_feedback_error() -> None:
    server = FakeMlflow({"tr-1"})
    sink, _, _, _ = make_sink(server)
    error = {"error_code": "RATE_LIMITED", "error_message": "judge busy", "stack_trace": "Traceback ..."}
    out = await sink.write_event(vote(None, error=error, rationale="could not judge"))
    assert out.state == "written"
    (body,) = server.created  # the CreateAssessment request body, as MLflow's `Feedback.to_proto` shapes it
    assert body["feedback"] == {"value": None, "error": error}
    assert body["rationale"] == "could not judge" and "span_id" not in body
    partial = event_payload(vote(None, error={"error_code": "E", "error_message": None, "stack_trace": 3}))
    assert partial["feedback"] == {"value": None, "error": {"error_code": "E", "stack_trace": "3"}}


async def test_a_vote_and_an_expectation_on_a_span_carry_its_span_id() -> None:
    server = FakeMlflow({"tr-1"})
    sink, _, _, _ = make_sink(server)
    assert (await sink.write_event(vote(True, span_id="sp-7"))).state == "written"
    gt = vote("Paris", kind="expectation", name="expected_response", event_id="ev-2", span_id="sp-7")
    assert (await sink.write_event(gt)).state == "written"
    fb, ex = server.created
    assert fb["span_id"] == "sp-7" and fb["trace_id"] == "tr-1" and fb["feedback"] == {"value": True}
    assert ex["span_id"] == "sp-7" and ex["expectation"] == {"value": "Paris"} and "feedback" not in ex
    assert "error" not in event_payload(vote("x", kind="expectation", error={"error_code": "E"}))["expectation"]


async def test_a_vote_overrides_only_the_users_vote_on_the_same_span() -> None:
    server = FakeMlflow({"tr-1"})
    sink, _, _, _ = make_sink(server)
    on_a = await sink.write_event(vote(True, created_ms=1_000, event_id="e1", span_id="sp-a"))
    on_b = await sink.write_event(vote(False, created_ms=2_000, event_id="e2", span_id="sp-b"))
    on_trace = await sink.write_event(vote(True, created_ms=3_000, event_id="e3"))
    again_a = await sink.write_event(vote(False, created_ms=4_000, event_id="e4", span_id="sp-a"))
    assert on_a.state == on_b.state == on_trace.state == again_a.state == "written"
    assert [b.get("overrides") for b in server.created] == [None, None, None, on_a.assessment_id]


def test_the_loop_passes_error_and_span_id_from_the_feedback_topic() -> None:
    from stream._events import FeedbackEvent
    from stream.mlflow._loop import _event

    raw = FeedbackEvent.from_json(
        orjson.dumps({"trace_id": "tr-1", "name": "n", "error": {"error_code": "E"}, "span_id": "sp-1"})
    )
    e = _event(raw)
    assert (e.error, e.span_id) == ({"error_code": "E"}, "sp-1")
    plain = _event(FeedbackEvent.from_json(orjson.dumps({"trace_id": "tr-1", "name": "n", "value": 1})))
    assert (plain.error, plain.span_id) == (None, None)


# ------------------------------------------------------------------- the trace-wait grace


async def test_a_trace_that_arrives_within_the_grace_gets_its_result() -> None:
    server = FakeMlflow(set())
    sink, _, _, reg = make_sink(server, trace_wait_timeout=5.0, trace_poll_interval=0.05)

    async def export_later() -> None:
        await asyncio.sleep(0.3)  # MLflow's client exports the trace asynchronously
        server.traces["tr-1"] = []

    later = asyncio.create_task(export_later())
    out = await sink.write_score(score(created_ms=int(time.time() * 1000)))
    await later
    assert out.state == "written"
    assert value(reg, "tracewatch_mlflow_sink_retries_total", reason="trace_not_in_mlflow") >= 3
    assert value(reg, "tracewatch_mlflow_sink_skipped_total", reason="trace_not_in_mlflow") == 0


async def test_after_the_grace_the_result_is_skipped() -> None:
    server = FakeMlflow(set())
    sink, _, _, reg = make_sink(server, trace_wait_timeout=0.4, trace_poll_interval=0.1)
    start = time.monotonic()
    out = await sink.write_event(vote(created_ms=int(time.time() * 1000)))
    assert (out.state, out.reason) == ("skipped", "trace_not_in_mlflow")
    assert 0.3 <= time.monotonic() - start < 2.0
    assert value(reg, "tracewatch_mlflow_sink_skipped_total", reason="trace_not_in_mlflow") == 1


async def test_an_old_result_looks_once() -> None:
    """A backlog replayed long after the fact does not wait the grace per result."""
    server = FakeMlflow(set())
    sink, _, _, _ = make_sink(server, trace_wait_timeout=10.0, trace_poll_interval=0.1)
    start = time.monotonic()
    out = await sink.write_score(score(created_ms=NOW_MS - 60_000))
    assert out.reason == "trace_not_in_mlflow" and time.monotonic() - start < 0.5
    assert [op for op, _ in server.calls] == ["create"]


async def test_close_during_the_grace_leaves_the_result_unwritten() -> None:
    server = FakeMlflow(set())
    sink, _, _, _ = make_sink(server, trace_wait_timeout=30.0, trace_poll_interval=5.0)
    task = asyncio.create_task(sink.write_score(score(created_ms=int(time.time() * 1000))))
    await asyncio.sleep(0.1)
    sink.close()
    with pytest.raises(SinkUnavailableError):
        await asyncio.wait_for(task, 2)
