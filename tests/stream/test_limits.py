"""The body-limit middleware on its own, with hand-made ASGI messages."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from stream.api._limits import BodyLimitMiddleware


class Recorder:
    """An inner app that reads the whole body, as a handler would."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.bodies.append(b"".join(chunks))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def run(app, path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]] | None = None):
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        if queue:
            return queue.pop(0)
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers or []}
    asyncio.run(app(scope, receive, send))
    return sent, reads


def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    inner = Recorder()
    app = BodyLimitMiddleware(inner, default_limit=10)
    sent, _ = run(app, "/x", [b"abc", b"def", b"ghij"])
    assert sent[0]["status"] == 200
    assert inner.bodies == [b"abcdefghij"]


def test_declared_length_over_the_limit_is_refused_unread() -> None:
    inner = Recorder()
    app = BodyLimitMiddleware(inner, default_limit=10)
    sent, reads = run(app, "/x", [b"a" * 11], headers=[(b"content-length", b"11")])
    assert (sent[0]["status"], reads, inner.bodies) == (413, 0, [])
    assert orjson.loads(sent[1]["body"])["error"] == "too_large"


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    inner = Recorder()
    app = BodyLimitMiddleware(inner, default_limit=10)
    sent, reads = run(app, "/x", [b"aaaa"] * 100)
    assert (sent[0]["status"], reads, inner.bodies) == (413, 3, [])


def test_a_lying_short_content_length_does_not_help() -> None:
    inner = Recorder()
    app = BodyLimitMiddleware(inner, default_limit=10)
    sent, _ = run(app, "/x", [b"a" * 8, b"a" * 8], headers=[(b"content-length", b"5")])
    assert sent[0]["status"] == 413 and inner.bodies == []


def test_limits_per_path() -> None:
    inner = Recorder()
    app = BodyLimitMiddleware(inner, default_limit=4, limits={"/big": 100})
    assert run(app, "/big", [b"a" * 50])[0][0]["status"] == 200
    assert run(app, "/small", [b"a" * 50])[0][0]["status"] == 413


@pytest.mark.parametrize("value", [b"-1", b"ten", b"", b"1e3"])
def test_bad_content_length_is_400(value) -> None:
    inner = Recorder()
    sent, reads = run(BodyLimitMiddleware(inner, default_limit=10), "/x", [b""], headers=[(b"content-length", value)])
    assert (sent[0]["status"], reads, inner.bodies) == (400, 0, [])


def test_conflicting_content_lengths_are_400() -> None:
    inner = Recorder()
    headers = [(b"content-length", b"3"), (b"content-length", b"4")]
    sent, _ = run(BodyLimitMiddleware(inner, default_limit=10), "/x", [b"abc"], headers=headers)
    assert sent[0]["status"] == 400 and inner.bodies == []


def test_a_client_that_leaves_mid_body_gets_nothing_and_the_app_never_runs() -> None:
    inner = Recorder()
    app = BodyLimitMiddleware(inner, default_limit=100)
    queue = [{"type": "http.request", "body": b"abc", "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return queue.pop(0)

    sent: list[Any] = []

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "POST", "path": "/x", "headers": []}, receive, send))
    assert sent == [] and inner.bodies == []
