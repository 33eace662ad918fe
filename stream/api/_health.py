"""Operations: liveness, readiness (Kafka and Redis), and the Prometheus `/metrics` route."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from prometheus_client import CollectorRegistry
from starlette.responses import Response
from starlette.routing import Route

from sinks import SinkError, metrics_asgi_app
from stream._exceptions import ApiError
from stream.api._metrics import AsgiEndpoint
from stream.api._models import Health
from stream.api._services import Services, services

__all__ = ["metrics_route", "router"]

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (no dependency is checked)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(svc: Annotated[Services, Depends(services)]) -> Response:
    """Kafka producer started and Redis answering; 503 otherwise."""
    checks = {"kafka": "ok" if svc.producer is not None else "not connected"}
    try:
        async with asyncio.timeout(2.0):
            await svc.store.ping()
        checks["redis"] = "ok"
    except (SinkError, ApiError, TimeoutError) as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return Response(body.model_dump_json(), status_code=200 if ok else 503, media_type="application/json")


def metrics_route(registry: CollectorRegistry) -> Route:
    """`GET /metrics`: the registry's samples in the Prometheus text format (not in OpenAPI)."""
    return Route("/metrics", AsgiEndpoint(metrics_asgi_app(registry)), methods=["GET"])
