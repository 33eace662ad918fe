"""traces.mdx ("Evaluating (Production) Traces"), steps 2 and 3, against the fake judge over HTTP.

Steps 0 and 1 make and fetch the traces with MLflow's tracing SDK and tracking server (see
docs/mlflow-compatibility.md, "Seed examples"); here `traces` is the shared fixture traces,
which are such traces (the same sales-email agent), and nothing else stands in.
"""

from __future__ import annotations

import pytest

from scorers import Guidelines, RelevanceToQuery, RetrievalGroundedness, Trace
from tests.helpers import fresh_judge
from tests.seed.docs import example, run

pytestmark = pytest.mark.integration  # starts a server (the fake judge)

PAGE = "traces.mdx"
# The page uses the built-in scorers without importing them.
PAGE_CONTEXT = "import mlflow\nfrom mlflow.genai.scorers import Guidelines, RelevanceToQuery, RetrievalGroundedness\n"


def test_steps_2_and_3_evaluate_traces_with_judges(
    judge_server: object, seed_traces: list[Trace], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = fresh_judge(judge_server)
    monkeypatch.setenv("TRACEWATCH_JUDGE_BASE_URL", srv.base_url)  # the default model is openai:/gpt-4.1-mini
    ns, _ = run(
        example(PAGE, "Step 2: Define application-specific scorers"),
        example(PAGE, "Step 3: Evaluate trace quality"),
        preamble=PAGE_CONTEXT,
        namespace={"__name__": "seed_example", "traces": seed_traces},
    )
    kinds = [type(s) for s in ns["email_scorers"]]
    assert kinds == [RetrievalGroundedness, RelevanceToQuery, Guidelines, Guidelines, Guidelines]
    results = ns["results"]
    names = [
        "retrieval_groundedness",
        "relevance_to_query",
        "follows_objective",
        "concise_communication",
        "professional_tone",
    ]
    assert set(results.metrics) == {f"{n}/mean" for n in names}
    assert all(0.0 <= v <= 1.0 for v in results.metrics.values())
    assert len(results.rows) == len(seed_traces) == 7
    row = results.rows[0]
    assert {row[f"{n}/value"] for n in names} <= {"yes", "no"}
    assert row["professional_tone/rationale"] == "The content meets the criteria."  # the judge's answer
    # Every judged pair is one request to the server; the trace whose root raised (no outputs)
    # is skipped by the judges that need outputs.
    judged = sum(1 for r in results.rows for n in names if r.get(f"{n}/value") is not None)
    assert srv.stats()["by_status"] == {"200": judged}
    assert judged >= 5 * 6
