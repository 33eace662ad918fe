"""The MLflow app whose OTLP export is `mlflow_3_17_2_export.bin` (see README.md for the variables)."""

import contextlib
import time

import mlflow
from mlflow.entities import Document, SpanType


@mlflow.trace(span_type=SpanType.RETRIEVER)
def retrieve(q):
    return [Document(page_content="doc about " + q, metadata={"doc_uri": "kb://1"}, id="d1")]


def chat(messages):
    out = {
        "choices": [{"message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    with mlflow.start_span(name="chat_completion", span_type=SpanType.CHAT_MODEL) as span:
        span.set_inputs({"messages": messages, "model": "gpt-4.1-mini"})
        span.set_attribute("mlflow.llm.model", "gpt-4.1-mini")
        span.set_attribute("mlflow.chat.tokenUsage", {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15})
        span.set_outputs(out)
    return out


@mlflow.trace(span_type=SpanType.TOOL)
def tool(x):
    if x == "fail":
        raise TimeoutError("crm timed out")
    return {"ok": x}


@mlflow.trace(span_type=SpanType.AGENT)
def agent(request, fail=False):
    retrieve(request)
    tool("fail" if fail else "acct")
    return chat([{"role": "user", "content": request}])["choices"][0]["message"]["content"]


agent("hello world")
with contextlib.suppress(TimeoutError):
    agent("boom", fail=True)
time.sleep(1.5)  # MLflow's BatchSpanProcessor exports on its schedule (OTEL_BSP_SCHEDULE_DELAY)
