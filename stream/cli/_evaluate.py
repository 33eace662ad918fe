"""`tracewatch evaluate`: score trace files offline with the same scorers as the worker.

No Kafka, no Redis: traces come from a JSONL file, a JSON file or a folder; results go to
the terminal (a summary table) and optionally to JSONL or CSV, one row per assessment.
Judges share one `JudgeClient` for the run, built from `Settings` (`TRACEWATCH_JUDGE_*` or
the flags, validated alike) as the worker's is.
"""

from __future__ import annotations

import asyncio
import csv
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scorers import (
    Assessment,
    EvaluationResult,
    Judge,
    JudgeClient,
    Scorer,
    ScorerDefinitionError,
    aevaluate,
    resolve_scorer,
)
from stream.cli._common import settings_for, trace_files

__all__ = ["evaluate_command", "write_assessments"]

_OUT_SUFFIXES = (".jsonl", ".csv")
_CSV_FIELDS = (
    "trace_id",
    "experiment_id",
    "scorer",
    "name",
    "state",
    "skip_reason",
    "outcome",
    "value",
    "rationale",
    "error_code",
    "error_message",
    "source_type",
    "source_id",
    "duration_s",
)


# The settings `evaluate` reads: the judge client's.
_JUDGE_FLAGS = (
    "judge_base_url",
    "judge_api_key",
    "judge_max_in_flight",
    "judge_rpm",
    "judge_tpm",
    "judge_timeout",
    "judge_max_retries",
    "judge_prices",
)


def _csv_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return orjson.dumps(value, default=str).decode()


def write_assessments(path: Path, assessments: list[Assessment]) -> None:
    """Write assessments as JSONL (`Assessment.to_json`, one per line) or CSV, by suffix.

    Raises:
        ValueError: the suffix is neither `.jsonl` nor `.csv`.
    """
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("wb") as fh:
            for a in assessments:
                # Not `a.to_json()`: it caches the bytes on the assessment, and orjson's
                # buffers are ~8 KB each, so a 60k-row run would hold ~500 MB.
                try:
                    line = orjson.dumps(a.to_dict(), default=str, option=orjson.OPT_NON_STR_KEYS)
                except (orjson.JSONEncodeError, TypeError):
                    line = a.to_json()  # its fallback handles values JSON cannot hold
                fh.write(line)
                fh.write(b"\n")
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(_CSV_FIELDS)
            for a in assessments:
                err = a.error
                writer.writerow(
                    (
                        a.trace_id,
                        a.experiment_id,
                        a.scorer,
                        a.name,
                        a.state,
                        a.skip_reason,
                        None if a.state == "skipped" else a.outcome,
                        _csv_value(a.value),
                        a.rationale,
                        None if err is None else err.error_code,
                        None if err is None else err.error_message,
                        a.source.source_type,
                        a.source.source_id,
                        f"{a.duration_s:.6f}",
                    )
                )
    else:
        raise ValueError(f"output must end in {' or '.join(_OUT_SUFFIXES)}, got {path.name!r}")


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:.1%}" if pct else f"{x:.4g}"


def _summary_table(result: EvaluationResult) -> Table:
    rows = result.summary()
    # A "name" column only when some scorer emits feedback under other names (list returns).
    named = any(row.name != row.scorer for row in rows)
    table = Table(title="Evaluation summary")
    for col in ("scorer", "name", "count", "scored", "errors", "skipped", "pass rate", "mean"):
        if col != "name" or named:
            table.add_column(col, justify="left" if col in ("scorer", "name") else "right")
    for row in rows:
        table.add_row(
            row.scorer,
            *([row.name] if named else []),
            str(row.count),
            str(row.scored),
            str(row.errors),
            str(row.skipped),
            _fmt(row.pass_rate, pct=True),
            _fmt(row.mean),
        )
    return table


