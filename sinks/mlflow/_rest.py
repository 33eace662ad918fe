"""The MLflow tracking server's REST API, as `MlflowClient.log_assessment` calls it, over httpx.

Why REST and not the `mlflow` client library:

- **Dependencies.** `mlflow` (even `mlflow-skinny`) pins protobuf, pydantic, sqlalchemy,
  opentelemetry, ... versions that clash with ours; tracewatch never imports it (tests run it
  in a venv of its own, `tests/mlflow_venv.py`). The REST calls need only httpx, which we
  already ship.
- **Speed.** `MlflowClient` is synchronous (one blocking `requests` call per assessment,
  which would need a thread per in-flight call) and builds a protobuf per call. One pooled
  `httpx.AsyncClient` keeps `max_in_flight` keep-alive connections busy from one event
  loop (`bench/mlflow_sink.py` measures the difference).

The calls (MLflow 3.x, `mlflow/store/tracking/rest_store.py`, `protos/service.proto`):

    POST /api/3.0/mlflow/traces/{trace_id}/assessments   CreateAssessment {"assessment": {...}}
    GET  /api/3.0/mlflow/traces/{trace_id}               GetTraceInfoV3 (its assessments)
    POST /v1/traces  (x-mlflow-experiment-id header)     OTLP/HTTP JSON span upload

Auth as MLflow does it: `MLFLOW_TRACKING_TOKEN` as a bearer token, else
`MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` as basic auth;
`MLFLOW_TRACKING_INSECURE_TLS=true` skips certificate checks.

Each call is one attempt; the caller (`MlflowSink`) owns retries, because a retried create
must first look whether the lost attempt landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from sinks._exceptions import SinkDataError, SinkError, SinkUnavailableError

__all__ = [
    "MlflowConfig",
    "MlflowRejectedError",
    "MlflowRest",
    "MlflowUnavailableError",
    "TraceNotInMlflowError",
]

_V3 = "/api/3.0/mlflow/traces"


class MlflowUnavailableError(SinkUnavailableError):
    """MLflow answered 429 or 5xx, or could not be reached; the same call may succeed later.

    Attributes:
        retry_after: Seconds the server asked us to wait (`Retry-After`), None if it did not say.
        status: The HTTP status, 0 for a transport error.
    """

    def __init__(self, message: str, *, operation: str, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message, sink="mlflow", operation=operation)
        self.status = status
        self.retry_after = retry_after


class MlflowRejectedError(SinkDataError):
    """MLflow refused the request with a 4xx: sending it again fails the same way.

    Attributes:
        status: The HTTP status.
        error_code: MLflow's `error_code` (`INVALID_PARAMETER_VALUE`, ...), or "" if none.
    """

    def __init__(self, message: str, *, operation: str, status: int, error_code: str = "") -> None:
        super().__init__(message, sink="mlflow", operation=operation)
        self.status = status
        self.error_code = error_code


class TraceNotInMlflowError(SinkDataError):
    """The tracking server has no trace with this id (404 `RESOURCE_DOES_NOT_EXIST`)."""

    def __init__(self, trace_id: str, *, operation: str) -> None:
        super().__init__(f"trace {trace_id} is not in MLflow", sink="mlflow", operation=operation)
        self.trace_id = trace_id


@dataclass(frozen=True, slots=True)
class MlflowConfig:
    """Where the tracking server is and how to talk to it."""

    tracking_uri: str
    token: str | None = None
    username: str | None = None
    password: str | None = None
    insecure_tls: bool = False
    request_timeout: float = 10.0
    max_connections: int = 16
    rate_limit: float = 0.0  # requests per second to MLflow; 0 = no limit

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> MlflowConfig:
        """Read MLflow's own variables (`MLFLOW_TRACKING_URI`, `_TOKEN`, `_USERNAME`, ...).

        Raises:
            SinkError: `MLFLOW_TRACKING_URI` is unset or not an http(s) URL (a file or
                databricks URI cannot take REST writes from here).
        """
        uri = (overrides.pop("tracking_uri", None) or env.get("MLFLOW_TRACKING_URI", "")).strip()
        if not uri.startswith(("http://", "https://")):
            raise SinkError(
                f"MLFLOW_TRACKING_URI must be an http(s) URL of a tracking server, got {uri!r}", sink="mlflow"
            )
        return cls(
            tracking_uri=uri.rstrip("/"),
            token=env.get("MLFLOW_TRACKING_TOKEN") or None,
            username=env.get("MLFLOW_TRACKING_USERNAME") or None,
            password=env.get("MLFLOW_TRACKING_PASSWORD") or None,
            insecure_tls=env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true",
            **overrides,
        )


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("retry-after")
    if not raw:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(raw))
    return None  # an HTTP date: rare from MLflow; fall back to our own backoff


@contextlib.contextmanager
def _transport_errors(operation: str) -> Iterator[None]:
    """httpx's transport failures (refused, reset, timed out) become `MlflowUnavailableError`."""
    try:
        yield
    except httpx.TransportError as exc:
        raise MlflowUnavailableError(f"{operation}: {type(exc).__name__}: {exc}", operation=operation) from exc


