"""The app-side SDK against the real app (with fakes) and against `httpx.MockTransport`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import httpx
import pytest

from stream._exceptions import ConfigError
from stream.sdk._feedback import (
    FeedbackError,
    alog_expectation,
    alog_feedback,
    log_expectation,
    log_feedback,
    mint_feedback_token,
)
from stream.sdk._tokens import verify_feedback_token
from tests.stream.test_api import KEY, SECRET, TID, FakeProducer, make_app

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient


@dataclass
class AssessmentSource:  # the shape of mlflow.entities.AssessmentSource
    source_type: str
    source_id: str


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def client(producer):
    with TestClient(make_app(producer, rate_limit=1000.0)) as c:
        yield c


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("TRACEWATCH_API_URL", "TRACEWATCH_API_KEYS", "TRACEWATCH_FEEDBACK_SECRETS"):
        monkeypatch.delenv(name, raising=False)


def test_log_feedback_returns_the_receipt_of_the_acked_event(client, producer) -> None:
    receipt = log_feedback(
        TID, value=False, rationale="wrong", source_id="u-1", metadata={"page": "x"}, api_key=KEY, client=client
    )
    [event] = producer.events()
    assert (receipt.event_id, receipt.trace_id) == (event.event_id, TID)
    assert (event.name, event.value, event.rationale, event.source_id, event.metadata) == (
        "feedback",  # MLflow's DEFAULT_FEEDBACK_NAME
        False,
        "wrong",
        "u-1",
        {"page": "x"},
    )


def test_mlflow_source_objects_are_accepted(client, producer) -> None:
    log_feedback(TID, "helpful", 5, source=AssessmentSource("LLM_JUDGE", "gpt"), api_key=KEY, client=client)
    log_feedback(TID, "helpful", 4, source={"source_type": "CODE", "source_id": "ci"}, api_key=KEY, client=client)
    assert [(e.source_type, e.source_id) for e in producer.events()] == [("LLM_JUDGE", "gpt"), ("CODE", "ci")]


def test_token_feedback_from_the_sdk(client, producer, monkeypatch) -> None:
    monkeypatch.setenv("TRACEWATCH_FEEDBACK_SECRETS", f"{SECRET},old")
    tok = mint_feedback_token(TID, values=[True, False], user_id="u-7")
    verify_feedback_token(tok, secrets=[SECRET], trace_id=TID, name="user_satisfaction", value=True)
    log_feedback(TID, value=True, token=tok, client=client)
    assert producer.events()[0].source_id == "u-7"
    with pytest.raises(FeedbackError) as info:
        log_feedback("tr-other", value=True, token=tok, client=client)
    assert (info.value.status, info.value.code) == (403, "token_wrong_trace")
    assert "another trace" in str(info.value)


def test_errors_carry_the_servers_message(client, producer) -> None:
    with pytest.raises(FeedbackError) as info:
        log_feedback(TID, value=True, api_key="wrong", client=client)
    assert (info.value.status, info.value.code) == (401, "invalid_api_key")
    with pytest.raises(FeedbackError, match="trace_id"):
        log_feedback("", value=True, api_key=KEY, client=client)
    assert producer.calls == 0


def test_503_carries_retry_after() -> None:
    from aiokafka.errors import KafkaTimeoutError

    with TestClient(make_app(FakeProducer(fail=KafkaTimeoutError()))) as c, pytest.raises(FeedbackError) as info:
        log_feedback(TID, value=True, api_key=KEY, client=c)
    assert (info.value.status, info.value.code, info.value.retry_after) == (503, "kafka_unavailable", 1.0)


def test_log_expectation(client, producer) -> None:
    log_expectation(TID, "expected_facts", ["a", "b"], api_key=KEY, client=client)
    [event] = producer.events()
    assert (event.kind, event.name, event.value) == ("expectation", "expected_facts", ["a", "b"])


def test_value_is_required(client) -> None:
    with pytest.raises(ValueError, match="value"):
        log_feedback(TID, api_key=KEY, client=client)


def test_defaults_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("TRACEWATCH_API_URL", "http://api.example:9000/")
    monkeypatch.setenv("TRACEWATCH_API_KEYS", " first , second")
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers["authorization"]))
        return httpx.Response(202, json={"event_id": "e1", "trace_id": TID})

    with httpx.Client(transport=httpx.MockTransport(handler)) as c:
        assert log_feedback(TID, value=True, client=c).event_id == "e1"
    assert seen == [("http://api.example:9000/v1/feedback", "Bearer first")]


def test_no_credentials_is_a_clear_error() -> None:
    with pytest.raises(FeedbackError, match="TRACEWATCH_API_KEYS"):
        log_feedback(TID, value=True, base_url="http://127.0.0.1:9")


def test_unreachable_api_is_a_feedback_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with httpx.Client(transport=httpx.MockTransport(handler)) as c, pytest.raises(FeedbackError, match="cannot reach"):
        log_feedback(TID, value=True, api_key=KEY, base_url="http://x", client=c)


def test_non_json_error_bodies_are_reported() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="Bad Gateway from the proxy")

    with httpx.Client(transport=httpx.MockTransport(handler)) as c, pytest.raises(FeedbackError) as info:
        log_feedback(TID, value=True, api_key=KEY, base_url="http://x", client=c)
    assert info.value.status == 502 and "proxy" in str(info.value)


async def test_async_variants(producer) -> None:
    app = make_app(producer)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        receipt = await alog_feedback(TID, value=True, source_id="u-2", api_key=KEY, client=c)
        await alog_expectation(TID, "answer", "42", api_key=KEY, client=c)
        with pytest.raises(FeedbackError) as info:
            await alog_feedback(TID, value=True, api_key="nope", client=c)
    assert info.value.status == 401
    kinds = [(e.kind, e.source_id) for e in producer.events()]
    assert kinds == [("feedback", "u-2"), ("expectation", "default")]  # MLflow: HUMAN/default
    assert receipt.event_id == producer.events()[0].event_id


def test_mint_needs_a_secret() -> None:
    with pytest.raises(ConfigError, match="TRACEWATCH_FEEDBACK_SECRETS"):
        mint_feedback_token(TID)
    tok = mint_feedback_token(TID, secret="given")
    assert verify_feedback_token(tok, secrets=["given"], trace_id=TID, name="user_satisfaction", value=1)


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:8080/v1/feedback"),
        ({"TRACEWATCH_API_PORT": "58080"}, "http://127.0.0.1:58080/v1/feedback"),
        ({"TRACEWATCH_API_HOST": "10.0.0.7", "TRACEWATCH_API_PORT": "58080"}, "http://10.0.0.7:58080/v1/feedback"),
        ({"TRACEWATCH_API_HOST": "0.0.0.0"}, "http://127.0.0.1:8080/v1/feedback"),
        ({"TRACEWATCH_API_HOST": "::", "TRACEWATCH_API_PORT": "9"}, "http://[::1]:9/v1/feedback"),
        # the explicit URL wins over the API's bind address
        ({"TRACEWATCH_API_URL": "https://fb.example/", "TRACEWATCH_API_PORT": "58080"}, "https://fb.example/v1/feedback"),
    ],
)
def test_default_url_follows_the_api_address(monkeypatch, env, url) -> None:
    """Issue 20 item 1: an API on another port (TRACEWATCH_API_PORT) is reached without TRACEWATCH_API_URL."""
    for name in ("TRACEWATCH_API_HOST", "TRACEWATCH_API_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(202, json={"event_id": "e1", "trace_id": TID})

    with httpx.Client(transport=httpx.MockTransport(handler)) as c:
        log_feedback(TID, value=False, source_id="u-42", api_key=KEY, client=c)
        log_expectation(TID, "answer", "yes", api_key=KEY, client=c)
    assert seen == [url, url.replace("/v1/feedback", "/v1/expectations")]


def test_a_bad_api_port_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("TRACEWATCH_API_PORT", "eighty")
    with pytest.raises(ConfigError, match="TRACEWATCH_API_PORT=eighty"):
        log_feedback(TID, value=True, api_key=KEY)


def test_mlflow_signature_and_defaults(client, producer) -> None:
    """MLflow's parameters in MLflow's order, with its defaults (name, CODE/default source)."""
    import inspect

    params = list(inspect.signature(log_feedback).parameters.values())
    assert [(p.name, p.default) for p in params[:8]] == [
        ("trace_id", inspect.Parameter.empty),
        ("name", "feedback"),
        ("value", None),
        ("source", None),
        ("error", None),
        ("rationale", None),
        ("metadata", None),
        ("span_id", None),
    ]
    exp = list(inspect.signature(log_expectation).parameters.values())
    assert [p.name for p in exp[:6]] == ["trace_id", "name", "value", "source", "metadata", "span_id"]
    log_feedback(trace_id=TID, value=0.5, api_key=KEY, client=client)
    log_expectation(trace_id=TID, name="answer", value="42", api_key=KEY, client=client)
    fb, ex = producer.events()
    assert (fb.name, fb.source_type, fb.source_id, fb.error, fb.span_id) == ("feedback", "CODE", "default", None, None)
    assert (ex.source_type, ex.source_id) == ("HUMAN", "default")


def test_error_and_span_id_are_sent(client, producer) -> None:
    try:
        raise TimeoutError("judge took too long")
    except TimeoutError as exc:
        raised = exc
    log_feedback(trace_id=TID, name="relevance", error=raised, span_id="a1b2c3d4e5f60718", api_key=KEY, client=client)
    log_feedback(TID, "relevance", error="no answer to judge", api_key=KEY, client=client)
    log_feedback(TID, "relevance", error=AssessmentErrorLike("RATE_LIMIT", "429"), api_key=KEY, client=client)
    log_expectation(TID, "answer", "42", span_id="a1b2c3d4e5f60718", api_key=KEY, client=client)
    a, b, c, d = producer.events()
    assert a.value is None and a.span_id == "a1b2c3d4e5f60718"
    assert a.error is not None
    assert (a.error["error_code"], a.error["error_message"]) == ("TimeoutError", "judge took too long")
    assert "Traceback" in a.error["stack_trace"] and "judge took too long" in a.error["stack_trace"]
    assert b.error == {"error_code": "ASSESSMENT_ERROR", "error_message": "no answer to judge"}
    assert c.error == {"error_code": "RATE_LIMIT", "error_message": "429"}
    assert (d.kind, d.span_id) == ("expectation", "a1b2c3d4e5f60718")
    with pytest.raises(TypeError, match="error"):
        log_feedback(TID, error=42, api_key=KEY, client=client)


@dataclass
class AssessmentErrorLike:  # the shape of mlflow.entities.AssessmentError
    error_code: str
    error_message: str | None = None
    stack_trace: str | None = None


def test_token_feedback_keeps_the_tokens_name_and_human_source(client, producer) -> None:
    tok = mint_feedback_token(TID, secret=SECRET, values=[True, False], user_id="u-7")
    log_feedback(TID, value=True, token=tok, client=client)  # no name: the token's default name
    [event] = producer.events()
    assert (event.name, event.source_type, event.source_id) == ("user_satisfaction", "HUMAN", "u-7")


def test_source_id_shortcut_is_a_person(client, producer) -> None:
    log_feedback(TID, value=True, source_id="u-1", api_key=KEY, client=client)
    log_feedback(TID, value=True, source_id="ci", source_type="CODE", api_key=KEY, client=client)
    assert [(e.source_type, e.source_id) for e in producer.events()] == [("HUMAN", "u-1"), ("CODE", "ci")]
