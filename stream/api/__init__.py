"""The HTTP API: feedback, expectations and traces in (to Kafka), results out (from Redis)."""

from stream.api._app import create_app
from stream.api._auth import ApiError, http_status
from stream.api._models import ApiOptions
from stream.api._serve import BackgroundServer

__all__ = [
    "ApiError",
    "ApiOptions",
    "BackgroundServer",
    "create_app",
    "http_status",
]
