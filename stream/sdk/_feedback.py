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
    log_feedback(trace_id="tr-…", name="helpful", value=True, rationale="clear answer", source_id="user-7")

Example (browser side): the backend mints `mint_feedback_token(trace_id, user_id=...)` and
the page POSTs `/v1/feedback` with the header `X-Feedback-Token: <token>`.
"""

from __future__ import annotations

import os
import traceback
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
    "DEFAULT_FEEDBACK_NAME",
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


class _DefaultName(str):
    """MLflow's default feedback name, told apart from the same name passed on purpose."""

    __slots__ = ()


DEFAULT_FEEDBACK_NAME: Final = _DefaultName("feedback")
"""`mlflow.entities.assessment.DEFAULT_FEEDBACK_NAME`: `log_feedback`'s name when none is given."""


def _source(
    source: Any,
    source_type: str | None,
    source_id: str | None,
    *,
    token: str | None = None,
    default_type: str = "CODE",
) -> dict[str, Any]:
    """The event's source: MLflow's `AssessmentSource` (or a mapping) wins over the plain arguments.

    Without either, MLflow's default: `CODE`/`default` for feedback, `HUMAN`/`default` for an
    expectation. Two tracewatch extras differ on purpose: a feedback token is a person's vote
    (HUMAN, the user the token binds: the API refuses any other), and `source_id=` alone names
    a person who voted (HUMAN).
    """
    if source is not None:
        if isinstance(source, Mapping):
            source_type = source.get("source_type", source.get("type", source_type))
            source_id = source.get("source_id", source.get("id", source_id))
        else:
            source_type = getattr(source, "source_type", source_type)
            source_id = getattr(source, "source_id", source_id)
        source_type = source_type or default_type
    elif token is not None:
        source_type = source_type or "HUMAN"
    elif source_type is None and source_id is not None:
        source_type = "HUMAN"
    elif source_type is None:
        source_type, source_id = default_type, "default"
    out: dict[str, Any] = {"type": str(source_type)}
    if source_id is not None:
        out["id"] = str(source_id)
    return out


def _stack_trace(exc: BaseException) -> str:
    """As MLflow stores it (and `scorers` does): the exception's repr, then its traceback."""
    try:
        return (repr(exc) + "".join(traceback.format_exception(exc))).strip()
    except Exception:  # formatting a hostile exception must not lose the feedback
        return repr(exc)


def _error(error: Any) -> dict[str, Any] | None:
    """`log_feedback`'s `error` as the API takes it, converted as MLflow's `Feedback` does.

    An exception gives its class name as the code, `str(exc)` and its stack trace; a string
    gives `ASSESSMENT_ERROR`; an `AssessmentError` (ours, MLflow's or a mapping) is copied.

    Raises:
        TypeError: anything else (MLflow raises too).
    """
    if error is None:
        return None
    if isinstance(error, BaseException):
        return {
            "error_code": type(error).__name__,
            "error_message": str(error),
            "stack_trace": _stack_trace(error),
        }
    if isinstance(error, str):
        return {"error_code": "ASSESSMENT_ERROR", "error_message": error}
    if isinstance(error, Mapping):
        code, message, stack = error.get("error_code"), error.get("error_message"), error.get("stack_trace")
    elif hasattr(error, "error_code"):
        code = error.error_code
        message = getattr(error, "error_message", None)
        stack = getattr(error, "stack_trace", None)
    else:
        raise TypeError(f"'error' must be an Exception, AssessmentError, or string. Got: {type(error)}")
    out = {"error_code": str(code), "error_message": message, "stack_trace": stack}
    return {k: v for k, v in out.items() if v is not None}


@dataclass(slots=True, frozen=True)
class _Request:
    """One POST to the API, built once for the sync and the async senders alike."""

    url: str
    headers: dict[str, str]
    json: dict[str, Any]


# log_feedback's value has a default, so a missing vote says what a vote may be.
_VOTE_KINDS: Final = " (a boolean, number, string, list or object), or an error"


def _body(
    trace_id: str,
    name: str | None,
    value: Any,
    metadata: Mapping[str, Any] | None,
    source: dict[str, Any],
    *,
    rationale: str | None = None,
    error: dict[str, Any] | None = None,
    span_id: str | None = None,
    value_kinds: str = "",
) -> dict[str, Any]:
    """An event's JSON body (feedback or expectation; `_request` drops the None fields)."""
    if value is None and error is None:
        raise ValueError(f"value is required{value_kinds}")
    return {
        "trace_id": trace_id,
        "name": name,
        "value": value,
        "error": error,
        "rationale": rationale,
        "source": source,
        "metadata": dict(metadata) if metadata is not None else None,
        "span_id": span_id,
    }


