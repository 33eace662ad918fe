"""The scorer registry: register, start, update, stop, delete and list scorers, as in MLflow.

`Registry` is the async API over the Redis store (`sinks.RegistryStore`); every check runs
when a change is made, so a bad reference, template, rate or filter is one clear
`RegistryError` for whoever makes it, never an error in a running worker. `snapshot()`
rebuilds what a worker runs (a `ScorerSet`) from the stored records; `RegistryWatcher` keeps
one current.

Lifecycle, as MLflow's production monitoring: `register` adds a version (the first one
creates the scorer, `stopped`); `start` makes it `active` with a `SamplingConfig`; `update`
changes the sampling or budget of a scorer whatever its state; `stop` pauses it (its sampling
is kept for the next `start`); `delete` removes it with all its versions. Registering the
same name again adds a version, which becomes current at once (live if the scorer is active).
Passing `sampling_config` to `register` registers and starts in one step.

MLflow's `my_scorer.register()` / `.start()` sugar would need `scorers` to import `stream`,
which the layering forbids; the module-level functions `register_scorer`, `start_scorer`, ...
are the synchronous shortcuts instead (see `stream.registry._functions`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from scorers import Scorer
from sinks import RegistryStore
from stream._config import Settings
from stream._exceptions import StreamError
from stream.registry._records import (
    BudgetConfig,
    RegistryError,
    SamplingConfig,
    ScorerRecord,
    ScorerVersion,
    check_identifier,
    utcnow,
)
from stream.registry._resolve import build_scorer, define
from stream.registry._scorer_set import ScorerSet
from stream.registry._snapshot import RegistryIssue, Snapshots, parse_record

__all__ = ["Registry", "RegistryIssue"]

log = logging.getLogger("tracewatch.registry")


class _NotFoundError(StreamError):
    """Raised inside a store transaction; turned into a `RegistryError` with a hint outside."""


def _dump(record: ScorerRecord) -> dict[str, Any]:
    """The JSON form of a changed record, validated again (`model_copy` does not validate)."""
    data = record.model_dump(mode="json")
    parse_record(data, f"{record.experiment_id}/{record.name} (after the change)")
    return data


class Registry:
    """Registered scorers of every experiment, stored in Redis.

    Args:
        store: the Redis store (`RegistryStore.from_url(settings.redis_url, prefix=...)`).
        settings: where the module allowlist comes from (`scorer_modules`).

    Every method may also raise `sinks.SinkError` when Redis fails.

    Example:
        >>> async with Registry.from_settings(Settings()) as registry:
        ...     await registry.register("my_app.scorers:is_polite", experiment_id="1")
        ...     await registry.start("is_polite", experiment_id="1",
        ...                          sampling_config=SamplingConfig(sample_rate=0.1))
    """

    def __init__(self, store: RegistryStore, settings: Settings) -> None:
        self.store = store
        self.allowlist: tuple[str, ...] = tuple(settings.scorer_modules)
        self.snapshot_errors: tuple[RegistryIssue, ...] = ()
        self._owns_store = False
        self._snapshots = Snapshots(self.allowlist)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """A registry with its own store for `settings.redis_url` / `redis_prefix`, closed by `aclose`."""
        store = RegistryStore.from_url(settings.redis_url, prefix=settings.redis_prefix)
        registry = cls(store, settings)
        registry._owns_store = True
        return registry

    async def aclose(self) -> None:
        """Close the store if `from_settings` made it."""
        if self._owns_store:
            await self.store.aclose()

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- changes ---------------------------------------------------------------------------

    async def register(
        self,
        scorer_or_ref: Scorer | str | Mapping[str, Any],
        *,
        name: str | None = None,
        experiment_id: str = "0",
        sampling_config: SamplingConfig | None = None,
        budget: BudgetConfig | None = None,
        created_by: str | None = None,
    ) -> ScorerRecord:
        """Register a scorer, or a new version of one: it becomes the current version.

        Args:
            scorer_or_ref: a reference (`"my_app.scorers:is_polite"`, `"no_error"`,
                `"latency_under(max_ms=2000)"`, `"Safety(model='openai:/gpt-4.1-mini')"`), a
                judge spec dict (`Judge.to_spec()`), a `Judge`, or a module-level `@scorer`.
            name: the registered name (default: the scorer's own name).
            experiment_id: the experiment whose traces it scores.
            sampling_config: when given, also start the scorer with this sampling.
            budget: hourly caps (`BudgetConfig()` with no caps removes a budget).
            created_by: who registered it, kept on the version.

        Returns:
            The stored record. A new scorer is `stopped` unless `sampling_config` is given;
            a new version of an existing scorer keeps its state and sampling. Version numbers
            only grow (also across `delete`), and the highest one is current, even when two
            registrations of one name race.

        Raises:
            RegistryError: the reference is outside `TRACEWATCH_SCORER_MODULES`, does not
                import, is not a scorer, a judge template uses an unknown variable, the name
                or experiment id is not valid, ...
        """
        definition = define(scorer_or_ref, self.allowlist)
        reg_name = check_identifier(name if name is not None else definition.scorer.name, "scorer name")
        check_identifier(experiment_id, "experiment id")
        spec = None if definition.spec is None else {**definition.spec, "name": reg_name}
        number = await self.store.next_version(experiment_id, reg_name)
        now = utcnow()
        version = ScorerVersion(
            version=number,
            kind=definition.kind,
            ref=definition.ref,
            arguments=definition.arguments,
            spec=spec,
            created_at=now,
            created_by=created_by,
        )

        def change(current: Any) -> dict[str, Any]:
            if current is None:
                record = ScorerRecord(
                    name=reg_name,
                    experiment_id=experiment_id,
                    versions=[version],
                    current_version=number,
                    state="active" if sampling_config is not None else "stopped",
                    sampling=sampling_config or SamplingConfig(),
                    budget=_budget(budget, None),
                    created_at=now,
                    updated_at=now,
                )
                return _dump(record)
            old = parse_record(current, f"{experiment_id}/{reg_name}")
            # Numbers come from a counter outside this transaction, so concurrent registrations
            # may commit out of order: keep the list sorted and the highest number current.
            versions = sorted([*old.versions, version], key=lambda v: v.version)
            update: dict[str, Any] = {
                "versions": versions,
                "current_version": versions[-1].version,
                "budget": _budget(budget, old.budget),
                "updated_at": now,
            }
            if sampling_config is not None:
                update |= {"sampling": sampling_config, "state": "active"}
            return _dump(old.model_copy(update=update))

        stored = await self.store.update(experiment_id, reg_name, change, op="register")
        return ScorerRecord.model_validate(stored)

    async def start(
        self,
        name: str,
        *,
        experiment_id: str = "0",
        sampling_config: SamplingConfig | None = None,
        budget: BudgetConfig | None = None,
    ) -> ScorerRecord:
        """Make a registered scorer active; workers pick it up within seconds.

        Args:
            sampling_config: the sampling to run with (None: the stored one, 1.0 and no
                filter unless set before).
            budget: new hourly caps (None: keep the stored ones).

        Raises:
            RegistryError: no such scorer, or a sample rate of 0 (use `stop` to pause).
        """

        def change(record: ScorerRecord) -> ScorerRecord:
            sampling = sampling_config or record.sampling
            if sampling.sample_rate <= 0:
                raise RegistryError(
                    f"cannot start {name!r} with sample_rate 0: it would score nothing; give a rate in (0, 1] "
                    "(use stop to pause a scorer)",
                    scorer=name,
                    experiment_id=experiment_id,
                )
            return record.model_copy(
                update={"state": "active", "sampling": sampling, "budget": _budget(budget, record.budget)}
            )

        return await self._change(name, experiment_id, change, "start")

    async def update(
        self,
        name: str,
        *,
        experiment_id: str = "0",
        sampling_config: SamplingConfig | None = None,
        budget: BudgetConfig | None = None,
    ) -> ScorerRecord:
        """Replace the sampling config and/or budget of a scorer, keeping its state.

        Raises:
            RegistryError: no such scorer, or neither `sampling_config` nor `budget` given.
        """
        if sampling_config is None and budget is None:
            raise RegistryError("nothing to update: pass sampling_config and/or budget", scorer=name)

        def change(record: ScorerRecord) -> ScorerRecord:
            return record.model_copy(
                update={"sampling": sampling_config or record.sampling, "budget": _budget(budget, record.budget)}
            )

        return await self._change(name, experiment_id, change, "update")

    async def stop(self, name: str, *, experiment_id: str = "0") -> ScorerRecord:
        """Stop a scorer: workers drop it at their next reload; its sampling is kept for `start`.

        Raises:
            RegistryError: no such scorer.
        """
        return await self._change(name, experiment_id, lambda r: r.model_copy(update={"state": "stopped"}), "stop")

    async def delete(self, name: str, *, experiment_id: str = "0", version: int | None = None) -> None:
        """Delete a scorer with all its versions, or one version (numbers are never reused).

        Args:
            version: the one version to delete (None: all of them). Deleting the current
                version makes the highest remaining one current (live if the scorer is
                active); deleting the last one deletes the scorer.

        Raises:
            RegistryError: no such scorer or version.
        """
        check_identifier(name, "scorer name")
        check_identifier(experiment_id, "experiment id")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise RegistryError(f"version must be an integer, got {version!r}", scorer=name)

        def change(current: Any) -> dict[str, Any] | None:
            if current is None:
                raise _NotFoundError
            if version is None:
                return None
            record = parse_record(current, f"{experiment_id}/{name}")
            record.version(version)  # raises, listing the versions, when there is no such one
            left = [v for v in record.versions if v.version != version]
            if not left:
                return None
            return _dump(
                record.model_copy(
                    update={"versions": left, "current_version": left[-1].version, "updated_at": utcnow()}
                )
            )

        try:
            await self.store.update(experiment_id, name, change, op="delete")
        except _NotFoundError:
            raise await self._not_found(name, experiment_id) from None

    async def _change(
        self, name: str, experiment_id: str, fn: Callable[[ScorerRecord], ScorerRecord], op: str
    ) -> ScorerRecord:
        check_identifier(name, "scorer name")
        check_identifier(experiment_id, "experiment id")
        where = f"{experiment_id}/{name}"

        def change(current: Any) -> dict[str, Any]:
            if current is None:
                raise _NotFoundError
            record = fn(parse_record(current, where))
            return _dump(record.model_copy(update={"updated_at": utcnow()}))

        try:
            stored = await self.store.update(experiment_id, name, change, op=op)
        except _NotFoundError:
            raise await self._not_found(name, experiment_id) from None
        return ScorerRecord.model_validate(stored)

    async def _not_found(self, name: str, experiment_id: str) -> RegistryError:
        names = [r.name for r in await self.list_scorers(experiment_id)]
        there = f"registered there: {', '.join(names)}" if names else "none is registered there"
        return RegistryError(
            f"no scorer {name!r} in experiment {experiment_id!r} ({there})", scorer=name, experiment_id=experiment_id
        )

    # -- reads -----------------------------------------------------------------------------

    async def list_scorers(self, experiment_id: str | None = None) -> list[ScorerRecord]:
        """Every registered scorer (of one experiment, when given), sorted by experiment and name.

        Records that fail validation are left out and logged (`snapshot_errors` lists them
        after a `snapshot()`).
        """
        _, stored = await self.store.load_all()
        out: list[ScorerRecord] = []
        for item in stored:
            if experiment_id is not None and item.experiment_id != experiment_id:
                continue
            try:
                out.append(parse_record(item.data, f"{item.experiment_id}/{item.name}"))
            except RegistryError as exc:
                log.warning("%s", exc)
        return out

    async def get_record(self, name: str, *, experiment_id: str = "0") -> ScorerRecord:
        """The stored record of one scorer (all versions, state, sampling, budget).

        Raises:
            RegistryError: no such scorer, or its record is invalid.
        """
        check_identifier(name, "scorer name")
        check_identifier(experiment_id, "experiment id")
        data = await self.store.get(experiment_id, name)
        if data is None:
            raise await self._not_found(name, experiment_id)
        return parse_record(data, f"{experiment_id}/{name}")

    async def get_scorer(self, name: str, *, experiment_id: str = "0", version: int | None = None) -> Scorer:
        """Load a registered scorer as a callable `Scorer` (MLflow's `get_scorer`), named as registered.

        Args:
            version: which version (None: the current one).

        Raises:
            RegistryError: no such scorer or version, or it no longer resolves (the module
                left the allowlist, the reference broke).
        """
        record = await self.get_record(name, experiment_id=experiment_id)
        return build_scorer(record.version(version), record.name, self.allowlist)

    # -- what workers run --------------------------------------------------------------------

    async def snapshot(self) -> ScorerSet:
        """Build the `ScorerSet` of every active scorer's current version, tagged with the generation.

        A record that cannot run (invalid JSON or fields, a reference outside the allowlist,
        a broken reference or spec, a bad filter) is skipped, logged and listed in
        `snapshot_errors`; the others still run. Out-of-allowlist modules are never imported.
        """
        generation, stored = await self.store.load_all()
        scorer_set, self.snapshot_errors = self._snapshots.build(generation, stored)
        return scorer_set


def _budget(given: BudgetConfig | None, old: BudgetConfig | None) -> BudgetConfig | None:
    """None keeps the old budget; a config without caps removes it."""
    if given is None:
        return old
    return None if given.is_unlimited else given
