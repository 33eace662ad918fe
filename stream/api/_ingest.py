"""Writes: feedback, expectations and traces in; each answers 202 once Kafka acknowledged it."""

from __future__ import annotations

import asyncio
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request

from scorers import DecodeError
from stream._events import FeedbackEvent
from stream._exceptions import ApiError, TokenError
from stream.api._auth import Principal, require_key, require_key_or_token, token_refusal
from stream.api._models import Accepted, ExpectationBody, FeedbackBody, TraceAccepted, error_responses
from stream.api._services import Services, services
from stream.sdk._publisher import encode_for_wire

__all__ = ["router"]

router = APIRouter()

_OFFLOAD_BYTES: Final = 64 * 1024  # traces above this are validated off the event loop
_WRITE_ERRORS: Final = error_responses(400, 401, 403, 408, 413, 422, 429, 503)

_TRACE_BODY: Final = {
    "requestBody": {
        "required": True,
        "description": "An MLflow 3 trace, as `mlflow.entities.Trace.to_json()` writes it.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["info"],
                    "properties": {
                        "info": {"type": "object", "required": ["trace_id"]},
                        "data": {"type": "object"},
                    },
                }
            }
        },
    }
}


@router.post("/v1/feedback", status_code=202, response_model=Accepted, responses=_WRITE_ERRORS, tags=["feedback"])
async def post_feedback(
    body: FeedbackBody,
    principal: Annotated[Principal, Depends(require_key_or_token)],
    svc: Annotated[Services, Depends(services)],
) -> Accepted:
    """Record one vote; 202 once Kafka has acknowledged it.

    With `X-Feedback-Token` the token must cover this trace, name and value, the source is
    HUMAN, and the source id is the user bound in the token (or, when it binds none, an
    anonymous id of the token: one token, one voter).
    """
    source_type, source_id = body.source.type, body.source.id
    claims = principal.claims if principal.key_id is None else None
    if claims is not None:
        try:
            claims.check(body.trace_id, body.name, body.value)
        except TokenError as exc:
            raise token_refusal(exc) from None
        if source_type != "HUMAN":
            raise ApiError(403, "source_not_allowed", "feedback sent with a token is HUMAN feedback")
        if source_id is not None and source_id != principal.voter:
            raise ApiError(
                403,
                "source_mismatch",
                "with a feedback token the token decides who votes: leave source.id out, or give the user "
                "the token was minted for",
            )
        source_id = principal.voter
    event = FeedbackEvent(
        kind="feedback",
        trace_id=body.trace_id,
        name=body.name,
        value=body.value,
        source_type=source_type,
        source_id=source_id or "anonymous",
        rationale=body.rationale,
        metadata=body.metadata,
        error=body.error.model_dump(exclude_none=True) if body.error is not None else None,
        span_id=body.span_id,
    )
    await svc.publish(svc.topics.feedback, body.trace_id, event.to_json())
    return Accepted(event_id=event.event_id, trace_id=body.trace_id)


@router.post(
    "/v1/expectations",
    status_code=202,
    response_model=Accepted,
    responses=_WRITE_ERRORS,
    dependencies=[Depends(require_key)],
    tags=["feedback"],
)
async def post_expectation(body: ExpectationBody, svc: Annotated[Services, Depends(services)]) -> Accepted:
    """Record ground truth for a trace (API key only); 202 once Kafka has acknowledged it."""
    event = FeedbackEvent(
        kind="expectation",
        trace_id=body.trace_id,
        name=body.name,
        value=body.value,
        source_type=body.source.type,
        source_id=body.source.id or "api",
        metadata=body.metadata,
        span_id=body.span_id,
    )
    await svc.publish(svc.topics.feedback, body.trace_id, event.to_json())
    return Accepted(event_id=event.event_id, trace_id=body.trace_id)


@router.post(
    "/v1/traces",
    status_code=202,
    response_model=TraceAccepted,
    responses=_WRITE_ERRORS,
    dependencies=[Depends(require_key)],
    openapi_extra=_TRACE_BODY,
    tags=["traces"],
)
async def post_trace(request: Request, svc: Annotated[Services, Depends(services)]) -> TraceAccepted:
    """Ingest one MLflow trace over HTTP; 202 once it is on the traces topic."""
    data = await request.body()
    max_bytes = svc.settings.max_trace_bytes
    try:
        if len(data) > _OFFLOAD_BYTES:
            trace_id, payload = await asyncio.to_thread(encode_for_wire, data, max_bytes=max_bytes)
        else:
            trace_id, payload = encode_for_wire(data, max_bytes=max_bytes)
    except DecodeError as exc:
        status = 413 if exc.reason == "too_large" else 400 if exc.reason in ("not_json", "bad_compression") else 422
        raise ApiError(status, "invalid_trace", str(exc), reason=exc.reason) from None
    await svc.publish(svc.topics.traces, trace_id, payload)
    return TraceAccepted(trace_id=trace_id)
