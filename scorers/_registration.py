"""MLflow's scorer-object registration API: `my_scorer.register()`, `.start()`, `.update()`, `.stop()`.

MLflow writes::

    registered = my_scorer.register(name="polite")
    active = registered.start(sampling_config=ScorerSamplingConfig(sample_rate=0.1))
    active = active.update(sampling_config=ScorerSamplingConfig(filter_string="status = 'OK'"))
    stopped = active.stop()

Each call returns a *new* scorer object carrying the registration (`sample_rate`,
`filter_string`, `status`, `scorer_version`); the object it is called on is never changed.

The registry lives in Redis, in `stream.registry`, and `scorers` must not import `stream`
(the layering rule, `tests/test_layers.py`). So this module only defines what a registry must
offer (`RegistrationBackend`) and a hook to install one (`set_registration_backend`); the
`Scorer` methods call whatever backend is installed. When none is, the first call imports
`DEFAULT_BACKEND`, a *string* naming the factory (`stream.registry._mlflow_api:backend`), so
`my_scorer.register()` works after `import scorers` alone, as in MLflow. A string, not an
import statement, because that is exactly the dependency inversion the layering needs: the
domain names no runtime module at import time, `import scorers` stays free of Redis and
pydantic-settings, and a test or an embedding application can install its own backend
before the default is ever loaded.

Nothing is pickled: the backend stores a `@scorer` function as its derived import reference
(`module:qualname`, checked by `scorers.parse_reference` and the module allowlist) and a judge
as its spec.
"""

from __future__ import annotations

import copy
import importlib
import os
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Final, Protocol

from scorers._exceptions import ScorerError

if TYPE_CHECKING:
    from scorers._scorer import Scorer

__all__ = [
    "Registration",
    "RegistrationBackend",
    "ScorerRegistrationError",
    "ScorerSamplingConfig",
    "ScorerStatus",
    "active_experiment_id",
    "resolve_experiment_id",
    "set_experiment",
    "set_registration_backend",
    "with_registration",
]

DEFAULT_BACKEND: Final = "stream.registry._mlflow_api:backend"
"""`module:factory` of the backend loaded on first use when none is installed (see the module doc)."""

EXPERIMENT_ENV_VARS: Final = ("MLFLOW_EXPERIMENT_ID", "TRACEWATCH_EXPERIMENT_ID")
"""Environment variables naming the active experiment, in the order they are read."""

_NOT_REGISTERED: Final = (
    "Cannot start/update a scorer that is not registered. Please call register() first before calling "
    "start()/update(), or use get_scorer() to load a registered scorer."
)  # MLflow's wording


class ScorerRegistrationError(ScorerError, ValueError):
    """A registration call is invalid (no experiment, not registered, bad sample rate).

    The registry's own errors (`stream.RegistryError`, also a `ValueError`) pass through as they are.
    """


@dataclass
class ScorerSamplingConfig:
    """Which traces a started scorer sees: MLflow's `ScorerSamplingConfig`, field for field.

    Attributes:
        sample_rate: the fraction of traces to score, in [0, 1]. Required by `start`; None in
            `update` keeps the current rate.
        filter_string: an MLflow `search_traces` filter (`"status = 'OK'"`,
            `"timestamp > 1700000000000"`; see `stream.parse_filter`). None in `update` keeps
            the current filter; `""` removes it.
    """

    sample_rate: float | None = None
    filter_string: str | None = None


class ScorerStatus(Enum):
    """MLflow's `ScorerStatus`: UNREGISTERED (a plain scorer), STARTED (sampling), STOPPED."""

    UNREGISTERED = "UNREGISTERED"
    STARTED = "STARTED"
    STOPPED = "STOPPED"


@dataclass(frozen=True, slots=True)
class Registration:
    """What a registered scorer object knows about its registration.

    Attributes:
        experiment_id: the experiment it is registered in.
        version: the version this object is (None when unknown).
        sampling_config: the sampling it runs with; None for a scorer registered but never
            started. A stopped scorer has `sample_rate` 0, as in MLflow.
    """

    experiment_id: str
    version: int | None = None
    sampling_config: ScorerSamplingConfig | None = None


