"""Synchronous shortcuts for the registry, taking a scorer or its name and returning records.

MLflow's own forms, `my_scorer.register()`, `.start(sampling_config=...)`, `get_scorer(name=...)`,
`list_scorers()`, `delete_scorer(name=..., version=...)`, are in `stream.registry._mlflow_api`
(the scorer methods reach it through `scorers.RegistrationBackend`). These functions are the
record-level equivalents, for scripts and the CLI::

    from stream import SamplingConfig, register_scorer, start_scorer

    register_scorer("my_app.scorers:is_polite", experiment_id="1")
    start_scorer("is_polite", experiment_id="1", sampling_config=SamplingConfig(sample_rate=0.1))

Each call builds a `Registry` from `Settings()` (the `TRACEWATCH_*` environment, or the
`settings` given), runs one operation with `asyncio.run` and closes it. From async code, or
for many calls, use `Registry` directly; these functions refuse to run inside an event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from scorers import Scorer, ScorerSamplingConfig
from stream._config import Settings
from stream.registry._records import BudgetConfig, SamplingConfig, ScorerRecord, sampling_from
from stream.registry._registry import Registry

__all__ = [
    "register_scorer",
    "start_scorer",
    "stop_scorer",
    "update_scorer",
]

T = TypeVar("T")


def _run(settings: Settings | None, op: Callable[[Registry], Awaitable[T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("called inside a running event loop: use `await Registry(...).<method>(...)` instead")

    async def main() -> T:
        async with Registry.from_settings(settings or Settings()) as registry:
            return await op(registry)

    return asyncio.run(main())


def register_scorer(
    scorer: Scorer | str | Mapping[str, Any],
    *,
    name: str | None = None,
    experiment_id: str = "0",
    sampling_config: SamplingConfig | ScorerSamplingConfig | None = None,
    budget: BudgetConfig | None = None,
    created_by: str | None = None,
    settings: Settings | None = None,
) -> ScorerRecord:
    """Register a scorer or a new version of it (`Registry.register`).

    Raises:
        RegistryError: the scorer cannot be registered; the message says why.
    """
    return _run(
        settings,
        lambda r: r.register(
            scorer,
            name=name,
            experiment_id=experiment_id,
            sampling_config=_sampling(sampling_config),
            budget=budget,
            created_by=created_by,
        ),
    )


def start_scorer(
    name: str,
    *,
    experiment_id: str = "0",
    sampling_config: SamplingConfig | ScorerSamplingConfig | None = None,
    budget: BudgetConfig | None = None,
    settings: Settings | None = None,
) -> ScorerRecord:
    """Start a registered scorer (`Registry.start`)."""
    return _run(
        settings,
        lambda r: r.start(
            name, experiment_id=experiment_id, sampling_config=_sampling(sampling_config), budget=budget
        ),
    )


def update_scorer(
    name: str,
    *,
    experiment_id: str = "0",
    sampling_config: SamplingConfig | ScorerSamplingConfig | None = None,
    budget: BudgetConfig | None = None,
    settings: Settings | None = None,
) -> ScorerRecord:
    """Change a scorer's sampling and/or budget (`Registry.update`)."""
    return _run(
        settings,
        lambda r: r.update(
            name, experiment_id=experiment_id, sampling_config=_sampling(sampling_config), budget=budget
        ),
    )


def stop_scorer(name: str, *, experiment_id: str = "0", settings: Settings | None = None) -> ScorerRecord:
    """Stop a scorer (`Registry.stop`)."""
    return _run(settings, lambda r: r.stop(name, experiment_id=experiment_id))


def _sampling(config: SamplingConfig | ScorerSamplingConfig | None) -> SamplingConfig | None:
    """Either form of sampling config as ours (MLflow's None fields take the defaults)."""
    return None if config is None else sampling_from(config)
