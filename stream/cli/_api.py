"""`tracewatch api`: serve the HTTP API with uvicorn; and `ApiServer`, the same in a thread.

The command refuses to start without API keys: an API nobody can call is a misconfiguration,
and one anybody can call would accept forged traces and votes. Without feedback secrets it
starts (server-side feedback with an API key still works) and says that tokens are off.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from stream._config import Settings
from stream._exceptions import ConfigError
from stream.api._app import create_app
from stream.api._deadline import HeaderDeadlineProtocol
from stream.api._models import ApiOptions
from stream.api._serve import BackgroundServer

__all__ = ["ApiServer", "api_command", "app_from_env", "check_settings"]

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
    settings = Settings()
    check_settings(settings)
    return create_app(settings, options=ApiOptions())


def api_command(
    host: Annotated[str | None, typer.Option(help="Address to bind [env TRACEWATCH_API_HOST: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [env TRACEWATCH_API_PORT: 8080]")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes to run; each keeps its own rate-limit buckets.")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(help="Proxies trusted for X-Forwarded-For (client IPs for rate limits); none by default."),
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request (costs throughput).")] = False,
) -> None:
    """Serve the HTTP API: feedback and traces in (to Kafka), results out (from Redis).

    Needs TRACEWATCH_API_KEYS; feedback tokens need TRACEWATCH_FEEDBACK_SECRETS.

    Body and rate limits, CORS origins, the Kafka ack timeout and the header and body
    deadlines of slow clients: TRACEWATCH_API_*.
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings()
        options = ApiOptions()
        warnings = check_settings(settings)
    except (ConfigError, ValidationError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    bind_host = host or settings.api_host
    bind_port = settings.api_port if port is None else port
    common: dict[str, Any] = {
        "host": bind_host,
        "port": bind_port,
        "log_level": log_level.lower(),
        "access_log": access_log,
        "forwarded_allow_ips": forwarded_allow_ips,
        "proxy_headers": forwarded_allow_ips is not None,
        "ws": "none",
        # Slow clients: the header deadline is the protocol's (uvicorn has none); the body's
        # is the app's. With --workers each process reads TRACEWATCH_API_HEADER_TIMEOUT itself,
        # as it builds its app from the environment.
        "http": (
            HeaderDeadlineProtocol.with_header_timeout(settings.api_header_timeout)
            if workers == 1
            else HeaderDeadlineProtocol
        ),
    }
    typer.echo(f"tracewatch API on http://{bind_host}:{bind_port} ({workers} process(es))", err=True)
    if workers == 1:
        uvicorn.run(create_app(settings, options=options), **common)
    else:
        uvicorn.run("stream.cli._api:app_from_env", factory=True, workers=workers, **common)


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