class RegistrationBackend(Protocol):
    """What a scorer registry offers the `Scorer` methods (`stream.registry` implements it).

    Each method returns a new scorer object carrying its `Registration` (`with_registration`).
    `experiment_id` is as the user gave it (None: the backend resolves the active experiment,
    `resolve_experiment_id`). Errors are `ValueError`s whose message says what to fix.
    """

    def register(self, scorer: Scorer, *, name: str, experiment_id: str | None) -> Scorer: ...

    def start(
        self, scorer: Scorer, *, name: str, experiment_id: str | None, sampling_config: ScorerSamplingConfig
    ) -> Scorer: ...

    def update(
        self, scorer: Scorer, *, name: str, experiment_id: str | None, sampling_config: ScorerSamplingConfig
    ) -> Scorer: ...

    def stop(self, scorer: Scorer, *, name: str, experiment_id: str | None) -> Scorer: ...


_backend: RegistrationBackend | None = None
_active_experiment: str | None = None


def set_registration_backend(backend: RegistrationBackend | None) -> None:
    """Install the registry the `Scorer` methods use (None: load `DEFAULT_BACKEND` on next use)."""
    global _backend
    _backend = backend


def registration_backend() -> RegistrationBackend:
    """The installed backend, loading `DEFAULT_BACKEND` on first use.

    Raises:
        ScorerRegistrationError: the default backend cannot be imported (the message names it).
    """
    global _backend
    if _backend is None:
        module_name, _, factory = DEFAULT_BACKEND.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ScorerRegistrationError(
                f"scorer registration needs the registry ({module_name}), which did not import: {exc}; "
                "install tracewatch with its runtime, or call scorers.set_registration_backend(...)"
            ) from exc
        _backend = getattr(module, factory)()
    return _backend


def set_experiment(experiment_id: str | None) -> None:
    """Make `experiment_id` the active experiment of this process (None: clear it).

    MLflow's `set_experiment` by id, without creating anything: tracewatch's experiments are
    just the ids traces carry. Registration, `get_scorer`, `list_scorers` and `delete_scorer`
    use it when no `experiment_id` is passed.
    """
    global _active_experiment
    if experiment_id is not None and (not isinstance(experiment_id, str) or not experiment_id.strip()):
        raise ScorerRegistrationError(f"an experiment id is a non-empty string, got {experiment_id!r}")
    _active_experiment = experiment_id.strip() if experiment_id is not None else None


def active_experiment_id() -> str | None:
    """The active experiment: `set_experiment`'s, else `MLFLOW_EXPERIMENT_ID`, else
    `TRACEWATCH_EXPERIMENT_ID` (MLflow's order: its `set_experiment` wins over the environment)."""
    if _active_experiment is not None:
        return _active_experiment
    for var in EXPERIMENT_ENV_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return value
    return None


def resolve_experiment_id(experiment_id: str | None) -> str:
    """`experiment_id` if given, else the active experiment.

    Raises:
        ScorerRegistrationError: none is given or active. MLflow would fall back to its
            default experiment "0"; a monitoring scorer silently registered there scores none
            of the traffic it was meant for, so tracewatch asks instead.
    """
    if experiment_id is not None and experiment_id != "":
        return str(experiment_id)
    active = active_experiment_id()
    if active is None:
        raise ScorerRegistrationError(
            "no experiment: pass experiment_id=..., call set_experiment('<id>'), or set "
            "MLFLOW_EXPERIMENT_ID (or TRACEWATCH_EXPERIMENT_ID) in the environment"
        )
    return active


def with_registration(scorer: Scorer, registration: Registration) -> Scorer:
    """A shallow copy of `scorer` carrying `registration`; `scorer` itself is not changed."""
    clone = copy.copy(scorer)
    clone._registration = registration
    return clone


