"""Reads: a trace's results, the scorers, and one scorer's summary over a window."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Query
from fastapi.exceptions import RequestValidationError

from scorers import MAX_ID_CHARS, MAX_NAME_CHARS
from sinks import Aggregate, SinkError
from stream._exceptions import ApiError, StreamError
from stream.api._auth import require_key, unavailable
from stream.api._models import (
    WINDOW_PATTERN,
    ScorerInfo,
    ScorerList,
    Summary,
    TraceResults,
    error_responses,
    window_minutes,
)
from stream.api._services import ResultStore, Services, services, store_errors

__all__ = ["router"]

log = logging.getLogger("stream.api._app")

router = APIRouter(dependencies=[Depends(require_key)])

_SLICE_MINUTES: Final = 1440


async def _aggregate(store: ResultStore, experiment: str, name: str, start: int, end: int) -> Aggregate:
    """`store.aggregates` a day at a time, summed.

    The store reads one hash per minute; a 30-day window in one pipeline keeps the event loop
    busy for about a second (measured), stalling every other request. Day slices cost the
    same in total but yield between them (~50 ms each).
    """
    total = Aggregate()
    for lo in range(start, end, _SLICE_MINUTES):
        part = await store.aggregates(experiment, name, start_minute=lo, end_minute=min(lo + _SLICE_MINUTES, end))
        total = Aggregate(
            count=total.count + part.count,
            sum=total.sum + part.sum,
            passed=total.passed + part.passed,
            failed=total.failed + part.failed,
            errors=total.errors + part.errors,
            values=total.values + part.values,
        )
    return total


def _as_dict(item: Any) -> dict[str, Any]:
    dump = getattr(item, "model_dump", None)
    if callable(dump):
        return dict(dump(mode="json"))
    return dict(item)


async def _list_scorers(svc: Services) -> list[dict[str, Any]]:
    if svc.registry_lister is not None:
        try:
            return [_as_dict(item) for item in await svc.registry_lister()]
        except (StreamError, SinkError) as exc:
            log.warning("listing scorers: %s", exc)
            raise unavailable("registry_unavailable", "the scorer registry did not answer; retry later") from exc
    store = svc.store
    with store_errors("scorers"):
        return [
            {"name": name, "experiment_id": exp}
            for exp in sorted(await store.experiments())
            for name in sorted(await store.scorers(exp))
        ]


@router.get(
    "/v1/traces/{trace_id}",
    response_model=TraceResults,
    responses=error_responses(400, 401, 403, 404, 422, 429, 503),
    tags=["traces"],
)
async def get_trace(
    trace_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)],
    svc: Annotated[Services, Depends(services)],
) -> TraceResults:
    """The latest assessments and feedback of a trace, joined; 404 when unknown or expired."""
    with store_errors("get_trace"):
        found = await svc.store.get_trace(trace_id)
    if found is None:
        raise ApiError(404, "trace_not_found", "no results for this trace (unknown, not scored yet, or expired)")
    return TraceResults.model_validate(found)


@router.get(
    "/v1/scorers",
    response_model=ScorerList,
    responses=error_responses(400, 401, 403, 429, 503),
    tags=["scorers"],
)
async def get_scorers(svc: Annotated[Services, Depends(services)]) -> ScorerList:
    """The scorers: from the registry when the app has one, else those with results."""
    return ScorerList(scorers=[ScorerInfo.model_validate(s) for s in await _list_scorers(svc)])


@router.get(
    "/v1/scorers/{name}/summary",
    response_model=Summary,
    responses=error_responses(400, 401, 403, 404, 422, 429, 503),
    tags=["scorers"],
)
async def get_summary(
    name: Annotated[str, Path(min_length=1, max_length=MAX_NAME_CHARS)],
    svc: Annotated[Services, Depends(services)],
    window: Annotated[str, Query(pattern=WINDOW_PATTERN, description="5m, 1h, 7d; at most 30d")] = "1h",
    experiment: Annotated[str, Query(min_length=1, max_length=MAX_ID_CHARS)] = "0",
) -> Summary:
    """Counts, pass rate, mean and errors of one scorer over the last `window` (whole minutes)."""
    try:
        minutes = window_minutes(window)
    except ValueError as exc:
        error = {"loc": ("query", "window"), "msg": str(exc), "type": "value_error"}
        raise RequestValidationError([error]) from None
    end_minute = int(time.time()) // 60 + 1  # through the current minute
    start_minute = end_minute - minutes
    store = svc.store
    with store_errors("summary"):
        known = name in await store.names(experiment) or name in await store.scorers(experiment)
        if not known and svc.registry_lister is not None:
            listed = await _list_scorers(svc)
            known = any(s.get("name") == name and str(s.get("experiment_id")) == experiment for s in listed)
        if not known:
            raise ApiError(404, "scorer_not_found", f"no scorer {name!r} in experiment {experiment!r}")
        agg = await _aggregate(store, experiment, name, start_minute, end_minute)
    return Summary(
        scorer=name,
        experiment_id=experiment,
        window=window,
        start_ms=start_minute * 60000,
        end_ms=end_minute * 60000,
        **agg.to_dict(),
    )
