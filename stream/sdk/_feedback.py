"""App-side helpers: record feedback and expectations through the HTTP API, mint tokens.

Named after MLflow's `mlflow.log_feedback` / `mlflow.log_expectation`, so moving an app's
feedback from MLflow to tracewatch is a change of import. Each call returns only once the API
answered 202, which it does only after Kafka acknowledged the event; anything else raises
`FeedbackError` with the server's message, so a vote is never lost silently.

Configuration, when not passed: the API's URL (`TRACEWATCH_API_URL`, else
the `TRACEWATCH_API_HOST`/`TRACEWATCH_API_PORT` the API itself binds to, else
`http://127.0.0.1:8080`), the first of `TRACEWATCH_API_KEYS`, and the first of
`TRACEWATCH_FEEDBACK_SECRETS` for minting.

Example (server side, with an API key)::

    from stream import log_feedback
    log_feedback("tr-…", value=True, rationale="clear answer", source_id="user-7")

Example (browser side): the backend mints `mint_feedback_token(trace_id, user_id=...)` and
the page POSTs `/v1/feedback` with the header `X-Feedback-Token: <token>`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Final

import httpx

from stream._exceptions import ConfigError, FeedbackError
from stream.sdk._tokens import DEFAULT_TOKEN_TTL
from stream.sdk._tokens import mint_feedback_token as _mint

__all__ = [
    "DEFAULT_API_URL",
    "FeedbackError",
    "FeedbackReceipt",
    "alog_expectation",
    "alog_feedback",
    "log_expectation",
    "log_feedback",
    "mint_feedback_token",
]

DEFAULT_API_URL: Final = "http://127.0.0.1:8080"
_DEFAULT_TIMEOUT: Final = 10.0




@dataclass(slots=True, frozen=True)
class FeedbackReceipt:
    """What the API answered: the event id on the feedback topic, and the trace."""

    event_id: str
    trace_id: str


# An API bound to every address is reached on loopback.
_ANY_ADDRESS: Final = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def _default_api_url() -> str:
    """The API's base URL when none is passed: where `tracewatch api` listens with this environment.

    `TRACEWATCH_API_URL` when set (an API behind a proxy or on another machine); else
    `http://{TRACEWATCH_API_HOST}:{TRACEWATCH_API_PORT}` with the API's own defaults
    (`127.0.0.1`, `8080`), an API bound to all addresses (`0.0.0.0`, `::`) reached on loopback.
    Read from the environment on each call, like the API key.

    Raises:
        ConfigError: `TRACEWATCH_API_PORT` is not a port number.
    """
    url = os.environ.get("TRACEWATCH_API_URL", "").strip()
    if url:
        return url
    host = os.environ.get("TRACEWATCH_API_HOST", "").strip()
    host = _ANY_ADDRESS.get(host, host)
    raw_port = os.environ.get("TRACEWATCH_API_PORT", "").strip()
    if not host and not raw_port:
        return DEFAULT_API_URL
    try:
        port = int(raw_port) if raw_port else 8080
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ConfigError(f"TRACEWATCH_API_PORT={raw_port}: must be a port number (1-65535)")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _first(env: str) -> str | None:
    parts = [p.strip() for p in os.environ.get(env, "").split(",") if p.strip()]
    return parts[0] if parts else None


def _source(source: Any, source_type: str, source_id: str | None) -> dict[str, Any]:
    """MLflow's `AssessmentSource` (or a mapping) wins over the plain arguments."""
    if source is not None:
        if isinstance(source, Mapping):
            source_type = source.get("source_type", source.get("type", source_type))
            source_id = source.get("source_id", source.get("id", source_id))
        else:
            source_type = getattr(source, "source_type", source_type)
            source_id = getattr(source, "source_id", source_id)
    out: dict[str, Any] = {"type": str(source_type)}
    if source_id is not None:
        out["id"] = str(source_id)
    return out


@dataclass(slots=True, frozen=True)
class _Request:
    """One POST to the API, built once for the sync and the async senders alike."""

    url: str
    headers: dict[str, str]
    json: dict[str, Any]


# log_feedback's value has a default, so a missing vote says what a vote may be.
_VOTE_KINDS: Final = " (a boolean, number, string, list or object)"


