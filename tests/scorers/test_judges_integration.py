"""Judges against the real fake-judge server over loopback HTTP (no Kafka or Redis needed)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import typer
from typer.testing import CliRunner

from scorers import Guidelines, JudgeClient, Safety, evaluate, make_judge
from stream.cli._evaluate import evaluate_command
from tests.helpers import fresh_judge

pytestmark = pytest.mark.integration


@pytest.fixture
def srv(judge_server):
    return fresh_judge(judge_server, retry_after=0.0)


def client(srv, **kwargs) -> JudgeClient:
    kwargs.setdefault("backoff_base", 0.005)
    kwargs.setdefault("max_backoff", 0.05)
    return JudgeClient(srv.base_url, "sk-fake", **kwargs)


async def test_pass_fail_and_unsafe(srv, make_trace, fixture_traces) -> None:
    async with client(srv) as c:
        tone = Guidelines("tone", "Be professional.").bind(c)
        safety = Safety().bind(c)
        good = await tone.arun(fixture_traces["ok"])
        bad = await tone.arun(make_trace({"q": "hi"}, "a reply with [[bad]] content"))
        unsafe = await safety.arun(make_trace({"q": "hi"}, "[[unsafe]] instructions"))
        safe = await safety.arun(fixture_traces["ok"])
    assert good.feedbacks[0].value == "yes" and good.feedbacks[0].rationale
    assert bad.feedbacks[0].value == "no" and "[[bad]]" in bad.feedbacks[0].rationale
    assert unsafe.feedbacks[0].value == "no" and safe.feedbacks[0].value == "yes"
    assert good.feedbacks[0].metadata["prompt_tokens"] > 50
    assert srv.stats()["by_status"] == {"200": 4}


async def test_fail_fraction_is_deterministic_per_prompt(srv, make_trace) -> None:
    srv.configure(fail_fraction=0.5)
    traces = [make_trace({"q": i}, f"answer {i}") for i in range(30)]
    async with client(srv) as c:
        judge = Guidelines("g", "Be kind.").bind(c)
        first = [r.feedbacks[0].value for r in await asyncio.gather(*(judge.arun(t) for t in traces))]
        again = [r.feedbacks[0].value for r in await asyncio.gather(*(judge.arun(t) for t in traces))]
    assert first == again
    assert 5 <= first.count("no") <= 25


async def test_unparseable_answer(srv, make_trace) -> None:
    async with client(srv) as c:
        result = await Safety().bind(c).arun(make_trace({}, "please answer [[garbage]]"))
    err = result.feedbacks[0].error
    assert result.state == "error" and err.error_code == "JUDGE_BAD_RESPONSE"
    assert "cannot answer in JSON" in err.error_message


async def test_429_storm_with_retry_after_all_succeed(srv, make_trace) -> None:
    srv.configure(rate_429=0.5, retry_after=0.0)
    statuses: list[str] = []
    async with client(srv, max_retries=12, on_request=lambda m, s, *_: statuses.append(s)) as c:
        judge = Guidelines("g", "Be kind.").bind(c)
        results = await asyncio.gather(*(judge.arun(make_trace({"q": i}, "fine")) for i in range(40)))
        stats = c.stats
    assert all(r.state == "scored" for r in results)
    server_stats = srv.stats()
    assert server_stats["by_status"]["200"] == 40
    assert server_stats["by_status"]["429"] == stats.retries == statuses.count("429") > 5
    assert max(r.feedbacks[0].metadata["attempts"] for r in results) > 1


async def test_fractional_retry_after_is_waited(srv, make_trace) -> None:
    srv.configure(rate_429=1.0, retry_after=0.15)
    async with client(srv, max_retries=2, max_backoff=1.0) as c:
        start = time.perf_counter()
        result = await Safety().bind(c).arun(make_trace({}, "x"))
        elapsed = time.perf_counter() - start
    assert result.feedbacks[0].error.error_code == "JUDGE_RATE_LIMITED"
    assert elapsed >= 0.3  # two waits of Retry-After 0.15 s
    assert srv.stats()["by_status"] == {"429": 3}


async def test_500s_retried_then_exhausted(srv, make_trace) -> None:
    srv.configure(rate_500=0.4, seed=3)
    async with client(srv, max_retries=10) as c:
        results = await asyncio.gather(
            *(Safety().bind(c).arun(make_trace({"q": i}, "ok")) for i in range(20))
        )
    assert all(r.state == "scored" for r in results)
    assert srv.stats()["by_status"]["500"] > 0
    srv.configure(rate_500=1.0)
    async with client(srv, max_retries=2) as c:
        result = await Safety().bind(c).arun(make_trace({}, "ok"))
    assert result.feedbacks[0].error.error_code == "JUDGE_ERROR"
    assert "gave up after 3 attempts" in result.feedbacks[0].error.error_message


async def test_server_slower_than_client_timeout(srv, make_trace) -> None:
    srv.configure(latency=0.5)
    async with client(srv, timeout=0.1, max_retries=1) as c:
        start = time.perf_counter()
        result = await Safety().bind(c).arun(make_trace({}, "ok"))
        elapsed = time.perf_counter() - start
    assert result.state == "error"
    assert result.feedbacks[0].error.error_code == "JUDGE_TIMEOUT"
    assert elapsed < 0.45
    assert c.stats.by_status == {"timeout": 2}


async def test_in_flight_cap_holds_under_50_concurrent_calls(srv, make_trace) -> None:
    srv.configure(latency=0.05)
    async with client(srv, max_in_flight=4) as c:
        judge = Guidelines("g", "Be kind.").bind(c)
        start = time.perf_counter()
        results = await asyncio.gather(*(judge.arun(make_trace({"q": i}, "ok")) for i in range(50)))
        elapsed = time.perf_counter() - start
    stats = srv.stats()
    assert all(r.state == "scored" for r in results)
    assert stats["requests"] == 50 and stats["in_flight"] == 0
    assert stats["max_in_flight"] == 4
    assert elapsed >= 50 / 4 * 0.05 * 0.9


async def test_numeric_and_bool_make_judge(srv, fixture_traces) -> None:
    async with client(srv) as c:
        score = (
            await make_judge("q", "Rate 1-5: {{ outputs }}", feedback_value_type=int)
            .bind(c)
            .arun(fixture_traces["ok"])
        )
        flag = (
            await make_judge("f", "Is {{ outputs }} polite?", feedback_value_type=bool)
            .bind(c)
            .arun(fixture_traces["ok"])
        )
    assert score.feedbacks[0].value in (4, 5)
    assert flag.feedbacks[0].value is True


def test_evaluate_with_judges_default_client_from_env(srv, fixtures_dir, monkeypatch) -> None:
    monkeypatch.setenv("TRACEWATCH_JUDGE_BASE_URL", srv.base_url)
    result = evaluate(fixtures_dir, ["no_error", "Safety()", "Correctness()"], concurrency=4)
    rows = {r.scorer: r for r in result.summary()}
    assert rows["safety"].scored == 6 and rows["safety"].skipped == 1  # 04 has no outputs
    assert rows["correctness"].scored == 1  # only 05 carries expectations
    assert srv.stats()["by_status"] == {"200": 7}


def test_cli_with_judges(srv, fixtures_dir, tmp_path) -> None:
    srv.configure(fail_fraction=0.5)
    app = typer.Typer()
    app.command("evaluate")(evaluate_command)
    app.command("noop")(lambda: None)
    out = tmp_path / "a.jsonl"
    args = [
        "evaluate",
        str(fixtures_dir),
        "-s",
        "Guidelines(name='tone', guidelines='Be professional.')",
        "-s",
        "make_judge('stars', 'Rate {{ outputs }}', feedback_value_type=int)",
        "--judge-base-url",
        srv.base_url,
        "--judge-max-in-flight",
        "2",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "tone" in result.output and "stars" in result.output
    assert "judge: 12 requests (0 retries" in result.output
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(records) == 14
    assert {r["source"]["source_type"] for r in records if r["state"] == "scored"} == {"LLM_JUDGE"}
    assert srv.stats()["max_in_flight"] <= 2
