"""OTLP/HTTP as a raw ASGI app: `POST /v1/traces`, protobuf or JSON, optionally gzip.

Raw ASGI rather than a framework route: the body is read once into one buffer and parsed
once, which is all the hot path does besides producing (issue 13's benchmark compares the
receiver against a plain decode loop). Answers follow the OTLP/HTTP spec: 200 with an
`ExportTraceServiceResponse` (with `partial_success` when spans were rejected), else a
`google.rpc.Status` in the request's encoding: 400 bad input, 401 no valid key, 413 too
large, 415 content type, 429 overloaded and 503 Kafka unavailable, both with `Retry-After`
(the statuses a standard exporter retries).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Final

from google.protobuf import json_format
from google.rpc.status_pb2 import Status

from stream.otlp._decode import ExportRefused, parse_body
from stream.otlp._receiver import Receiver, response_for

__all__ = ["OtlpHttpApp"]

TRACES_PATH: Final = "/v1/traces"
_STATUS: Final = {
    "bad_request": 400,
    "unauthorized": 401,
    "too_large": 413,
    "unsupported": 415,
    "overloaded": 429,
    "unavailable": 503,
}
# google.rpc.Code of each refusal, for the Status body.
_RPC_CODE: Final = {
    "bad_request": 3,
    "unauthorized": 16,
    "too_large": 3,
    "unsupported": 3,
    "overloaded": 8,
    "unavailable": 14,
}
_JSON: Final = b"application/json"
_PROTOBUF: Final = b"application/x-protobuf"

Scope = dict[str, Any]


class OtlpHttpApp:
    """The ASGI app. `body_timeout` bounds a slow upload so few clients cannot hold the slots."""

    def __init__(self, receiver: Receiver, *, max_body_bytes: int, body_timeout: float = 30.0) -> None:
        self.receiver = receiver
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != TRACES_PATH:
            await _plain(send, 404, b"not found: OTLP/HTTP traces are POSTed to /v1/traces")
            return
        if scope["method"] != "POST":
            await _plain(send, 405, b"method not allowed: POST /v1/traces", [(b"allow", b"POST")])
            return
        content_type = content_encoding = authorization = experiment = None
        length = -1
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-encoding":
                content_encoding = value
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name == b"authorization":
                authorization = value
            elif name == b"x-mlflow-experiment-id":
                experiment = value
        as_json = content_type is not None and content_type.split(b";", 1)[0].strip().lower() == _JSON
        receiver = self.receiver
        started = time.perf_counter()
        try:
            receiver.authorize(authorization.decode("latin-1") if authorization is not None else None)
            with receiver.slot():
                if length > self.max_body_bytes:
                    raise ExportRefused("too_large", "too_large", f"body is over the {self.max_body_bytes}-byte limit")
                body = await self._read(receive)
                request, raw = parse_body(
                    body,
                    content_type=(content_type or b"").decode("latin-1"),
                    content_encoding=content_encoding.decode("latin-1") if content_encoding else None,
                    max_bytes=self.max_body_bytes,
                )
                grouped = await receiver.export(
                    request,
                    raw=raw,
                    experiment=experiment.decode("utf-8", "replace").strip() if experiment else None,
                    body_size=None if raw is not None else request.ByteSize(),
                )
        except ExportRefused as exc:
            receiver.refused("http", exc, started)
            await _refusal(send, exc, as_json)
            return
        receiver.exported("http", grouped, started)
        response = response_for(grouped)
        if as_json:
            await _respond(send, 200, json_format.MessageToJson(response, indent=None).encode(), _JSON)
        else:
            await _respond(send, 200, response.SerializeToString(), _PROTOBUF)

    async def _read(self, receive: Any) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ExportRefused("bad_request", "disconnected", "client disconnected during the body")
                    chunk = message.get("body", b"")
                    if chunk:
                        size += len(chunk)
                        if size > self.max_body_bytes:
                            raise ExportRefused(
                                "too_large", "too_large", f"body is over the {self.max_body_bytes}-byte limit"
                            )
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise ExportRefused(
                "bad_request", "body_timeout", f"body not received within {self.body_timeout:g}s"
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _refusal(send: Any, exc: ExportRefused, as_json: bool) -> None:
    status = Status(code=_RPC_CODE[exc.kind], message=exc.message)
    headers: list[tuple[bytes, bytes]] = []
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(math.ceil(exc.retry_after)).encode()))
    if exc.kind == "unauthorized":
        headers.append((b"www-authenticate", b"Bearer"))
    if as_json:
        body = json_format.MessageToJson(status, indent=None).encode()
        await _respond(send, _STATUS[exc.kind], body, _JSON, headers)
    else:
        await _respond(send, _STATUS[exc.kind], status.SerializeToString(), _PROTOBUF, headers)


async def _respond(
    send: Any, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or ())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _plain(send: Any, status: int, text: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _respond(send, status, text, b"text/plain; charset=utf-8", extra)


async def _lifespan(receive: Any, send: Any) -> None:
    # The producer and servers are owned by `run_receiver`, not by the app's lifespan.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
