"""Request body limits: 413 before an oversized body is read, let alone parsed.

A declared `Content-Length` over the limit is refused at once, without reading a byte of the
body. A body without one (chunked) is read chunk by chunk and refused as soon as the count
passes the limit, so a client can never make the API buffer more than the limit plus one
chunk. Only a body within the limit reaches the app, replayed from the buffer: the handlers
never see a request whose size was not checked.

The body also has a deadline (`body_timeout`, counted from when the app starts reading it): a
client trickling its body gets 408 and the connection is closed, so slow clients cannot hold
connections and buffers open (uvicorn has no body timeout; the header deadline is
`stream.api._deadline`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stream.api._models import error_response

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    """Enforce a body size limit per path.

    Args:
        app: The ASGI app to protect.
        default_limit: Bytes allowed for any path not in `limits`.
        limits: Bytes allowed per exact path (e.g. a larger one for trace ingestion).
        body_timeout: Seconds a client has to send the whole body; None waits for ever.

    Example:
        >>> app = BodyLimitMiddleware(app, default_limit=64 * 1024, limits={"/v1/traces": 1 << 20})
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_limit: int,
        limits: Mapping[str, int] | None = None,
        body_timeout: float | None = None,
    ) -> None:
        if default_limit < 0 or any(v < 0 for v in (limits or {}).values()):
            raise ValueError("body limits must be >= 0")
        if body_timeout is not None and not body_timeout > 0:
            raise ValueError("body_timeout must be > 0")
        self.app = app
        self.default_limit = default_limit
        self.limits = dict(limits or {})
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default_limit)
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if declared is not None and value != declared:
                    await _refuse(scope, receive, send, 400, "bad_request", "conflicting Content-Length headers")
                    return
                declared = value
        if declared is not None:
            if not declared.isdigit():
                await _refuse(scope, receive, send, 400, "bad_request", "Content-Length must be a whole number")
                return
            if int(declared) > limit:
                await _too_large(scope, receive, send, limit)
                return
        chunks: list[bytes] = []
        size = 0
        deadline = None if self.body_timeout is None else asyncio.get_running_loop().time() + self.body_timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                await _timed_out(scope, receive, send, self.body_timeout)
                return
            if message["type"] == "http.disconnect":
                return  # the client left: nobody to answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(scope, receive, send, limit)
                return
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    await _refuse(
        scope, receive, send, 413, "too_large", f"request body is over the limit of {limit} bytes for {scope['path']}"
    )


async def _timed_out(scope: Scope, receive: Receive, send: Send, seconds: float | None) -> None:
    # `Connection: close`, unlike the other refusals: the rest of the body may never come,
    # and waiting for it to discard it is what the client was doing to us.
    response = error_response(
        408,
        "request_timeout",
        f"the request body did not arrive within {seconds:g} s",
        headers={"Connection": "close"},
    )
    await response(scope, receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
    # No `Connection: close`: closing with unread bytes in the socket makes the kernel reset the
    # connection, and the client may lose this answer. The server discards what is left of
    # the body (it never reaches the app) and keeps the connection usable.
    response = error_response(status, code, message)
    await response(scope, receive, send)
