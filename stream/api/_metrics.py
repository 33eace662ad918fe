"""Request metrics of the API: count and time every answer, refusals included.

Labels stay bounded whatever clients send: the route is the template (`/v1/traces/{trace_id}`,
never the id), the method one of the standard ones or `other`, the status a number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AsgiEndpoint", "HttpMetrics", "MetricsMiddleware"]

_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class HttpMetrics:
    """Requests by route template, method and status, and their latency: labels stay bounded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "tracewatch_api_requests_total",
            "HTTP requests answered by the API",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "tracewatch_api_request_duration_seconds",
            "Time to answer an HTTP request, until the whole response is sent",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answer; label children are looked up once per (route, method, status)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(route, method, str(status)),
                self.duration.labels(route, method),
            )
        children[0].inc()
        children[1].observe(seconds)


class MetricsMiddleware:
    """Time and count every HTTP answer, including those middleware further in gives."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, routes: list[Any]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:  # refused before routing (429, 413): find the route it was meant for
            for candidate in self.routes:
                if candidate.matches(scope)[0] is not Match.NONE:
                    route = candidate
                    break
        return str(getattr(route, "path", "unmatched") or "unmatched")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.observe(self._template(scope), method, status, time.perf_counter() - start)


class AsgiEndpoint:
    """Mark an ASGI callable so Starlette's `Route` calls it as an app, not as an endpoint."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
