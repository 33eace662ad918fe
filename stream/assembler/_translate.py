"""Span attributes of OTLP instrumentations -> MLflow's span attributes. Pure functions on dicts.

MLflow's own OTLP endpoint (`mlflow/server/otel_api.py` -> `Span.from_otel_proto`, then
`translate_span_when_storing` in `mlflow/tracing/otel/translation/`) is the reference; this
module follows it so a trace assembled here reads like the one MLflow stores:

* Encoding. MLflow stores every span attribute as a JSON string. Its own exporter already
  writes JSON (`mlflow.spanType` = `"\\"AGENT\\""`, `mlflow.spanLogLevel` = `"20"`), so for a span
  from MLflow a string value that is valid JSON is kept byte for byte. Other instrumentations
  send plain values; MLflow's server dumps them once and keeps a string that already decodes
  to a str/dict/list (its `sanitize_attributes`), and so do we.
* Translation, only when MLflow's own key is absent (never overwrite what MLflow wrote):

  =========================  ==============================================================
  MLflow key                 taken from (first present)
  =========================  ==============================================================
  ``mlflow.spanType``        ``openinference.span.kind`` (same names), ``gen_ai.operation.name``
                             (chat->CHAT_MODEL, text_completion/generate_content/response->LLM,
                             embeddings->EMBEDDING, execute_tool->TOOL, invoke/create_agent->AGENT)
  ``mlflow.spanInputs``      ``input.value``, ``gen_ai.input.messages``,
                             ``gen_ai.tool.call.arguments``, ``gen_ai.{system,user,assistant}.message``
                             events; ``gen_ai.prompt`` (older semconv)
  ``mlflow.spanOutputs``     ``output.value``, ``gen_ai.output.messages``, ``gen_ai.tool.call.result``,
                             ``gen_ai.choice`` events, ``gen_ai.completion``; for a RETRIEVER,
                             OpenInference ``retrieval.documents.<i>.document.*`` as MLflow Documents
  ``mlflow.chat.tokenUsage`` ``gen_ai.usage.{input,output}_tokens`` (total = sum; older
                             ``prompt_tokens``/``completion_tokens``), ``llm.token_count.*``
  ``mlflow.llm.model``       ``gen_ai.response.model``, ``gen_ai.request.model``, ``llm.model_name``
  ``mlflow.llm.provider``    ``gen_ai.provider.name``, ``gen_ai.system``, ``llm.provider``
  =========================  ==============================================================

  Every source attribute stays on the span as well (unknown attributes are kept).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["encode_attributes", "translate_attributes", "usage_of"]

SPAN_TYPE = "mlflow.spanType"
INPUTS = "mlflow.spanInputs"
OUTPUTS = "mlflow.spanOutputs"
USAGE = "mlflow.chat.tokenUsage"
MODEL = "mlflow.llm.model"
PROVIDER = "mlflow.llm.provider"

_OPENINFERENCE_KINDS = {
    k: k
    for k in (
        "TOOL",
        "CHAIN",
        "LLM",
        "RETRIEVER",
        "EMBEDDING",
        "AGENT",
        "RERANKER",
        "UNKNOWN",
        "GUARDRAIL",
        "EVALUATOR",
    )
}
_GENAI_OPERATIONS = {
    "chat": "CHAT_MODEL",
    "create_agent": "AGENT",
    "embeddings": "EMBEDDING",
    "execute_tool": "TOOL",
    "generate_content": "LLM",
    "invoke_agent": "AGENT",
    "text_completion": "LLM",
    "response": "LLM",
}
_INPUT_KEYS = ("input.value", "gen_ai.input.messages", "gen_ai.tool.call.arguments", "gen_ai.prompt")
_OUTPUT_KEYS = ("output.value", "gen_ai.output.messages", "gen_ai.tool.call.result", "gen_ai.completion")
_MODEL_KEYS = (
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.response.model_name",
    "llm.model_name",
    "llm.request.model_name",
    "embedding.model_name",
)
_PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider")
# (input, output, total) per convention, the first with any count wins (as MLflow's translators)
_TOKEN_KEYS = (
    ("llm.token_count.prompt", "llm.token_count.completion", "llm.token_count.total"),
    ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", None),
    ("gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens", None),
)
_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
}


def _dump(value: Any) -> str:
    """`json.dumps` as MLflow calls it (`ensure_ascii=False`, default separators); bytes as base64."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        if isinstance(value, bytes | bytearray):
            return json.dumps(base64.b64encode(value).decode())
        return json.dumps(repr(value), ensure_ascii=False)


