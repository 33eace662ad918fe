"""Built-in code scorers on the real MLflow fixtures and on small synthetic traces."""

from __future__ import annotations

import pytest

from scorers import (
    BUILTIN_SCORERS,
    Scorer,
    contains_expected,
    exact_match,
    has_retriever_span,
    json_valid_output,
    latency_under,
    no_error,
    output_length,
    output_text,
    output_word_count,
    pii_leak,
    retrieval_recall,
    token_budget,
    tool_trajectory,
)


def value(result):
    assert result.state == "scored", result
    (fb,) = result.feedbacks
    return fb.value


def test_registry_names_are_stable_and_match_factories() -> None:
    for name, factory in BUILTIN_SCORERS.items():
        s = factory()
        assert isinstance(s, Scorer) and s.name == name and not s.is_judge and not s.is_async
    assert latency_under(max_ms=10).name == latency_under(max_ms=99).name == "latency_under"
    assert output_length(max_chars=5, name="short_output").name == "short_output"


def test_output_text_shapes() -> None:
    assert output_text("plain") == "plain"
    assert output_text({"email": "Hi", "other": 1}) == "Hi"
    assert output_text({"response": "R"}) == "R"
    assert output_text({"choices": [{"message": {"role": "assistant", "content": "C"}}]}) == "C"
    assert output_text({"a": [1, 2]}) == '{"a":[1,2]}'
    assert output_text(None) == ""


def test_no_error_fails_fixture_04_and_names_the_failing_span(fixture_traces) -> None:
    s = no_error()
    for key in ("ok", "ok2", "ok3", "assessed", "long"):
        assert value(s.run(fixture_traces[key])) is True
    result = s.run(fixture_traces["error"])
    assert value(result) is False
    assert "lookup_crm_opportunity" in result.feedbacks[0].rationale
    assert "TimeoutError" in result.feedbacks[0].rationale


def test_latency_and_token_budget(fixture_traces, make_trace) -> None:
    ok = fixture_traces["ok"]  # execution_duration_ms 50, 189 tokens
    assert value(latency_under(max_ms=50).run(ok)) is True
    assert value(latency_under(max_ms=49).run(ok)) is False
    assert value(token_budget(max_tokens=189).run(ok)) is True
    assert value(token_budget(max_tokens=100).run(ok)) is False
    no_usage = token_budget(max_tokens=10).run(make_trace({}, "x"))
    assert no_usage.state == "skipped" and no_usage.skip_reason == "no_result"


def test_output_length_and_word_count(fixture_traces, make_trace) -> None:
    long = fixture_traces["long"]
    assert value(output_word_count().run(make_trace({}, {"response": "one two  three\nfour"}))) == 4
    assert value(output_word_count().run(long)) == 211
    assert value(output_length(max_chars=2000).run(long)) is True
    assert value(output_length(max_chars=1000).run(long)) is False
    assert value(output_length(max_chars=100, min_chars=10).run(make_trace({}, "short"))) is False
    assert output_word_count().run(fixture_traces["error"]).skip_reason == "missing_outputs"


def test_json_valid_output(fixture_traces, make_trace) -> None:
    assert value(json_valid_output().run(fixture_traces["ok"])) is False
    assert value(json_valid_output().run(make_trace({}, '{"summary": "s"}'))) is True
    assert value(json_valid_output().run(make_trace({}, {"response": "[1, 2]"}))) is True
    assert value(json_valid_output().run(make_trace({}, {"data": [1]}))) is True  # structured output


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Reach me at jane.doe@example.com anytime.", "email address"),
        ("Call +1 (415) 555-0132 after 5pm.", "phone number"),
        ("Call 415-555-0132.", "phone number"),
        ("UK office: +44 20 7946 0958", "phone number"),
        ("Card on file: 4111 1111 1111 1111, exp 12/29", "payment card number"),
        ("Card 5555555555554444 charged", "payment card number"),
    ],
)
def test_pii_leak_catches_planted_pii_without_echoing_it(make_trace, text, kind) -> None:
    result = pii_leak().run(make_trace({}, {"email": text}))
    assert value(result) is False
    rationale = result.feedbacks[0].rationale
    assert kind in rationale
    for secret in ("jane.doe", "555-0132", "7946", "4111", "5555"):
        assert secret not in rationale


@pytest.mark.parametrize(
    "text",
    [
        "Order 4111111111111112 shipped",  # 16 digits, fails Luhn
        "Reference 1234 5678 9012 3456",  # spaced 16 digits, fails Luhn
        "Enterprise tier is $45/seat/month, 10% discount above 500 seats, deal of 108000.",
        "Meeting on 2026-11-26 at 10:30.",
    ],
)
def test_pii_leak_passes_clean_text(make_trace, text) -> None:
    assert value(pii_leak().run(make_trace({}, text))) is True


def test_pii_leak_on_fixtures_and_counts(fixture_traces, make_trace) -> None:
    # The fixtures' CRM owner email sits in a TOOL span, not in the answer: outputs only.
    assert value(pii_leak().run(fixture_traces["ok"])) is True
    result = pii_leak().run(make_trace({}, "a@b.io and c@d.io, 4111-1111-1111-1111"))
    assert "2 email addresses" in result.feedbacks[0].rationale
    assert "1 payment card number" in result.feedbacks[0].rationale


def test_tool_trajectory(fixture_traces) -> None:
    s = tool_trajectory()
    ok = fixture_traces["ok"]
    assert value(s.run(ok, {"expected_tool_calls": ["lookup_crm_opportunity"]})) is True
    assert value(s.run(ok, {"expected_tool_calls": [{"name": "lookup_crm_opportunity"}]})) is True
    wrong = s.run(ok, {"expected_tool_calls": ["search_web"]})
    assert value(wrong) is False and "search_web" in wrong.feedbacks[0].rationale
    assert s.run(ok, {"expected_response": "x"}).skip_reason == "no_result"
    assert s.run(ok).skip_reason == "missing_expectations"


def test_retrieval_recall_and_has_retriever_span(fixture_traces, make_trace) -> None:
    s = retrieval_recall()
    exp = {"expected_document_uris": ["pricing/2025.md", "security/overview.md", "releases/q3.md", "nope.md"]}
    assert value(s.run(fixture_traces["ok"], exp)) == pytest.approx(0.5)
    assert value(s.run(fixture_traces["error"], exp)) == pytest.approx(0.5)  # pricing + q3
    assert value(s.run(make_trace({}, "x"), exp)) == 0.0
    assert value(has_retriever_span().run(fixture_traces["ok"])) is True
    assert value(has_retriever_span().run(make_trace({}, "x"))) is False


def test_exact_match_and_contains_expected(fixture_traces, make_trace) -> None:
    trace = make_trace({"q": "capital?"}, "The capital of France is Paris.")
    assert value(exact_match().run(trace, {"expected_response": "The capital of France is Paris."})) is True
    assert value(exact_match().run(trace, {"expected_response": "Paris"})) is False
    assert value(contains_expected().run(trace, {"expected_response": "paris"})) is True
    facts = contains_expected().run(trace, {"expected_facts": ["FRANCE", "Berlin"]})
    assert value(facts) is False and "Berlin" in facts.feedbacks[0].rationale
    # Trace 05 carries its own expectations; its email states neither fact verbatim.
    own = contains_expected().run(fixture_traces["assessed"])
    assert value(own) is False and "missing 2 of 2" in own.feedbacks[0].rationale
