"""`@scorer` and `Scorer`: MLflow's documented behaviour, normalisation, skips, errors, timeouts."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from scorers import (
    AssessmentError,
    AssessmentSource,
    Feedback,
    JudgeTimeoutError,
    Scorer,
    ScorerDefinitionError,
    ScoreResult,
    SpanType,
    Trace,
    assessments_for,
    expectations_of,
    outcome_of,
    scorer,
)

# --- MLflow docs: custom.mdx, "Example Usage" -------------------------------------------------


@scorer
def exact_match(outputs: dict, expectations: dict) -> bool:
    return outputs == expectations["expected_response"]


@scorer
def is_short(outputs: dict) -> Feedback:
    score = len(outputs.split()) <= 5
    rationale = (
        "The response is short enough."
        if score
        else f"The response is not short enough because it has ({len(outputs.split())} words)."
    )
    return Feedback(value=score, rationale=rationale)


EVAL_DATASET = [
    {
        "inputs": {"question": "How many countries are there in the world?"},
        "outputs": "195",
        "expectations": {"expected_response": "195"},
    },
    {
        "inputs": {"question": "What is the capital of France?"},
        "outputs": "The capital of France is Paris.",
        "expectations": {"expected_response": "Paris"},
    },
]


def test_docs_exact_match_and_is_short_called_directly() -> None:
    row1, row2 = EVAL_DATASET
    assert exact_match(outputs=row1["outputs"], expectations=row1["expectations"]) is True
    assert exact_match(outputs=row2["outputs"], expectations=row2["expectations"]) is False
    fb = is_short(outputs=row2["outputs"])
    assert isinstance(fb, Feedback) and fb.value is False
    assert fb.rationale == "The response is not short enough because it has (6 words)."
    # Undeclared arguments are dropped, as in MLflow.
    assert is_short(inputs={"ignored": 1}, outputs="one two").value is True


def test_docs_examples_through_run_on_traces(make_trace) -> None:
    results = []
    for row in EVAL_DATASET:
        trace = make_trace(row["inputs"], row["outputs"])
        results.append(
            (exact_match.run(trace, row["expectations"]), is_short.run(trace, row["expectations"]))
        )
    (em1, short1), (em2, short2) = results
    assert [fb.value for fb in em1.feedbacks] == [True]
    assert [fb.value for fb in em2.feedbacks] == [False]
    assert em1.feedbacks[0].name == "exact_match"
    assert em1.feedbacks[0].source == AssessmentSource("CODE", "exact_match")
    assert (
        short1.feedbacks[0].value is True and short1.feedbacks[0].rationale == "The response is short enough."
    )
    assert short2.feedbacks[0].name == "is_short" and short2.feedbacks[0].value is False
    assert all(r.state == "scored" for pair in results for r in pair)


# --- MLflow docs: "Error handling" ----------------------------------------------------------

INVALID_DATA = [
    '{"summary": "this is a summary", "confidence": 0.95}',
    "invalid json",
    '{"summary": "this is a summary"}',
]


@scorer
def is_valid_response(outputs: str) -> Feedback:
    data = json.loads(outputs)
    summary = data["summary"]  # noqa: F841 - verbatim from the docs
    confidence = data["confidence"]
    return Feedback(value=True, rationale=f"Valid JSON with confidence: {confidence}")


def test_docs_error_handling_exceptions_propagate(make_trace) -> None:
    valid, bad_json, missing = (is_valid_response.run(make_trace({"q": 1}, o)) for o in INVALID_DATA)
    assert valid.state == "scored"
    assert valid.feedbacks[0].value is True
    assert valid.feedbacks[0].rationale == "Valid JSON with confidence: 0.95"

    for result, message in ((bad_json, "Expecting value"), (missing, "'confidence'")):
        assert result.state == "error"
        (fb,) = result.feedbacks
        assert fb.value is None and fb.name == "is_valid_response"
        assert isinstance(fb.error, AssessmentError)
        assert fb.error.error_code == "SCORER_ERROR"
        assert message in fb.error.error_message
        assert fb.error.stack_trace and "Traceback" in fb.error.stack_trace


@scorer(name="is_valid_response")
def is_valid_response_explicit(outputs):
    try:
        data = json.loads(outputs)
        required_fields = ["summary", "confidence", "sources"]
        missing = [f for f in required_fields if f not in data]
        if missing:
            return Feedback(
                error=AssessmentError(
                    error_code="MISSING_REQUIRED_FIELDS",
                    error_message=f"Missing required fields: {missing}",
                ),
            )
        return Feedback(value=True, rationale="Valid JSON with all required fields")
    except json.JSONDecodeError as e:
        return Feedback(error=e)


def test_docs_error_handling_explicit(make_trace) -> None:
    first, bad_json, missing = (is_valid_response_explicit.run(make_trace({"q": 1}, o)) for o in INVALID_DATA)
    assert first.feedbacks[0].error == AssessmentError(
        "MISSING_REQUIRED_FIELDS", "Missing required fields: ['sources']"
    )
    assert missing.feedbacks[0].error.error_message == "Missing required fields: ['confidence', 'sources']"
    assert bad_json.feedbacks[0].error.error_code == "JSONDecodeError"
    assert {r.state for r in (first, bad_json, missing)} == {"error"}
    ok = is_valid_response_explicit.run(make_trace({}, '{"summary": "s", "confidence": 1, "sources": []}'))
    assert ok.state == "scored" and ok.feedbacks[0].value is True


# --- MLflow docs: "Parsing Traces for Scoring" on the real fixtures --------------------------


@scorer
def retrieved_document_recall(trace: Trace, expectations: dict) -> Feedback:
    retriever_spans = trace.search_spans(span_type=SpanType.RETRIEVER)
    if not retriever_spans:
        return Feedback(value=0, rationale="No retriever span found in the trace.")
    all_document_urls = []
    for span in retriever_spans:
        all_document_urls.extend([document["doc_uri"] for document in span.outputs])
    true_positives = len(set(all_document_urls) & set(expectations["relevant_document_urls"]))
    expected_positives = len(expectations["relevant_document_urls"])
    recall = true_positives / expected_positives
    return Feedback(
        value=recall,
        rationale=f"Retrieved {true_positives} relevant documents out of {expected_positives} expected.",
    )


@scorer
def retrieved_document_recall_metadata(trace: Trace, expectations: dict) -> Feedback:
    urls = [
        d["metadata"]["doc_uri"] for s in trace.search_spans(span_type=SpanType.RETRIEVER) for d in s.outputs
    ]
    hits = len(set(urls) & set(expectations["relevant_document_urls"]))
    return Feedback(value=hits / len(expectations["relevant_document_urls"]))


@scorer
def tool_call_trajectory(trace: Trace, expectations: dict) -> Feedback:
    tool_call_spans = trace.search_spans(span_type=SpanType.TOOL)
    actual_trajectory = [span.name for span in tool_call_spans]
    expected_trajectory = expectations["tool_call_trajectory"]
    if actual_trajectory == expected_trajectory:
        return Feedback(value=1, rationale="The tool call trajectory is correct.")
    return Feedback(
        value=0,
        rationale=(
            "The tool call trajectory is incorrect.\n"
            f"Expected: {expected_trajectory}.\n"
            f"Actual: {actual_trajectory}."
        ),
    )


@scorer
def is_routing_correct(trace: Trace, expectations: dict) -> Feedback:
    invoked_agents = [span.name for span in trace.search_spans(span_type=SpanType.AGENT)]
    if invoked_agents == expectations["expected_agents"]:
        return Feedback(value=True, rationale="The sub-agents routing is correct.")
    return Feedback(
        value=False, rationale=f"Expected: {expectations['expected_agents']}. Actual: {invoked_agents}."
    )


def test_docs_retrieved_document_recall(fixture_traces, make_trace) -> None:
    exp = {"relevant_document_urls": ["pricing/2025.md", "security/overview.md", "missing.md"]}
    # MLflow serialises retrieved Documents as {"page_content", "metadata": {"doc_uri"}, "id"}, so the
    # docs' `document["doc_uri"]` raises KeyError on real traces: captured as SCORER_ERROR, never raised.
    verbatim = retrieved_document_recall.run(fixture_traces["ok"], exp)
    assert verbatim.state == "error"
    assert verbatim.feedbacks[0].error.error_code == "SCORER_ERROR"
    assert verbatim.feedbacks[0].error.error_message == "'doc_uri'"
    fixed = retrieved_document_recall_metadata.run(fixture_traces["ok"], exp)
    assert fixed.feedbacks[0].value == pytest.approx(2 / 3)
    no_retriever = retrieved_document_recall.run(make_trace({"q": 1}, "a"), exp)
    assert no_retriever.feedbacks[0].value == 0
    assert no_retriever.feedbacks[0].rationale == "No retriever span found in the trace."


def test_docs_tool_call_trajectory_and_routing(fixture_traces) -> None:
    good = tool_call_trajectory.run(
        fixture_traces["ok"], {"tool_call_trajectory": ["lookup_crm_opportunity"]}
    )
    assert good.feedbacks[0].value == 1
    # The failing TOOL span of trace 04 is still a tool call.
    assert (
        tool_call_trajectory.run(
            fixture_traces["error"], {"tool_call_trajectory": ["lookup_crm_opportunity"]}
        )
        .feedbacks[0]
        .value
        == 1
    )
    bad = tool_call_trajectory.run(
        fixture_traces["ok"], {"tool_call_trajectory": ["search", "lookup_crm_opportunity"]}
    )
    assert bad.feedbacks[0].value == 0
    assert "Actual: ['lookup_crm_opportunity']" in bad.feedbacks[0].rationale
    assert (
        is_routing_correct.run(fixture_traces["ok"], {"expected_agents": ["sales_email_agent"]})
        .feedbacks[0]
        .value
    )
    assert not is_routing_correct.run(fixture_traces["ok"], {"expected_agents": []}).feedbacks[0].value


# --- decorator --------------------------------------------------------------------------------


def test_decorator_bare_and_with_arguments() -> None:
    @scorer
    def a(inputs, outputs):
        return True

    @scorer(name="renamed", timeout=1.5, aggregations=["mean", "p90"])
    async def b(trace):
        return 1

    assert isinstance(a, Scorer) and isinstance(b, Scorer)
    assert (a.name, a.params, a.is_async, a.is_judge, a.timeout) == (
        "a",
        frozenset({"inputs", "outputs"}),
        False,
        False,
        None,
    )
    assert (b.name, b.params, b.is_async, b.timeout, b.aggregations) == (
        "renamed",
        frozenset({"trace"}),
        True,
        1.5,
        ("mean", "p90"),
    )
    assert scorer(lambda: 1).params == frozenset()


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("def f(inputs, outputs, expectations, trace, additional_param): ...", "'additional_param'"),
        ("def f(outputs, *args): ...", "'args'"),
        ("def f(outputs, **kwargs): ...", "'kwargs'"),
        ("def f(outputs, /): ...", "positional-only"),
        ("def f(session): ...", "'session'"),
    ],
)
def test_decorator_rejects_other_parameters(source: str, needle: str) -> None:
    ns: dict = {}
    exec(source, ns)
    with pytest.raises(ScorerDefinitionError) as info:
        scorer(ns["f"])
    assert needle in str(info.value)
    assert isinstance(info.value, TypeError)


def test_decorator_rejects_bad_options() -> None:
    with pytest.raises(ScorerDefinitionError, match="timeout"):
        scorer(timeout=0)(lambda outputs: 1)
    with pytest.raises(ScorerDefinitionError, match="aggregation 'avg'"):
        scorer(aggregations=["avg"])(lambda outputs: 1)


def test_call_passes_only_declared_and_returns_raw() -> None:
    seen = {}

    @scorer
    def f(outputs, trace):
        seen.update(outputs=outputs, trace=trace)
        return {"raw": "dict"}

    assert f(inputs="x", outputs="y") == {"raw": "dict"}  # raw, not normalised
    assert seen == {"outputs": "y", "trace": None}
    with pytest.raises(TypeError):
        f(other=1)


# --- normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        (True, "pass"),
        (False, "fail"),
        (3, "value"),
        (0.25, "value"),
        ("yes", "pass"),
        ("no", "fail"),
        ("maybe", "value"),
    ],
)
def test_primitive_returns_become_one_named_feedback(make_trace, value, outcome) -> None:
    s = Scorer(lambda outputs: value, name="prim")
    result = s.run(make_trace({}, "out"))
    (fb,) = result.feedbacks
    assert fb.value == value and type(fb.value) is type(value)
    assert fb.name == "prim" and fb.source == AssessmentSource("CODE", "prim")
    assert outcome_of(fb.value, None) == outcome
    assert result.state == "scored"


def test_feedback_and_list_returns(make_trace) -> None:
    trace = make_trace({}, "out")
    custom_source = AssessmentSource("LLM_JUDGE", "my-judge")
    one = scorer(name="one")(lambda outputs: Feedback(value=0.5, rationale="r", source=custom_source))
    fb = one.run(trace).feedbacks[0]
    assert (fb.name, fb.value, fb.rationale, fb.source) == ("one", 0.5, "r", custom_source)

    many = scorer(name="many")(
        lambda outputs: [Feedback(name="part_a", value=True), Feedback(name="part_b", value="no")]
    )
    result = many.run(trace)
    assert [(f.name, f.value) for f in result.feedbacks] == [("part_a", True), ("part_b", "no")]
    # A Feedback without a source keeps MLflow's default, CODE/default (plain values get CODE/<scorer>).
    assert all(f.source == AssessmentSource("CODE", "default") for f in result.feedbacks)

    unnamed = scorer(name="unnamed")(lambda outputs: [Feedback(name="a", value=1), Feedback(value=2)])
    err = unnamed.run(trace)
    assert err.state == "error"
    assert err.feedbacks[0].error.error_code == "SCORER_ERROR"
    assert "item 1 has none" in err.feedbacks[0].error.error_message
    assert err.feedbacks[0].error.stack_trace


@pytest.mark.parametrize(
    ("value", "got"),
    [({"score": 1}, "got dict"), ([1, 2], "list[int]"), ((True,), "got tuple"), (object(), "got object")],
)
def test_bad_returns_are_error_feedback(make_trace, value, got) -> None:
    s = Scorer(lambda outputs: value, name="bad")
    result = s.run(make_trace({}, "out"))
    assert result.state == "error"
    (fb,) = result.feedbacks
    # As MLflow: a SCORER_ERROR with its message and a stack trace.
    assert fb.error.error_code == "SCORER_ERROR" and fb.error.stack_trace
    assert fb.error.error_message.startswith("bad must return one of int, float, bool, str, Feedback, or list[Feedback]")
    assert got.removeprefix("got ") in fb.error.error_message


def test_none_and_empty_list_are_skipped_no_result(make_trace) -> None:
    for value in (None, []):
        result = Scorer(lambda outputs, v=value: v, name="n", params=["outputs"]).run(make_trace({}, "x"))
        assert result.state == "skipped" and result.skip_reason == "no_result" and result.feedbacks == []


def test_exception_captured_never_raised(make_trace) -> None:
    @scorer
    def boom(outputs):
        raise RuntimeError("boom from scorer")

    @scorer
    def silent(outputs):
        raise ValueError

    result = boom.run(make_trace({}, "x"))
    fb = result.feedbacks[0]
    assert fb.error.error_code == "SCORER_ERROR" and fb.error.error_message == "boom from scorer"
    assert "RuntimeError: boom from scorer" in fb.error.stack_trace
    silent_error = silent.run(make_trace({}, "x")).feedbacks[0].error
    assert silent_error.error_message == "" and "ValueError" in silent_error.stack_trace  # str(exc), as MLflow


async def test_own_timeout_error_is_not_a_scorer_timeout(make_trace) -> None:
    @scorer(timeout=5)
    async def upstream(outputs):
        raise TimeoutError("CRM API timed out")

    result = await upstream.arun(make_trace({}, "x"))
    assert result.feedbacks[0].error.error_code == "SCORER_ERROR"
    assert result.feedbacks[0].error.error_message == "CRM API timed out"


async def test_judge_errors_keep_their_code(make_trace) -> None:
    @scorer
    async def judge_like(outputs):
        raise JudgeTimeoutError("no answer within 1 s")

    result = await judge_like.arun(make_trace({}, "x"))
    assert result.feedbacks[0].error.error_code == "JUDGE_TIMEOUT"


# --- skips ------------------------------------------------------------------------------------


def test_missing_arguments_are_none_as_in_mlflow(fixture_traces, make_trace) -> None:
    seen = scorer(name="seen")(lambda inputs, outputs: repr((inputs, outputs)))
    assert seen.run(make_trace(outputs="x")).feedbacks[0].value == "(None, 'x')"
    assert seen.run(fixture_traces["error"]).feedbacks[0].value.endswith(", None)")  # the root raised
    exp = scorer(name="exp", skip_when_missing=())(lambda expectations: repr(expectations))
    assert exp.run(fixture_traces["ok"]).feedbacks[0].value == "{}"


def test_skip_when_missing_is_validated() -> None:
    with pytest.raises(ScorerDefinitionError, match="skip_when_missing"):
        scorer(skip_when_missing=("trace",))(lambda trace: True)


def test_skip_reasons(fixture_traces, make_trace) -> None:
    needs_inputs = scorer(skip_when_missing=("inputs",))(lambda inputs: True)
    needs_outputs = scorer(skip_when_missing=["outputs"])(lambda outputs: True)
    needs_exp = scorer(lambda expectations: True)  # the default: skipped without ground truth
    no_inputs = make_trace(outputs="x")
    assert needs_inputs.run(no_inputs).skip_reason == "missing_inputs"
    assert needs_outputs.run(fixture_traces["error"]).skip_reason == "missing_outputs"  # the root raised
    assert needs_exp.run(fixture_traces["ok"]).skip_reason == "missing_expectations"
    assert needs_exp.run(fixture_traces["ok"], {}).skip_reason == "missing_expectations"
    assert needs_exp.run(fixture_traces["ok"], {"expected_response": "x"}).state == "scored"
    # A root that returned JSON null did answer: not a skip.
    assert needs_outputs.run(make_trace({}, None)).state == "scored"
    assert all(
        r.state == "skipped" and r.feedbacks == []
        for r in (needs_inputs.run(no_inputs), needs_outputs.run(fixture_traces["error"]))
    )


def test_expectations_come_from_the_trace_when_not_given(fixture_traces, make_trace) -> None:
    got = {}

    @scorer
    def grab(expectations):
        got.update(expectations)
        return True

    assert grab.run(fixture_traces["assessed"]).state == "scored"
    assert got == {
        # stored as `serialized_value` JSON by MLflow
        "expected_facts": ["Enterprise tier is $45/seat/month", "forecasting module ships in Q3"],
        "expected_response": "A short, polite follow-up email mentioning the renewal.",
    }
    overridden = make_trace(
        {},
        "x",
        assessments=[
            {"assessment_name": "expected_response", "expectation": {"value": "old"}, "valid": False},
            {"assessment_name": "expected_response", "expectation": {"value": "new"}},
            {"assessment_name": "thumbs", "feedback": {"value": True}},
        ],
    )
    assert expectations_of(overridden) == {"expected_response": "new"}


# --- run / arun / timeouts --------------------------------------------------------------------


def test_score_result_state() -> None:
    ok = Feedback(value=1)
    err = Feedback(error=AssessmentError("X"))
    assert ScoreResult([ok, err]).state == "scored"
    assert ScoreResult([err, err]).state == "error"
    assert ScoreResult([], "budget").state == "skipped"
    assert ScoreResult([ok], "budget").state == "skipped"


def test_run_refuses_async_scorers(make_trace) -> None:
    @scorer
    async def a(outputs):
        return True

    with pytest.raises(TypeError, match="arun"):
        a.run(make_trace({}, "x"))


async def test_arun_sync_and_async(make_trace) -> None:
    trace = make_trace({"q": 1}, "hello world")

    @scorer
    async def words(outputs):
        await asyncio.sleep(0)
        return len(outputs.split())

    assert (await words.arun(trace)).feedbacks[0].value == 2
    assert (await is_short.arun(trace)).feedbacks[0].value is True
    result = await exact_match.arun(trace, {"expected_response": "hello world"})
    assert result.feedbacks[0].value is True and result.duration_s >= 0


async def test_timeouts_become_scorer_timeout(make_trace) -> None:
    trace = make_trace({}, "x")

    @scorer(timeout=0.05)
    async def hangs(outputs):
        await asyncio.sleep(5)

    @scorer(timeout=0.05)
    def blocks(outputs):
        time.sleep(0.3)  # in a worker thread: the loop stays free
        return True

    @scorer(timeout=1.0)
    def quick(outputs):
        return "yes"

    start = time.perf_counter()
    results = await asyncio.gather(hangs.arun(trace), blocks.arun(trace), quick.arun(trace))
    assert time.perf_counter() - start < 0.3
    for r in results[:2]:
        assert r.state == "error"
        assert r.feedbacks[0].error.error_code == "SCORER_TIMEOUT"
        assert "0.05" in r.feedbacks[0].error.error_message
    assert results[2].feedbacks[0].value == "yes"


def test_feedback_errors_are_kept_as_mlflow_keeps_them(make_trace) -> None:
    """Regression: `Feedback(error="text")` was stored as a scored value of None, its error lost."""
    text = scorer(name="text")(lambda outputs: Feedback(error="judge unavailable"))
    [stored] = assessments_for("t", "0", "text", feedbacks=text.run(make_trace({}, "x")).feedbacks)
    assert stored.state == "error" and stored.error is not None
    assert (stored.error.error_code, stored.error.error_message) == ("ASSESSMENT_ERROR", "judge unavailable")
    assert stored.source == AssessmentSource("CODE", "default")
    fb = Feedback(error=ValueError("bad input"))
    assert fb.error.error_code == "ValueError" and "ValueError('bad input')" in fb.error.stack_trace
    with pytest.raises(TypeError):
        Feedback(error=42)
