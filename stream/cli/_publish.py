"""`tracewatch publish`: send trace files to Kafka, each acknowledged before it counts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stream._exceptions import StreamError
from stream.cli._common import BootstrapOpt, console, fail, out, settings_for, trace_files

__all__ = ["publish_command"]

_USES = ("kafka_bootstrap", "topic_prefix", "compression", "max_trace_bytes")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def publish_command(
    path: Annotated[
        Path,
        typer.Argument(help="A JSONL file (one trace per line), a trace JSON file, or a folder of them.", exists=True),
    ],
    bootstrap: BootstrapOpt = None,
    topic: Annotated[str | None, typer.Option(help="Topic to publish to [default: <prefix>traces]")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Report invalid traces and go on instead of stopping.")] = False,
) -> None:
    """Publish MLflow traces to Kafka, each acknowledged before it counts.

    Invalid traces stop the command with a message naming the file and line, unless
    --skip-invalid is given (they are then listed and counted, never silently dropped).
    In a folder, JSON files that are not traces at all (no `info` object) are listed and ignored.
    """
    from scorers import DecodeError
    from stream.sdk._publisher import TracePublisher, encode_for_wire

    settings = settings_for(_USES, kafka_bootstrap=("--bootstrap", bootstrap))
    invalid: list[tuple[str, str]] = []
    not_traces: list[str] = []
    good: list[bytes] = []
    for label, data in trace_files(path, not_traces):
        try:
            encode_for_wire(data, max_bytes=settings.max_trace_bytes)
            good.append(data)
        except DecodeError as exc:
            if not skip_invalid:
                fail(f"invalid trace {label}: {exc}", 2)
            invalid.append((label, str(exc)))

    async def run() -> int:
        t0 = time.perf_counter()
        with _progress() as progress:
            task = progress.add_task("publishing", total=len(good), rate="")

            def on_ack(n: int) -> None:
                done = progress.tasks[0].completed + n
                rate = done / max(time.perf_counter() - t0, 1e-9)
                progress.update(task, advance=n, rate=f"{rate:,.0f}/s")

            async with TracePublisher(settings=settings, topic=topic) as pub:
                return await pub.publish_many(good, on_ack=on_ack, window=2000)

    try:
        t0 = time.perf_counter()
        n = asyncio.run(run())
        dt = time.perf_counter() - t0
    except StreamError as exc:
        fail(f"error: {exc}", 1)
    for label, reason in invalid:
        console.print(f"skipped invalid {label}: {reason}", markup=False, highlight=False)
    for label in not_traces:
        console.print(f"not a trace, ignored: {label}", markup=False, highlight=False)
    out.print(
        f"published {n} traces to {topic or settings.topics.traces} on {settings.kafka_bootstrap} "
        f"in {dt:.2f}s ({n / max(dt, 1e-9):,.0f}/s); invalid: {len(invalid)}; not traces: {len(not_traces)}",
        markup=False,
        highlight=False,
    )
