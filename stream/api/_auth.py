"""Who is calling the API, and how the API says no.

`Auth.identify` reads the credentials from the headers alone (no body needed), so the rate
limiter can key on them before anything else runs: an API key (`Authorization: Bearer`,
compared in constant time against every configured key), a feedback token
(`X-Feedback-Token`, signature and expiry checked here; the trace, name and value it is
bound to are checked by the handler once the body is parsed), or nothing (keyed by IP).

Every refusal is an `ApiError`, rendered by `install_error_handlers` in the one error shape
`{"error": code, "message": ...}`; so are FastAPI's validation errors (422, with `fields`
naming what is wrong), Starlette's 404/405 and any unexpected exception (500).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from hmac import compare_digest
from typing import Annotated, Final

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from sinks import SinkError, SinkUnavailableError
from stream._exceptions import (
    ApiError,
    FilterError,
    KafkaUnavailableError,
    PublishError,
    RegistryError,
    StreamError,
)
from stream.api._models import ApiOptions, FieldError, error_response
from stream.api._ratelimit import RateLimit
from stream.sdk._tokens import TokenClaims, TokenError, decode_feedback_token

__all__ = [
    "ApiError",
    "Auth",
    "Principal",
    "as_api_error",
    "http_status",
    "install_error_handlers",
    "require_key",
    "require_key_or_token",
    "token_refusal",
    "unavailable",
]

log = logging.getLogger("stream.api._app")

RETRY_AFTER: Final = "1"
_PRINCIPAL: Final = "tracewatch.principal"




def unavailable(code: str, message: str) -> ApiError:
    """A 503 that tells the client when to retry: a dependency is down, nothing was stored."""
    return ApiError(503, code, message, headers={"Retry-After": RETRY_AFTER})


@dataclass(slots=True, frozen=True)
class Principal:
    """The caller as its credentials describe it; `refusal` says why they are not accepted.

    `voter` is the source id of a token holder's votes: the user bound in the token, or an
    anonymous id derived from the token itself, so one token is one voter and a browser can
    neither vote in someone else's name nor stuff votes under made-up ids.
    """

    client: str
    key_id: str | None = None
    claims: TokenClaims | None = None
    voter: str | None = None
    refusal: ApiError | None = None


def _missing() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "missing credentials: send `Authorization: Bearer <api key>` (or `X-Feedback-Token` on POST /v1/feedback)",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _duplicate(header: str) -> ApiError:
    return ApiError(
        400,
        "duplicate_credentials",
        f"more than one {header} header: send credentials exactly once",
    )


_TOKEN_STATUS: Final = {
    "malformed": 401,
    "bad_signature": 401,
    "expired": 401,
    "wrong_trace": 403,
    "name_not_allowed": 403,
    "value_not_allowed": 403,
}


def token_refusal(exc: TokenError) -> ApiError:
    """The refusal of a token: 401 when it proves nothing, 403 when it does not cover this vote."""
    return ApiError(_TOKEN_STATUS[exc.reason], f"token_{exc.reason}", exc.message)


def as_api_error(exc: StreamError | SinkError) -> ApiError:
    """The HTTP refusal of an error of the tree that reached the API unconverted.

    `ApiError` is itself; `TokenError` is 401/403 (`token_refusal`); `FilterError` and
    `RegistryError` are 422 (the request is wrong); Kafka or store unavailable is 503 with
    `Retry-After` (nothing was stored); anything else is 500.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, TokenError):
        return token_refusal(exc)
    if isinstance(exc, (FilterError, RegistryError)):
        return ApiError(422, "invalid_request", str(exc))
    if isinstance(exc, (KafkaUnavailableError, PublishError, SinkUnavailableError)):
        return unavailable("unavailable", "a dependency did not answer; nothing was stored, retry later")
    return ApiError(500, "internal", "internal error; the event was not accepted")


def http_status(exc: StreamError | SinkError) -> int:
    """The HTTP status the API answers an error of the tree with (see `as_api_error`)."""
    return as_api_error(exc).status


