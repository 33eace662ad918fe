"""Judge model URIs and the wire shapes of the chat APIs behind them.

A judge names its model as MLflow does, `<provider>:/<model>`:

- `openai:/<model>` (or a bare `<model>`): `POST {base_url}/chat/completions`, OpenAI's
  shape. The base URL is configuration (`TRACEWATCH_JUDGE_BASE_URL`), so the same URI
  reaches OpenAI or any OpenAI-compatible server (vLLM, Ollama's `/v1`, a LiteLLM proxy,
  Azure through a gateway): point the base URL there and keep `openai:/` in the judge.
- `anthropic:/<model>`: `POST {anthropic_base_url}/messages`, Anthropic's Messages API
  (`x-api-key` and `anthropic-version` headers, `content[0].text`,
  `usage.input_tokens/output_tokens`), with its `anthropic-ratelimit-*` headers.

Per-judge base URLs are deliberately not part of a model URI: a judge is data that the
registry accepts from users, and a URI that could name any host would let a registered
judge send the operator's API key (or the worker's requests) anywhere.

OpenAI's reasoning models (`o1`, `o3`, `o4-mini`, `gpt-5*`, ...) refuse `max_tokens` and
any `temperature` but the default, so their requests carry `max_completion_tokens` instead
and no temperature (what LiteLLM, MLflow's client, does for them). Their budget also pays
for hidden reasoning tokens, hence a larger floor (`REASONING_MIN_COMPLETION_TOKENS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from scorers._exceptions import ScorerDefinitionError

__all__ = ["DEFAULT_ANTHROPIC_BASE_URL", "SUPPORTED_PROVIDERS", "is_reasoning_model", "parse_model"]

SUPPORTED_PROVIDERS: Final = frozenset({"openai", "anthropic"})
"""`openai` (any OpenAI-compatible `/chat/completions` via the base URL) and `anthropic`."""

DEFAULT_ANTHROPIC_BASE_URL: Final = "https://api.anthropic.com/v1"
ANTHROPIC_VERSION: Final = "2023-06-01"
REASONING_MIN_COMPLETION_TOKENS: Final = 4096
"""A reasoning model's completion budget includes its hidden reasoning: 512 would often be
spent before the verdict is written, so its requests ask for at least this many."""

_REASONING = re.compile(r"^(?:o[1-9](?:-|$)|gpt-5)")


def parse_model(model: str) -> tuple[str, str]:
    """Split `"openai:/gpt-4.1-mini"` into `("openai", "gpt-4.1-mini")`; a bare name is OpenAI.

    Raises:
        ScorerDefinitionError: the provider is not supported or the model name is empty.
    """
    if not isinstance(model, str) or not model.strip():
        raise ScorerDefinitionError(f"judge model must be a non-empty string, got {model!r}")
    provider, sep, name = model.partition(":/")
    if not sep:
        provider, name = "openai", model
    provider, name = provider.strip().lower(), name.strip().lstrip("/")
    if provider not in SUPPORTED_PROVIDERS:
        raise ScorerDefinitionError(
            f"judge model {model!r}: provider {provider!r} is not supported; use one of "
            f"{', '.join(sorted(SUPPORTED_PROVIDERS))} (an OpenAI-compatible server such as vLLM, "
            "Ollama or LiteLLM is `openai:/<model>` with TRACEWATCH_JUDGE_BASE_URL pointing at it)"
        )
    if not name:
        raise ScorerDefinitionError(f"judge model {model!r} has no model name after the provider")
    return provider, name


def is_reasoning_model(name: str) -> bool:
    """Whether an OpenAI model takes `max_completion_tokens` and no `temperature`.

    Example:
        >>> [is_reasoning_model(m) for m in ("o1", "o4-mini", "gpt-5-mini", "gpt-4o", "omni")]
        [True, True, True, False, False]
    """
    return bool(_REASONING.match(name.rsplit("/", 1)[-1].lower()))


def openai_body(name: str, prompt: str, max_tokens: int, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `/chat/completions` request: deterministic by default, `params` win (as in MLflow).

    For a reasoning model `max_tokens` (ours or the caller's) becomes `max_completion_tokens`
    and `temperature` is dropped, as LiteLLM's `drop_params` does in MLflow.
    """
    body: dict[str, Any] = {"model": name, "messages": [{"role": "user", "content": prompt}]}
    if is_reasoning_model(name):
        extra = dict(params or {})
        budget = extra.pop("max_tokens", None)
        extra.pop("temperature", None)
        body["max_completion_tokens"] = max(max_tokens, REASONING_MIN_COMPLETION_TOKENS) if budget is None else budget
        body.update(extra)
        return body
    body["temperature"] = 0
    body["max_tokens"] = max_tokens
    body.update(params or {})
    return body


def anthropic_body(name: str, prompt: str, max_tokens: int, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Messages API request (`max_tokens` is mandatory there); `params` win."""
    body: dict[str, Any] = {
        "model": name,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": prompt}],
    }
    body.update(params or {})
    return body


def parse_openai(data: Any) -> tuple[str, int, int]:
    """`(text, prompt_tokens, completion_tokens)` of a chat completion.

    Raises:
        LookupError, TypeError, ValueError, AttributeError: not a chat completion.
    """
    text = data["choices"][0]["message"]["content"]
    if not isinstance(text, str):
        raise TypeError("message content is not a string")
    usage = data.get("usage") or {}
    return text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def parse_anthropic(data: Any) -> tuple[str, int, int]:
    """`(text, input_tokens, output_tokens)` of a Messages API response.

    The text is the first `text` block (a `thinking` block may come first when extended
    thinking is on).

    Raises:
        LookupError, TypeError, ValueError, AttributeError: not a Messages response.
    """
    blocks = data["content"]
    text = next(b["text"] for b in blocks if b.get("type", "text") == "text")
    if not isinstance(text, str):
        raise TypeError("content text is not a string")
    usage = data.get("usage") or {}
    return text, int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)


def _until(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


_LIMITS: Final = ("requests", "tokens", "input-tokens", "output-tokens")


def anthropic_delay(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds until an exhausted Anthropic limit resets, from `anthropic-ratelimit-*`.

    Anthropic reports each limit as `anthropic-ratelimit-<limit>-remaining` and
    `...-reset` (an RFC 3339 time). A limit at 0 remaining means the next request would
    be a 429, so the client pauses the provider until the latest such reset; None when
    no limit is exhausted (or the headers are absent).
    """
    now = now or datetime.now(UTC)
    waits: list[float] = []
    for limit in _LIMITS:
        remaining = headers.get(f"anthropic-ratelimit-{limit}-remaining")
        if remaining is None:
            continue
        try:
            exhausted = int(remaining) <= 0
        except ValueError:
            continue
        if exhausted:
            wait = _until(headers.get(f"anthropic-ratelimit-{limit}-reset"), now)
            if wait is not None:
                waits.append(wait)
    return max(waits) if waits else None
