"""The scorer registry: versioned scorer records in Redis, resolved safely, followed live by workers."""

from stream.registry._budget import HourlyBudget
from stream.registry._filter import FILTER_FIELDS, Filter, FilterClause, FilterError, parse_filter
from stream.registry._functions import register_scorer, start_scorer, stop_scorer, update_scorer
from stream.registry._mlflow_api import (
    RegistryBackend,
    ScorerSamplingConfig,
    delete_scorer,
    get_scorer,
    list_scorer_versions,
    list_scorers,
    set_experiment,
)
from stream.registry._records import BudgetConfig, RegistryError, SamplingConfig, ScorerRecord, ScorerVersion
from stream.registry._registry import Registry, RegistryIssue
from stream.registry._scorer_set import ActiveScorer, ScorerSet, parse_scorer_option
from stream.registry._watch import RegistryWatcher

__all__ = [
    "FILTER_FIELDS",
    "ActiveScorer",
    "BudgetConfig",
    "Filter",
    "FilterClause",
    "FilterError",
    "HourlyBudget",
    "Registry",
    "RegistryBackend",
    "RegistryError",
    "RegistryIssue",
    "RegistryWatcher",
    "SamplingConfig",
    "ScorerRecord",
    "ScorerSamplingConfig",
    "ScorerSet",
    "ScorerVersion",
    "delete_scorer",
    "get_scorer",
    "list_scorer_versions",
    "list_scorers",
    "parse_filter",
    "parse_scorer_option",
    "register_scorer",
    "set_experiment",
    "start_scorer",
    "stop_scorer",
    "update_scorer",
]
