"""What an app imports: publish traces, send feedback and ground truth, mint feedback tokens."""

from stream.sdk._env import PublisherConfig
from stream.sdk._feedback import (
    FeedbackError,
    FeedbackReceipt,
    alog_expectation,
    alog_feedback,
    log_expectation,
    log_feedback,
)
from stream.sdk._publisher import SyncTracePublisher, TracePublisher, encode_for_wire
from stream.sdk._tokens import TokenClaims, TokenError, mint_feedback_token, verify_feedback_token

__all__ = [
    "FeedbackError",
    "FeedbackReceipt",
    "PublisherConfig",
    "SyncTracePublisher",
    "TokenClaims",
    "TokenError",
    "TracePublisher",
    "alog_expectation",
    "alog_feedback",
    "encode_for_wire",
    "log_expectation",
    "log_feedback",
    "mint_feedback_token",
    "verify_feedback_token",
]
