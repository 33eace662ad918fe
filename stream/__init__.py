"""The tracewatch runtime: Kafka, the worker, sampling, the publisher SDK, the API and the CLI.

Apps import the publisher from here: `from stream import TracePublisher`. Names resolve lazily
(PEP 562), so that costs only the SDK: the registry, Redis, the API and the worker are imported
when first named, not by every app that publishes a trace.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from stream._config import Settings, Topics
    from stream._exceptions import (
        ApiError,
        CommitError,
        ConfigError,
        FeedbackError,
        FilterError,
        KafkaUnavailableError,
        OffsetError,
        PublishError,
        RegistryError,
        StreamError,
        TokenError,
    )
    from stream.registry._budget import HourlyBudget
    from stream.registry._filter import FILTER_FIELDS, Filter, FilterClause, parse_filter
    from stream.registry._functions import register_scorer, start_scorer, stop_scorer, update_scorer
    from stream.registry._mlflow_api import (
        ScorerSamplingConfig,
        delete_scorer,
        get_scorer,
        list_scorer_versions,
        list_scorers,
        set_experiment,
    )
    from stream.registry._records import BudgetConfig, SamplingConfig, ScorerRecord, ScorerVersion
    from stream.registry._registry import Registry, RegistryIssue
    from stream.registry._watch import RegistryWatcher
    from stream.sdk._env import PublisherConfig
    from stream.sdk._feedback import (
        FeedbackReceipt,
        alog_expectation,
        alog_feedback,
        log_expectation,
        log_feedback,
        mint_feedback_token,
    )
    from stream.sdk._publisher import SyncTracePublisher, TracePublisher, encode_for_wire
    from stream.sdk._tokens import TokenClaims, verify_feedback_token
    from stream.worker._sampling import sample_u, sampled

_WHERE: dict[str, str] = {
    "ApiError": "stream._exceptions",
    "BudgetConfig": "stream.registry._records",
    "CommitError": "stream._exceptions",
    "ConfigError": "stream._exceptions",
    "FILTER_FIELDS": "stream.registry._filter",
    "FeedbackError": "stream._exceptions",
    "FeedbackReceipt": "stream.sdk._feedback",
    "Filter": "stream.registry._filter",
    "FilterClause": "stream.registry._filter",
    "FilterError": "stream._exceptions",
    "HourlyBudget": "stream.registry._budget",
    "KafkaUnavailableError": "stream._exceptions",
    "OffsetError": "stream._exceptions",
    "PublishError": "stream._exceptions",
    "PublisherConfig": "stream.sdk._env",
    "Registry": "stream.registry._registry",
    "RegistryError": "stream._exceptions",
    "RegistryIssue": "stream.registry._registry",
    "RegistryWatcher": "stream.registry._watch",
    "SamplingConfig": "stream.registry._records",
    "ScorerRecord": "stream.registry._records",
    "ScorerSamplingConfig": "stream.registry._mlflow_api",
    "ScorerVersion": "stream.registry._records",
    "Settings": "stream._config",
    "StreamError": "stream._exceptions",
    "SyncTracePublisher": "stream.sdk._publisher",
    "TokenClaims": "stream.sdk._tokens",
    "TokenError": "stream._exceptions",
    "Topics": "stream._config",
    "TracePublisher": "stream.sdk._publisher",
    "alog_expectation": "stream.sdk._feedback",
    "alog_feedback": "stream.sdk._feedback",
    "delete_scorer": "stream.registry._mlflow_api",
    "encode_for_wire": "stream.sdk._publisher",
    "get_scorer": "stream.registry._mlflow_api",
    "list_scorer_versions": "stream.registry._mlflow_api",
    "list_scorers": "stream.registry._mlflow_api",
    "log_expectation": "stream.sdk._feedback",
    "log_feedback": "stream.sdk._feedback",
    "mint_feedback_token": "stream.sdk._feedback",
    "parse_filter": "stream.registry._filter",
    "register_scorer": "stream.registry._functions",
    "sample_u": "stream.worker._sampling",
    "sampled": "stream.worker._sampling",
    "set_experiment": "stream.registry._mlflow_api",
    "start_scorer": "stream.registry._functions",
    "stop_scorer": "stream.registry._functions",
    "update_scorer": "stream.registry._functions",
    "verify_feedback_token": "stream.sdk._tokens",
}


def __getattr__(name: str) -> _Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'stream' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # resolved once; later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "FILTER_FIELDS",
    "ApiError",
    "BudgetConfig",
    "CommitError",
    "ConfigError",
    "FeedbackError",
    "FeedbackReceipt",
    "Filter",
    "FilterClause",
    "FilterError",
    "HourlyBudget",
    "KafkaUnavailableError",
    "OffsetError",
    "PublishError",
    "PublisherConfig",
    "Registry",
    "RegistryError",
    "RegistryIssue",
    "RegistryWatcher",
    "SamplingConfig",
    "ScorerRecord",
    "ScorerSamplingConfig",
    "ScorerVersion",
    "Settings",
    "StreamError",
    "SyncTracePublisher",
    "TokenClaims",
    "TokenError",
    "Topics",
    "TracePublisher",
    "alog_expectation",
    "alog_feedback",
    "delete_scorer",
    "encode_for_wire",
    "get_scorer",
    "list_scorer_versions",
    "list_scorers",
    "log_expectation",
    "log_feedback",
    "mint_feedback_token",
    "parse_filter",
    "register_scorer",
    "sample_u",
    "sampled",
    "set_experiment",
    "start_scorer",
    "stop_scorer",
    "update_scorer",
    "verify_feedback_token",
]
