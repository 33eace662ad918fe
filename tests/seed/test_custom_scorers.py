"""custom.mdx ("Custom Code-based Scorers"): every example run with only its imports changed."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from scorers import AssessmentError, Feedback, Scorer, ScorerDefinitionError, Trace, decode_trace
from tests.scorers.conftest import build_trace_dict
from tests.seed.docs import example, run

PAGE = "custom.mdx"
# What the page's later blocks use without importing (earlier blocks of the page import them).
PAGE_CONTEXT = "from mlflow.entities import Feedback\nfrom mlflow.genai.scorers import scorer\n"


def test_example_usage_evaluate() -> None:
    ns, result = run(*(example(PAGE, "Example Usage", n) for n in range(3)))
    assert isinstance(ns["exact_match"], Scorer) and isinstance(ns["is_short"], Scorer)
    assert result.metrics == {"exact_match/mean": 0.5, "is_short/mean": 0.5}
    rows = result.rows
    assert [r["exact_match/value"] for r in rows] == [True, False]
    assert [r["is_short/value"] for r in rows] == [True, False]
    assert rows[1]["is_short/rationale"] == "The response is not short enough because it has (6 words)."


def test_input_format_signature() -> None:
    ns, _ = run(
        example(PAGE, "Input Format"),
        preamble=PAGE_CONTEXT + "from typing import Any\nfrom mlflow.entities import Trace\n",
    )
    my_scorer = ns["my_scorer"]
    assert isinstance(my_scorer, Scorer)
    assert my_scorer(inputs={}, outputs="x", expectations={}, trace=None) is None  # its body is `...`


def test_input_format_valid_and_invalid_signatures() -> None:
    """The untagged list of signatures: each line with a `...` body under `@scorer`."""
    from scorers import scorer

    valid = True
    seen = []
    for line in example(PAGE, "Input Format", 1).code.splitlines():
        if line.startswith("#"):
            valid = "valid" in line and "not allowed" not in line
            continue
        if not line.startswith("def "):
            continue
        ns: dict[str, Any] = {}
        exec(line.rstrip().removesuffix(":") + ": ...", ns)  # the docs' last line has no colon
        seen.append(valid)
        if valid:
            assert isinstance(scorer(ns["my_scorer"]), Scorer)
        else:
            with pytest.raises(ScorerDefinitionError, match="unsupported parameter 'additional_param'"):
                scorer(ns["my_scorer"])
    assert seen == [True, True, True, True, False]


def test_rich_feedback() -> None:
    ns, _ = run(example(PAGE, "Rich feedback"), preamble=PAGE_CONTEXT)
    fb = ns["content_quality"](outputs="anything")
    assert isinstance(fb, Feedback)
    assert (fb.value, fb.rationale, fb.metadata) == (
        0.85,
        "Clear and accurate, minor grammar issues",
        {"annotator": "me@example.com"},
    )
    assert fb.source is not None
    assert (fb.source.source_type, fb.source.source_id) == ("CODE", "grammar_checker_v1")


def test_rich_feedback_list() -> None:
    ns, _ = run(example(PAGE, "Rich feedback", 1), preamble=PAGE_CONTEXT)
    from scorers import evaluate

    result = evaluate(data=[{"inputs": {"q": "?"}, "outputs": "ok"}], scorers=[ns["comprehensive_check"]])
    row = result.rows[0]
    assert (row["relevance/value"], row["tone/value"], row["length/value"]) == (True, "professional", 150)
    assert set(result.metrics) == {"relevance/mean", "length/mean"}  # MLflow aggregates numbers and bools only


# -- Parsing traces for scoring ---------------------------------------------------------------


def _retriever_trace(doc_uris: list[str]) -> Trace:
    """A trace whose retriever span returns documents with a top-level `doc_uri`, the shape the
    example reads (the shared fixtures keep it under `metadata`, where the example, in MLflow
    too, raises KeyError)."""
    attrs = {
        "mlflow.spanType": '"RETRIEVER"',
        "mlflow.spanInputs": '"q"',
        "mlflow.spanOutputs": orjson.dumps([{"page_content": u, "doc_uri": u} for u in doc_uris]).decode(),
    }
    span = {
        "span_id": "AAAAAAAAAAI=",
        "parent_span_id": "AAAAAAAAAAE=",
        "name": "retrieve",
        "start_time_unix_nano": 1_000_000_100,
        "end_time_unix_nano": 1_000_000_900,
        "status": {"code": "STATUS_CODE_OK", "message": ""},
        "attributes": attrs,
        "events": [],
    }
    return decode_trace(orjson.dumps(build_trace_dict({"q": "q"}, "a", spans=[span])))


def test_example_1_retrieved_document_recall() -> None:
    ns, _ = run(example(PAGE, "Example 1: Evaluating Retrieved Documents Recall"), preamble=PAGE_CONTEXT)
    recall = ns["retrieved_document_recall"]
    expectations = {"relevant_document_urls": ["a.md", "b.md", "c.md", "d.md"]}
    fb = recall(trace=_retriever_trace(["a.md", "b.md", "x.md"]), expectations=expectations)
    assert (fb.value, fb.rationale) == (0.5, "Retrieved 2 relevant documents out of 4 expected.")
    none = recall(trace=decode_trace(orjson.dumps(build_trace_dict({"q": "q"}, "a"))), expectations=expectations)
    assert (none.value, none.rationale) == (0, "No retriever span found in the trace.")


def test_example_2_tool_call_trajectory(seed_traces: list[Trace]) -> None:
    ns, _ = run(example(PAGE, "Example 2: Evaluating Tool Call Trajectory"), preamble=PAGE_CONTEXT)
    check = ns["tool_call_trajectory"]
    ok = check(trace=seed_traces[0], expectations={"tool_call_trajectory": ["lookup_crm_opportunity"]})
    assert (ok.value, ok.rationale) == (1, "The tool call trajectory is correct.")
    bad = check(trace=seed_traces[0], expectations={"tool_call_trajectory": ["search", "lookup_crm_opportunity"]})
    assert bad.value == 0 and "Actual: ['lookup_crm_opportunity']." in bad.rationale


def test_example_3_sub_agents_routing(seed_traces: list[Trace]) -> None:
    ns, _ = run(example(PAGE, "Example 3: Evaluating Sub-Agents Routing"), preamble=PAGE_CONTEXT)
    from scorers import evaluate

    rows = [{"trace": t, "expectations": {"expected_agents": ["sales_email_agent"]}} for t in seed_traces]
    result = evaluate(data=rows, scorers=[ns["is_routing_correct"]])
    assert result.metrics == {"is_routing_correct/mean": 1.0}
    assert {r["is_routing_correct/rationale"] for r in result.rows} == {"The sub-agents routing is correct."}


# -- Error handling ---------------------------------------------------------------------------


def test_let_exceptions_propagate() -> None:
    _, result = run(example(PAGE, "Let exceptions propagate (recommended)"))
    rows = result.rows
    assert [r["is_valid_response/value"] for r in rows] == [True, None, None]
    assert rows[0]["is_valid_response/rationale"] == "Valid JSON with confidence: 0.95"
    assert rows[1]["is_valid_response/error_message"].startswith("Expecting value")
    assert rows[2]["is_valid_response/error_message"] == "'confidence'"
    assert rows[1]["is_valid_response/error_code"] and rows[2]["is_valid_response/error_code"]
    assert result.metrics == {"is_valid_response/mean": 1.0}


def test_handle_exceptions_explicitly() -> None:
    ns, _ = run(example(PAGE, "Handle exceptions explicitly"), preamble=PAGE_CONTEXT)
    check = ns["is_valid_response"]
    ok = check(outputs='{"summary": "s", "confidence": 1, "sources": []}')
    assert (ok.value, ok.rationale) == (True, "Valid JSON with all required fields")
    missing = check(outputs='{"summary": "s"}')
    assert isinstance(missing.error, AssessmentError)
    assert (missing.error.error_code, missing.error.error_message) == (
        "MISSING_REQUIRED_FIELDS",
        "Missing required fields: ['confidence', 'sources']",
    )
    from scorers import evaluate

    result = evaluate(data=[{"outputs": '{"summary": "s"}'}, {"outputs": "not json"}], scorers=[check])
    codes = [r["is_valid_response/error_code"] for r in result.rows]
    assert codes == ["MISSING_REQUIRED_FIELDS", "JSONDecodeError"]
    assert re.match(r"Expecting value", result.rows[1]["is_valid_response/error_message"])
