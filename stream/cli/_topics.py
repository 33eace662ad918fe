"""`tracewatch topics create`: the Kafka topics of tracewatch."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from stream._exceptions import StreamError
from stream.cli._common import BootstrapOpt, console, fail, out, settings_for

__all__ = ["topics_app"]

topics_app = typer.Typer(
    help="Create the Kafka topics of tracewatch (traces, feedback, assessments, DLQ).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@topics_app.command("create")
def topics_create(
    bootstrap: BootstrapOpt = None,
    partitions: Annotated[
        int | None,
        typer.Option(help="Partitions of traces/feedback/assessments [env TRACEWATCH_PARTITIONS, default 4]"),
    ] = None,
    add_partitions: Annotated[
        bool,
        typer.Option(
            "--add-partitions",
            help="Grow existing topics that have fewer partitions than asked (Kafka cannot remove any; "
            "keys then map to other partitions, so stop the workers and publishers first).",
        ),
    ] = False,
) -> None:
    """Create the traces, feedback, assessments and DLQ topics; existing ones are kept.

    An existing topic with another partition count is reported, and left as it is unless
    --add-partitions is given.
    """
    from stream._kafka import create_topics

    settings = settings_for(
        ("kafka_bootstrap", "topic_prefix", "partitions"),
        kafka_bootstrap=("--bootstrap", bootstrap),
        partitions=("--partitions", partitions),
    )
    try:
        result = asyncio.run(create_topics(settings, add_partitions=add_partitions))
    except StreamError as exc:
        fail(f"error: {exc}", 1)
    table = Table("topic", "status")
    for name, status in result.items():
        table.add_row(name, status)
    out.print(table, markup=False, highlight=False)
    if any(status.startswith("exists:") for status in result.values()):
        console.print(
            f"some topics exist with another partition count than {settings.partitions}: "
            "re-run with --add-partitions to grow them (partitions cannot be removed)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
