"""API-key checks for the receiver, the same rule as the HTTP API's (`stream.api` `Auth.key_id`).

Restated here rather than imported: `stream.api._auth` pulls in FastAPI, which a raw ASGI
receiver and a gRPC server should not load. Keys are compared as SHA-256 digests against
every configured key in constant time, so timing says nothing about which key, or its length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from hmac import compare_digest

from stream.otlp._decode import ExportRefused

__all__ = ["KeyCheck"]


class KeyCheck:
    """Checks `Authorization: Bearer <key>` against `TRACEWATCH_API_KEYS`."""

    def __init__(self, api_keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in api_keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def check(self, authorization: str | None) -> None:
        """Accept a valid bearer key, else refuse (`unauthorized`).

        Raises:
            ExportRefused: no header, another scheme, or a key that is not configured.
        """
        if authorization is None:
            raise ExportRefused(
                "unauthorized",
                "unauthorized",
                "missing credentials: send `Authorization: Bearer <api key>` "
                "(exporters: OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<key>)",
            )
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() == "bearer":
            digest = hashlib.sha256(presented.strip().encode()).digest()
            found = False
            for key in self._digests:
                found |= compare_digest(digest, key)
            if found:
                return
        raise ExportRefused("unauthorized", "unauthorized", "the API key is not valid")
