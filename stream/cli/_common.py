"""What the commands share: consoles, settings from flags and variables, exits, trace files.

Nothing heavy is imported here: `tracewatch --help` loads this module.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import orjson
import typer
from rich.console import Console

from stream._config import Settings, load_settings
from stream._exceptions import ConfigError

__all__ = [
    "API_FIELDS",
    "API_USES",
    "WORKER_USES",
    "BootstrapOpt",
    "RedisOpt",
    "console",
    "fail",
    "out",
    "settings_for",
    "trace_files",
]

console = Console(stderr=True, emoji=False)  # `a:b:c` in a message is not an emoji
out = Console(emoji=False)

BootstrapOpt = Annotated[
    str | None,
    typer.Option("--bootstrap", "-b", help="Kafka bootstrap servers, host:port[,...] [env TRACEWATCH_KAFKA_BOOTSTRAP]"),
]
RedisOpt = Annotated[
    str | None,
    typer.Option("--redis-url", help="Redis URL, e.g. redis://127.0.0.1:6379/0 [env TRACEWATCH_REDIS_URL]"),
]

# The fields each long-running command reads (named, so a field added for another command
# never stops these): a bad value elsewhere is not their business.
_KAFKA = ("kafka_bootstrap", "topic_prefix", "compression", "max_trace_bytes")
_REDIS = ("redis_url", "redis_prefix", "trace_ttl_s", "aggregate_ttl_s")
API_FIELDS = frozenset(
    {"api_host", "api_port", "api_keys", "feedback_secrets", "api_header_timeout", "api_body_timeout"}
)
API_USES = frozenset({*_KAFKA, *_REDIS, *API_FIELDS, "scorer_modules"})
WORKER_USES = frozenset(
    {
        *_KAFKA,
        *_REDIS,
        *(name for name in Settings.model_fields if name.startswith(("judge_", "consumer_"))),
        "registry_poll_interval_s",
        "scorer_modules",
        "metrics_host",
        "metrics_port",
    }
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line on stderr (no markup: the message may hold brackets) and exit."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_for(uses: Collection[str] | None = None, **flags: tuple[str, object]) -> Settings:
    """Settings for one command: its flags (`field=("--flag", value)`) over `TRACEWATCH_*`.

    A bad value of a field the command uses ends it with one line naming the flag or the
    variable and exit code 2; bad values of fields it does not use are not its business.
    """
    try:
        return load_settings(flags=flags, uses=uses)
    except ConfigError as exc:
        fail(str(exc), 2)


def trace_files(path: Path, not_traces: list[str]) -> Iterator[tuple[str, bytes]]:
    """`scorers.iter_traces`, minus a folder's side files, which are appended to `not_traces`.

    A JSON file in a folder that parses but is not a trace (not an object with an `info`
    object, e.g. an index like `trace_ids.json`) is not a trace: `publish` and `evaluate`
    list it as "not a trace, ignored" rather than as invalid. Anything else, including JSON
    that does not parse, is passed on for the decoder to judge.
    """
    from scorers import iter_traces

    in_folder = path.is_dir()
    for label, data in iter_traces(path):
        if in_folder and label.lower().endswith(".json"):
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError:
                doc = None
            else:
                if not isinstance(doc, dict) or not isinstance(doc.get("info"), dict):
                    not_traces.append(label)
                    continue
        yield label, data
