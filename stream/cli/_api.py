"""`tracewatch api`: serve the HTTP API with uvicorn.

The command refuses to start without API keys: an API nobody can call is a misconfiguration,
and one anybody can call would accept forged traces and votes. Without feedback secrets it
starts (server-side feedback with an API key still works) and says that tokens are off.

FastAPI and uvicorn load when the command runs (`tracewatch --help` stays light);
`ApiServer`, `app_from_env` and `check_settings` live in `_api_server` and are reachable
from here as before.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from stream._config import config_error
from stream._exceptions import ConfigError
from stream.cli._common import API_USES, fail, settings_for

__all__ = ["api_command"]


def __getattr__(name: str) -> Any:
    if name in ("ApiServer", "app_from_env", "check_settings"):
        from stream.cli import _api_server

        return getattr(_api_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def api_command(
    host: Annotated[str | None, typer.Option(help="Address to bind [env TRACEWATCH_API_HOST: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [env TRACEWATCH_API_PORT: 8080]")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes to run; each keeps its own rate-limit buckets.")] = 1,
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
    settings = settings_for(API_USES, api_host=("--host", host), api_port=("--port", port))
    from pydantic import ValidationError

    from stream.api._models import ApiOptions

    try:
        options = ApiOptions()
    except ValidationError as exc:
        fail(str(config_error(exc, ApiOptions)), 2)
    import uvicorn

    from stream.api._app import create_app
    from stream.api._deadline import HeaderDeadlineProtocol
    from stream.cli._api_server import check_settings

    try:
        warnings = check_settings(settings)
    except ConfigError as exc:
        fail(f"error: {exc}", 2)
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    bind_host, bind_port = settings.api_host, settings.api_port
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
        uvicorn.run("stream.cli._api_server:app_from_env", factory=True, workers=workers, **common)
