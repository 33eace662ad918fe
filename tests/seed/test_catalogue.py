"""Every Python block of the seed is accounted for: run by a test, or explained in the docs.

The seed is read afresh, so a block added to it (or a heading renamed) fails here until it
is placed. `docs/mlflow-compatibility.md`'s "Seed examples" section must name every heading.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from tests.seed.docs import examples

DOC = Path(__file__).resolve().parents[2] / "docs" / "mlflow-compatibility.md"

C = "tests.seed.test_custom_scorers::"
T = "tests.seed.test_trace_evaluation::test_steps_2_and_3_evaluate_traces_with_judges"
R = "tests.integration.test_registry_mlflow_api::test_seed_registration_snippet_runs"

# (page, heading, n) -> the test that runs it (`module::function`), or "cannot" (the doc says why).
CATALOGUE: dict[tuple[str, str, int], str] = {
    ("traces.mdx", "Step 0: Simulate Production Traces", 0): "cannot",
    ("traces.mdx", "Step 0: Simulate Production Traces", 1): "cannot",
    ("traces.mdx", "Step 1: Search and retrieve traces", 0): "cannot",
    ("traces.mdx", "Step 2: Define application-specific scorers", 0): T,
    ("traces.mdx", "Step 3: Evaluate trace quality", 0): T,
    ("traces.mdx", "Recording End-user Feedbacks from Production", 0): "cannot",
    ("custom.mdx", "Example Usage", 0): C + "test_example_usage_evaluate",
    ("custom.mdx", "Example Usage", 1): C + "test_example_usage_evaluate",
    ("custom.mdx", "Example Usage", 2): C + "test_example_usage_evaluate",
    ("custom.mdx", "Input Format", 0): C + "test_input_format_signature",
    ("custom.mdx", "Input Format", 1): C + "test_input_format_valid_and_invalid_signatures",
    ("custom.mdx", "Rich feedback", 0): C + "test_rich_feedback",
    ("custom.mdx", "Rich feedback", 1): C + "test_rich_feedback_list",
    ("custom.mdx", "Example 1: Evaluating Retrieved Documents Recall", 0): C
    + "test_example_1_retrieved_document_recall",
    ("custom.mdx", "Example 2: Evaluating Tool Call Trajectory", 0): C + "test_example_2_tool_call_trajectory",
    ("custom.mdx", "Example 3: Evaluating Sub-Agents Routing", 0): C + "test_example_3_sub_agents_routing",
    ("custom.mdx", "Let exceptions propagate (recommended)", 0): C + "test_let_exceptions_propagate",
    ("custom.mdx", "Handle exceptions explicitly", 0): C + "test_handle_exceptions_explicitly",
    ("versioning.mdx", "Prerequisite", 0): "cannot",
    ("versioning.mdx", "Prerequisite", 1): R,
    ("versioning.mdx", "Registering a Scorer", 0): R,
    ("versioning.mdx", "Updating a Scorer", 0): R,
    ("versioning.mdx", "Loading a Scorer", 0): R,
    ("versioning.mdx", "Listing Scorers", 0): R,
}


def test_every_seed_block_is_placed() -> None:
    assert [e.key for e in examples()] == list(CATALOGUE)


def test_named_tests_exist() -> None:
    for where in set(CATALOGUE.values()) - {"cannot"}:
        module, function = where.split("::")
        assert callable(getattr(importlib.import_module(module), function)), where


def test_compatibility_doc_names_every_example() -> None:
    text = DOC.read_text()
    assert "\n## Seed examples\n" in text
    section = text.split("\n## Seed examples\n", 1)[1].split("\n## ", 1)[0]
    items = [" ".join(item.split()) for item in section.split("\n- ")[1:]]  # the bullets, unwrapped
    for (page, heading, _), where in CATALOGUE.items():
        named = [item for item in items if f"{page}, {heading}" in item]
        assert named, f"the doc's 'Seed examples' does not name {page}, {heading}"
        assert ("cannot run" if where == "cannot" else "as a test") in named[0], named[0]
