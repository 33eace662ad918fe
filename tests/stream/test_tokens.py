"""Feedback tokens: every refusal reason, rotation, and constant-time comparison."""

from __future__ import annotations

import base64
import hmac

import orjson
import pytest

import stream.sdk._tokens as tokens
from stream.sdk._tokens import (
    MAX_TOKEN_CHARS,
    TokenError,
    decode_feedback_token,
    mint_feedback_token,
    secret_kid,
    verify_feedback_token,
)

NOW = 1_800_000_000.0
SECRET = "s3cret-new"
OLD = "s3cret-old"


def mint(**kw):
    kw.setdefault("secret", SECRET)
    kw.setdefault("now", NOW)
    return mint_feedback_token(kw.pop("trace_id", "tr-a"), **kw)


def verify(token, **kw):
    kw.setdefault("secrets", [SECRET])
    kw.setdefault("trace_id", "tr-a")
    kw.setdefault("name", "user_satisfaction")
    kw.setdefault("value", True)
    kw.setdefault("now", NOW + 10)
    return verify_feedback_token(token, **kw)


def reason_of(token, **kw) -> str:
    with pytest.raises(TokenError) as info:
        verify(token, **kw)
    return info.value.reason


def test_roundtrip_returns_the_claims() -> None:
    token = mint(values=[True, False], user_id="u-7", ttl_s=60)
    claims = verify(token)
    assert claims.trace_id == "tr-a"
    assert claims.names == ("user_satisfaction",)
    assert claims.values == (True, False)
    assert claims.user_id == "u-7"
    assert claims.expires_at == int(NOW + 60)
    assert claims.kid == secret_kid(SECRET)


def test_format_is_compact_json_payload_dot_signature() -> None:
    token = mint(user_id="u-7")
    body, sig = token.split(".")
    payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert payload == {
        "v": 1,
        "tid": "tr-a",
        "names": ["user_satisfaction"],
        "values": None,
        "uid": "u-7",
        "exp": int(NOW + 3600),
        "kid": secret_kid(SECRET),
    }
    assert "=" not in token and len(base64.urlsafe_b64decode(sig + "=")) == 32  # HMAC-SHA256


def test_default_ttl_is_one_hour() -> None:
    token = mint()
    assert verify(token, now=NOW + 3599).expires_at == int(NOW + 3600)
    assert reason_of(token, now=NOW + 3600) == "expired"


def test_expired() -> None:
    assert reason_of(mint(ttl_s=5), now=NOW + 5) == "expired"


def test_wrong_trace() -> None:
    assert reason_of(mint(trace_id="tr-a"), trace_id="tr-b") == "wrong_trace"


def test_name_not_allowed() -> None:
    token = mint(names=["user_satisfaction", "helpful"])
    verify(token, name="helpful")
    assert reason_of(token, name="toxicity") == "name_not_allowed"


def test_value_not_allowed_compares_json_types() -> None:
    token = mint(values=[True, False])
    verify(token, value=False)
    assert reason_of(token, value="yes") == "value_not_allowed"
    # 1 == True in Python, but not in JSON: a token for thumbs does not allow a 1-5 score.
    assert reason_of(token, value=1) == "value_not_allowed"


def test_any_value_when_values_is_none() -> None:
    token = mint(values=None)
    for value in (True, 3, "meh", {"stars": 4}):
        verify(token, value=value)


def test_bad_signature_when_the_secret_is_unknown() -> None:
    assert reason_of(mint(secret="someone-else")) == "bad_signature"


def test_altered_payload_is_refused() -> None:
    token = mint(user_id="u-7")
    body, sig = token.split(".")
    payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["uid"] = "u-8"  # try to vote as someone else
    forged = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()
    assert reason_of(f"{forged}.{sig}") == "bad_signature"
    payload["exp"] += 10**6  # or to live forever
    forged = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()
    assert reason_of(f"{forged}.{sig}") == "bad_signature"


def test_altered_signature_is_refused_even_in_padding_bits() -> None:
    token = mint()
    body, sig = token.split(".")
    # A 32-byte MAC is 43 base64 characters, the last carrying 2 unused bits: flipping one
    # decodes to the same bytes. Signatures are compared as text, so even that is refused.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = sig[:-1] + alphabet[alphabet.index(sig[-1]) ^ 1]
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(sig + "=")
    assert reason_of(f"{body}.{twin}") == "bad_signature"
    assert reason_of(f"{body}.{sig[::-1]}") == "bad_signature"
    assert reason_of(f"{body}.{sig[:-2]}") == "bad_signature"


@pytest.mark.parametrize(
    "token",
    ["", "nodot", "a.b.c", "a..", ".sig", "body.", "é.sig", "a b.c", "x" * (MAX_TOKEN_CHARS + 1)],
)
def test_malformed(token: str) -> None:
    assert reason_of(token) == "malformed"


def test_signed_but_wrong_shape_is_malformed() -> None:
    # Only a holder of the secret could produce this; still refused rather than trusted blindly.
    body = base64.urlsafe_b64encode(b'{"v":2}').rstrip(b"=").decode()
    assert reason_of(f"{body}.{tokens._signature(SECRET, body)}") == "malformed"


def test_rotation_accepts_old_and_new_secrets() -> None:
    old_token = mint(secret=OLD)
    new_token = mint(secret=SECRET)
    rotated = [SECRET, OLD]  # the first signs, all verify
    assert verify(old_token, secrets=rotated).kid == secret_kid(OLD)
    assert verify(new_token, secrets=rotated).kid == secret_kid(SECRET)
    assert reason_of(old_token, secrets=[SECRET]) == "bad_signature"  # after the old one is dropped


def test_signatures_are_compared_in_constant_time_against_every_secret(monkeypatch) -> None:
    calls = []

    def spy(a, b):
        calls.append((a, b))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr(tokens, "compare_digest", spy)
    token = mint(secret=SECRET)
    verify(token, secrets=[SECRET, OLD, "third"])
    assert len(calls) == 3 + 1  # every secret (no early exit), then the trace binding


def test_decode_checks_only_signature_and_expiry() -> None:
    claims = decode_feedback_token(mint(trace_id="tr-z"), secrets=[SECRET], now=NOW)
    assert claims.trace_id == "tr-z"
    with pytest.raises(TokenError, match="expired"):
        decode_feedback_token(mint(), secrets=[SECRET], now=NOW + 7200)


def test_verify_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="no feedback secrets"):
        verify(mint(), secrets=[])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"secret": ""}, "secret"),
        ({"trace_id": ""}, "trace_id"),
        ({"names": []}, "names"),
        ({"names": "user_satisfaction"}, "names"),
        ({"ttl_s": 0}, "ttl_s"),
        ({"values": [2**70]}, "JSON"),
        ({"values": ["x" * MAX_TOKEN_CHARS]}, "characters"),
    ],
)
def test_mint_refuses_bad_claims(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        mint(**kwargs)
