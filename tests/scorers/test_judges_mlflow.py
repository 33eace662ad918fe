"""MLflow 3.17's remaining single-trace judges, rules, ensembles, make_judge defaults and
model URIs (OpenAI, Anthropic, reasoning models), against the fake judge over real HTTP.

Assertions on requests read what the server received (`JudgeServer.received()`), never
objects inside the client.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import orjson
import pytest

from scorers import (
    Completeness,
    Equivalence,
    Fluency,
    JudgeClient,
    PIIDetection,
    RegexMatch,
    ResponseLength,
    RetrievalSufficiency,
    ScorerDefinitionError,
    Summarization,
    ToolCallCorrectness,
    ToolCallEfficiency,
    agg_all,
    agg_any,
    decode_trace,
    is_reasoning_model,
    judge_from_spec,
    majority_vote,
    make_judge,
    make_scorer_ensemble,
    maximum,
    mean,
    minimum,
    resolve_scorer,
    scorer,
)
from tests.helpers import fresh_judge
from tests.scorers.conftest import build_trace_dict

pytestmark = pytest.mark.integration


@pytest.fixture
def srv(judge_server):
    return fresh_judge(judge_server, retry_after=0.0)


def client(srv, **kwargs: Any) -> JudgeClient:
    kwargs.setdefault("backoff_base", 0.005)
    kwargs.setdefault("max_backoff", 0.5)
    return JudgeClient(srv.base_url, "sk-fake", anthropic_base_url=srv.base_url, anthropic_api_key="ak-fake", **kwargs)


def _span(sid: str, name: str, kind: str, inputs: Any, outputs: Any, start: int, **attrs: Any) -> dict[str, Any]:
    attributes = {
        "mlflow.spanType": orjson.dumps(kind).decode(),
        "mlflow.spanInputs": orjson.dumps(inputs).decode(),
        "mlflow.spanOutputs": orjson.dumps(outputs).decode(),
        **{k: orjson.dumps(v).decode() for k, v in attrs.items()},
    }
    return {
        "span_id": sid,
        "parent_span_id": "AAAAAAAAAAE=",
        "name": name,
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + 1000,
        "status": {"code": "STATUS_CODE_OK", "message": ""},
        "attributes": attributes,
        "events": [],
    }


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the docs",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]


def agent_trace(outputs: Any = "Paris is the capital.", expectations: dict[str, Any] | None = None):
    spans = [
        _span("AAAAAAAAAAI=", "llm", "CHAT_MODEL", {"messages": []}, {}, 1_000_000_100, **{"mlflow.chat.tools": TOOLS}),
        _span("AAAAAAAAAAM=", "search", "TOOL", {"query": "capital"}, "Paris", 1_000_000_200),
        _span("AAAAAAAAAAQ=", "search", "TOOL", {"query": "capital"}, "Paris", 1_000_000_300),
        _span(
            "AAAAAAAAAAU=",
            "retrieve",
            "RETRIEVER",
            {"q": "capital"},
            [{"page_content": "Paris is the capital of France.", "metadata": {"doc_uri": "geo.md"}}],
            1_000_000_400,
        ),
    ]
    assessments = [
        {"assessment_name": k, "expectation": {"value": v}, "source": {"source_type": "HUMAN", "source_id": "x"}}
        for k, v in (expectations or {}).items()
    ]
    return decode_trace(
        orjson.dumps(
            build_trace_dict({"question": "capital of France?"}, outputs, spans=spans, assessments=assessments)
        )
    )


# -- the new judges over real HTTP ----------------------------------------------------------


async def test_new_judges_answer_yes_no_with_mlflow_names(srv) -> None:
    trace = agent_trace(expectations={"expected_response": "Paris"})
    judges = [
        RetrievalSufficiency(),
        Completeness(),
        Equivalence(),
        Fluency(),
        Summarization(),
        ToolCallCorrectness(),
        ToolCallEfficiency(),
    ]
    async with client(srv) as c:
        results = await asyncio.gather(*(j.bind(c).arun(trace) for j in judges))
    for judge, result in zip(judges, results, strict=True):
        fb = result.feedbacks[0]
        assert fb.error is None, (judge.name, fb.error)
        assert fb.value in ("yes", "no") and fb.name == judge.kind and fb.rationale
        assert fb.source.source_type == "LLM_JUDGE" and fb.metadata["prompt_tokens"] > 10
    names = [j.name for j in judges]
    assert names == [
        "retrieval_sufficiency",
        "completeness",
        "equivalence",
        "fluency",
        "summarization",
        "tool_call_correctness",
        "tool_call_efficiency",
    ]
    prompts = {r["body"]["messages"][0]["content"] for r in srv.received()}
    assert len(prompts) == 7
    joined = "\n".join(prompts)
    assert "<claim>" in joined and "Paris is the capital of France." in joined  # retrieval context
    assert "Tool Call 2: search" in joined and "- search: Search the docs" in joined
    assert "    - query (required): string" in joined
    assert "<document>" in joined and "<summary>" in joined and "<actual_output>" in joined


async def test_bad_marker_gives_no_and_garbage_is_an_error(srv) -> None:
    trace = agent_trace("[[bad]] answer")
    async with client(srv) as c:
        no = await Completeness().bind(c).arun(trace)
        err = await Fluency().bind(c).arun(agent_trace("[[garbage]]"))
    assert no.feedbacks[0].value == "no"
    assert err.feedbacks[0].error.error_code == "JUDGE_BAD_RESPONSE"


async def test_equivalence_exact_matches_make_no_call(srv) -> None:
    async with client(srv) as c:
        eq = Equivalence().bind(c)
        num = await eq.arun(agent_trace(42), {"expected_response": 42.0})
        off = await eq.arun(agent_trace(41), {"expected_response": 42})
        same = await eq.arun(agent_trace("Paris"), {"expected_response": "Paris"})
        skipped = await eq.arun(agent_trace("Paris"))
    assert (num.feedbacks[0].value, num.feedbacks[0].rationale) == ("yes", "Exact numerical match")
    assert (off.feedbacks[0].value, off.feedbacks[0].rationale) == ("no", "Values do not match: 41 != 42")
    assert (same.feedbacks[0].value, same.feedbacks[0].rationale) == ("yes", "Exact string match")
    assert num.feedbacks[0].source.source_type == "CODE" and num.feedbacks[0].source.source_id == "default"
    assert skipped.skip_reason == "missing_expectations"
    assert srv.stats()["requests"] == 0


async def test_tool_call_correctness_modes(srv) -> None:
    both = {"expected_tool_calls": [{"name": "search", "arguments": {"query": "capital"}}] * 2}
    async with client(srv) as c:
        exact = ToolCallCorrectness(should_exact_match=True).bind(c)
        ok = await exact.arun(agent_trace(), both)
        short = await exact.arun(agent_trace(), {"expected_tool_calls": [{"name": "search"}]})
        ordered = ToolCallCorrectness(should_exact_match=True, should_consider_ordering=True).bind(c)
        moved = await ordered.arun(agent_trace(), {"expected_tool_calls": [{"name": "search"}, {"name": "lookup"}]})
        none = await exact.arun(agent_trace())
        assert srv.stats()["requests"] == 0
        fuzzy = await ToolCallCorrectness().bind(c).arun(agent_trace(), {"expected_tool_calls": [{"name": "search"}]})
    assert ok.feedbacks[0].value == "yes"
    assert short.feedbacks[0].rationale == "Expected 1 tool call(s), but got 2 tool call(s)."
    assert (
        moved.feedbacks[0].value == "no" and "Position 2: expected lookup, got search" in moved.feedbacks[0].rationale
    )
    assert none.skip_reason == "missing_expectations"
    assert fuzzy.feedbacks[0].value == "yes"
    prompt = srv.received()[-1]["body"]["messages"][0]["content"]
    assert "Expected Tool 1: search" in prompt and "expected tool names" in prompt


async def test_retrieval_sufficiency_needs_ground_truth_and_context(srv, make_trace) -> None:
    async with client(srv) as c:
        judge = RetrievalSufficiency().bind(c)
        no_truth = await judge.arun(agent_trace())
        no_docs = await judge.arun(make_trace({"q": 1}, "x"), {"expected_facts": ["a"]})
        facts = await judge.arun(agent_trace(), {"expected_facts": ["Paris is the capital", "in France"]})
    assert no_truth.skip_reason == "missing_expectations" and no_docs.skip_reason == "no_result"
    assert facts.feedbacks[0].value == "yes"
    assert "- Paris is the capital\n- in France" in srv.received()[-1]["body"]["messages"][0]["content"]


# -- rule-based built-ins (code, MLflow's texts) ---------------------------------------------


def test_rules_follow_mlflow(make_trace) -> None:
    t = make_trace({"q": 1}, {"choices": [{"message": {"content": "Answer: mail bob@example.com"}}]})
    empty = make_trace({"q": 1})
    assert RegexMatch(r"^Answer:").run(t).feedbacks[0].value == "yes"
    assert RegexMatch(r"answer", match_type="fullmatch", case_insensitive=True).run(t).feedbacks[0].value == "no"
    pii = PIIDetection().run(t).feedbacks[0]
    assert (pii.value, pii.rationale) == ("no", "Detected PII: email")
    assert PIIDetection(pii_types=["ssn"]).run(t).feedbacks[0].value == "yes"
    length = ResponseLength(max_length=3, unit="words").run(t).feedbacks[0]
    assert (length.value, length.rationale) == ("yes", "Output length (3 words) is within bounds")
    assert ResponseLength(min_length=100).run(t).feedbacks[0].rationale == (
        "Output length (28 chars) is below the minimum (100 chars)"
    )
    missing = RegexMatch("x").run(empty).feedbacks[0]
    assert (missing.value, missing.rationale) == ("no", "No outputs provided to evaluate.")
    assert missing.source.source_id == "default" and RegexMatch("x").name == "regex_match"
    for bad in (lambda: RegexMatch("("), lambda: ResponseLength(), lambda: PIIDetection(pii_types=["dna"])):
        with pytest.raises(ScorerDefinitionError):
            bad()
    assert resolve_scorer("RegexMatch(pattern='^A')").pattern == "^A"
    assert resolve_scorer("ToolCallCorrectness(should_exact_match=True)").should_exact_match


# -- ensembles -----------------------------------------------------------------------------


def test_aggregators_recompute() -> None:
    values = [3, 5, 4, 5]
    assert mean(values).value == sum(values) / len(values)
    assert minimum(values).value == 3 and maximum(values).value == 5
    assert majority_vote(["yes", "no", "yes"]).value == "yes"
    assert majority_vote(["b", "a"]).value == "a"  # tie: smallest str
    assert agg_all(["yes", True, "pass"]).value is True and agg_all(["yes", "no"]).value is False
    assert agg_any(["no", "fail", "Yes"]).value is True
    for fn, vals in ((mean, ["yes"]), (agg_all, ["maybe"]), (majority_vote, ["a", None]), (minimum, [])):
        with pytest.raises(ValueError):
            fn(vals)


async def test_ensemble_over_judges_and_code(srv, make_trace) -> None:
    @scorer
    def short(outputs) -> bool:
        return len(outputs) < 40

    trace = make_trace({"q": "hi"}, "a polite reply")
    async with client(srv) as c:
        judges = [
            make_judge(f"j{i}", f"[{i}] Is {{{{ outputs }}}} polite?", feedback_value_type=bool) for i in range(3)
        ]
        for j in judges:
            j.bind(c)
        vote = make_scorer_ensemble(name="polite", scorers=[*judges, short], ensemble_fn="agg_all")
        result = await vote.arun(trace)
        singles = [(await s.arun(trace)).feedbacks[0].value for s in [*judges, short]]
        custom = make_scorer_ensemble(
            name="count", scorers=judges, ensemble_fn=lambda feedbacks: sum(f.value is True for f in feedbacks)
        )
        counted = await custom.arun(trace)
    fb = result.feedbacks[0]
    assert fb.name == "polite" and fb.value is all(singles) and fb.rationale == "all() over 4 scorers = True"
    subs = orjson.loads(fb.metadata["mlflow.ensemble.sub_feedbacks"])
    assert [s["name"] for s in subs] == ["j0", "j1", "j2", "short"] and fb.source.source_id == "default"
    assert counted.feedbacks[0].value == sum(v is True for v in singles[:3])


async def test_ensemble_errors_and_validation(srv, make_trace) -> None:
    with pytest.raises(ScorerDefinitionError, match="requires numeric"):
        make_scorer_ensemble(name="m", scorers=[Fluency()], ensemble_fn="mean")
    with pytest.raises(ScorerDefinitionError, match="not a built-in"):
        make_scorer_ensemble(name="m", scorers=[Fluency()], ensemble_fn="median")
    with pytest.raises(ScorerDefinitionError, match="at least one"):
        make_scorer_ensemble(name="m", scorers=[], ensemble_fn="mean")
    async with client(srv) as c:
        ens = make_scorer_ensemble(name="e", scorers=[Fluency().bind(c), Completeness().bind(c)], ensemble_fn="agg_any")
        result = await ens.arun(make_trace({"q": 1}, "[[garbage]]"))
    err = result.feedbacks[0].error
    assert err.error_code == "SCORER_ERROR" and "Failed sub-scorers -- 'fluency'" in err.error_message


# -- make_judge: MLflow's defaults, inference_params, conversation -------------------------


async def test_make_judge_defaults_to_str_and_sends_inference_params(srv, make_trace) -> None:
    judge = make_judge(
        "tone",
        "Rate the tone of {{ outputs }}",
        "openai:/gpt-4o-mini",
        None,
        None or str,
        {"temperature": 0.7, "max_tokens": 99, "top_p": 0.5},
    )
    assert judge.value_type == "str" and make_judge("d", "{{ outputs }}").value_type == "str"
    async with client(srv) as c:
        result = await judge.bind(c).arun(make_trace({"q": 1}, "fine"))
    assert result.feedbacks[0].value == "yes"
    body = srv.received()[-1]["body"]
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["model"]) == (0.7, 99, 0.5, "gpt-4o-mini")
    assert srv.received()[-1]["authorization"] == "Bearer sk-fake"
    spec = judge.to_spec()
    assert spec["inference_params"] == {"temperature": 0.7, "max_tokens": 99, "top_p": 0.5}
    assert judge_from_spec(spec).inference_params == spec["inference_params"]
    with pytest.raises(ScorerDefinitionError, match="may not set messages"):
        make_judge("x", "{{ outputs }}", inference_params={"messages": []})


async def test_make_judge_literal_choices(srv, make_trace) -> None:
    good = make_judge("g", "Is {{ outputs }} fine?", feedback_value_type=Literal["yes", "no"])
    strict = make_judge("s", "Is {{ outputs }} fine?", feedback_value_type=Literal["good", "bad"])
    async with client(srv) as c:
        ok = await good.bind(c).arun(make_trace({}, "x"))
        bad = await strict.bind(c).arun(make_trace({}, "x"))
    assert ok.feedbacks[0].value == "yes"
    assert 'one of "good", "bad"' in srv.received()[-1]["body"]["messages"][0]["content"]
    assert bad.feedbacks[0].error.error_code == "JUDGE_BAD_RESPONSE"


async def test_conversation_is_accepted_but_refused_for_single_traces(make_trace) -> None:
    judge = make_judge("frustration", "Is the user in {{ conversation }} frustrated? {{ expectations }}")
    assert judge.needs_session and judge.params == frozenset({"expectations"})
    with pytest.raises(ScorerDefinitionError, match="only be combined"):
        make_judge("x", "{{ conversation }} and {{ outputs }}")
    with pytest.raises(ScorerDefinitionError, match="needs a session"):
        judge_from_spec(judge.to_spec())
    result = await judge.arun(make_trace({}, "x"), {"expected": 1})
    assert "needs a session" in result.feedbacks[0].error.error_message


# -- model URIs: Anthropic, reasoning models ----------------------------------------------


async def test_anthropic_messages_api(srv, make_trace) -> None:
    judge = Fluency(model="anthropic:/claude-3-5-sonnet", inference_params={"temperature": 0.2})
    async with client(srv) as c:
        result = await judge.bind(c).arun(make_trace({}, "A well written sentence."))
        stats = c.stats
    fb = result.feedbacks[0]
    assert fb.value == "yes" and fb.source.source_id == "anthropic:/claude-3-5-sonnet"
    seen = srv.received()[-1]
    assert seen["path"] == "/v1/messages" and seen["x-api-key"] == "ak-fake" and seen["authorization"] is None
    assert seen["anthropic-version"] == "2023-06-01"
    assert seen["body"]["max_tokens"] == 512 and seen["body"]["temperature"] == 0.2
    assert fb.metadata["prompt_tokens"] > 10 and fb.metadata["completion_tokens"] > 0
    assert stats.prompt_tokens == fb.metadata["prompt_tokens"]


async def test_anthropic_429_honours_retry_after_and_ratelimit_reset(srv, make_trace) -> None:
    trace = make_trace({}, "text")
    srv.configure(rate_429=1.0, retry_after=0.3)
    async with client(srv, max_retries=1, max_backoff=2.0) as c:
        judge = Fluency(model="anthropic:/claude-3-5-haiku").bind(c)
        started = asyncio.get_running_loop().time()
        failed = await judge.arun(trace)
        waited = asyncio.get_running_loop().time() - started
        assert failed.feedbacks[0].error.error_code == "JUDGE_RATE_LIMITED"
        assert waited >= 0.3 and srv.stats()["by_status"] == {"429": 2}
        # Only the anthropic-ratelimit-*-reset header (no Retry-After): the client still waits.
        fresh_judge(srv, rate_429=1.0, retry_after=0.3, retry_after_header=False)
        started = asyncio.get_running_loop().time()
        await judge.arun(trace)
        assert asyncio.get_running_loop().time() - started >= 0.25
        srv.configure(rate_429=0.0)
        ok = await judge.arun(trace)
    assert ok.feedbacks[0].value == "yes"


async def test_reasoning_models_get_max_completion_tokens(srv, make_trace) -> None:
    assert [is_reasoning_model(m) for m in ("o1", "o3-mini", "o4-mini", "gpt-5", "gpt-5-nano", "gpt-4.1")] == [
        True,
        True,
        True,
        True,
        True,
        False,
    ]
    async with client(srv) as c:
        await Fluency(model="openai:/o4-mini").bind(c).arun(make_trace({}, "x"))
        await (
            Fluency(model="openai:/gpt-5-mini", inference_params={"max_tokens": 777, "temperature": 1})
            .bind(c)
            .arun(make_trace({}, "y"))
        )
        await Fluency(model="openai:/gpt-4.1").bind(c).arun(make_trace({}, "z"))
    o4, gpt5, gpt41 = (r["body"] for r in srv.received())
    assert "temperature" not in o4 and "max_tokens" not in o4 and o4["max_completion_tokens"] == 4096
    assert gpt5["max_completion_tokens"] == 777 and "temperature" not in gpt5 and "max_tokens" not in gpt5
    assert gpt41["max_tokens"] == 512 and gpt41["temperature"] == 0 and "max_completion_tokens" not in gpt41


def test_client_options_from_settings_and_env() -> None:
    from stream._config import Settings

    opts = Settings(judge_anthropic_api_key="ak", judge_anthropic_base_url="http://a.test/v1").judge_client_options()
    assert opts["anthropic_api_key"] == "ak" and opts["anthropic_base_url"] == "http://a.test/v1"
    c = JudgeClient.from_env({"ANTHROPIC_API_KEY": "env-key", "TRACEWATCH_JUDGE_ANTHROPIC_BASE_URL": "http://b/v1"})
    assert c.anthropic_base_url == "http://b/v1"
