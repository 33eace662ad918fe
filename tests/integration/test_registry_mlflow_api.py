"""MLflow's registration API on the real Redis: scorer methods, get/list/delete, experiments.

`my_scorer.register()` goes through `scorers`' registration hook to the default backend
(`stream.registry._mlflow_api`), configured from the environment, as a user's would be.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import scorers
from scorers import ScorerRegistrationError, ScorerSamplingConfig, ScorerStatus, make_judge, scorer, set_experiment
from stream import (
    RegistryError,
    SamplingConfig,
    delete_scorer,
    get_scorer,
    list_scorer_versions,
    list_scorers,
    parse_filter,
)
from tests.conftest import TEST_REDIS_URL, _delete_prefix

pytestmark = pytest.mark.integration

SEED_DOCS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "mlflow-genai-evaluation-docs.txt"


@scorer
def polite(outputs: Any) -> bool:
    """Module level, in an allowlisted module: its reference is derived as `<module>:polite`."""
    return "please" in str(outputs)


def _closure() -> Any:
    @scorer
    def inner(outputs: Any) -> bool:
        return bool(outputs)

    return inner


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    prefix = f"twtest:{uuid.uuid4().hex[:10]}:"
    monkeypatch.setenv("TRACEWATCH_REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("TRACEWATCH_REDIS_PREFIX", prefix)
    monkeypatch.setenv("TRACEWATCH_SCORER_MODULES", "tests.integration")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("TRACEWATCH_EXPERIMENT_ID", raising=False)
    set_experiment(None)
    scorers.set_registration_backend(None)  # the default, loaded by name on first use
    yield prefix
    set_experiment(None)
    _delete_prefix(prefix)


# -- scorer methods ------------------------------------------------------------------------


def test_register_start_update_stop_as_mlflow() -> None:
    assert polite.status is ScorerStatus.UNREGISTERED
    registered = polite.register(name="is_polite", experiment_id="7")
    assert registered is not polite and polite.status is ScorerStatus.UNREGISTERED  # never mutated
    assert (registered.name, registered.scorer_version, registered.status) == ("is_polite", 1, ScorerStatus.STOPPED)
    assert registered.sample_rate is None and registered.filter_string is None

    active = registered.start(sampling_config=ScorerSamplingConfig(sample_rate=0.5, filter_string="status = 'OK'"))
    assert (active.status, active.sample_rate, active.filter_string) == (ScorerStatus.STARTED, 0.5, "status = 'OK'")

    # None fields keep theirs; the experiment comes from the object's registration.
    updated = active.update(sampling_config=ScorerSamplingConfig(sample_rate=0.25))
    assert (updated.sample_rate, updated.filter_string) == (0.25, "status = 'OK'")
    updated = updated.update(sampling_config=ScorerSamplingConfig(filter_string="timestamp > 1700000000000"))
    assert (updated.sample_rate, updated.filter_string) == (0.25, "timestamp > 1700000000000")

    stopped = updated.stop()
    assert (stopped.status, stopped.sample_rate) == (ScorerStatus.STOPPED, 0.0)
    # update with a rate > 0 restarts (MLflow's status is its sample rate); 0 stops again.
    again = stopped.update(sampling_config=ScorerSamplingConfig(sample_rate=0.1))
    assert (again.status, again.sample_rate, again.filter_string) == (
        ScorerStatus.STARTED,
        0.1,
        "timestamp > 1700000000000",
    )
    assert again.update(sampling_config=ScorerSamplingConfig(sample_rate=0)).status is ScorerStatus.STOPPED

    # The returned objects still score.
    assert again(outputs="yes please") is True


def test_start_checks_as_mlflow() -> None:
    with pytest.raises(ScorerRegistrationError, match=r"not registered\. Please call register"):
        polite.start(sampling_config=ScorerSamplingConfig(sample_rate=0.5))
    registered = polite.register(experiment_id="7")
    with pytest.raises(ValueError, match="sample rate must be greater than 0"):
        registered.start(sampling_config=ScorerSamplingConfig(sample_rate=0))
    with pytest.raises(ValueError, match="sample rate must be a number"):
        registered.start(sampling_config=ScorerSamplingConfig())
    with pytest.raises(RegistryError, match="filter_string"):
        registered.start(sampling_config=ScorerSamplingConfig(sample_rate=1, filter_string="nope = 1"))


def test_judge_is_stored_as_data_and_versions_grow() -> None:
    j1 = make_judge(name="quality", instructions="Is {{ outputs }} good?", model="openai:/gpt-4.1-mini")
    j2 = make_judge(name="quality", instructions="Is {{ outputs }} good and short?", model="openai:/gpt-4.1")
    assert j1.register(experiment_id="3").scorer_version == 1
    assert j2.register(experiment_id="3").scorer_version == 2
    latest = get_scorer(name="quality", experiment_id="3")
    assert (latest.model, latest.scorer_version) == ("openai:/gpt-4.1", 2)
    assert get_scorer(name="quality", experiment_id="3", version=1).model == "openai:/gpt-4.1-mini"
    assert [(s.model, v) for s, v in list_scorer_versions("quality", experiment_id="3")] == [
        ("openai:/gpt-4.1-mini", 1),
        ("openai:/gpt-4.1", 2),
    ]


# -- derived references: never pickled, refused with the reason ------------------------------


def test_derived_reference_refuses_lambda_closure_and_other_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RegistryError, match=r"as a lambda.*never pickled"):
        scorer(lambda outputs: True).register(experiment_id="1")
    with pytest.raises(RegistryError, match=r"defined inside a function, so workers cannot import it"):
        _closure().register(experiment_id="1")
    monkeypatch.setenv("TRACEWATCH_SCORER_MODULES", "my_app")
    with pytest.raises(RegistryError, match=r"module 'tests.integration.test_registry_mlflow_api' is not allowed"):
        polite.register(experiment_id="1")


def test_derived_reference_is_stored() -> None:
    polite.register(experiment_id="1")
    from stream.registry._functions import _run

    record = _run(None, lambda r: r.get_record("polite", experiment_id="1"))
    assert record.current.ref == "tests.integration.test_registry_mlflow_api:polite"


# -- experiment resolution -----------------------------------------------------------------


def test_experiment_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    for exp in ("10", "11", "12", "13"):
        polite.register(experiment_id=exp)
    with pytest.raises(ScorerRegistrationError, match="no experiment: pass experiment_id"):
        get_scorer(name="polite")
    monkeypatch.setenv("TRACEWATCH_EXPERIMENT_ID", "13")
    assert get_scorer(name="polite")._registration.experiment_id == "13"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "12")
    assert get_scorer(name="polite")._registration.experiment_id == "12"
    set_experiment("11")  # MLflow: the active experiment wins over the environment
    assert [s._registration.experiment_id for s in list_scorers()] == ["11"]
    assert get_scorer(name="polite", experiment_id="10")._registration.experiment_id == "10"  # explicit first
    registered = polite.register(name="p2")  # register too
    assert registered._registration.experiment_id == "11"


# -- delete ----------------------------------------------------------------------------------


def test_delete_one_version_or_all() -> None:
    set_experiment("4")
    for _ in range(3):
        polite.register()
    delete_scorer(name="polite", version=3)  # the current one: 2 becomes current
    assert get_scorer(name="polite").scorer_version == 2
    delete_scorer(name="polite", version=1)
    assert [v for _, v in list_scorer_versions("polite")] == [2]
    with pytest.raises(RegistryError, match="has no version 7"):
        delete_scorer(name="polite", version=7)
    assert polite.register().scorer_version == 4  # numbers are never reused
    delete_scorer(name="polite", version="all")
    assert list_scorers() == []
    polite.register()
    delete_scorer(name="polite", version=5)  # the last version: the scorer goes
    assert list_scorers() == []
    with pytest.raises(RegistryError, match="no scorer 'polite'"):
        delete_scorer(name="polite", version="all")
    with pytest.raises(RegistryError, match="integer or 'all'"):
        delete_scorer(name="polite", version="latest")


def test_module_functions_take_either_sampling_config() -> None:
    from stream import register_scorer, start_scorer

    register_scorer("no_error", experiment_id="2")
    rec = start_scorer("no_error", experiment_id="2", sampling_config=ScorerSamplingConfig(sample_rate=0.3))
    assert rec.sampling == SamplingConfig(sample_rate=0.3)


def test_seed_filter_is_accepted() -> None:
    parse_filter("timestamp > 1700000000000")


# -- the seed's registration snippet, with only its imports changed ---------------------------


def _seed_registration_blocks() -> list[str]:
    text = SEED_DOCS.read_text()
    section = text[text.index("# Registering and Versioning Scorers") :]
    section = section[: section.index("## UI Support")]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    # The first block is MLflow tracking-server setup (`set_tracking_uri`, `create_experiment`):
    # tracewatch has no server-side experiment objects (an experiment is the id traces carry),
    # so it has no counterpart; the experiment comes from MLFLOW_EXPERIMENT_ID instead.
    assert "create_experiment" in blocks[0]
    return blocks[1:]


IMPORTS = {
    "from mlflow.genai.judges import make_judge": "from scorers import make_judge",
    "from mlflow.genai.scorers import get_scorer": "from stream import get_scorer",
    "from mlflow.genai.scorers import list_scorers": "from stream import list_scorers",
}


def test_seed_registration_snippet_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "42")
    code = "\n".join(_seed_registration_blocks())
    for mlflow_import, ours in IMPORTS.items():
        assert mlflow_import in code
        code = code.replace(mlflow_import, ours)
    assert "mlflow" not in code
    namespace: dict[str, Any] = {"experiment_id": "42"}  # the docs use it without defining it
    exec(compile(code, "versioning.mdx", "exec"), namespace)
    assert namespace["registered"].scorer_version == 1
    assert namespace["registered_v2"].scorer_version == 2
    assert namespace["latest_judge"].model == "anthropic:/claude-3.5-sonnet-20241022"
    assert "Scorer: response_quality, Model: anthropic:/claude-3.5-sonnet-20241022" in capsys.readouterr().out
