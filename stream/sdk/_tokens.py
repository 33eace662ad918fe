"""Feedback tokens: stateless, signed permission for one browser to vote on one trace.

The app's backend mints a token when it renders an answer and hands it to the page; the page
sends it back in `X-Feedback-Token` with the vote. The API needs no session store: the token
itself says which trace it is for, which feedback names and values it allows, which user (if
any) casts the vote, and when it expires, and an HMAC-SHA256 signature proves the app's
backend wrote it.

Format: `<payload>.<signature>`, both base64url without padding. The payload is compact JSON
`{"v":1,"tid":...,"names":[...],"values":[...]|null,"uid":...|null,"exp":<unix s>,"kid":...}`;
the signature is HMAC-SHA256 over the payload's base64url text under a domain prefix, so the
bytes that were signed are exactly the bytes that travel and nothing is decoded before the
signature is checked. `kid` names the signing secret (a one-way tag of it) for operators.

Rotation: `TRACEWATCH_FEEDBACK_SECRETS=new,old` signs with `new` and accepts both, so tokens
already in browsers keep working until they expire; drop `old` an hour (one TTL) later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from hmac import compare_digest
from typing import Any, Final

import orjson

from stream._exceptions import TokenError, TokenReason

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "MAX_TOKEN_CHARS",
    "TokenClaims",
    "TokenError",
    "TokenReason",
    "decode_feedback_token",
    "mint_feedback_token",
    "secret_kid",
    "verify_feedback_token",
]

DEFAULT_TOKEN_TTL: Final = 3600.0
"""Seconds a token lives unless the minter says otherwise: long enough to read an answer."""

MAX_TOKEN_CHARS: Final = 4096
"""Longer tokens are refused unread: they could only be an attempt to make us hash megabytes."""


_VERSION: Final = 1
_DOMAIN: Final = b"tracewatch.feedback-token.v1."
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")




@dataclass(slots=True, frozen=True)
class TokenClaims:
    """What a verified token allows.

    Attributes:
        trace_id: The only trace it may vote on.
        names: Feedback names it may set.
        values: Values it may set (compared as canonical JSON, so `true` is not `1`), or None
            for any value.
        user_id: The voter, when the minter bound one; the API then uses it as the source id.
        expires_at: Unix seconds after which it is refused.
        kid: Tag of the secret that signed it (see `secret_kid`).
    """

    trace_id: str
    names: tuple[str, ...]
    values: tuple[Any, ...] | None
    user_id: str | None
    expires_at: int
    kid: str

    def check(self, trace_id: str, name: str, value: Any) -> None:
        """Check that this token covers a vote of `value` for `name` on `trace_id`.

        Raises:
            TokenError: `wrong_trace`, `name_not_allowed` or `value_not_allowed`.
        """
        if not compare_digest(self.trace_id.encode(), trace_id.encode()):
            raise TokenError("wrong_trace", "the token was issued for another trace")
        if name not in self.names:
            raise TokenError("name_not_allowed", f"the token does not allow feedback named {name!r}")
        if self.values is not None:
            wanted = _canonical(value)
            if not any(_canonical(v) == wanted for v in self.values):
                raise TokenError("value_not_allowed", f"the token does not allow the value {value!r}")


def secret_kid(secret: str) -> str:
    """A short public tag of a secret (HMAC of a constant), naming it without revealing it."""
    return hmac.new(secret.encode(), b"tracewatch.kid", hashlib.sha256).hexdigest()[:8]


def mint_feedback_token(
    trace_id: str,
    *,
    secret: str,
    names: Sequence[str] = ("user_satisfaction",),
    values: Sequence[Any] | None = None,
    user_id: str | None = None,
    ttl_s: float = DEFAULT_TOKEN_TTL,
    now: float | None = None,
) -> str:
    """Mint a token allowing feedback on one trace, safe to hand to a browser.

    Args:
        trace_id: The trace the votes are for.
        secret: The signing secret (the first of `TRACEWATCH_FEEDBACK_SECRETS`).
        names: Feedback names the holder may set (at least one).
        values: Values the holder may set (e.g. `[True, False]`); None allows any value.
        user_id: Bind the vote to this user: the API records it as the source id, whatever
            the request body says, so one user cannot vote in another's name.
        ttl_s: Lifetime in seconds.
        now: The current Unix time (for tests); the wall clock by default.

    Raises:
        ValueError: Empty secret, trace id or names, a non-positive `ttl_s`, values that are not
            JSON, or a token that would be longer than `MAX_TOKEN_CHARS`.

    Example:
        >>> tok = mint_feedback_token("tr-1", secret="s3cret", values=[True, False], user_id="u-7")
    """
    if not secret:
        raise ValueError("secret must not be empty")
    if not trace_id:
        raise ValueError("trace_id must not be empty")
    if isinstance(names, str) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError("names must be a non-empty sequence of non-empty strings")
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s!r}")
    exp = int((time.time() if now is None else now) + ttl_s)
    payload = {
        "v": _VERSION,
        "tid": trace_id,
        "names": list(names),
        "values": None if values is None else list(values),
        "uid": user_id,
        "exp": exp,
        "kid": secret_kid(secret),
    }
    try:
        body = _b64(orjson.dumps(payload))
    except TypeError as exc:
        raise ValueError(f"names, values and user_id must be JSON: {exc}") from None
    token = f"{body}.{_signature(secret, body)}"
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(
            f"the token would be {len(token)} characters, over {MAX_TOKEN_CHARS}: allow fewer or shorter values"
        )
    return token


def decode_feedback_token(token: str, *, secrets: Sequence[str], now: float | None = None) -> TokenClaims:
    """Check a token's form, signature and expiry, and return its claims.

    This is the part of verification that needs no request body: the API uses it to key
    rate limits by token before reading the body, then `TokenClaims.check` binds the vote.

    Raises:
        TokenError: `malformed`, `bad_signature` or `expired`.
        ValueError: No secrets are configured.
    """
    if not secrets:
        raise ValueError("no feedback secrets configured")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise TokenError("malformed", "not a feedback token")
    body, dot, sig = token.partition(".")
    if not dot or not _B64URL.fullmatch(body) or not _B64URL.fullmatch(sig):
        raise TokenError("malformed", "not a feedback token")
    # Check every secret, without stopping at the first match, so timing says nothing about
    # which one signed (or how close a forgery came).
    valid = False
    for secret in secrets:
        valid |= compare_digest(_signature(secret, body), sig)
    if not valid:
        raise TokenError("bad_signature", "the token's signature does not match")
    claims = _claims(body)
    if (time.time() if now is None else now) >= claims.expires_at:
        raise TokenError("expired", "the token has expired; ask the app for a new one")
    return claims


def verify_feedback_token(
    token: str, *, secrets: Sequence[str], trace_id: str, name: str, value: Any, now: float | None = None
) -> TokenClaims:
    """Verify that a token allows a vote of `value` for `name` on `trace_id`.

    Raises:
        TokenError: with reason `malformed`, `bad_signature`, `expired`, `wrong_trace`,
            `name_not_allowed` or `value_not_allowed`, checked in that order.
        ValueError: No secrets are configured.
    """
    claims = decode_feedback_token(token, secrets=secrets, now=now)
    claims.check(trace_id, name, value)
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signature(secret: str, body: str) -> str:
    return _b64(hmac.new(secret.encode(), _DOMAIN + body.encode(), hashlib.sha256).digest())


def _canonical(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return repr(value).encode()  # not JSON: cannot equal anything a token allows


def _claims(body: str) -> TokenClaims:
    """Parse a payload whose signature already checked out (so it is ours, but be strict)."""
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        d = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise TokenError("malformed", "the token's payload is not JSON") from None
    if not isinstance(d, dict) or d.get("v") != _VERSION:
        raise TokenError("malformed", "unknown token version")
    tid, names, values, uid, exp, kid = (d.get(k) for k in ("tid", "names", "values", "uid", "exp", "kid"))
    if (
        not isinstance(tid, str)
        or not isinstance(names, list)
        or not all(isinstance(n, str) for n in names)
        or not (values is None or isinstance(values, list))
        or not (uid is None or isinstance(uid, str))
        or not isinstance(exp, int)
        or isinstance(exp, bool)
    ):
        raise TokenError("malformed", "the token's payload lacks a field or has one of the wrong type")
    return TokenClaims(
        trace_id=tid,
        names=tuple(names),
        values=None if values is None else tuple(values),
        user_id=uid,
        expires_at=exp,
        kid=str(kid or ""),
    )