class Auth:
    """Identifies callers from their headers alone, so the rate limit can run before the body."""

    def __init__(self, api_keys: Iterable[str], secrets: Iterable[str], options: ApiOptions) -> None:
        # Compare SHA-256 digests: equal lengths, so the comparison time says nothing about
        # the key's length either.
        digests = [hashlib.sha256(k.encode()) for k in api_keys]
        self._keys = [(d.digest(), d.hexdigest()[:12]) for d in digests]
        self.secrets = tuple(secrets)
        self._key_limit = RateLimit(options.key_rate_limit, options.key_rate_burst)
        self._public_limit = RateLimit(options.rate_limit, options.rate_burst)

    def key_id(self, presented: str) -> str | None:
        """The tag of the API key `presented` equals, checked against every key in constant time."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for key_digest, tag in self._keys:
            if compare_digest(digest, key_digest):
                found = tag
        return found

    def identify(self, scope: Scope) -> Principal:
        """Who the headers say the caller is.

        An `Authorization` header wins over `X-Feedback-Token` and must then be a valid key:
        a wrong key is refused, never passed over for the token. Either header sent twice is
        refused (400): which copy counts would otherwise be up to whoever reads the headers
        (here the last, in a proxy or a framework perhaps the first), so an invalid-then-valid
        pair must not pass.
        """
        auth = token = None
        auths = tokens = 0
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value
                auths += 1
            elif name == b"x-feedback-token":
                token = value
                tokens += 1
        client = scope.get("client")
        ip = f"ip:{client[0] if client else 'unknown'}"
        if auths > 1 or tokens > 1:
            header = "Authorization" if auths > 1 else "X-Feedback-Token"
            return Principal(ip, refusal=_duplicate(header))
        if auth is not None:
            scheme, _, presented = auth.decode("latin-1").partition(" ")
            tag = self.key_id(presented.strip()) if scheme.lower() == "bearer" else None
            if tag is not None:
                return Principal(f"key:{tag}", key_id=tag)
            return Principal(
                ip,
                refusal=ApiError(
                    401,
                    "invalid_api_key",
                    "the API key is not valid",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                ),
            )
        if token is not None:
            if not self.secrets:
                return Principal(
                    ip,
                    refusal=ApiError(
                        401,
                        "tokens_disabled",
                        "feedback tokens are disabled on this server (TRACEWATCH_FEEDBACK_SECRETS is empty)",
                    ),
                )
            try:
                claims = decode_feedback_token(token.decode("latin-1"), secrets=self.secrets)
            except TokenError as exc:
                return Principal(ip, refusal=token_refusal(exc))
            voter = claims.user_id or "anon-" + hashlib.blake2b(token, digest_size=8).hexdigest()
            bucket = hashlib.blake2b(f"{claims.trace_id}\0{voter}".encode(), digest_size=12).hexdigest()
            return Principal(f"tok:{bucket}", claims=claims, voter=voter)
        return Principal(ip, refusal=_missing())

    def classify(self, scope: Scope) -> tuple[str, RateLimit] | None:
        """The rate-limit key and limit of a `/v1` request; it also records who is calling."""
        if not scope["path"].startswith("/v1/"):
            return None
        principal = self.identify(scope)
        scope[_PRINCIPAL] = principal
        return principal.client, self._key_limit if principal.key_id else self._public_limit


def _principal(request: Request) -> Principal:
    principal: Principal | None = request.scope.get(_PRINCIPAL)
    if principal is None:  # the rate limiter did not run (an app mounted elsewhere): identify now
        auth: Auth = request.app.state.auth
        principal = auth.identify(request.scope)
    return principal


# Declared for the OpenAPI document (clients and fuzzers learn how to authenticate); the
# credentials themselves are read once, by `Auth.identify`, before the body.
_BEARER = HTTPBearer(auto_error=False, scheme_name="ApiKey", description="`Authorization: Bearer <api key>`")
_TOKEN = APIKeyHeader(
    name="X-Feedback-Token",
    auto_error=False,
    scheme_name="FeedbackToken",
    description="A feedback token minted for one trace (POST /v1/feedback only)",
)
_Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]
_Token = Annotated[str | None, Security(_TOKEN)]


async def require_key(request: Request, _bearer: _Bearer = None) -> Principal:
    """Dependency: the caller holds an API key (async: a sync dependency costs a thread hop)."""
    principal = _principal(request)
    if principal.key_id is not None:
        return principal
    if principal.claims is not None:
        raise ApiError(403, "api_key_required", "feedback tokens only allow POST /v1/feedback; this needs an API key")
    raise principal.refusal or _missing()


async def require_key_or_token(request: Request, _bearer: _Bearer = None, _token: _Token = None) -> Principal:
    """Dependency: the caller holds an API key or a valid feedback token (bound in the handler)."""
    principal = _principal(request)
    if principal.key_id is None and principal.claims is None:
        raise principal.refusal or _missing()
    return principal




def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header") and len(loc) > 1:
            loc = loc[1:]
        message = str(err.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        ctx = err.get("ctx") or {}
        if err.get("type") == "json_invalid" and "error" in ctx:
            loc, message = ["body"], f"not valid JSON: {ctx['error']}"
        out.append(FieldError(field=".".join(loc) or "body", message=message, type=str(err.get("type", ""))))
    return out


_HTTP_CODES: Final = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, whoever raises it, as `{"error": code, "message": ...}`."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers, reason=exc.reason)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        fields = _field_errors(exc)
        message = "; ".join(f"{f.field}: {f.message}" for f in fields)
        return error_response(422, "invalid_request", message, fields=fields)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    async def stream_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, (StreamError, SinkError))
        refusal = as_api_error(exc)
        if refusal.status >= 500 and refusal.status != 503:
            log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        else:
            log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return await api_error(request, refusal)

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal error; the event was not accepted")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StreamError, stream_error)
    app.add_exception_handler(SinkError, stream_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
