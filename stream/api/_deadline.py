"""A header deadline for uvicorn: slow clients cannot hold the API's connections open.

uvicorn times out idle keep-alive connections but nothing else: a client that connects and
sends nothing, or trickles its request headers a byte at a time, keeps its connection (and a
file descriptor, and a slot under any `limit_concurrency`) for as long as it likes. A handful
of such clients (slowloris) exhaust a server. `HeaderDeadlineProtocol` is uvicorn's h11
protocol with one timer: armed when the connection opens and again whenever a response
completes (the connection then waits for its next request), cancelled as soon as a request's
headers are complete; when it fires, the connection is closed. The body has its own deadline,
enforced where it is read (`stream.api._limits.BodyLimitMiddleware`, which answers 408).

It is the h11 protocol on purpose: uvicorn's default is httptools when that is installed, and
pinning one implementation keeps this timer's hooks (`cycle`, `on_response_complete`) the ones
it was tested against.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import ClassVar, cast

from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from stream._config import Settings

__all__ = ["HeaderDeadlineProtocol"]

log = logging.getLogger(__name__)


@functools.cache
def _header_timeout_from_env() -> float:
    return Settings().api_header_timeout


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers take too long.

    Pass the class as `uvicorn.Config(http=...)`. Its `header_timeout` is None: the value is
    read from `TRACEWATCH_API_HEADER_TIMEOUT` (once per process, as each `--workers` process
    also reads its app's settings from the environment); `with_header_timeout(seconds)` gives
    a subclass with a fixed value, for servers run in this process.

    Example:
        >>> uvicorn.run(app, http=HeaderDeadlineProtocol.with_header_timeout(10.0))  # doctest: +SKIP
    """

    header_timeout: ClassVar[float | None] = None

    _header_deadline: asyncio.TimerHandle | None = None
    _awaiting_after: RequestResponseCycle | None = None

    @classmethod
    def with_header_timeout(cls, seconds: float) -> type[HeaderDeadlineProtocol]:
        """A subclass whose connections have `seconds` to complete each request's headers.

        Raises:
            ValueError: `seconds` is not positive.
        """
        if not seconds > 0:
            raise ValueError(f"header timeout must be > 0, not {seconds!r}")
        return cast(
            "type[HeaderDeadlineProtocol]",
            type(cls.__name__, (cls,), {"header_timeout": float(seconds), "__module__": cls.__module__}),
        )

    def _timeout(self) -> float:
        seconds = type(self).header_timeout
        return _header_timeout_from_env() if seconds is None else seconds

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        # uvicorn makes a new cycle once a request's headers are parsed: remember the current
        # one, and a different one later means the headers we were waiting for arrived.
        self._awaiting_after = self.cycle
        self._header_deadline = self.loop.call_later(self._timeout(), self._header_deadline_passed)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            log.debug("closing a connection of %s: no complete request headers in %.1f s", self.client, self._timeout())
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_deadline is not None and self.cycle is not self._awaiting_after:
            self._cancel_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request's clock starts now, unless a pipelined request already began.
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)