def evaluate_command(
    path: Annotated[Path, typer.Argument(help="A JSONL file (one trace per line), a trace JSON file, or a folder.")],
    scorer: Annotated[
        list[str],
        typer.Option(
            "--scorer",
            "-s",
            help="Scorer reference, repeatable: a built-in (`no_error`, `latency_under(max_ms=2000)`, "
            "`Safety()`) or `package.module:attr`.",
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write every assessment here (.jsonl or .csv).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Async scorer calls (judges) at once.")] = 16,
    judge_base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL [env TRACEWATCH_JUDGE_BASE_URL]")
    ] = None,
    judge_api_key: Annotated[
        str | None, typer.Option(help="Judge API key [env TRACEWATCH_JUDGE_API_KEY]", show_default=False)
    ] = None,
    judge_max_in_flight: Annotated[
        int | None, typer.Option(help="Judge requests in flight per model [env TRACEWATCH_JUDGE_MAX_IN_FLIGHT: 32]")
    ] = None,
    judge_rpm: Annotated[
        float | None, typer.Option(help="Judge requests per minute [env TRACEWATCH_JUDGE_RPM]")
    ] = None,
    judge_tpm: Annotated[float | None, typer.Option(help="Judge tokens per minute [env TRACEWATCH_JUDGE_TPM]")] = None,
    judge_timeout: Annotated[
        float | None, typer.Option(help="Seconds per judge request [env TRACEWATCH_JUDGE_TIMEOUT: 30]")
    ] = None,
    judge_max_retries: Annotated[
        int | None, typer.Option(help="Retries per judge request [env TRACEWATCH_JUDGE_MAX_RETRIES: 4]")
    ] = None,
) -> None:
    """Score trace files offline and print a summary table (no Kafka or Redis needed).

    Every (trace, scorer) pair ends scored, error or skipped; bad records count as invalid.
    In a folder, JSON files that are not traces at all (no `info` object) are listed and ignored.
    """
    console = Console()
    settings = settings_for(
        _JUDGE_FLAGS,
        **{
            field: (f"--{field.replace('_', '-')}", value)
            for field, value in (
                ("judge_base_url", judge_base_url),
                ("judge_api_key", judge_api_key),
                ("judge_max_in_flight", judge_max_in_flight),
                ("judge_rpm", judge_rpm),
                ("judge_tpm", judge_tpm),
                ("judge_timeout", judge_timeout),
                ("judge_max_retries", judge_max_retries),
            )
        },
    )
    if out is not None and out.suffix.lower() not in _OUT_SUFFIXES:
        raise typer.BadParameter("must end in .jsonl or .csv", param_hint="--out")
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist", param_hint="PATH")
    scorers: list[Scorer] = []
    for ref in scorer:
        try:
            scorers.append(resolve_scorer(ref))
        except ScorerDefinitionError as exc:
            raise typer.BadParameter(str(exc), param_hint="--scorer") from None
    started = time.perf_counter()
    # A counting pass first (cheap, page-cached) so the bar has a total while the scoring
    # pass streams: holding every record in memory would cost ~15x the file size.
    not_traces: list[str] = []
    n_records = sum(1 for _ in trace_files(path, not_traces))
    for label in not_traces:
        console.print(f"not a trace, ignored: {label}", markup=False, highlight=False)
    if not n_records:
        console.print(f"no traces found in {path}", style="red", markup=False)
        raise typer.Exit(1)
    judges = [s for s in scorers if isinstance(s, Judge) and s.client is None]
    clients: list[JudgeClient] = []

    async def run(progress: Progress) -> EvaluationResult:
        task = progress.add_task("scoring", total=n_records)
        client = None
        if judges:
            client = JudgeClient(**settings.judge_client_options())
            clients.append(client)
            for judge in judges:
                judge.bind(client)
        try:
            return await aevaluate(
                trace_files(path, []),
                scorers,
                concurrency=concurrency,
                on_progress=lambda done: progress.update(task, completed=done),
            )
        finally:
            if client is not None:
                await client.aclose()

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        result = asyncio.run(run(progress))
    console.print(_summary_table(result))
    if result.invalid:
        console.print(f"[yellow]{len(result.invalid)} invalid record(s):[/]")
        for bad in result.invalid[:10]:
            console.print(f"  {bad.source}: {bad.reason}: {bad.message}", markup=False, highlight=False, soft_wrap=True)
        if len(result.invalid) > 10:
            console.print(f"  ... and {len(result.invalid) - 10} more")
    for client in clients:
        st = client.stats
        console.print(
            f"judge: {st.requests} requests ({st.retries} retries; by status {st.by_status}), "
            f"{st.prompt_tokens} prompt + {st.completion_tokens} completion tokens, ${st.cost:.4f}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if out is not None:
        write_assessments(out, result.assessments)
        console.print(f"wrote {len(result.assessments)} assessments to {out}", markup=False, highlight=False)
    elapsed = time.perf_counter() - started
    console.print(
        f"{result.records} traces ({len(result.invalid)} invalid), {len(scorers)} scorers: "
        f"{result.duration_s:.2f} s scoring, {elapsed:.2f} s total, "
        f"{result.traces_per_s:,.0f} traces/s",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
