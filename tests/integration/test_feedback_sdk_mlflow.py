"""`log_feedback`/`log_expectation` with MLflow's arguments over real HTTP, Kafka in between.

`error` and `span_id` (MLflow's) travel from the SDK through the API onto the feedback topic
and back out of `FeedbackEvent.from_json` unchanged; MLflow's defaults apply when omitted.
"""

from __future__ import annotations

import pytest

from stream.sdk._feedback import log_expectation, log_feedback
from tests.integration.test_api import KEY, Api, api, feedback_events, tid  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


class AssessmentError:  # the shape of mlflow.entities.AssessmentError
    def __init__(self, error_code: str, error_message: str | None = None) -> None:
        self.error_code, self.error_message, self.stack_trace = error_code, error_message, None


async def test_error_and_span_id_round_trip(api: Api) -> None:  # noqa: F811  (the fixture)
    a = tid()
    try:
        raise TimeoutError("judge timed out")
    except TimeoutError as exc:
        raised = exc
    r1 = log_feedback(
        trace_id=a, name="relevance", error=raised, span_id="0123456789abcdef", base_url=api.url, api_key=KEY
    )
    r2 = log_feedback(
        trace_id=a, name="tone", error=AssessmentError("RATE_LIMIT", "429"), base_url=api.url, api_key=KEY
    )
    r3 = log_feedback(trace_id=a, value=0.7, rationale="ok", base_url=api.url, api_key=KEY)
    r4 = log_expectation(
        trace_id=a, name="expected_response", value="42", span_id="0123456789abcdef", base_url=api.url, api_key=KEY
    )
    got = {e.event_id: e for e in await feedback_events(api.settings)}
    e1, e2, e3, e4 = (got[r.event_id] for r in (r1, r2, r3, r4))
    assert (e1.name, e1.value, e1.span_id) == ("relevance", None, "0123456789abcdef")
    assert e1.error is not None
    assert (e1.error["error_code"], e1.error["error_message"]) == ("TimeoutError", "judge timed out")
    assert "Traceback" in e1.error["stack_trace"]
    assert (e2.error, e2.span_id) == ({"error_code": "RATE_LIMIT", "error_message": "429"}, None)
    # MLflow's defaults: name "feedback", source CODE/default; an expectation HUMAN/default.
    assert (e3.name, e3.value, e3.source_type, e3.source_id, e3.error) == ("feedback", 0.7, "CODE", "default", None)
    assert (e4.kind, e4.span_id, e4.source_type, e4.source_id) == (
        "expectation",
        "0123456789abcdef",
        "HUMAN",
        "default",
    )
