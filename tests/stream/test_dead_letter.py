"""Dead letters always fit the DLQ: the original when it fits, else a marked, hashed prefix."""

from __future__ import annotations

import hashlib
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.worker._checkpoint import DeadLetter
from stream.worker._dead_letter import MIN_DEAD_LETTER_BYTES, dead_letter_limit, dead_letter_record, record_size

BROKER_MAX = 4 * 1024 * 1024  # message.max.bytes of deploy/local/stack.py


def letter(value: bytes | None, key: bytes | None = b"tr-1", error: str = "boom") -> DeadLetter:
    return DeadLetter(key, value, "too_large", error, "tw.traces", 3, 42)


def test_limit_leaves_room_for_framing_and_compression() -> None:
    limit = dead_letter_limit(BROKER_MAX)
    # lz4 grows incompressible data by ~0.4%: the limit plus that still fits the broker
    assert limit + limit // 250 + 1024 < BROKER_MAX
    assert dead_letter_limit(2 * 1024 * 1024, BROKER_MAX) < 2 * 1024 * 1024  # the producer's cap wins
    assert dead_letter_limit(8 * 1024 * 1024, BROKER_MAX) == limit  # the topic's cap wins
    assert dead_letter_limit(10) == MIN_DEAD_LETTER_BYTES


def test_a_message_that_fits_is_kept_whole() -> None:
    value = os.urandom(100_000)
    key, out, headers = dead_letter_record(letter(value), limit=dead_letter_limit(BROKER_MAX))
    assert key == b"tr-1" and out is value
    h = dict(headers)
    assert h["tw-reason"] == b"too_large" and h["tw-source-offset"] == b"42"
    assert "tw-truncated" not in h


def test_a_message_just_under_the_broker_max_is_truncated_with_size_and_hash() -> None:
    """Break 2 of issue 11: 4,194,200 random bytes passed the broker, but not as a dead letter."""
    value = os.urandom(4_194_200)
    limit = dead_letter_limit(BROKER_MAX)
    key, out, headers = dead_letter_record(letter(value), limit=limit)
    h = dict(headers)
    assert h["tw-truncated"] == b"1"
    assert h["tw-original-size"] == b"4194200"
    assert h["tw-original-sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert key == b"tr-1"
    assert out is not None and value.startswith(out) and len(out) > limit - 4096
    assert record_size(key, out, headers) <= limit


def test_a_huge_key_is_cut_and_described_too() -> None:
    big_key = b"k" * 3_000_000
    key, out, headers = dead_letter_record(letter(b"{}", key=big_key), limit=1_000_000)
    h = dict(headers)
    assert key is not None and len(key) == 250_000 and big_key.startswith(key)
    assert h["tw-original-key-size"] == b"3000000"
    assert h["tw-original-key-sha256"] == hashlib.sha256(big_key).hexdigest().encode()
    assert out == b"{}"
    assert record_size(key, out, headers) <= 1_000_000


def test_tombstone_is_kept() -> None:
    key, out, headers = dead_letter_record(letter(None, key=None), limit=MIN_DEAD_LETTER_BYTES)
    assert key is None and out is None and "tw-truncated" not in dict(headers)


@settings(max_examples=200, deadline=None)
@given(
    value_size=st.integers(0, 300_000),
    key_size=st.one_of(st.none(), st.integers(0, 300_000)),
    error=st.text(max_size=3000),
    limit=st.integers(0, 200_000),
)
def test_never_larger_than_the_limit(value_size: int, key_size: int | None, error: str, limit: int) -> None:
    value = b"v" * value_size
    key = None if key_size is None else b"k" * key_size
    out_key, out, headers = dead_letter_record(letter(value, key=key, error=error), limit=limit)
    assert record_size(out_key, out, headers) <= max(limit, MIN_DEAD_LETTER_BYTES)
    h = dict(headers)
    if "tw-truncated" in h:
        assert int(h["tw-original-size"]) == value_size
        assert out is not None and value.startswith(out)
    else:
        assert out == value and out_key == key
