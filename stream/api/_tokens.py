"""Token minting: `POST /v1/feedback-tokens` gives a backend without the secret a browser token."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from stream._exceptions import ApiError
from stream.api._auth import Auth, require_key
from stream.api._models import TokenRequest, TokenResponse, error_responses
from stream.sdk._tokens import mint_feedback_token

__all__ = ["router"]

router = APIRouter()


@router.post(
    "/v1/feedback-tokens",
    response_model=TokenResponse,
    responses=error_responses(400, 401, 403, 408, 413, 422, 429, 501),
    dependencies=[Depends(require_key)],
    tags=["feedback"],
)
async def post_token(body: TokenRequest, request: Request) -> TokenResponse:
    """Mint a feedback token for a browser (see `stream.sdk._tokens` for the format)."""
    auth: Auth = request.app.state.auth
    if not auth.secrets:
        raise ApiError(501, "tokens_disabled", "feedback tokens are disabled: set TRACEWATCH_FEEDBACK_SECRETS")
    now = time.time()
    try:
        token = mint_feedback_token(
            body.trace_id,
            secret=auth.secrets[0],
            names=body.names,
            values=body.values,
            user_id=body.user_id,
            ttl_s=body.ttl_s,
            now=now,
        )
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    return TokenResponse(token=token, expires_at=int(now + body.ttl_s))
