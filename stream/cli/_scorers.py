"""`tracewatch scorers ...`: manage the scorer registry from the command line.

Thin shells over `Registry`: each command connects to Redis (`TRACEWATCH_REDIS_URL`,
`TRACEWATCH_REDIS_PREFIX`), makes one change or read, and prints a table, or JSON with
`--json`. A request the registry refuses (bad reference, module outside
`TRACEWATCH_SCORER_MODULES`, bad judge template, rate or filter) prints one red line saying
what to fix and exits with code 2; Redis being unreachable exits with code 1.

`start` and `update` merge: an option left out keeps the stored value (`--filter ''` clears
the filter). `register` with `--rate` registers and starts in one step; without it the scorer
is registered stopped, as in MLflow, until `start`.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from stream.cli._common import RedisOpt, settings_for

if TYPE_CHECKING:
    from stream.registry._records import BudgetConfig, SamplingConfig, ScorerRecord
    from stream.registry._registry import Registry

__all__ = ["scorers_app"]

T = TypeVar("T")

scorers_app = typer.Typer(
    help="Register, start, stop, update, list and delete the scorers that workers run.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

_err = Console(stderr=True, emoji=False)

ExperimentOpt = Annotated[str, typer.Option("--experiment", "-e", help="Experiment id.")]
RateOpt = Annotated[float | None, typer.Option("--rate", help="Sample rate in [0, 1].")]
FilterOpt = Annotated[
    str | None,
    typer.Option("--filter", help="Trace filter, e.g. \"attributes.status = 'OK' AND span.type = 'LLM'\"."),
]
CallsOpt = Annotated[int | None, typer.Option("--max-calls-per-hour", help="Budget: calls per hour per worker.")]
TokensOpt = Annotated[
    int | None, typer.Option("--max-tokens-per-hour", help="Budget: judge tokens per hour per worker.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(message: str, code: int) -> typer.Exit:
    # The message is data (a filter, a reference): brackets in it are not markup.
    _err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _call(redis_url: str | None, op: Callable[[Registry], Awaitable[T]]) -> T:
    """Run one registry operation; map refusals to exit 2 and Redis failures to exit 1."""
    from pydantic import ValidationError

    from sinks import SinkError
    from stream.registry._records import RegistryError, one_message
    from stream.registry._registry import Registry

    settings = settings_for(("redis_url", "redis_prefix", "scorer_modules"), redis_url=("--redis-url", redis_url))

    async def main() -> T:
        async with Registry.from_settings(settings) as registry:
            return await op(registry)

    try:
        return asyncio.run(main())
    except RegistryError as exc:
        raise _fail(str(exc), 2) from None
    except ValidationError as exc:
        raise _fail(one_message(exc), 2) from None
    except SinkError as exc:
        raise _fail(f"registry unavailable at {settings.redis_url}: {exc}", 1) from None


def _sampling(rate: float | None, filter_: str | None, base: SamplingConfig | None = None) -> SamplingConfig:
    from pydantic import ValidationError

    from stream.registry._records import RegistryError, SamplingConfig, one_message

    base = base or SamplingConfig()
    try:
        return SamplingConfig(
            sample_rate=base.sample_rate if rate is None else rate,
            filter_string=base.filter_string if filter_ is None else filter_,
        )
    except ValidationError as exc:
        raise RegistryError(one_message(exc)) from None


def _budget(calls: int | None, tokens: int | None, clear: bool = False) -> BudgetConfig | None:
    from pydantic import ValidationError

    from stream.registry._records import BudgetConfig, RegistryError, one_message

    if clear:
        return BudgetConfig()
    if calls is None and tokens is None:
        return None
    try:
        return BudgetConfig(max_calls_per_hour=calls, max_tokens_per_hour=tokens)
    except ValidationError as exc:
        raise RegistryError(one_message(exc)) from None


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _emit_json(data: Any) -> None:
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _when(t: datetime) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _budget_text(record: ScorerRecord) -> str:
    b = record.budget
    if b is None:
        return "-"
    parts = []
    if b.max_calls_per_hour is not None:
        parts.append(f"{b.max_calls_per_hour} calls/h")
    if b.max_tokens_per_hour is not None:
        parts.append(f"{b.max_tokens_per_hour} tokens/h")
    return ", ".join(parts)


def _state(record: ScorerRecord) -> str:
    return "[green]active[/]" if record.state == "active" else "[yellow]stopped[/]"


def _list_table(records: list[ScorerRecord]) -> Table:
    table = Table()
    table.add_column("exp", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("ver", no_wrap=True)
    table.add_column("rate", no_wrap=True)
    table.add_column("filter", overflow="fold")
    table.add_column("scorer", overflow="fold")
    for r in records:
        table.add_row(
            r.experiment_id,
            r.name,
            _state(r),
            f"{r.current_version}/{len(r.versions)}",
            f"{r.sample_rate:g}",
            r.filter_string or "-",
            r.current.describe(),
        )
    return table


def _details_table(r: ScorerRecord) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in (
        ("name", r.name),
        ("experiment", r.experiment_id),
        ("state", _state(r)),
        ("current version", f"{r.current_version} of {len(r.versions)}"),
        ("sample rate", f"{r.sample_rate:g}"),
        ("filter", r.filter_string or "-"),
        ("budget", _budget_text(r)),
        ("created", _when(r.created_at)),
        ("updated", _when(r.updated_at)),
    ):
        table.add_row(key, value)
    return table


def _show(record: ScorerRecord, as_json: bool, verb: str | None = None) -> None:
    if as_json:
        _emit_json(record.model_dump(mode="json"))
        return
    out = Console()
    if verb:
        out.print(f"{verb} [bold]{escape(record.name)}[/] in experiment {escape(record.experiment_id)}: "
                  f"{_state(record)}, version {record.current_version}, rate {record.sample_rate:g}, "
                  f"filter {escape(record.filter_string or '-')}", highlight=False)
    else:
        out.print(_details_table(record))


@scorers_app.command("register")
def register_command(
    ref: Annotated[
        str | None,
        typer.Argument(help="A built-in name (no_error, 'latency_under(max_ms=2000)', 'Safety()') or "
                       "package.module:attr on TRACEWATCH_SCORER_MODULES."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Name to register it under [default: the scorer's own name].")
    ] = None,
    experiment: ExperimentOpt = "0",
    rate: RateOpt = None,
    filter_: FilterOpt = None,
    judge_spec: Annotated[
        Path | None, typer.Option("--judge-spec", help="A judge as JSON (Judge.to_spec()), instead of REF.")
    ] = None,
    max_calls_per_hour: CallsOpt = None,
    max_tokens_per_hour: TokensOpt = None,
    as_json: JsonOpt = False,
    redis_url: RedisOpt = None,
) -> None:
    """Register a scorer, or a new version of one (it becomes current). With --rate, also start it."""
    if (ref is None) == (judge_spec is None):
        raise _fail("give either REF or --judge-spec FILE.json", 2)
    item: Any = ref
    if judge_spec is not None:
        try:
            item = orjson.loads(judge_spec.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise _fail(f"--judge-spec {judge_spec}: cannot read JSON: {exc}", 2) from None
        if not isinstance(item, dict):
            kind = type(item).__name__
            raise _fail(f"--judge-spec {judge_spec}: expected a JSON object (Judge.to_spec()), got {kind}", 2)
    if filter_ is not None and rate is None:
        raise _fail("--filter needs --rate: registering with a sampling config starts the scorer", 2)

    async def op(registry: Registry) -> ScorerRecord:
        sampling = None if rate is None else _sampling(rate, filter_)
        return await registry.register(
            item,
            name=name,
            experiment_id=experiment,
            sampling_config=sampling,
            budget=_budget(max_calls_per_hour, max_tokens_per_hour),
            created_by=_user(),
        )

    record = _call(redis_url, op)
    _show(record, as_json, "registered")
    if not as_json and record.state == "stopped" and len(record.versions) == 1:
        _err.print(f"start it with: tracewatch scorers start {record.name} -e {record.experiment_id} --rate 0.1")


@scorers_app.command("list")
def list_command(
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="Only this experiment.")] = None,
    as_json: JsonOpt = False,
    redis_url: RedisOpt = None,
) -> None:
    """List registered scorers."""
    records = _call(redis_url, lambda r: r.list_scorers(experiment))
    if as_json:
        _emit_json([r.model_dump(mode="json") for r in records])
        return
    if not records:
        _err.print("no scorers registered" + (f" in experiment {experiment}" if experiment else ""))
        return
    Console().print(_list_table(records))


@scorers_app.command("get")
def get_command(
    name: Annotated[str, typer.Argument(help="Registered name.")],
    experiment: ExperimentOpt = "0",
    version: Annotated[int | None, typer.Option("--version", help="Show this version [default: all].")] = None,
    as_json: JsonOpt = False,
    redis_url: RedisOpt = None,
) -> None:
    """Show one scorer: state, sampling, budget and its versions."""

    async def op(registry: Registry) -> ScorerRecord:
        record = await registry.get_record(name, experiment_id=experiment)
        if version is not None:
            record.version(version)  # raises with the list of versions
        return record

    record = _call(redis_url, op)
    versions = record.versions if version is None else [record.version(version)]
    if as_json:
        data = record.model_dump(mode="json")
        if version is not None:
            data["versions"] = [v.model_dump(mode="json") for v in versions]
        _emit_json(data)
        return
    out = Console()
    out.print(_details_table(record))
    table = Table(title="versions")
    for header in ("version", "kind", "definition", "created", "by"):
        table.add_column(header, overflow="fold")
    for v in versions:
        current = " (current)" if v.version == record.current_version else ""
        definition = v.reference if v.kind == "code" else orjson.dumps(v.spec, option=orjson.OPT_INDENT_2).decode()
        table.add_row(f"{v.version}{current}", v.kind, definition, _when(v.created_at), v.created_by or "-")
    out.print(table)


@scorers_app.command("start")
def start_command(
    name: Annotated[str, typer.Argument(help="Registered name.")],
    experiment: ExperimentOpt = "0",
    rate: RateOpt = None,
    filter_: FilterOpt = None,
    max_calls_per_hour: CallsOpt = None,
    max_tokens_per_hour: TokensOpt = None,
    as_json: JsonOpt = False,
    redis_url: RedisOpt = None,
) -> None:
    """Start (or resume) a scorer; options left out keep their stored values."""

    async def op(registry: Registry) -> ScorerRecord:
        sampling = await _merged_sampling(registry, name, experiment, rate, filter_)
        return await registry.start(
            name,
            experiment_id=experiment,
            sampling_config=sampling,
            budget=_budget(max_calls_per_hour, max_tokens_per_hour),
        )

    _show(_call(redis_url, op), as_json, "started")


async def _merged_sampling(
    registry: Registry, name: str, experiment: str, rate: float | None, filter_: str | None
) -> SamplingConfig | None:
    """The stored sampling with the given flags applied; None (keep it) when neither is given."""
    if rate is None and filter_ is None:
        return None
    current = await registry.get_record(name, experiment_id=experiment)
    return _sampling(rate, filter_, current.sampling)


@scorers_app.command("update")
def update_command(
    name: Annotated[str, typer.Argument(help="Registered name.")],
    experiment: ExperimentOpt = "0",
    rate: RateOpt = None,
    filter_: FilterOpt = None,
    max_calls_per_hour: CallsOpt = None,
    max_tokens_per_hour: TokensOpt = None,
    no_budget: Annotated[bool, typer.Option("--no-budget", help="Remove the budget.")] = False,
    as_json: JsonOpt = False,
    redis_url: RedisOpt = None,
) -> None:
    """Change a scorer's rate, filter or budget without changing its state."""
    given = (rate, filter_, max_calls_per_hour, max_tokens_per_hour)
    if all(v is None for v in given) and not no_budget:
        raise _fail("nothing to update: give --rate, --filter, --max-calls-per-hour, --max-tokens-per-hour "
                    "or --no-budget", 2)

    async def op(registry: Registry) -> ScorerRecord:
        sampling = await _merged_sampling(registry, name, experiment, rate, filter_)
        return await registry.update(
            name,
            experiment_id=experiment,
            sampling_config=sampling,
            budget=_budget(max_calls_per_hour, max_tokens_per_hour, clear=no_budget),
        )

    _show(_call(redis_url, op), as_json, "updated")


@scorers_app.command("stop")
def stop_command(
    name: Annotated[str, typer.Argument(help="Registered name.")],
    experiment: ExperimentOpt = "0",
    as_json: JsonOpt = False,
    redis_url: RedisOpt = None,
) -> None:
    """Stop a scorer; workers drop it at their next reload (within seconds)."""
    _show(_call(redis_url, lambda r: r.stop(name, experiment_id=experiment)), as_json, "stopped")


@scorers_app.command("delete")
def delete_command(
    name: Annotated[str, typer.Argument(help="Registered name.")],
    experiment: ExperimentOpt = "0",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    redis_url: RedisOpt = None,
) -> None:
    """Delete a scorer and all its versions."""
    if not yes:
        typer.confirm(f"delete scorer {name!r} of experiment {experiment!r} and all its versions?", abort=True)
    _call(redis_url, lambda r: r.delete(name, experiment_id=experiment))
    _err.print(f"deleted {name} from experiment {experiment}")
