"""The tracewatch runtime: Kafka, the worker, sampling, the publisher SDK, the API and the CLI.

Apps import the publisher from here: `from stream import TracePublisher`.
"""

from stream._budget import HourlyBudget
from stream._config import Settings, Topics
from stream._exceptions import CommitError, ConfigError, KafkaUnavailableError, PublishError, StreamError
from stream._filter import FILTER_FIELDS, Filter, FilterClause, FilterError, parse_filter
from stream._publisher import SyncTracePublisher, TracePublisher, encode_for_wire
from stream._registry import Registry, RegistryIssue
from stream._registry_api import (
    delete_scorer,
    get_scorer,
    list_scorers,
    register_scorer,
    start_scorer,
    stop_scorer,
    update_scorer,
)
from stream._registry_records import BudgetConfig, RegistryError, SamplingConfig, ScorerRecord, ScorerVersion
from stream._registry_watch import RegistryWatcher
from stream._sampling import sample_u, sampled
from stream._sdk import (
    FeedbackError,
    FeedbackReceipt,
    alog_expectation,
    alog_feedback,
    log_expectation,
    log_feedback,
    mint_feedback_token,
)
from stream._tokens import TokenClaims, TokenError, verify_feedback_token

__all__ = [
    "FILTER_FIELDS",
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
    "PublishError",
    "Registry",
    "RegistryError",
    "RegistryIssue",
    "RegistryWatcher",
    "SamplingConfig",
    "ScorerRecord",
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
    "list_scorers",
    "log_expectation",
    "log_feedback",
    "mint_feedback_token",
    "parse_filter",
    "register_scorer",
    "sample_u",
    "sampled",
    "start_scorer",
    "stop_scorer",
    "update_scorer",
    "verify_feedback_token",
]
