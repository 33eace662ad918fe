"""LLM judges with `httpx.MockTransport`: prompts, verdict parsing, errors, specs, client binding."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from scorers import (
    AssessmentSource,
    Correctness,
    ExpectationsGuidelines,
    Guidelines,
    JudgeClient,
    JudgeResponseError,
    RelevanceToQuery,
    RetrievalGroundedness,
    RetrievalRelevance,
    Safety,
    ScorerDefinitionError,
    aclose_default_judge_client,
    default_judge_client,
    judge_from_spec,
    make_judge,
    parse_verdict,
)

# --- parse_verdict ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value_type", "expected"),
    [
        ('{"result": "yes", "rationale": "fine"}', "yes/no", ("yes", "fine")),
        ('```json\n{"result": "No", "rationale": "rude"}\n```', "yes/no", ("no", "rude")),
        (
            'Sure! Here is my verdict: {"result": true, "rationale": "ok"} Hope it helps.',
            "yes/no",
            ("yes", "ok"),
        ),
        ('{"value": "FALSE", "rationale": "x"}', "yes/no", ("no", "x")),
        ('{"result": "yes"}', "bool", (True, None)),
        ('{"result": "4", "rationale": "good"}', "int", (4, "good")),
        ('{"result": 4.0}', "int", (4, None)),
        ('{"result": "3.5"}', "float", (3.5, None)),
        ('{"result": "formal"}', "str", ("formal", None)),
        ('text {not json} then {"result": "yes", "rationale": {"a": 1}}', "yes/no", ("yes", "{'a': 1}")),
    ],
)
def test_parse_verdict_variants(text, value_type, expected) -> None:
    assert parse_verdict(text, value_type) == expected


@pytest.mark.parametrize(
    ("text", "value_type", "needle"),
    [
        ("I think it is fine.", "yes/no", "no JSON object"),
        ('{"verdict": "yes"}', "yes/no", 'no "result"'),
        ('{"result": "maybe"}', "yes/no", 'not "yes" or "no"'),
        ('{"result": 4.5}', "int", "not an integer"),
        ('{"result": true}', "float", "not a number"),
        ('{"result": [1]}', "str", "not a string"),
    ],
)
def test_parse_verdict_rejects(text, value_type, needle) -> None:
    with pytest.raises(JudgeResponseError, match=needle) as info:
        parse_verdict(text, value_type)
    assert info.value.code == "JUDGE_BAD_RESPONSE"
    assert text[:20] in str(info.value)


def test_parse_verdict_truncates_raw_text() -> None:
    with pytest.raises(JudgeResponseError) as info:
        parse_verdict("z" * 2000)
    message = str(info.value)
    assert "z" * 500 + "...[truncated 1500 chars]" in message and len(message) < 700


# --- make_judge and specs ---------------------------------------------------------------------


def test_make_judge_templates() -> None:
    judge = make_judge(
        name="response_quality",
        instructions="Evaluate if {{ outputs }} is high quality for {{inputs}}.",
        model="openai:/gpt-4o",
        feedback_value_type=str,
    )
    assert judge.params == frozenset({"inputs", "outputs"})
    assert judge.is_judge and judge.is_async and judge.model == "openai:/gpt-4o"
    assert judge.source == AssessmentSource("LLM_JUDGE", "openai:/gpt-4o")
    assert make_judge("t", "Check {{ trace }} against {{ expectations }}").params == frozenset(
        {"trace", "expectations"}
    )
    with pytest.raises(
        ScorerDefinitionError, match=r"unknown template variable\(s\) 'conversationz'"
    ) as info:
        make_judge("bad", "Is {{ conversationz }} ok given {{ inputs }}?")
    assert "{{ inputs }}, {{ outputs }}, {{ expectations }}, {{ trace }}" in str(info.value)
    with pytest.raises(ScorerDefinitionError, match="use no template variable"):
        make_judge("none", "Is the answer good?")
    with pytest.raises(ScorerDefinitionError, match="feedback_value_type"):
        make_judge("t", "{{ outputs }}", feedback_value_type=dict)
    with pytest.raises(ScorerDefinitionError, match="not supported"):
        make_judge("t", "{{ outputs }}", model="bedrock:/claude-opus-4-1-20250805")


def test_guidelines_validation() -> None:
    assert Guidelines("tone", "Be polite.").guidelines == ["Be polite."]
    with pytest.raises(ScorerDefinitionError):
        Guidelines("tone", [])
    with pytest.raises(ScorerDefinitionError):
        Guidelines("tone", ["ok", 3])


@pytest.mark.parametrize(
    "judge",
    [
        Guidelines(
            "follows_objective", ["Must follow the objective.", "Be concise."], model="openai:/gpt-4o"
        ),
        ExpectationsGuidelines(),
        RelevanceToQuery(),
        RetrievalGroundedness(name="grounded"),
        RetrievalRelevance(),
        Correctness(),
        Safety(),
        make_judge(
            "quality_1to5", "Rate 1-5 how well {{ outputs }} answers {{ inputs }}.", feedback_value_type=int
        ),
    ],
    ids=lambda j: j.name,
)
def test_spec_round_trip(judge) -> None:
    spec = judge.to_spec()
    assert orjson.loads(orjson.dumps(spec)) == spec  # JSON-able: stored as data
    rebuilt = judge_from_spec(spec)
    assert type(rebuilt) is type(judge)
    assert rebuilt.to_spec() == spec
    assert (rebuilt.name, rebuilt.model, rebuilt.params) == (judge.name, judge.model, judge.params)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"kind": "magic", "name": "x"}, "kind 'magic' is unknown"),
        ({"kind": "safety"}, "non-empty string `name`"),
        ({"kind": "safety", "name": "s", "code": "import os"}, "unexpected keys ['code']"),
        ({"kind": "guidelines", "name": "g"}, "missing keys ['guidelines']"),
        ({"kind": "guidelines", "name": "g", "guidelines": 5}, "guidelines must be"),
        ({"kind": "make_judge", "name": "m", "instructions": "{{ user }}"}, "unknown template variable"),
        (
            {"kind": "make_judge", "name": "m", "instructions": "{{ outputs }}", "value_type": "dict"},
            "value_type",
        ),
        ({"kind": "safety", "name": "s", "model": "acme:/x"}, "not supported"),
        ({"kind": "safety", "name": "s", "value_type": "int"}, "answer yes/no"),
        (["kind", "safety"], "must be a mapping"),
    ],
)
def test_judge_from_spec_validates(spec, needle) -> None:
    with pytest.raises(ScorerDefinitionError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        judge_from_spec(spec)


# --- judges over a mock transport ------------------------------------------------------------


def judge_transport(answer: str | None = None, status: int = 200):
    prompts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        prompt = orjson.loads(request.content)["messages"][0]["content"]
        prompts.append(prompt)
        if status != 200:
            return httpx.Response(status)
        content = answer if answer is not None else '{"result": "yes", "rationale": "Looks right."}'
        return httpx.Response(
            200,
            json={
                "choices": [{"message": {"content": content}}],
                "usage": {"prompt_tokens": 812, "completion_tokens": 41},
            },
        )

    return httpx.MockTransport(handler), prompts


async def test_guidelines_judge_feedback(fixture_traces) -> None:
    transport, prompts = judge_transport()
    async with JudgeClient(
        "http://j.test/v1", transport=transport, prices={"gpt-4.1-mini": (0.4, 1.6)}
    ) as client:
        judge = Guidelines("professional_tone", "The email must be in a professional tone.").bind(client)
        result = await judge.arun(fixture_traces["ok"])
    (fb,) = result.feedbacks
    assert result.state == "scored"
    assert (fb.name, fb.value, fb.rationale) == ("professional_tone", "yes", "Looks right.")
    assert fb.source == AssessmentSource("LLM_JUDGE", "openai:/gpt-4.1-mini")
    assert fb.metadata["prompt_tokens"] == 812 and fb.metadata["completion_tokens"] == 41
    assert fb.metadata["cost"] == pytest.approx((812 * 0.4 + 41 * 1.6) / 1000)
    (prompt,) = prompts
    assert "- The email must be in a professional tone." in prompt
    assert "Draft a short intro email to Acme Corp" in prompt  # the request
    assert "Subject: Next steps for Acme Corp" in prompt  # the response, as text
    assert '{"result": <"yes" or "no">' in prompt


async def test_bad_answer_and_http_failures_become_error_feedback(fixture_traces) -> None:
    garbage = "I cannot decide. " * 60
    transport, _ = judge_transport(garbage)
    async with JudgeClient("http://j.test/v1", transport=transport) as client:
        result = await Safety().bind(client).arun(fixture_traces["ok"])
    assert result.state == "error"
    err = result.feedbacks[0].error
    assert err.error_code == "JUDGE_BAD_RESPONSE"
    assert "I cannot decide." in err.error_message and "...[truncated" in err.error_message
    assert result.feedbacks[0].source.source_type == "LLM_JUDGE"

    transport, prompts = judge_transport(status=429)
    async with JudgeClient(
        "http://j.test/v1", transport=transport, max_retries=1, backoff_base=0.001
    ) as client:
        result = await Safety().bind(client).arun(fixture_traces["ok"])
    assert result.feedbacks[0].error.error_code == "JUDGE_RATE_LIMITED" and len(prompts) == 2


async def test_long_fields_are_truncated_in_the_prompt(make_trace) -> None:
    transport, prompts = judge_transport()
    async with JudgeClient("http://j.test/v1", transport=transport) as client:
        judge = RelevanceToQuery().bind(client)
        judge.max_field_chars = 1000
        await judge.arun(make_trace({"q": "hi"}, "w" * 5000))
    assert "w" * 1000 + "...[truncated 4000 chars]" in prompts[0]
    assert "w" * 1001 not in prompts[0]


async def test_judges_skip_when_nothing_to_judge(fixture_traces, make_trace) -> None:
    transport, prompts = judge_transport()
    async with JudgeClient("http://j.test/v1", transport=transport) as client:
        plain = make_trace({"q": "hi"}, "answer")
        assert (await RetrievalGroundedness().bind(client).arun(plain)).skip_reason == "no_result"
        assert (await Correctness().bind(client).arun(plain)).skip_reason == "missing_expectations"
        assert (await Correctness().bind(client).arun(plain, {"other": 1})).skip_reason == "no_result"
        assert (await ExpectationsGuidelines().bind(client).arun(plain, {"x": 1})).skip_reason == "no_result"
        assert (await Safety().bind(client).arun(fixture_traces["error"])).skip_reason == "missing_outputs"
        assert prompts == []
        # With expectations on the trace itself (fixture 05), Correctness asks about the facts.
        result = await Correctness().bind(client).arun(fixture_traces["assessed"])
        assert result.feedbacks[0].value == "yes"
        assert "- forecasting module ships in Q3" in prompts[-1]
        await RetrievalGroundedness().bind(client).arun(fixture_traces["ok"])
        assert "(pricing/2025.md) Pricing: Enterprise tier" in prompts[-1]
        eg = await ExpectationsGuidelines().bind(client).arun(plain, {"guidelines": ["Say hi"]})
        assert eg.feedbacks[0].value == "yes" and "- Say hi" in prompts[-1]


async def test_make_judge_renders_template_and_types(fixture_traces) -> None:
    transport, prompts = judge_transport('{"result": 4, "rationale": "Solid."}')
    async with JudgeClient("http://j.test/v1", transport=transport) as client:
        judge = make_judge(
            "quality", "Rate {{ outputs }} for {{ inputs }}; spans: {{ trace }}", feedback_value_type=int
        ).bind(client)
        result = await judge.arun(fixture_traces["ok"])
    assert result.feedbacks[0].value == 4
    prompt = prompts[0]
    assert "{{" not in prompt and "Answer type: number" in prompt
    assert '"name":"retrieve_account_docs","type":"RETRIEVER"' in prompt


async def test_default_client_is_lazy_and_per_loop(monkeypatch) -> None:
    monkeypatch.setenv("TRACEWATCH_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    first = default_judge_client()
    assert default_judge_client() is first and first.base_url == "http://127.0.0.1:9/v1"

    async def in_other_loop():
        other = default_judge_client()
        await aclose_default_judge_client()
        return other

    other = await asyncio.to_thread(asyncio.run, in_other_loop())
    assert other is not first and other.closed
    await aclose_default_judge_client()
    assert first.closed
    assert default_judge_client() is not first  # a closed default is replaced
    await aclose_default_judge_client()
