"""MLflow's registration API on the Redis registry: the scorer-object backend and the functions.

`scorers` defines what `my_scorer.register()` / `.start()` / `.update()` / `.stop()` need
(`scorers.RegistrationBackend`) and loads `backend()` from here by name on first use
(`scorers._registration.DEFAULT_BACKEND`), so the domain never imports the runtime. This
module also has MLflow's module functions::

    from scorers import ScorerSamplingConfig, set_experiment
    from stream import delete_scorer, get_scorer, list_scorers

    set_experiment("1")                       # or MLFLOW_EXPERIMENT_ID=1
    registered = my_scorer.register(name="polite")
    registered.start(sampling_config=ScorerSamplingConfig(sample_rate=0.1))
    get_scorer(name="polite").sample_rate     # 0.1
    delete_scorer(name="polite", version="all")

Without `experiment_id`, every call uses the active experiment (`scorers.resolve_experiment_id`:
`set_experiment`, then `MLFLOW_EXPERIMENT_ID`, then `TRACEWATCH_EXPERIMENT_ID`, else an error).
Each call builds a `Registry` from `Settings()` (or `settings=`), as `register_scorer` does.

What a scorer object reports, from the stored record: an active scorer its sample rate and
filter (`STARTED`); a stopped one `sample_rate` 0.0 and its kept filter (`STOPPED`); one
registered but never started (stopped with the default sampling) `sample_rate` None.
"""

from __future__ import annotations

import logging

from scorers import (
    Registration,
    Scorer,
    ScorerSamplingConfig,
    resolve_experiment_id,
    set_experiment,
    with_registration,
)
from stream._config import Settings
from stream.registry._functions import _run
from stream.registry._records import RegistryError, SamplingConfig, ScorerRecord, sampling_from
from stream.registry._registry import Registry
from stream.registry._resolve import build_scorer

__all__ = [
    "RegistryBackend",
    "ScorerSamplingConfig",
    "backend",
    "delete_scorer",
    "get_scorer",
    "list_scorer_versions",
    "list_scorers",
    "set_experiment",
]

log = logging.getLogger("tracewatch.registry")


def registration_of(record: ScorerRecord, version: int | None = None, *, stopped: bool = False) -> Registration:
    """The `Registration` a scorer object of `record` carries (see the module docstring)."""
    sampling: ScorerSamplingConfig | None
    if record.state == "active":
        sampling = ScorerSamplingConfig(sample_rate=record.sample_rate, filter_string=record.filter_string)
    elif stopped or record.sampling != SamplingConfig():
        sampling = ScorerSamplingConfig(sample_rate=0.0, filter_string=record.filter_string)
    else:
        sampling = None
    number = record.current_version if version is None else version
    return Registration(experiment_id=record.experiment_id, version=number, sampling_config=sampling)


def scorer_of(registry: Registry, record: ScorerRecord, version: int | None = None, *, stopped: bool = False) -> Scorer:
    """The runnable scorer of one version of `record`, carrying its registration.

    Raises:
        RegistryError: no such version, or it no longer resolves (module off the allowlist).
    """
    built = build_scorer(record.version(version), record.name, registry.allowlist)
    return with_registration(built, registration_of(record, version, stopped=stopped))


