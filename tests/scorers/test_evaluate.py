"""Offline evaluation: reading trace files, `evaluate`, `summarize`, and the `evaluate` CLI command."""

from __future__ import annotations

import asyncio
import csv
import json

import orjson
import pytest
import typer
from typer.testing import CliRunner

from scorers import (
    Assessment,
    AssessmentError,
    Feedback,
    aevaluate,
    evaluate,
    iter_traces,
    scorer,
    summarize,
)
from stream.cli._evaluate import evaluate_command
from tests.helpers import synth_traces

from .conftest import build_trace_dict


def test_iter_traces_forms(tmp_path, fixtures_dir) -> None:
    one = (fixtures_dir / "mlflow_trace_01_ok_acme.json").read_bytes()
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_bytes(b"\n" + orjson.dumps(orjson.loads(one)) + b"\n\n   \n" + b"{}\n")
    (tmp_path / "a.json").write_bytes(one)
    (tmp_path / "notes.txt").write_text("ignored")
    assert [label for label, _ in iter_traces(jsonl)] == [f"{jsonl}:2", f"{jsonl}:5"]
    assert [label for label, _ in iter_traces(tmp_path)] == [
        str(tmp_path / "a.json"),
        f"{jsonl}:2",
        f"{jsonl}:5",
    ]
    assert next(iter(iter_traces(tmp_path / "a.json")))[1] == one
    with pytest.raises(FileNotFoundError):
        list(iter_traces(tmp_path / "missing.jsonl"))


def test_evaluate_fixtures_folder_counts(fixtures_dir) -> None:
    progress: list[int] = []
    result = evaluate(
        fixtures_dir,
        ["no_error", "output_word_count", "contains_expected", "latency_under(max_ms=10)"],
        on_progress=progress.append,
    )
    # 7 traces + trace_ids.json, which is not a trace.
    assert (result.records, result.traces) == (8, 7)
    assert [(bad.reason, bad.source.endswith("trace_ids.json")) for bad in result.invalid] == [
        ("missing_info", True)
    ]
    assert progress == list(range(1, 9))
    assert len(result.assessments) == 7 * 4
    # (trace, scorer) order, whatever ran concurrently.
    assert [a.scorer for a in result.assessments[:4]] == [
        "no_error",
        "output_word_count",
        "contains_expected",
        "latency_under",
    ]
    rows = {row.scorer: row for row in result.summary()}
    assert (rows["no_error"].passed, rows["no_error"].failed, rows["no_error"].pass_rate) == (
        6,
        1,
        pytest.approx(6 / 7),
    )
    assert (rows["output_word_count"].scored, rows["output_word_count"].skipped) == (
        6,
        1,
    )  # 04 has no outputs
    assert rows["output_word_count"].mean == pytest.approx((73 + 51 + 71 + 211 * 3) / 6)
    assert (rows["contains_expected"].scored, rows["contains_expected"].skipped) == (
        1,
        6,
    )  # only 05 has expectations
    assert rows["latency_under"].failed == 1  # trace 01 took 50 ms
    skipped = [a for a in result.assessments if a.state == "skipped"]
    assert {a.skip_reason for a in skipped} == {"missing_outputs", "missing_expectations"}
    assert result.traces_per_s > 0


def test_invalid_records_are_counted_not_fatal(fixture_bytes) -> None:
    records = [
        ("good", fixture_bytes[0]),
        ("not-json", b"{oops"),
        ("bad-id", orjson.dumps({"info": {"trace_id": 5}})),
        ("array", b"[1, 2]"),
        ("good2", orjson.dumps(build_trace_dict({"q": 1}, "answer"))),
    ]
    result = evaluate(records, ["no_error"])
    assert (result.records, result.traces) == (5, 2)
    assert [(b.source, b.reason) for b in result.invalid] == [
        ("not-json", "not_json"),
        ("bad-id", "bad_trace_id"),
        ("array", "not_object"),
    ]


async def test_async_and_timeout_scorers_run_concurrently_and_keep_order(make_trace) -> None:
    running = peak = 0

    @scorer
    async def slow(outputs):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return len(outputs)

    @scorer(timeout=0.5)
    def threaded(outputs):
        return outputs.upper()

    @scorer
    def raises(outputs):
        raise KeyError("summary")

    traces = [make_trace({"i": i}, f"out-{i}", trace_id=f"tr-{i:032x}") for i in range(20)]
    result = await aevaluate(traces, [slow, "output_word_count", threaded, raises], concurrency=5)
    assert peak == 5
    assert [a.trace_id for a in result.assessments] == [t.trace_id for t in traces for _ in range(4)]
    assert [a.scorer for a in result.assessments[:4]] == ["slow", "output_word_count", "threaded", "raises"]
    assert result.assessments[0].value == len("out-0") and result.assessments[2].value == "OUT-0"
    err = result.assessments[3]
    assert err.state == "error" and err.error.error_code == "SCORER_ERROR" and err.outcome == "error"
    rows = {r.scorer: r for r in result.summary()}
    assert rows["raises"].errors == 20 and rows["slow"].mean == pytest.approx(
        sum(len(f"out-{i}") for i in range(20)) / 20
    )


