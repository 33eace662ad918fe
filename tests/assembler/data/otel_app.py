"""Capture what a plain OpenTelemetry SDK app with GenAI + OpenInference attributes exports."""

import json

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

provider = TracerProvider(resource=Resource.create({"service.name": "genai-app", "deployment.environment": "test"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint="http://127.0.0.1:24319/v1/traces")))
tracer = provider.get_tracer("genai.demo", "0.1")
with tracer.start_as_current_span(
    "invoke_agent support",
    attributes={
        "gen_ai.operation.name": "invoke_agent",
        "input.value": json.dumps({"question": "reset password?"}),
        "output.value": "Use the reset link.",
        "user.id": "u-1",
        "session.id": "s-9",
    },
):
    with tracer.start_as_current_span(
        "retrieve",
        attributes={
            "openinference.span.kind": "RETRIEVER",
            "input.value": "reset password",
            "retrieval.documents.0.document.content": "Go to settings",
            "retrieval.documents.0.document.id": "kb-1",
            "retrieval.documents.0.document.metadata": json.dumps({"doc_uri": "kb://1"}),
            "retrieval.documents.0.document.score": 0.9,
        },
    ):
        pass
    with tracer.start_as_current_span(
        "chat gpt-4o",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 7,
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "reset password?"}]}]
            ),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "Use the reset link."}]}]
            ),
            "custom.flag": True,
            "custom.list": [1, 2],
        },
    ):
        pass
    with tracer.start_as_current_span(
        "execute_tool lookup",
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.call.arguments": '{"id": 3}'},
    ) as s:
        s.set_status(Status(StatusCode.ERROR, "lookup failed"))
        s.record_exception(ValueError("no such user"))
provider.shutdown()
