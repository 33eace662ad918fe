"""`resolve_scorer`: built-in names with literal arguments and `package.module:attr` references."""

from __future__ import annotations

import textwrap

import pytest

from scorers import (
    Guidelines,
    InstructionsJudge,
    Safety,
    Scorer,
    ScorerDefinitionError,
    builtin_names,
    resolve_scorer,
)

MODULE = textwrap.dedent(
    """
    from scorers import Feedback, Scorer, scorer

    @scorer
    def is_polite(outputs):
        return "please" in outputs.lower()

    def make_min_words(n=3):
        return scorer(name=f"min_words_{n}")(lambda outputs: len(outputs.split()) >= n)

    def plain(outputs):
        return True

    def not_a_factory():
        return 42

    CONSTANT = 7

    class Holder:
        inner = is_polite
    """
)


@pytest.fixture
def scorer_module(tmp_path, monkeypatch):
    (tmp_path / "tw_test_scorers.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tw_test_scorers"


def test_builtin_names_bare_and_called(fixture_traces) -> None:
    assert resolve_scorer("no_error").name == "no_error"
    tight = resolve_scorer("latency_under(max_ms=10)")
    assert tight.run(fixture_traces["ok"]).feedbacks[0].value is False  # 50 ms
    assert resolve_scorer(" latency_under( 100 ) ").run(fixture_traces["ok"]).feedbacks[0].value is True
    assert resolve_scorer("output_length(max_chars=10, name='tiny')").name == "tiny"
    assert {"no_error", "Safety", "Guidelines", "make_judge"} <= set(builtin_names())


def test_builtin_judges() -> None:
    safety = resolve_scorer("Safety(model='openai:/gpt-4o')")
    assert isinstance(safety, Safety) and safety.model == "openai:/gpt-4o" and safety.is_judge
    g = resolve_scorer("Guidelines(name='tone', guidelines=['Be polite.', 'No slang: ever.'])")
    assert isinstance(g, Guidelines) and g.guidelines == ["Be polite.", "No slang: ever."]
    j = resolve_scorer("make_judge(name='q', instructions='Rate {{ outputs }}', feedback_value_type='int')")
    assert isinstance(j, InstructionsJudge) and j.value_type == "int"
    f = resolve_scorer(
        "make_judge('q', 'Rate {{ outputs }}', feedback_value_type=float)"
    )  # bare type names are allowed
    assert isinstance(f, InstructionsJudge) and f.value_type == "float"
    assert isinstance(resolve_scorer("RelevanceToQuery"), Scorer)


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("no_eror", "Did you mean no_error"),
        ("latency_under(max_ms=__import__('os').getpid())", "must be literals"),
        ("latency_under(max_ms=os)", "must be literals"),
        ("latency_under(*[1])", "must be literals"),
        ("latency_under(**{'max_ms': 1})", "must be literals"),
        ("latency_under(max_ms=1", "is not valid"),
        ("latency_under(bogus=1)", "bad arguments"),
        ("Safety(model='acme:/x')", "not supported"),
        ("", "non-empty"),
        ("1 + 2", "expected a built-in name"),
    ],
)
def test_bad_references(ref, needle) -> None:
    with pytest.raises(ScorerDefinitionError, match=needle):
        resolve_scorer(ref)


def test_import_references(scorer_module) -> None:
    polite = resolve_scorer(f"{scorer_module}:is_polite")
    assert polite.name == "is_polite" and polite(outputs="Please help") is True
    made = resolve_scorer(f"{scorer_module}:make_min_words(n=5)")
    assert made.name == "min_words_5"
    # One attribute, defined in the module: no walks, and built-ins go by their bare names.
    with pytest.raises(ScorerDefinitionError, match="expected a built-in name"):
        resolve_scorer(f"{scorer_module}:Holder.inner")
    with pytest.raises(ScorerDefinitionError, match="part of tracewatch itself"):
        resolve_scorer("scorers:no_error")


@pytest.mark.parametrize(
    ("attr", "needle"),
    [
        ("plain", "decorate it with @scorer"),
        ("not_a_factory", "returned int, not a Scorer"),
        ("CONSTANT", "is a int, not a Scorer or a factory"),
        ("missing", "has no 'missing'"),
        ("is_polite(1)", "is a Scorer; it takes no arguments"),
    ],
)
def test_import_reference_errors(scorer_module, attr, needle) -> None:
    with pytest.raises(ScorerDefinitionError, match=needle):
        resolve_scorer(f"{scorer_module}:{attr}")


def test_import_errors_and_allowlist(scorer_module) -> None:
    with pytest.raises(ScorerDefinitionError, match="cannot import 'no_such_module_xyz'"):
        resolve_scorer("no_such_module_xyz:f")
    with pytest.raises(ScorerDefinitionError, match="not in the allowlist"):
        resolve_scorer(f"{scorer_module}:is_polite", allowed_modules=["my_app"])
    assert resolve_scorer(f"{scorer_module}:is_polite", allowed_modules=[scorer_module]).name == "is_polite"
    # A prefix match must stop at a dot: `my_app_evil` is not inside `my_app`.
    with pytest.raises(ScorerDefinitionError, match="not in the allowlist"):
        resolve_scorer("my_app_evil.scorers:f", allowed_modules=["my_app"])