def test_multi_feedback_scorers_and_summarize() -> None:
    base = {"trace_id": "tr-1", "experiment_id": "0"}
    assessments = [
        Assessment(scorer="a", name="a", value=True, **base),
        Assessment(scorer="a", name="a", value="no", **base),
        Assessment(scorer="a", name="a", value="yes", **base),
        Assessment(scorer="a", name="a", state="skipped", skip_reason="budget", **base),
        Assessment(scorer="a", name="a", error=AssessmentError("SCORER_ERROR"), state="error", **base),
        Assessment(scorer="m", name="part_len", value=10, **base),
        Assessment(scorer="m", name="part_len", value=20.0, **base),
        Assessment(scorer="m", name="part_label", value="maybe", **base),
    ]
    a, part_len, part_label = summarize(assessments)
    assert (a.count, a.scored, a.errors, a.skipped, a.passed, a.failed) == (5, 3, 1, 1, 2, 1)
    assert a.pass_rate == pytest.approx(2 / 3) and a.mean is None
    assert (part_len.name, part_len.mean, part_len.pass_rate) == ("part_len", 15.0, None)
    assert (part_label.scored, part_label.mean, part_label.pass_rate) == (1, None, None)
    assert summarize([]) == []


def test_evaluate_rejects_bad_arguments(fixtures_dir) -> None:
    with pytest.raises(ValueError, match="at least one scorer"):
        evaluate(fixtures_dir, [])
    with pytest.raises(ValueError, match="concurrency"):
        evaluate(fixtures_dir, ["no_error"], concurrency=0)


def test_list_feedback_scorer_in_evaluate(make_trace) -> None:
    @scorer
    def comprehensive_check(inputs, outputs):
        return [
            Feedback(name="relevance", value=True, rationale="Directly addresses query"),
            Feedback(name="tone", value="professional", rationale="Appropriate for audience"),
            Feedback(name="length", value=150, rationale="Word count within limits"),
        ]

    result = evaluate([make_trace({"q": 1}, "x")], [comprehensive_check])
    assert [(a.scorer, a.name, a.value) for a in result.assessments] == [
        ("comprehensive_check", "relevance", True),
        ("comprehensive_check", "tone", "professional"),
        ("comprehensive_check", "length", 150),
    ]


# --- the CLI command ------------------------------------------------------------------------


@pytest.fixture
def cli():
    app = typer.Typer()
    app.command("evaluate")(evaluate_command)

    @app.command("noop")
    def noop() -> None:  # a second command keeps `evaluate` a subcommand, as in stream/cli/_app.py
        """Nothing."""

    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["evaluate", *map(str, args)])


def test_cli_prints_table_and_writes_jsonl_and_csv(cli, tmp_path, fixture_bytes) -> None:
    traces = tmp_path / "traces.jsonl"
    traces.write_bytes(b"".join(b + b"\n" for _, b in synth_traces(fixture_bytes, 50)) + b"not json\n")
    out_jsonl, out_csv = tmp_path / "out.jsonl", tmp_path / "out.csv"
    scorers = ["-s", "no_error", "--scorer", "output_word_count", "-s", "latency_under(max_ms=10)"]
    result = cli(traces, *scorers, "--out", out_jsonl)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Evaluation summary" in out and "no_error" in out and "output_word_count" in out
    assert "1 invalid record" in out and "not_json" in out
    assert "51 traces (1 invalid), 3 scorers" in out and "traces/s" in out
    lines = out_jsonl.read_bytes().splitlines()
    assert len(lines) == 150
    first = orjson.loads(lines[0])
    assert (
        first["scorer"] == "no_error" and first["state"] == "scored" and first["outcome"] in ("pass", "fail")
    )

    result = cli(traces, *scorers, "-o", out_csv)
    assert result.exit_code == 0, result.output
    with out_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 150
    assert rows[0].keys() >= {"trace_id", "scorer", "state", "outcome", "value", "error_code"}
    assert {r["state"] for r in rows} == {"scored", "skipped"}  # trace 04 has no outputs
    assert [json.loads(r["value"]) for r in rows if r["scorer"] == "output_word_count" and r["value"]][
        :1
    ] == [73]


def test_cli_errors(cli, tmp_path, fixtures_dir) -> None:
    bad_scorer = cli(fixtures_dir, "-s", "no_eror")
    assert bad_scorer.exit_code == 2 and "no_error" in bad_scorer.output
    bad_out = cli(fixtures_dir, "-s", "no_error", "--out", tmp_path / "x.txt")
    assert bad_out.exit_code == 2 and ".jsonl or .csv" in bad_out.output
    missing = cli(tmp_path / "nope", "-s", "no_error")
    assert missing.exit_code == 2
    assert cli(fixtures_dir).exit_code == 2  # --scorer is required
    (tmp_path / "empty").mkdir()
    empty = cli(tmp_path / "empty", "-s", "no_error")
    assert empty.exit_code == 1 and "no traces found" in empty.output
