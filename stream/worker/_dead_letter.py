"""What goes to the dead-letter topic for a bad message, sized so the broker always takes it.

The broker accepted the original, but only just perhaps: its DLQ copy carries our headers,
goes through the producer's own `max_request_size` and may land on a topic with a smaller
`max.message.bytes`, and compression makes incompressible bytes slightly larger. A dead
letter that does not fit would fail the flush on every redelivery, so the worker would
crash-loop on one message. So the copy keeps the original bytes only when they fit a
limit with margin; otherwise it keeps a prefix and says so in headers (`tw-truncated`,
`tw-original-size`, `tw-original-sha256`), enough to match it against the source offset.

Pure functions, no client: the outbox calls them, tests call them directly.
"""

from __future__ import annotations

import hashlib

from stream.worker._checkpoint import DeadLetter

__all__ = [
    "MIN_DEAD_LETTER_BYTES",
    "DeadLetterRecord",
    "dead_letter_limit",
    "dead_letter_record",
    "record_size",
]

DeadLetterRecord = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
"""(key, value, headers) of one record for the DLQ topic, as the producer takes it."""

MIN_DEAD_LETTER_BYTES = 4096
"""The smallest limit ever used: our headers (`tw-error` is capped at 1,000 bytes) and a short key fit."""

_VARINT = 5  # a Kafka varint of a 32-bit length takes at most 5 bytes; counting 5 always over-estimates
_ERROR_CAP = 1000
_TRIMMED_HEADER_CAP = 64


def dead_letter_limit(max_request_size: int, max_message_bytes: int | None = None) -> int:
    """The largest record (key, value, headers) to hand the producer for the DLQ topic.

    `max_request_size` is the producer's cap and `max_message_bytes` the DLQ topic's (or
    broker's) `max.message.bytes`, when known. The margin covers the record batch header
    and produce request framing (a fixed 16 KiB) and compression growing incompressible
    data (lz4 adds ~0.4%, gzip and zstd less; 1/64 leaves room for all of them).

    Example:
        >>> dead_letter_limit(4 * 1024 * 1024)
        4112384
    """
    cap = max_request_size if max_message_bytes is None else min(max_request_size, max_message_bytes)
    return max(cap - 16 * 1024 - cap // 64, MIN_DEAD_LETTER_BYTES)


def record_size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """An upper bound of one record's size in a v2 record batch (every varint counted as 5 bytes)."""
    size = 1 + 4 * _VARINT  # attributes, length, timestamp delta, offset delta
    size += _VARINT + len(key or b"")
    size += _VARINT + len(value or b"")
    size += _VARINT
    for name, data in headers:
        size += 2 * _VARINT + len(name.encode()) + len(data)
    return size


def dead_letter_record(dead: DeadLetter, *, limit: int) -> DeadLetterRecord:
    """The DLQ record for `dead`: the original bytes when they fit `limit`, else a marked prefix.

    A truncated copy keeps the first bytes of the value (where a JSON payload says what it
    is) and adds `tw-truncated: 1`, `tw-original-size` (bytes) and `tw-original-sha256`
    (hex) of the original value. A key longer than a quarter of the limit (keys are trace
    ids, normally tens of bytes) is cut too, with `tw-original-key-size` and
    `tw-original-key-sha256`. The result is never larger than `max(limit, MIN_DEAD_LETTER_BYTES)`.
    """
    limit = max(limit, MIN_DEAD_LETTER_BYTES)
    headers = [
        ("tw-reason", dead.reason.encode()),
        ("tw-error", dead.error.encode()[:_ERROR_CAP]),
        ("tw-source-topic", dead.topic.encode()),
        ("tw-source-partition", str(dead.partition).encode()),
        ("tw-source-offset", str(dead.offset).encode()),
    ]
    key, value = dead.key, dead.value
    if record_size(key, value, headers) <= limit:
        return key, value, headers
    original = value or b""
    headers += [
        ("tw-truncated", b"1"),
        ("tw-original-size", str(len(original)).encode()),
        ("tw-original-sha256", hashlib.sha256(original).hexdigest().encode()),
    ]
    key_cap = limit // 4
    if key is not None and len(key) > key_cap:
        headers += [
            ("tw-original-key-size", str(len(key)).encode()),
            ("tw-original-key-sha256", hashlib.sha256(key).hexdigest().encode()),
        ]
        key = key[:key_cap]
    room = limit - record_size(key, b"", headers)
    if room < 0:  # only with a limit near the minimum and a long topic name or error text
        headers = [(name, data[:_TRIMMED_HEADER_CAP]) for name, data in headers]
        room = limit - record_size(key, b"", headers)
    return key, original[: max(room, 0)], headers
