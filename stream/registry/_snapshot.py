"""What workers run: the `ScorerSet` built from the stored records of the registry.

`Snapshots` keeps the scorers it built and the budgets it handed out across snapshots, so a
reload neither re-imports an unchanged scorer nor resets a budget's count. A record that
cannot run is skipped and reported as a `RegistryIssue`; the others still run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from scorers import Scorer
from sinks import StoredRecord
from stream._exceptions import RegistryError
from stream.registry._budget import HourlyBudget
from stream.registry._filter import parse_filter
from stream.registry._records import ScorerRecord, one_message
from stream.registry._resolve import build_scorer
from stream.registry._scorer_set import ActiveScorer, ScorerSet

__all__ = ["RegistryIssue", "Snapshots", "parse_record"]

log = logging.getLogger("tracewatch.registry")


@dataclass(slots=True, frozen=True)
class RegistryIssue:
    """A stored record that `snapshot()` refused to run, and why."""

    experiment_id: str
    name: str
    message: str


def parse_record(data: Any, where: str) -> ScorerRecord:
    """A stored record, validated.

    Raises:
        RegistryError: It is not a valid record (the message says where and what to do).
    """
    try:
        return ScorerRecord.model_validate(data)
    except ValidationError as exc:
        raise RegistryError(
            f"stored record {where} is invalid ({one_message(exc)}); delete it and register again"
        ) from exc


class Snapshots:
    """Builds `ScorerSet`s from stored records, reusing built scorers and budgets between builds.

    Args:
        allowlist: The modules a scorer reference may import from (`Settings.scorer_modules`).
    """

    def __init__(self, allowlist: tuple[str, ...]) -> None:
        self.allowlist = allowlist
        self._scorers: dict[tuple[str, str, bytes], Scorer] = {}
        self._budgets: dict[tuple[str, str], HourlyBudget] = {}

    def build(self, generation: int, stored: Iterable[StoredRecord]) -> tuple[ScorerSet, tuple[RegistryIssue, ...]]:
        """The `ScorerSet` of every active scorer's current version, and the records left out.

        A record that cannot run (invalid JSON or fields, a reference outside the allowlist,
        a broken reference or spec, a bad filter) is skipped, logged and returned as an issue.
        Out-of-allowlist modules are never imported.
        """
        active: list[ActiveScorer] = []
        issues: list[RegistryIssue] = []
        used_scorers: set[tuple[str, str, bytes]] = set()
        used_budgets: set[tuple[str, str]] = set()
        for item in stored:
            where = f"{item.experiment_id}/{item.name}"
            try:
                if item.error is not None:
                    raise RegistryError(f"stored record {where} is {item.error}")
                record = parse_record(item.data, where)
                if (record.experiment_id, record.name) != (item.experiment_id, item.name):
                    raise RegistryError(f"stored record {where} names {record.experiment_id}/{record.name}")
                if record.state != "active":
                    continue
                active.append(self._active(record, used_scorers, used_budgets))
            except Exception as exc:  # one bad record must not stop the others from running
                message = str(exc) if isinstance(exc, RegistryError) else f"{type(exc).__name__}: {exc}"
                log.error("registry: not running %s: %s", where, message)
                issues.append(RegistryIssue(item.experiment_id, item.name, message))
        self._scorers = {k: v for k, v in self._scorers.items() if k in used_scorers}
        self._budgets = {k: v for k, v in self._budgets.items() if k in used_budgets}
        return ScorerSet.of(active, generation), tuple(issues)  # `of` checks names are unique per experiment

    def _active(
        self, record: ScorerRecord, used_scorers: set[tuple[str, str, bytes]], used_budgets: set[tuple[str, str]]
    ) -> ActiveScorer:
        version = record.current
        # Versions never change once written, but a name can be deleted and registered again,
        # so the cache key is the definition itself.
        key = (record.experiment_id, record.name, orjson.dumps(version.model_dump(mode="json")))
        scorer = self._scorers.get(key)
        if scorer is None:
            scorer = build_scorer(version, record.name, self.allowlist)
            self._scorers[key] = scorer
        used_scorers.add(key)
        filt = parse_filter(record.sampling.filter_string)
        return ActiveScorer(
            scorer=scorer,
            name=record.name,
            version=version.version,
            sample_rate=record.sampling.sample_rate,
            predicate=None if filt.matches_all else filt,
            experiment_id=record.experiment_id,
            budget=self._budget_for(record, used_budgets),
        )

    def _budget_for(self, record: ScorerRecord, used: set[tuple[str, str]]) -> HourlyBudget | None:
        """The scorer's budget object, kept across snapshots so a reload does not reset its count."""
        cfg = record.budget
        if cfg is None or cfg.is_unlimited:
            return None
        key = (record.experiment_id, record.name)
        used.add(key)
        budget = self._budgets.get(key)
        if budget is None:
            budget = HourlyBudget(max_calls=cfg.max_calls_per_hour, max_tokens=cfg.max_tokens_per_hour)
            self._budgets[key] = budget
        else:
            budget.configure(max_calls=cfg.max_calls_per_hour, max_tokens=cfg.max_tokens_per_hour)
        return budget