def _body(
    trace_id: str,
    name: str,
    value: Any,
    metadata: Mapping[str, Any] | None,
    source: dict[str, Any],
    *,
    rationale: str | None = None,
    value_kinds: str = "",
) -> dict[str, Any]:
    """An event's JSON body (feedback or expectation; `_request` drops the None fields)."""
    if value is None:
        raise ValueError(f"value is required{value_kinds}")
    return {
        "trace_id": trace_id,
        "name": name,
        "value": value,
        "rationale": rationale,
        "source": source,
        "metadata": dict(metadata) if metadata is not None else None,
    }


def _request(
    path: str,
    body: dict[str, Any],
    *,
    base_url: str | None,
    api_key: str | None,
    token: str | None,
    client: httpx.Client | httpx.AsyncClient | None,
) -> _Request:
    """URL, headers and JSON body of one call, with the env defaults filled in.

    A client with a base URL of its own gets a relative URL, so that base URL applies.

    Raises:
        FeedbackError: No token, API key or `TRACEWATCH_API_KEYS` to authenticate with.
    """
    if base_url is None and not (client is not None and str(client.base_url)):
        base_url = _default_api_url()
    url = f"{base_url.rstrip('/')}{path}" if base_url is not None else path
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["X-Feedback-Token"] = token
    else:
        key = api_key or _first("TRACEWATCH_API_KEYS")
        if key is None:
            raise FeedbackError(
                "no credentials: pass api_key= (or set TRACEWATCH_API_KEYS) on the server side, "
                "or token= from mint_feedback_token in the browser",
                code="no_credentials",
            )
        headers["Authorization"] = f"Bearer {key}"
    return _Request(url, headers, {k: v for k, v in body.items() if v is not None})


@contextmanager
def _reaching(url: str) -> Iterator[None]:
    """Turn httpx's transport errors into `FeedbackError`: the event was not recorded."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise FeedbackError(f"cannot reach the tracewatch API at {url}: {type(exc).__name__}: {exc}") from exc


def _receipt(response: httpx.Response) -> FeedbackReceipt:
    """The receipt of a 202, or `FeedbackError` carrying the server's own explanation."""
    if response.status_code == 202:
        data = response.json()
        return FeedbackReceipt(event_id=str(data["event_id"]), trace_id=str(data["trace_id"]))
    code: str | None = None
    try:
        data = response.json()
        message = str(data.get("message") or data)
        code = data.get("error")
    except ValueError:
        message = response.text[:500] or response.reason_phrase
    retry = response.headers.get("Retry-After")
    try:
        retry_after = float(retry) if retry is not None else None
    except ValueError:
        retry_after = None
    raise FeedbackError(
        f"tracewatch API answered {response.status_code}: {message}",
        status=response.status_code,
        code=code,
        retry_after=retry_after,
    )


def _send(request: _Request, client: httpx.Client | None, timeout: float) -> FeedbackReceipt:
    # A caller's client is only borrowed (never closed here); without one, a client per call.
    http = nullcontext(client) if client is not None else httpx.Client(timeout=timeout)
    with _reaching(request.url), http as c:
        response = c.post(request.url, json=request.json, headers=request.headers)
    return _receipt(response)


async def _asend(request: _Request, client: httpx.AsyncClient | None) -> FeedbackReceipt:
    http = nullcontext(client) if client is not None else httpx.AsyncClient(timeout=_DEFAULT_TIMEOUT)
    with _reaching(request.url):
        async with http as c:
            response = await c.post(request.url, json=request.json, headers=request.headers)
    return _receipt(response)