def _loads(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def encode_attribute(value: Any, *, from_mlflow: bool) -> str:
    """One attribute value as MLflow stores it (a JSON string); see the module docstring."""
    if isinstance(value, str):
        ok, decoded = _loads(value)
        if ok and (from_mlflow or isinstance(decoded, str | dict | list)):
            return value
    return _dump(value)


def encode_attributes(attrs: Mapping[str, Any], *, from_mlflow: bool) -> dict[str, str]:
    """All attributes of a span encoded (keys sorted, so the output never depends on send order)."""
    return {k: encode_attribute(attrs[k], from_mlflow=from_mlflow) for k in sorted(attrs)}


def _decoded(encoded: Mapping[str, str], key: str) -> Any:
    raw = encoded.get(key)
    if raw is None:
        return None
    ok, value = _loads(raw)
    return value if ok else raw


def _present(encoded: Mapping[str, str], key: str) -> str | None:
    """The encoded value if it means something (MLflow skips null, "" and empty containers)."""
    raw = encoded.get(key)
    if raw is None:
        return None
    ok, value = _loads(raw)
    if ok and not value and value != 0:
        return None
    return raw


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def usage_of(encoded: Mapping[str, str]) -> dict[str, int] | None:
    """Token usage of a span (`input_tokens`, `output_tokens`, `total_tokens`), or None."""
    usage = _decoded(encoded, USAGE)
    if isinstance(usage, dict):
        out = {k: v for k in ("input_tokens", "output_tokens", "total_tokens") if (v := _int(usage.get(k))) is not None}
        return out or None
    for in_key, out_key, total_key in _TOKEN_KEYS:
        i, o = _int(_decoded(encoded, in_key)), _int(_decoded(encoded, out_key))
        t = _int(_decoded(encoded, total_key)) if total_key else None
        if t is None and i is not None and o is not None:
            t = i + o
        if i is None and o is None and t is None:
            continue
        found = {"input_tokens": i, "output_tokens": o, "total_tokens": t}
        return {k: v for k, v in found.items() if v is not None}
    return None


def _span_type(encoded: Mapping[str, str]) -> str | None:
    kind = _decoded(encoded, "openinference.span.kind")
    if isinstance(kind, str) and (t := _OPENINFERENCE_KINDS.get(kind.upper())):
        return t
    op = _decoded(encoded, "gen_ai.operation.name")
    if isinstance(op, str):
        return _GENAI_OPERATIONS.get(op)
    return None


def _first(encoded: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if (raw := _present(encoded, key)) is not None:
            return raw
    return None


def _messages_from_events(events: list[dict[str, Any]], *, output: bool) -> str | None:
    messages = []
    for event in events:
        attrs = event.get("attributes") or {}
        content = attrs.get("content")
        if not content:
            continue
        name = event.get("name")
        if output and name == "gen_ai.choice":
            messages.append({"role": attrs.get("role", "assistant"), "content": _maybe_json(content)})
        elif not output and name in _EVENT_ROLES:
            messages.append({"role": _EVENT_ROLES[name], "content": _maybe_json(content)})
    return json.dumps(messages) if messages else None


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        ok, decoded = _loads(value)
        if ok:
            return decoded
    return value


def _retrieval_documents(encoded: Mapping[str, str]) -> str | None:
    """OpenInference `retrieval.documents.<i>.document.{content,id,metadata,score}` -> MLflow Documents."""
    prefix = "retrieval.documents."
    docs: dict[int, dict[str, Any]] = {}
    for key in encoded:
        if not key.startswith(prefix):
            continue
        index, _, field = key[len(prefix) :].partition(".document.")
        if not index.isdigit() or not field:
            continue
        doc = docs.setdefault(int(index), {"page_content": "", "metadata": {}, "id": None})
        value = _decoded(encoded, key)
        if field == "content":
            doc["page_content"] = value
        elif field == "id":
            doc["id"] = value if value is None else str(value)
        elif field == "metadata":
            meta = _maybe_json(value)
            if isinstance(meta, dict):
                doc["metadata"].update(meta)
        elif field == "score":
            doc["metadata"]["score"] = value
    if not docs:
        return None
    return json.dumps([docs[i] for i in sorted(docs)], ensure_ascii=False)


def translate_attributes(encoded: dict[str, str], events: list[dict[str, Any]]) -> dict[str, str]:
    """Add MLflow's keys derived from other conventions to `encoded` (in place) and return it."""
    current = _decoded(encoded, SPAN_TYPE)
    if current in (None, "UNKNOWN") and (span_type := _span_type(encoded)):
        encoded[SPAN_TYPE] = json.dumps(span_type)
    if INPUTS not in encoded and (raw := _first(encoded, _INPUT_KEYS) or _messages_from_events(events, output=False)):
        encoded[INPUTS] = raw
    if OUTPUTS not in encoded:
        raw = _first(encoded, _OUTPUT_KEYS) or _messages_from_events(events, output=True)
        if raw is None and _decoded(encoded, SPAN_TYPE) == "RETRIEVER":
            raw = _retrieval_documents(encoded)
        if raw is not None:
            encoded[OUTPUTS] = raw
    if USAGE not in encoded and (usage := usage_of(encoded)):
        encoded[USAGE] = json.dumps(usage)
    if MODEL not in encoded and (model := _first(encoded, _MODEL_KEYS)):
        encoded[MODEL] = json.dumps(_maybe_json(model))
    if PROVIDER not in encoded and (provider := _first(encoded, _PROVIDER_KEYS)):
        encoded[PROVIDER] = json.dumps(_maybe_json(provider))
    return encoded