class RegistryBackend:
    """`scorers.RegistrationBackend` on the Redis registry (`Settings()` unless `settings` is given)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings

    def register(self, scorer: Scorer, *, name: str, experiment_id: str | None) -> Scorer:
        exp = resolve_experiment_id(experiment_id)

        async def op(r: Registry) -> Scorer:
            record = await r.register(scorer, name=name, experiment_id=exp)
            return scorer_of(r, record)

        return _run(self.settings, op)

    def start(
        self, scorer: Scorer, *, name: str, experiment_id: str | None, sampling_config: ScorerSamplingConfig
    ) -> Scorer:
        exp = resolve_experiment_id(experiment_id)
        sampling = sampling_from(sampling_config)

        async def op(r: Registry) -> Scorer:
            return scorer_of(r, await r.start(name, experiment_id=exp, sampling_config=sampling))

        return _run(self.settings, op)

    def update(
        self, scorer: Scorer, *, name: str, experiment_id: str | None, sampling_config: ScorerSamplingConfig
    ) -> Scorer:
        """MLflow's update: None fields keep theirs; a given rate > 0 starts, a rate of 0 stops
        (MLflow's status is its sample rate)."""
        exp = resolve_experiment_id(experiment_id)
        rate = sampling_config.sample_rate

        async def op(r: Registry) -> Scorer:
            current = await r.get_record(name, experiment_id=exp)
            if rate is not None and rate <= 0:
                kept = sampling_from(ScorerSamplingConfig(None, sampling_config.filter_string), current.sampling)
                await r.update(name, experiment_id=exp, sampling_config=kept)
                return scorer_of(r, await r.stop(name, experiment_id=exp), stopped=True)
            merged = sampling_from(sampling_config, current.sampling)
            if rate is not None:
                return scorer_of(r, await r.start(name, experiment_id=exp, sampling_config=merged))
            return scorer_of(r, await r.update(name, experiment_id=exp, sampling_config=merged))

        return _run(self.settings, op)

    def stop(self, scorer: Scorer, *, name: str, experiment_id: str | None) -> Scorer:
        exp = resolve_experiment_id(experiment_id)

        async def op(r: Registry) -> Scorer:
            return scorer_of(r, await r.stop(name, experiment_id=exp), stopped=True)

        return _run(self.settings, op)


def backend() -> RegistryBackend:
    """The default backend of `scorers` (named by `scorers._registration.DEFAULT_BACKEND`)."""
    return RegistryBackend()


def get_scorer(
    name: str, *, experiment_id: str | None = None, version: int | None = None, settings: Settings | None = None
) -> Scorer:
    """MLflow's `get_scorer`: a registered scorer as a runnable `Scorer` carrying its registration.

    Args:
        name: the registered name.
        experiment_id: default: the active experiment.
        version: default: the current (highest) version.

    Raises:
        ValueError: no experiment (`ScorerRegistrationError`); no such scorer or version, or it
            no longer resolves (`RegistryError`).
    """
    exp = resolve_experiment_id(experiment_id)

    async def op(r: Registry) -> Scorer:
        return scorer_of(r, await r.get_record(name, experiment_id=exp), version)

    return _run(settings, op)


def list_scorers(experiment_id: str | None = None, *, settings: Settings | None = None) -> list[Scorer]:
    """MLflow's `list_scorers`: the current version of every scorer of one experiment, by name.

    A scorer that no longer loads (its module left the allowlist) is logged and left out.
    For every experiment at once, or the stored records, use `Registry.list_scorers`.
    """
    exp = resolve_experiment_id(experiment_id)

    async def op(r: Registry) -> list[Scorer]:
        out: list[Scorer] = []
        for record in await r.list_scorers(exp):
            try:
                out.append(scorer_of(r, record))
            except RegistryError as exc:
                log.warning("list_scorers: %s/%s left out: %s", record.experiment_id, record.name, exc)
        return out

    return _run(settings, op)


def list_scorer_versions(
    name: str, *, experiment_id: str | None = None, settings: Settings | None = None
) -> list[tuple[Scorer, int]]:
    """MLflow's `list_scorer_versions`: every stored version of one scorer, oldest first."""
    exp = resolve_experiment_id(experiment_id)

    async def op(r: Registry) -> list[tuple[Scorer, int]]:
        record = await r.get_record(name, experiment_id=exp)
        return [(scorer_of(r, record, v.version), v.version) for v in record.versions]

    return _run(settings, op)


def delete_scorer(
    name: str,
    *,
    experiment_id: str | None = None,
    version: int | str | None = None,
    settings: Settings | None = None,
) -> None:
    """MLflow's `delete_scorer`: one version (`version=2`) or all of them (`version="all"`).

    `version=None` also deletes all versions (MLflow's Databricks backend does so; its OSS
    backend refuses None). Deleting the current version makes the previous one current;
    version numbers are never reused.

    Raises:
        ValueError: no experiment; no such scorer or version; `version` not an int or "all".
    """
    exp = resolve_experiment_id(experiment_id)
    if version == "all":
        number = None
    elif version is None or (isinstance(version, int) and not isinstance(version, bool)):
        number = version
    else:
        raise RegistryError(f"version must be an integer or 'all', got {version!r}", scorer=name)
    _run(settings, lambda r: r.delete(name, experiment_id=exp, version=number))