def _feedback_request(
    trace_id: str,
    name: str,
    value: Any,
    source: Any,
    error: Any,
    rationale: str | None,
    metadata: Mapping[str, Any] | None,
    span_id: str | None,
    *,
    source_id: str | None,
    source_type: str | None,
    base_url: str | None,
    api_key: str | None,
    token: str | None,
    client: httpx.Client | httpx.AsyncClient | None,
) -> _Request:
    origin = _source(source, source_type, source_id, token=token)
    # With a token and no name of the caller's, the API's default applies: the name the
    # token was minted for by default (`user_satisfaction`), not MLflow's "feedback".
    sent_name = None if token is not None and name is DEFAULT_FEEDBACK_NAME else str(name)
    body = _body(
        trace_id,
        sent_name,
        value,
        metadata,
        origin,
        rationale=rationale,
        error=_error(error),
        span_id=span_id,
        value_kinds=_VOTE_KINDS,
    )
    return _request("/v1/feedback", body, base_url=base_url, api_key=api_key, token=token, client=client)


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
    name: str = DEFAULT_FEEDBACK_NAME,
    value: Any = None,
    source: Any = None,
    error: BaseException | Any = None,
    rationale: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    span_id: str | None = None,
    *,
    source_id: str | None = None,
    source_type: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    token: str | None = None,
    client: httpx.Client | None = None,
    timeout: float = _DEFAULT_TIMEOUT,
) -> FeedbackReceipt:
    """Record feedback on a trace, as `mlflow.log_feedback`; returns once Kafka has it (202).

    The first eight parameters are MLflow's, with its defaults (MLflow takes them by keyword
    only; so does any code moved from it). The rest are tracewatch's.

    Args:
        trace_id: The trace the feedback is about.
        name: The feedback name; `"feedback"` by default, as in MLflow (with a `token` and no
            name, the API's default `user_satisfaction`, the name tokens are minted for).
        value: A boolean (thumbs), number, string, list of those, or object. Either this or
            `error` is required.
        source: An MLflow `AssessmentSource` (or `{"source_type", "source_id"}`). Default as
            MLflow: `CODE`/`default`; `HUMAN` with a `token` or a `source_id`.
        error: Why there is no value: an exception (code = its class name, with its stack
            trace), an `AssessmentError` (ours or MLflow's) or a string (`ASSESSMENT_ERROR`).
        rationale: Why, in the voter's words.
        metadata: Free-form JSON kept with the feedback.
        span_id: The span the feedback is about (hex, as MLflow shows span ids).
        source_id: Who voted, without building an `AssessmentSource` (`HUMAN`); a new vote of
            the same (trace, name, source) replaces the old.
        source_type: `HUMAN`, `LLM_JUDGE` or `CODE`, with `source_id`.
        base_url: The API; by default `TRACEWATCH_API_URL`, else
            `TRACEWATCH_API_HOST`/`TRACEWATCH_API_PORT`, else `http://127.0.0.1:8080`; or
            the `client`'s base URL.
        api_key: Server-side credential; the first of `TRACEWATCH_API_KEYS` by default.
        token: A feedback token instead of an API key (its bound user becomes the source).
        client: An `httpx.Client` to reuse (its own timeout applies); one per call otherwise.
        timeout: Seconds for the whole call when no client is given.

    Raises:
        FeedbackError: The API refused the feedback or could not be reached; it was not recorded.
        ValueError: neither `value` nor `error` is given.
        TypeError: `error` is not an exception, `AssessmentError` or string.
    """
    request = _feedback_request(
        trace_id, name, value, source, error, rationale, metadata, span_id,
        source_id=source_id, source_type=source_type, base_url=base_url, api_key=api_key, token=token, client=client,
    )  # fmt: skip
    return _send(request, client, timeout)


async def alog_feedback(
    trace_id: str,
    name: str = DEFAULT_FEEDBACK_NAME,
    value: Any = None,
    source: Any = None,
    error: BaseException | Any = None,
    rationale: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    span_id: str | None = None,
    *,
    source_id: str | None = None,
    source_type: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    token: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> FeedbackReceipt:
    """`log_feedback` for async code (pass a shared `httpx.AsyncClient` for volume).

    Without a client, each call gets 10 s; bound it otherwise with `asyncio.timeout`.
    """
    request = _feedback_request(
        trace_id, name, value, source, error, rationale, metadata, span_id,
        source_id=source_id, source_type=source_type, base_url=base_url, api_key=api_key, token=token, client=client,
    )  # fmt: skip
    return await _asend(request, client)


def _expectation_request(
    trace_id: str,
    name: str,
    value: Any,
    source: Any,
    metadata: Mapping[str, Any] | None,
    span_id: str | None,
    *,
    source_id: str | None,
    source_type: str | None,
    base_url: str | None,
    api_key: str | None,
    client: httpx.Client | httpx.AsyncClient | None,
) -> _Request:
    origin = _source(source, source_type, source_id, default_type="HUMAN")
    body = _body(trace_id, name, value, metadata, origin, span_id=span_id)
    return _request("/v1/expectations", body, base_url=base_url, api_key=api_key, token=None, client=client)


def log_expectation(
    trace_id: str,
    name: str,
    value: Any,
    source: Any = None,
    metadata: Mapping[str, Any] | None = None,
    span_id: str | None = None,
    *,
    source_id: str | None = None,
    source_type: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    client: httpx.Client | None = None,
    timeout: float = _DEFAULT_TIMEOUT,
) -> FeedbackReceipt:
    """Record ground truth for a trace, as `mlflow.log_expectation` (needs an API key).

    MLflow's parameters and defaults (source `HUMAN`/`default`), then tracewatch's, as in
    `log_feedback`. Returns once Kafka has it.

    Raises:
        FeedbackError: The API refused it or could not be reached; it was not recorded.
        ValueError: `value` is None.
    """
    request = _expectation_request(
        trace_id, name, value, source, metadata, span_id,
        source_id=source_id, source_type=source_type, base_url=base_url, api_key=api_key, client=client,
    )  # fmt: skip
    return _send(request, client, timeout)


async def alog_expectation(
    trace_id: str,
    name: str,
    value: Any,
    source: Any = None,
    metadata: Mapping[str, Any] | None = None,
    span_id: str | None = None,
    *,
    source_id: str | None = None,
    source_type: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> FeedbackReceipt:
    """`log_expectation` for async code."""
    request = _expectation_request(
        trace_id, name, value, source, metadata, span_id,
        source_id=source_id, source_type=source_type, base_url=base_url, api_key=api_key, client=client,
    )  # fmt: skip
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
