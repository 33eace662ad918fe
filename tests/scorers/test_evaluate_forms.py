"""`evaluate(data=, scorers=, predict_fn=)` in MLflow's input forms, and its `metrics`/result table."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from scorers import Feedback, evaluate, scorer
from scorers._metrics import compute_metrics, metric_value

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mlflow"


def spread(values):
    return max(values) - min(values)


@scorer(aggregations=["min", "max", "mean", "median", "variance", "p90", "p99", spread])
def length(outputs):
    return len(outputs or "")


@scorer
def is_yes(inputs):
    return "YES" if inputs.get("ok") else "no"


@scorer
def matches(outputs, expectations):
    return outputs == expectations.get("answer")


ROWS = [
    {"inputs": {"ok": True}, "outputs": "abc", "expectations": {"answer": "abc"}},
    {"inputs": {"ok": False}, "outputs": "hello world", "expectations": {"answer": "x"}},
    {"inputs": {"ok": True}, "outputs": "", "expectations": {"answer": ""}},
]


def test_dict_rows_metrics_and_table() -> None:
    result = evaluate(data=ROWS, scorers=[length, is_yes, matches])
    lengths = [3.0, 11.0, 0.0]
    m = result.metrics
    assert m["length/min"] == 0.0 and m["length/max"] == 11.0 and m["length/spread"] == 11.0
    assert m["length/mean"] == pytest.approx(statistics.fmean(lengths))
    assert m["length/median"] == statistics.median(lengths)
    assert m["length/variance"] == pytest.approx(statistics.pvariance(lengths))
    assert m["length/p90"] == pytest.approx(3 + (11 - 3) * 0.8)
    assert m["is_yes/mean"] == pytest.approx(2 / 3)  # "YES"/"no" count as 1/0, as in MLflow
    assert m["matches/mean"] == pytest.approx(2 / 3)
    rows = result.rows
    assert [r["outputs"] for r in rows] == ["abc", "hello world", ""]
    assert rows[0]["inputs"] == {"ok": True} and rows[0]["expectations"] == {"answer": "abc"}
    assert [r["matches/value"] for r in rows] == [True, False, True]
    assert rows[0]["trace_id"].startswith("tr-") and rows[0]["length/error_code"] is None


def test_a_row_object_reaches_the_scorer_as_is() -> None:
    seen = []

    @scorer
    def probe(inputs, outputs, trace):
        seen.append((inputs, outputs, trace.inputs, trace.outputs, trace.data.response))
        return 1

    obj = {"nested": [1, 2]}
    evaluate(data=[{"inputs": {"q": "1"}, "outputs": "42"}], scorers=[probe])
    evaluate(data=[{"inputs": {"q": obj}, "outputs": obj}], scorers=[probe])
    assert seen[0][:4] == ({"q": "1"}, "42", {"q": "1"}, "42")  # "42" stays a string
    assert seen[0][4] == '"42"'
    assert seen[1][1] is obj


def test_dataframe_rows() -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([{"inputs": {"ok": True}, "outputs": "abc"}, {"inputs": {"ok": False}, "outputs": "de"}])
    result = evaluate(data=df, scorers=[length, is_yes])
    assert result.metrics["length/mean"] == 2.5 and result.metrics["is_yes/mean"] == 0.5
    table = result.result_df
    assert list(table["length/value"]) == [3, 2]
    assert result.tables["eval_results"] is not None


def test_traces_in_every_shape() -> None:
    paths = sorted(FIXTURES.glob("mlflow_trace_0[1-6]*.json"))
    raw = [p.read_bytes() for p in paths]
    dicts = [json.loads(b) for b in raw]
    by_bytes = evaluate(raw, [length]).metrics
    by_dict = evaluate(data=dicts, scorers=[length]).metrics
    by_row = evaluate(data=[{"trace": d} for d in dicts], scorers=[length]).metrics
    by_json_row = evaluate(data=[{"trace": b.decode()} for b in raw], scorers=[length]).metrics
    by_path = evaluate(FIXTURES / paths[0].name, [length]).metrics
    assert by_bytes == by_dict == by_row == by_json_row
    assert by_bytes["length/max"] > 0 and by_path["length/min"] == by_path["length/max"]


def test_a_rows_columns_win_over_its_trace() -> None:
    d = json.loads((FIXTURES / "mlflow_trace_01_ok_acme.json").read_bytes())
    result = evaluate(data=[{"trace": d, "outputs": "four"}], scorers=[length])
    assert result.metrics["length/mean"] == 4.0
    assert result.rows[0]["trace_id"] == d["info"]["trace_id"]


def test_predict_fn_is_called_with_inputs_as_keywords() -> None:
    calls = []

    def predict(question: str, n: int = 1) -> str:
        calls.append((question, n))
        if question == "bad":
            raise RuntimeError("model down")
        return question * n

    data = [{"inputs": {"question": "ab", "n": 2}}, {"inputs": {"question": "bad"}}]
    result = evaluate(data=data, scorers=[length], predict_fn=predict)
    assert calls == [("ab", 2), ("bad", 1)]
    assert [r["outputs"] for r in result.rows] == ["abab", None]
    assert "model down" in result.rows[1]["error_message"]
    assert result.metrics["length/mean"] == 2.0  # (4 + 0) / 2: the scorer still ran, on None


async def test_async_predict_fn() -> None:
    from scorers import aevaluate

    async def predict(question):
        return question.upper()

    result = await aevaluate([{"inputs": {"question": "hey"}}], [length], predict_fn=predict)
    assert result.rows[0]["outputs"] == "HEY"


def test_predict_fn_refuses_traces_and_non_dict_inputs() -> None:
    with pytest.raises(ValueError, match="dictionary"):
        evaluate(data=[{"inputs": "text"}], scorers=[length], predict_fn=lambda **kw: "x")
    with pytest.raises(ValueError, match="trace"):
        evaluate(FIXTURES, [length], predict_fn=lambda **kw: "x")
    with pytest.raises(TypeError, match="data item 0"):
        evaluate(data=[42], scorers=[length])


def test_metric_rules_follow_mlflow() -> None:
    assert [metric_value(v) for v in (True, 2, 1.5, "Yes", "NO", "maybe", None, [1])] == [
        1.0, 2.0, 1.5, 1.0, 0.0, None, None, None
    ]  # fmt: skip

    @scorer
    def named(outputs):
        return [Feedback(name="x/length", value=1), Feedback(name="other", value=3)]

    @scorer(aggregations=[lambda values: 1 / 0])
    def broken(outputs):
        return 1

    result = evaluate(data=ROWS, scorers=[length, named, broken])
    # "x/length" is aggregated as the scorer `length` is; "other" by the default mean.
    assert {k for k in result.metrics if k.startswith("x/")} == {f"x/length/{a}" for a in (
        "min", "max", "mean", "median", "variance", "p90", "p99", "spread")}  # fmt: skip
    assert result.metrics["other/mean"] == 3.0
    assert not any(k.startswith("broken/") for k in result.metrics)  # a failing callable is left out
    assert compute_metrics([], [length]) == {}