class MlflowRest:
    """A thin async client for the few MLflow REST calls the sink makes.

    Args:
        config: Server address and credentials.
        transport: An httpx transport (tests pass `httpx.MockTransport`).
        observe: Called with (operation, seconds) after each answered request: latency metric.

    Example:
        >>> rest = MlflowRest(MlflowConfig.from_env(os.environ))
        >>> aid = await rest.create_assessment("tr-...", {"assessment_name": "x", ...})
    """

    def __init__(
        self,
        config: MlflowConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        headers = {"User-Agent": "tracewatch-mlflow-sink"}
        auth: httpx.BasicAuth | None = None
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        elif config.username and config.password:
            auth = httpx.BasicAuth(config.username, config.password)
        limits = httpx.Limits(max_connections=config.max_connections, max_keepalive_connections=config.max_connections)
        self._client = httpx.AsyncClient(
            base_url=config.tracking_uri,
            headers=headers,
            auth=auth,
            timeout=httpx.Timeout(config.request_timeout, connect=min(5.0, config.request_timeout)),
            limits=limits,
            verify=not config.insecure_tls,
            transport=transport,
        )
        self._observe = observe
        self._interval = 1.0 / config.rate_limit if config.rate_limit > 0 else 0.0
        self._next_slot = 0.0

    async def _throttle(self) -> None:
        """Space requests `1 / rate_limit` apart (a leaky bucket; a slot is taken before sleeping)."""
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(self, operation: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        await self._throttle()
        start = time.perf_counter()
        with _transport_errors(operation):
            resp = await self._client.request(method, path, **kwargs)
        if self._observe is not None:
            self._observe(operation, time.perf_counter() - start)
        if resp.status_code == 429 or resp.status_code >= 500:
            raise MlflowUnavailableError(
                f"{operation}: HTTP {resp.status_code}: {resp.text[:200]}",
                operation=operation,
                status=resp.status_code,
                retry_after=_retry_after(resp),
            )
        return resp

    @staticmethod
    def _rejected(operation: str, resp: httpx.Response) -> MlflowRejectedError:
        code = ""
        message = resp.text[:500]
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
            body = orjson.loads(resp.content)
            code = str(body.get("error_code", ""))
            message = str(body.get("message", message))[:500]
        return MlflowRejectedError(
            f"{operation}: HTTP {resp.status_code} {code}: {message}",
            operation=operation,
            status=resp.status_code,
            error_code=code,
        )

    async def create_assessment(self, trace_id: str, assessment: Mapping[str, Any]) -> str:
        """Log one assessment on a trace; returns the id MLflow gave it.

        Raises:
            TraceNotInMlflowError: The server has no such trace.
            MlflowRejectedError: Any other 4xx (a bad value, no permission, ...).
            MlflowUnavailableError: 429, 5xx or a transport error: retry later.
        """
        op = "create_assessment"
        body = orjson.dumps({"assessment": assessment}, default=str, option=orjson.OPT_NON_STR_KEYS)
        resp = await self._send(
            op, "POST", f"{_V3}/{trace_id}/assessments", content=body, headers={"Content-Type": "application/json"}
        )
        if resp.status_code == 404:
            raise TraceNotInMlflowError(trace_id, operation=op)
        if resp.status_code >= 400:
            raise self._rejected(op, resp)
        try:
            return str(orjson.loads(resp.content)["assessment"]["assessment_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise MlflowUnavailableError(f"{op}: unexpected answer {resp.text[:200]!r}", operation=op) from exc

    async def trace_assessments(self, trace_id: str) -> list[dict[str, Any]] | None:
        """The assessments already on a trace (JSON dicts as MLflow returns them), None if no trace.

        Raises:
            MlflowRejectedError: A 4xx other than 404.
            MlflowUnavailableError: 429, 5xx or a transport error.
        """
        op = "get_trace_info"
        resp = await self._send(op, "GET", f"{_V3}/{trace_id}")
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise self._rejected(op, resp)
        body = orjson.loads(resp.content)
        info = (body.get("trace") or {}).get("trace_info") or {}
        found = info.get("assessments") or []
        return [a for a in found if isinstance(a, dict)]

    async def upload_otlp(self, experiment_id: str, otlp_json: bytes) -> None:
        """Upload a trace's spans through the server's OTLP/HTTP endpoint (`/v1/traces`).

        Raises:
            MlflowRejectedError: A 4xx (spans MLflow cannot convert, unknown experiment).
            MlflowUnavailableError: 429, 5xx or a transport error.
        """
        op = "upload_trace"
        resp = await self._send(
            op,
            "POST",
            "/v1/traces",
            content=otlp_json,
            headers={"Content-Type": "application/json", "x-mlflow-experiment-id": experiment_id},
        )
        if resp.status_code >= 400:
            raise self._rejected(op, resp)