def log_feedback(
    trace_id: str,
    name: str = "user_satisfaction",
    value: Any = None,
    rationale: str | None = None,
    source_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    source: Any = None,
    source_type: str = "HUMAN",
    base_url: str | None = None,
    api_key: str | None = None,
    token: str | None = None,
    client: httpx.Client | None = None,
    timeout: float = _DEFAULT_TIMEOUT,
) -> FeedbackReceipt:
    """Record one vote on a trace; returns once Kafka has it (the API answered 202).

    Args:
        trace_id: The trace voted on.
        name: The feedback name (`user_satisfaction` by default).
        value: The vote: a boolean (thumbs), number, string, list of those, or object.
        rationale: Why, in the user's words.
        source_id: Who voted; a new vote of the same (trace, name, source) replaces the old.
        metadata: Free-form JSON kept with the vote.
        source: An MLflow `AssessmentSource` (or `{"source_type", "source_id"}`), overriding
            `source_type`/`source_id`.
        source_type: `HUMAN`, `LLM_JUDGE` or `CODE`.
        base_url: The API; by default `TRACEWATCH_API_URL`, else
            `TRACEWATCH_API_HOST`/`TRACEWATCH_API_PORT`, else `http://127.0.0.1:8080`; or
            the `client`'s base URL.
        api_key: Server-side credential; the first of `TRACEWATCH_API_KEYS` by default.
        token: A feedback token instead of an API key (its bound user becomes the source).
        client: An `httpx.Client` to reuse (its own timeout applies); one per call otherwise.
        timeout: Seconds for the whole call when no client is given.

    Raises:
        FeedbackError: The API refused the vote or could not be reached; it was not recorded.
        ValueError: `value` is missing.
    """
    origin = _source(source, source_type, source_id)
    body = _body(trace_id, name, value, metadata, origin, rationale=rationale, value_kinds=_VOTE_KINDS)
    request = _request("/v1/feedback", body, base_url=base_url, api_key=api_key, token=token, client=client)
    return _send(request, client, timeout)


async def alog_feedback(
    trace_id: str,
    name: str = "user_satisfaction",
    value: Any = None,
    rationale: str | None = None,
    source_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    source: Any = None,
    source_type: str = "HUMAN",
    base_url: str | None = None,
    api_key: str | None = None,
    token: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> FeedbackReceipt:
    """`log_feedback` for async code (pass a shared `httpx.AsyncClient` for volume).

    Without a client, each call gets 10 s; bound it otherwise with `asyncio.timeout`.
    """
    origin = _source(source, source_type, source_id)
    body = _body(trace_id, name, value, metadata, origin, rationale=rationale, value_kinds=_VOTE_KINDS)
    request = _request("/v1/feedback", body, base_url=base_url, api_key=api_key, token=token, client=client)
    return await _asend(request, client)


def log_expectation(
    trace_id: str,
    name: str,
    value: Any,
    source_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    source: Any = None,
    source_type: str = "HUMAN",
    base_url: str | None = None,
    api_key: str | None = None,
    client: httpx.Client | None = None,
    timeout: float = _DEFAULT_TIMEOUT,
) -> FeedbackReceipt:
    """Record ground truth for a trace (needs an API key); returns once Kafka has it.

    Raises:
        FeedbackError: The API refused it or could not be reached; it was not recorded.
        ValueError: `value` is None.
    """
    body = _body(trace_id, name, value, metadata, _source(source, source_type, source_id))
    request = _request("/v1/expectations", body, base_url=base_url, api_key=api_key, token=None, client=client)
    return _send(request, client, timeout)


async def alog_expectation(
    trace_id: str,
    name: str,
    value: Any,
    source_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    source: Any = None,
    source_type: str = "HUMAN",
    base_url: str | None = None,
    api_key: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> FeedbackReceipt:
    """`log_expectation` for async code."""
    body = _body(trace_id, name, value, metadata, _source(source, source_type, source_id))
    request = _request("/v1/expectations", body, base_url=base_url, api_key=api_key, token=None, client=client)
    return await _asend(request, client)


def mint_feedback_token(
    trace_id: str,
    *,
    secret: str | None = None,
    names: Sequence[str] = ("user_satisfaction",),
    values: Sequence[Any] | None = None,
    user_id: str | None = None,
    ttl_s: float = DEFAULT_TOKEN_TTL,
) -> str:
    """Mint a feedback token for the page that shows this trace's answer (see `stream.sdk._tokens`).

    The secret defaults to the first of `TRACEWATCH_FEEDBACK_SECRETS`: the app and the API
    share it, so the app mints locally without a network call.

    Raises:
        ConfigError: No secret given and none in the environment.
        ValueError: The claims are invalid (see `stream.sdk._tokens.mint_feedback_token`).
    """
    secret = secret or _first("TRACEWATCH_FEEDBACK_SECRETS")
    if not secret:
        raise ConfigError("no feedback secret: pass secret= or set TRACEWATCH_FEEDBACK_SECRETS")
    return _mint(trace_id, secret=secret, names=names, values=values, user_id=user_id, ttl_s=ttl_s)
