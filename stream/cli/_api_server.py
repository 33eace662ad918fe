"""`ApiServer` (the HTTP API in a thread, for tests and the demo) and the API's settings checks.

Split from the `tracewatch api` command so that the command's module stays light to import.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from stream._config import Settings, load_settings
from stream._exceptions import ConfigError
from stream.api._app import create_app
from stream.api._deadline import HeaderDeadlineProtocol
from stream.api._models import ApiOptions
from stream.api._serve import BackgroundServer
from stream.cli._common import API_USES

__all__ = ["ApiServer", "app_from_env", "check_settings"]

log = logging.getLogger(__name__)


def check_settings(settings: Settings) -> list[str]:
    """Refuse settings the API cannot run safely with; return warnings for those it can.

    Raises:
        ConfigError: No API keys are configured.
    """
    if not settings.api_keys:
        raise ConfigError(
            "no API keys configured: set TRACEWATCH_API_KEYS to one or more comma-separated keys "
            "(e.g. TRACEWATCH_API_KEYS=$(openssl rand -hex 32)); the API does not run without authentication"
        )
    warnings = []
    if not settings.feedback_secrets:
        warnings.append(
            "TRACEWATCH_FEEDBACK_SECRETS is empty: feedback tokens are disabled (X-Feedback-Token requests "
            "get 401 and POST /v1/feedback-tokens gets 501); set it to enable browser feedback"
        )
    return warnings


def app_from_env() -> FastAPI:
    """The app from `TRACEWATCH_*` env vars: the factory each uvicorn worker process calls.

    Raises:
        ConfigError: No API keys are configured.
    """
    settings = load_settings(uses=API_USES)
    check_settings(settings)
    return create_app(settings, options=ApiOptions())


class ApiServer(BackgroundServer):
    """Run an API app on loopback in a background thread (a context manager for tests and demos).

    A `BackgroundServer` (port 0 picks a free port, race-free) that runs the app's lifespan,
    so the app's clients open and close with it.

    Example:
        >>> with ApiServer(create_app(settings)) as srv:  # doctest: +SKIP
        ...     httpx.post(f"{srv.base_url}/v1/feedback", ...)
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *, header_timeout: float | None = None
    ) -> None:
        # Lifespan on: the app's Kafka and Redis clients open and close with the server. The
        # header deadline as `tracewatch api` has it, Settings' default unless given (the body
        # deadline is in the app).
        if header_timeout is None:
            header_timeout = float(Settings.model_fields["api_header_timeout"].default)
        super().__init__(
            app,
            host,
            port,
            name="API server",
            stop_timeout=15,
            lifespan="on",
            timeout_graceful_shutdown=2,
            http=HeaderDeadlineProtocol.with_header_timeout(header_timeout),
        )

    def start(self, timeout: float = 20.0) -> None:
        """Start serving; returns once the lifespan ran and the server accepts connections."""
        super().start(timeout)