def _check_rate(rate: object, verb: str, *, required: bool) -> None:
    if rate is None and not required:
        return
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise ScorerRegistrationError(f"When {verb} a scorer, provided sample rate must be a number")
    if required and rate <= 0:
        raise ScorerRegistrationError(f"When {verb} a scorer, provided sample rate must be greater than 0")


class RegistrationMixin:
    """`register` / `start` / `update` / `stop` and the registration properties of `Scorer`."""

    _registration: Registration | None = None
    name: str

    @property
    def sample_rate(self) -> float | None:
        """The registered sample rate (None: not registered, or never started)."""
        reg = self._registration
        return reg.sampling_config.sample_rate if reg and reg.sampling_config else None

    @property
    def filter_string(self) -> str | None:
        """The registered filter (None: none, or not registered)."""
        reg = self._registration
        return reg.sampling_config.filter_string if reg and reg.sampling_config else None

    @property
    def scorer_version(self) -> int | None:
        """The registered version this object is, if known."""
        return self._registration.version if self._registration else None

    @property
    def status(self) -> ScorerStatus:
        """UNREGISTERED, STARTED (sample rate > 0) or STOPPED, from this object's own state (as MLflow)."""
        if self._registration is None:
            return ScorerStatus.UNREGISTERED
        return ScorerStatus.STARTED if (self.sample_rate or 0) > 0 else ScorerStatus.STOPPED

    def register(self, *, name: str | None = None, experiment_id: str | None = None) -> Scorer:
        """Register this scorer (a new version if the name exists) and return the registered copy.

        A `@scorer` function is stored as its import reference (`module:qualname`), so it must
        be defined at the top level of a module on `TRACEWATCH_SCORER_MODULES`; lambdas,
        closures and `__main__` functions are refused with the reason. Judges are stored as data.

        Args:
            name: the registered name (default: the scorer's name).
            experiment_id: default: the active experiment (`resolve_experiment_id`).

        Raises:
            ValueError: `ScorerRegistrationError` or the registry's `RegistryError`, saying why.
        """
        return registration_backend().register(self._self(), name=name or self.name, experiment_id=experiment_id)

    def start(
        self,
        *,
        name: str | None = None,
        experiment_id: str | None = None,
        sampling_config: ScorerSamplingConfig,
    ) -> Scorer:
        """Start scoring live traffic with `sampling_config` (its `sample_rate` > 0 is required).

        As in MLflow, only a registered scorer object (from `register` or `get_scorer`) can be
        started; the experiment defaults to the one it is registered in, then the active one.
        """
        _check_rate(sampling_config.sample_rate, "starting", required=True)
        exp = self._experiment_for(experiment_id)
        return registration_backend().start(
            self._self(), name=name or self.name, experiment_id=exp, sampling_config=sampling_config
        )

    def update(
        self,
        *,
        name: str | None = None,
        experiment_id: str | None = None,
        sampling_config: ScorerSamplingConfig,
    ) -> Scorer:
        """Change the sample rate and/or filter of a registered scorer (None fields keep theirs)."""
        _check_rate(sampling_config.sample_rate, "updating", required=False)
        exp = self._experiment_for(experiment_id)
        return registration_backend().update(
            self._self(), name=name or self.name, experiment_id=exp, sampling_config=sampling_config
        )

    def stop(self, *, name: str | None = None, experiment_id: str | None = None) -> Scorer:
        """Stop scoring (MLflow sets the sample rate to 0); the scorer stays registered."""
        exp = self._experiment_for(experiment_id)
        return registration_backend().stop(self._self(), name=name or self.name, experiment_id=exp)

    def _experiment_for(self, experiment_id: str | None) -> str | None:
        if self._registration is None:
            raise ScorerRegistrationError(_NOT_REGISTERED)
        return experiment_id or self._registration.experiment_id

    def _self(self) -> Scorer:
        return self  # type: ignore[return-value]  # the mixin is only ever a Scorer's base
