"""Registry validation, records, budgets and CLI refusals: everything that needs no Redis.

Every request here is refused before the registry talks to Redis, so the store points at a
closed port: a test that reached it would fail with "registry unavailable".
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from scorers import Scorer, make_judge, scorer
from sinks import RegistryStore
from stream._config import Settings
from stream.cli._scorers import scorers_app
from stream.registry._budget import HourlyBudget
from stream.registry._records import (
    BudgetConfig,
    RegistryError,
    SamplingConfig,
    ScorerRecord,
    ScorerVersion,
    one_message,
    utcnow,
)
from stream.registry._registry import Registry
from stream.registry._resolve import build_scorer, define, renamed

DEAD_REDIS = "redis://127.0.0.1:1/0"
ALLOW = ("tests.stream",)


@scorer
def polite(outputs: Any) -> bool:
    """A module-level scorer that workers can import by reference."""
    return "please" in str(outputs)


def not_a_scorer(outputs: Any) -> bool:
    return True


@pytest.fixture
def registry() -> Registry:
    settings = Settings(scorer_modules=list(ALLOW), redis_url=DEAD_REDIS)
    return Registry(RegistryStore.from_url(DEAD_REDIS, prefix="twtest:unit:"), settings)


# -- sampling config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "fragment"),
    [
        (1.5, "sample_rate: must be between 0 and 1 (a fraction of traces), got 1.5"),
        (-0.1, "must be between 0 and 1"),
        (float("nan"), "must be between 0 and 1"),
        (True, "must be a number between 0 and 1, got True"),
        ("half", "must be a number between 0 and 1, got 'half'"),
    ],
)
def test_bad_rate_is_one_clear_message(rate: Any, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        SamplingConfig(sample_rate=rate)
    assert info.value.error_count() == 1
    assert fragment in one_message(info.value)


def test_bad_filter_is_refused_with_its_column() -> None:
    with pytest.raises(ValidationError) as info:
        SamplingConfig(sample_rate=0.5, filter_string="attributes.status = 'OK' OR tags.x = 'y'")
    assert one_message(info.value).startswith("filter_string: OR is not supported at column 26")


def test_blank_filter_means_none_and_rates_at_the_bounds_are_fine() -> None:
    assert SamplingConfig(sample_rate=0, filter_string="  ").filter_string is None
    assert SamplingConfig(sample_rate=1).sample_rate == 1.0


def test_budget_config_needs_positive_caps() -> None:
    with pytest.raises(ValidationError):
        BudgetConfig(max_calls_per_hour=0)
    assert BudgetConfig().is_unlimited
    assert not BudgetConfig(max_tokens_per_hour=10).is_unlimited


# -- definitions: what can be registered -----------------------------------------------------


def test_builtin_with_arguments_is_split_into_ref_and_arguments() -> None:
    d = define("latency_under(max_ms=2000)", ())
    assert (d.kind, d.ref, d.arguments, d.spec) == ("code", "latency_under", {"max_ms": 2000}, None)
    v = ScorerVersion(version=1, kind="code", ref=d.ref, arguments=d.arguments, created_at=utcnow())
    assert v.reference == "latency_under(max_ms=2000)"
    assert build_scorer(v, "fast", ()).name == "fast"


def test_builtin_judge_by_reference_is_stored_as_a_spec() -> None:
    d = define("Guidelines(name='tone', guidelines='Be polite.')", ())
    assert d.kind == "judge" and d.ref is None
    assert d.spec is not None and d.spec["kind"] == "guidelines" and d.spec["guidelines"] == ["Be polite."]


def test_module_reference_on_the_allowlist() -> None:
    d = define("tests.stream.test_registry:polite", ALLOW)
    assert (d.kind, d.ref, d.scorer) == ("code", "tests.stream.test_registry:polite", polite)


def test_scorer_object_is_registered_by_its_import_reference() -> None:
    d = define(polite, ALLOW)
    assert d.ref == "tests.stream.test_registry:polite"


def test_scorer_defined_in_a_function_is_refused_with_a_hint() -> None:
    @scorer
    def local(outputs: Any) -> bool:
        return True

    with pytest.raises(RegistryError, match="defined inside a function, so workers cannot import it"):
        define(local, ALLOW)


def test_module_outside_the_allowlist_is_refused_before_import(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "tw_outside_mod.py").write_text("from scorers import scorer\nhit = scorer(lambda outputs: True)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RegistryError) as info:
        define("tw_outside_mod:hit", ALLOW)
    message = str(info.value)
    assert "module 'tw_outside_mod' is not allowed" in message
    assert "TRACEWATCH_SCORER_MODULES" in message and "tests.stream" in message
    assert "tw_outside_mod" not in sys.modules


def test_a_sibling_with_the_same_prefix_is_not_on_the_allowlist() -> None:
    with pytest.raises(RegistryError, match="not allowed"):
        define("tests.streamer:x", ALLOW)


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("tests.stream.test_registry:not_a_scorer", "is a plain function; decorate it with @scorer"),
        ("tests.stream.test_registry:missing", "has no 'missing'"),
        ("tests.stream.no_such_module:x", "cannot import 'tests.stream.no_such_module'"),
        ("latency_under(max_ms=open('x'))", "arguments must be literals"),
        ("no_eror", "Did you mean no_error?"),
    ],
)
def test_bad_references_are_one_message(ref: str, fragment: str) -> None:
    with pytest.raises(RegistryError) as info:
        define(ref, ALLOW)
    assert fragment in str(info.value)


def test_judge_template_with_an_unknown_variable_is_refused() -> None:
    spec = {"kind": "make_judge", "name": "q", "model": "openai:/gpt-4.1-mini", "value_type": "bool",
            "instructions": "Is {{ outputs }} an answer to {{ question }}?"}
    with pytest.raises(RegistryError) as info:
        define(spec, ())
    assert "unknown template variable(s) 'question'" in str(info.value)
    assert "{{ inputs }}" in str(info.value)


def test_judge_object_round_trips_through_its_spec() -> None:
    judge = make_judge("concise", "Is {{ outputs }} concise?", feedback_value_type=bool)
    d = define(judge, ())
    assert d.kind == "judge" and d.spec == judge.to_spec()


def test_renamed_copies_and_never_mutates_the_original() -> None:
    clone = renamed(polite, "is_polite")
    assert clone is not polite and clone.name == "is_polite" and polite.name == "polite"
    assert clone.source.source_id == "is_polite"
    assert clone.run(_trace()).feedbacks[0].name == "is_polite"
    judge = make_judge("concise", "Is {{ outputs }} concise?", feedback_value_type=bool)
    assert renamed(judge, "short").name == "short" and judge.name == "concise"


def _trace() -> Any:
    from scorers import trace_from_dict

    span = {"span_id": "s0", "name": "root", "attributes": {"mlflow.spanOutputs": '"yes please"'}}
    return trace_from_dict({"info": {"trace_id": "tr-1"}, "data": {"spans": [span]}})


# -- registry requests refused before any I/O --------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "has space"}, "scorer name 'has space' is not valid"),
        ({"experiment_id": "a:b"}, "experiment id 'a:b' is not valid"),
    ],
)
async def test_register_refuses_bad_names(registry: Registry, kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RegistryError, match=fragment):
        await registry.register("no_error", **kwargs)


async def test_register_refuses_outside_the_allowlist(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="TRACEWATCH_SCORER_MODULES"):
        await registry.register("json:dumps")


async def test_update_needs_something_to_change(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="nothing to update"):
        await registry.update("x")


# -- records -----------------------------------------------------------------------------------


def _record(**over: Any) -> dict[str, Any]:
    now = utcnow().isoformat()
    data: dict[str, Any] = {
        "name": "s", "experiment_id": "1", "current_version": 1, "created_at": now, "updated_at": now,
        "versions": [{"version": 1, "kind": "code", "ref": "no_error", "created_at": now}],
    }
    return data | over


def test_record_checks_its_own_consistency() -> None:
    assert ScorerRecord.model_validate(_record()).current.ref == "no_error"
    with pytest.raises(ValidationError, match="current_version 2 is not one of the versions"):
        ScorerRecord.model_validate(_record(current_version=2))
    with pytest.raises(ValidationError, match="a judge version needs `spec`"):
        ScorerRecord.model_validate(_record(versions=[{"version": 1, "kind": "judge", "ref": "x",
                                                       "created_at": utcnow().isoformat()}]))


def test_missing_version_lists_the_existing_ones() -> None:
    with pytest.raises(RegistryError, match=r"has no version 7 \(versions: 1\)"):
        ScorerRecord.model_validate(_record()).version(7)


# -- budgets -----------------------------------------------------------------------------------


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_budget_counts_calls_per_clock_hour() -> None:
    clock = Clock(3600 * 10 + 3590)
    budget = HourlyBudget(max_calls=2, clock=clock)
    assert [budget.take(), budget.take(), budget.take()] == [True, True, False]
    clock.t += 20  # next hour
    assert budget.take() and budget.calls == 1


def test_budget_token_cap_and_reconfigure_keeps_the_count() -> None:
    budget = HourlyBudget(max_tokens=100, clock=Clock(0))
    assert budget.take()
    budget.add_tokens(150)
    assert not budget.take()
    budget.configure(max_calls=None, max_tokens=1000)
    assert budget.take() and budget.tokens == 150
    with pytest.raises(ValueError, match="at least 1"):
        HourlyBudget(max_calls=0)


# -- CLI refusals: red message, exit code 2, Redis never touched ----------------------------


@pytest.fixture
def cli(monkeypatch) -> Any:
    monkeypatch.setenv("TRACEWATCH_REDIS_URL", DEAD_REDIS)
    monkeypatch.setenv("TRACEWATCH_SCORER_MODULES", "tests.stream")
    app = typer.Typer()
    app.add_typer(scorers_app, name="scorers")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["scorers", *args])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["register", "no_error", "--rate", "1.5"], "sample_rate: must be between 0 and 1"),
        (["register", "no_error", "--rate", "0.5", "--filter", "attrs.status = 'OK'"], "unknown field `attrs.status`"),
        (["register", "no_error", "--filter", "tags.x = 'y'"], "--filter needs --rate"),
        (["register", "json:dumps"], "TRACEWATCH_SCORER_MODULES"),
        (["register"], "give either REF or --judge-spec"),
        (["register", "no_error", "--max-calls-per-hour", "0"], "max_calls_per_hour"),
        (["update", "x"], "nothing to update"),
    ],
)
def test_cli_refusals_exit_2(cli: Any, args: list[str], fragment: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and fragment in result.output


def test_cli_judge_spec_with_unknown_variable(cli: Any, tmp_path: Path) -> None:
    spec = tmp_path / "judge.json"
    spec.write_text('{"kind": "make_judge", "name": "q", "instructions": "Rate {{ answer }}"}')
    result = cli("register", "--judge-spec", str(spec))
    assert result.exit_code == 2
    assert "unknown template variable(s) 'answer'" in result.output


def test_cli_unreachable_redis_exits_1(cli: Any) -> None:
    result = cli("list")
    assert result.exit_code == 1
    assert "registry unavailable" in result.output


def test_scorer_type_is_exported_for_annotations() -> None:
    assert isinstance(polite, Scorer)
