"""The rest of MLflow 3.17's single-trace LLM judges, with MLflow's names, prompts and values.

`RetrievalSufficiency`, `Completeness`, `Equivalence`, `Fluency`, `Summarization`,
`ToolCallCorrectness` and `ToolCallEfficiency` answer `"yes"`/`"no"` as MLflow's do
(`Literal["yes", "no"]`). Their questions are MLflow's prompt texts (the typesafe
variants, which state what "yes" means), sent through our one scaffold (`_BuiltinJudge._ask`:
the question, the data in `<tag>` sections named as MLflow names them, our JSON answer
format), so the fake judge server and `parse_verdict` serve them like every other judge.

Where MLflow decides without a model, so do these: `Equivalence` on equal numbers or
identical strings, `ToolCallCorrectness(should_exact_match=True)`. Those verdicts carry
MLflow's default source (`CODE`/`default`), not the judge's model, because no model spoke.

Missing data follows our judges rather than MLflow's exceptions (see
`docs/mlflow-compatibility.md`): no retriever span or no ground truth is a skip, not an
error per production trace.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from scorers._assessment import DEFAULT_SOURCE, Feedback
from scorers._builtin import output_text
from scorers._exceptions import ScorerDefinitionError
from scorers._judge import JudgeClient
from scorers._judges import BUILTIN_JUDGES as _FIRST_JUDGES
from scorers._judges import Judge, _BuiltinJudge, _context
from scorers._trace import Trace

__all__ = [
    "BUILTIN_JUDGES",
    "Completeness",
    "Equivalence",
    "Fluency",
    "RetrievalSufficiency",
    "Summarization",
    "ToolCallCorrectness",
    "ToolCallEfficiency",
]


class RetrievalSufficiency(_BuiltinJudge):
    """Do the retrieved documents hold everything the expected answer states?

    Needs a retriever span and `expected_response` or `expected_facts`; skips otherwise.
    """

    kind = "retrieval_sufficiency"
    _judged = ("inputs", "trace", "expectations")

    def prompt(self, **fields: Any) -> str | None:
        context = _context(self, fields["trace"])
        exp = fields["expectations"] or {}
        facts, response = exp.get("expected_facts"), exp.get("expected_response")
        if context is None or (not facts and response is None):
            return None
        if response is not None:
            truth = self.field(response)
        else:  # MLflow's `_convert_expected_facts_to_expected_response`
            truth = "\n".join(f"- {f}" for f in ([facts] if isinstance(facts, str) else list(facts or ())))
        return self._ask(
            "Consider the following claim and document. You must determine whether claim is supported "
            "by the document. Do not focus on the correctness or completeness of the claim. Do not make "
            "assumptions, approximations, or bring in external knowledge.\n\n"
            'The result is "yes" if every statement in the claim is supported by the document, and "no" '
            "otherwise.",
            claim=f"<question>{self.field(fields['inputs'])}</question>\n<answer>{truth}</answer>",
            document=context,
        )


class Completeness(_BuiltinJudge):
    """Does the response address every explicit request in the user's prompt?"""

    kind = "completeness"
    _judged = ("inputs", "outputs")

    def prompt(self, **fields: Any) -> str | None:
        return self._ask(
            "Consider the following user prompt and assistant response.\n"
            "You must decide whether the assistant successfully addressed all explicit requests in the "
            "user's prompt.\n"
            'Output only "yes" or "no" based on whether the conversation is complete or incomplete '
            "according to the criteria below.\n\n"
            "First, list all explicit user requests made in the user prompt.\n"
            "Second, for each request, determine whether it was addressed by the assistant response.\n"
            "Do not evaluate factual correctness, style, or usefulness beyond whether each request was "
            "directly handled.\n"
            "If the assistant refuses but gives a clear and explicit explanation for the refusal, treat "
            "the response as complete;\nif it refuses without providing any reasoning, treat it as "
            "incomplete.\n"
            "If the assistant indicates it is missing information and asks the user for the necessary "
            "details instead of answering, treat this as complete.\n"
            "If any explicit request in the user prompt is ignored, or handled in a way that does not "
            "match the user's instructions, treat the response as incomplete.\n"
            "Do not make assumptions or bring in external knowledge.",
            question=self.field(fields["inputs"]),
            answer=self.field(fields["outputs"]),
        )


class Fluency(_BuiltinJudge):
    """Is the response grammatical, natural and varied (regardless of accuracy)?"""

    kind = "fluency"
    _judged = ("outputs",)

    def prompt(self, **fields: Any) -> str | None:
        return self._ask(
            "You are a linguistic expert evaluating the Fluency of AI-generated text in <outputs>.\n\n"
            "Definition: Fluency measures the grammatical correctness, natural flow, and linguistic "
            "quality\nof the text, regardless of factual accuracy.\n\n"
            "Evaluation Checklist:\n"
            "- Grammar: Is the text free of spelling and grammatical errors?\n"
            '- Naturalness: Does it read like natural human writing, avoiding "stiff" or "robotic" '
            "phrasing?\n"
            "- Flow: Do sentences transition smoothly, or is the text choppy?\n"
            "- Variety: Is there variation in sentence structure and vocabulary?\n\n"
            'The result is "yes" if the text is fluent according to these criteria, and "no" otherwise.',
            outputs=self.field(output_text(fields["outputs"])),
        )


class Summarization(_BuiltinJudge):
    """Is the response a faithful, complete, concise and clear summary of the input?"""

    kind = "summarization"
    _judged = ("inputs", "outputs")

    def prompt(self, **fields: Any) -> str | None:
        return self._ask(
            "Consider the following source document and candidate summary.\n"
            "You must decide whether the summary is an acceptable summary of the document.\n"
            'Output only "yes" or "no" based on whether the summary meets the criteria below.\n\n'
            "First, read the document and summary carefully.\n"
            "Second, evaluate faithfulness: check whether every concrete claim in the summary is "
            "supported by the document. Emphasize the accuracy of the main facts rather than the exact "
            "phrasing. If the summary contradicts the document or invents information, it fails.\n"
            "Third, evaluate coverage: identify the main points of the document and determine whether "
            "the summary captures all of the important ideas. It may omit minor details, examples, and "
            "repetitions, but it should not miss any major point or distort their relative importance.\n"
            "Fourth, evaluate conciseness and focus: the summary must substantially compress the "
            "document into its essential ideas. It is not sufficient for the summary to merely be "
            "shorter than the original. Overly long summaries that closely paraphrase large portions "
            "of the document fail.\n"
            "Fifth, evaluate clarity and coherence: the summary should be understandable, logically "
            "organized, and free of serious grammatical or structural issues that make its meaning "
            "unclear. Minor language errors are acceptable if they do not interfere with understanding.\n\n"
            'Return "yes" only if all of the following are true:\n'
            "The summary is faithful to the document (no hallucinations or contradictions).\n"
            "The summary covers all major ideas in the document without omitting important points.\n"
            "The summary is concise and focused while still preserving those major ideas.\n"
            "The summary is clear enough to be easily understood.\n\n"
            'If any of these conditions are not satisfied, return "no".',
            document=self.field(fields["inputs"]),
            summary=self.field(fields["outputs"]),
        )


def _code_verdict(name: str, yes: bool, rationale: str) -> Feedback:
    """A verdict reached without the model: MLflow's default source, as its scorer returns it."""
    return Feedback(value="yes" if yes else "no", rationale=rationale, name=name, source=DEFAULT_SOURCE)


class Equivalence(_BuiltinJudge):
    """Is the response equivalent to `expected_response` in meaning and format?

    Numbers (and bools) are compared exactly (`math.isclose`) and identical strings are
    equivalent without a model call, as in MLflow; only differing text goes to the model.
    """

    kind = "equivalence"
    _judged = ("outputs", "expectations")

    def prompt(self, **fields: Any) -> str | Feedback | None:
        expected = (fields["expectations"] or {}).get("expected_response")
        if expected is None:
            return None
        actual = fields["outputs"]
        number = (bool, int, float)
        if isinstance(actual, number) and isinstance(expected, number):
            if math.isclose(actual, expected):
                return _code_verdict(self.name, True, "Exact numerical match")
            return _code_verdict(self.name, False, f"Values do not match: {actual} != {expected}")
        if str(actual) == str(expected):
            return _code_verdict(self.name, True, "Exact string match")
        return self._ask(
            "Compare the following actual output against the expected output. You must determine whether "
            "they are semantically equivalent or convey the same meaning, and if the output format matches "
            "the expected format (e.g., JSON structure, list format, sentence structure).\n\n"
            'The result is "yes" if the outputs are semantically equivalent and their formats match, and '
            '"no" otherwise.',
            actual_output=self.field(actual),
            expected_output=self.field(expected),
        )


# -- tool calls ----------------------------------------------------------------------------


def _available_tools(trace: Trace) -> list[Mapping[str, Any]]:
    """Tool definitions offered to the model: LLM/chat spans' `mlflow.chat.tools` or `inputs.tools`.

    Deduplicated by name, in first-seen order, as MLflow's programmatic extraction does
    (MLflow then falls back to asking a model; we do not spend a call on that).
    """
    seen: dict[str, Mapping[str, Any]] = {}
    for span in trace.spans:
        if span.span_type not in ("LLM", "CHAT_MODEL"):
            continue
        tools = span.attribute("mlflow.chat.tools")
        if not tools and isinstance(span.inputs, Mapping):
            tools = span.inputs.get("tools")
        for tool in tools if isinstance(tools, list) else ():
            fn = tool.get("function") if isinstance(tool, Mapping) else None
            if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
                seen.setdefault(fn["name"], fn)
    return list(seen.values())


def _format_available(tools: Sequence[Mapping[str, Any]]) -> str:
    """MLflow's `format_available_tools` layout."""
    parts = []
    for fn in tools:
        line = f"- {fn['name']}" + (f": {fn['description']}" if fn.get("description") else "")
        raw_params = fn.get("parameters")
        params: Mapping[str, Any] = raw_params if isinstance(raw_params, Mapping) else {}
        raw_props = params.get("properties")
        props: Mapping[str, Any] = raw_props if isinstance(raw_props, Mapping) else {}
        required = set(params.get("required") or [])
        for pname, raw in props.items():
            prop: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
            item = f"    - {pname} ({'required' if pname in required else 'optional'})"
            item += f": {prop['type']}" if prop.get("type") else ""
            item += f" - {prop['description']}" if prop.get("description") else ""
            line += "\n" + item
        parts.append(line)
    return "\n\n".join(parts) if parts else "No tools available"


def _format_called(trace: Trace) -> str:
    """MLflow's `format_tools_called` layout, from the trace's TOOL spans in start order."""
    parts = []
    for i, call in enumerate(trace.tool_calls, 1):
        text = (
            f"Tool Call {i}: {call.name}\n  Input Arguments: {call.inputs or {}}\n"
            f"  Output: {call.outputs or '(no output)'}"
        )
        if not call.ok:
            text += "\n  Exception: the tool span ended in error"
        parts.append(text)
    return "\n\n".join(parts) if parts else "No tools called"


class ToolCallEfficiency(_BuiltinJudge):
    """Were any tool calls redundant (same tool, same or similar arguments)?"""

    kind = "tool_call_efficiency"
    _judged = ("trace",)

    def prompt(self, **fields: Any) -> str | None:
        trace: Trace = fields["trace"]
        return self._ask(
            "Consider the agent's tool usage for redundancy and inefficiency.\n\n"
            "Given the user's request, the available tools, and the sequence of tools called by the agent, "
            "determine whether any tool calls were unnecessary or could have been made more efficient. In "
            "your analysis, treat retries caused by temporary tool failures (e.g., timeouts, transient "
            "errors) as efficient and not redundant.\n\n"
            "Consider in particular:\n\nCalls to the same tool with identical or very similar arguments\n\n"
            "Repeated calls to the same tool with the same parameters\n\n"
            "Multiple calls that could reasonably have been consolidated into a single call\n\n"
            'The result is "yes" when the tool usage is efficient and free of redundancy, and "no" otherwise.',
            request=self.field(trace.inputs),
            available_tools=self.field(_format_available(_available_tools(trace))),
            tools_called=self.field(_format_called(trace)),
        )


_ORDER_CHECK = "3) Ordering\n- Consider whether the order of tool calls matches the expected order."
_ORDER_IGNORE = (
    "Note: The order of tool calls does not need to match. You should not penalize the agent for "
    "calling tools in a different order than the expected order."
)
_FREE = (
    "Consider whether the agent selected appropriate tools and called with the correct arguments for "
    "the task. Given the user's request, the available tools (including their described "
    "capabilities/constraints), and the sequence of tool calls made by the agent, evaluate if the agent "
    "chose suitable tools and used them in a reasonable way.",
    "1) Need for tools\n- Was using any tool necessary or helpful for this request?\n- Did the agent fail "
    "to use an obviously appropriate tool that was available?\n\n2) Tool selection\n- For each step, is "
    "the chosen tool a good match for the subtask, given the tool descriptions?\n- Did the agent avoid "
    "tools that are clearly irrelevant, overpowered, or disallowed for the request?\n\n3) Arguments and "
    "intent alignment\n- Do the arguments match the tool's schema?\n- Are the arguments clearly grounded "
    "in the user's request and the tool's documented purpose?\n\n4) Tool flow and combinations\n- When "
    "multiple tools are used, is the overall sequence of tool choices logically sound?",
)
_FULL = (
    "Compare the actual tool calls against the expected tool calls to determine if they are correct. "
    "Given the user's request, the expected tool calls (ground truth), and the actual tool calls made "
    "by the agent, evaluate whether the actual tool calls semantically match the expected ones.",
    "1) Tool selection match\n- Are the same tools being called (or semantically equivalent "
    "alternatives)?\n- Are there any missing or extra tool calls compared to expectations?\n\n2) Argument "
    "match\n- Do the actual arguments convey the same intent as the expected arguments, even if phrased "
    "differently?\n- Are there any significant differences in argument values that would change the outcome?",
)
_PARTIAL = (
    "Evaluate tool call correctness by comparing tool selection against expected tool names, and "
    "evaluating whether arguments are reasonable.",
    "1) Tool selection match\n- Do the actual tool calls match the expected tool names?\n- Are there any "
    "missing or extra tools compared to expectations?\n\n2) Argument reasonableness\n- Are the arguments "
    "provided reasonable given the user request and tool definitions?",
)


def _expected_calls(expectations: Mapping[str, Any] | None) -> list[tuple[str, dict[str, Any] | None]] | None:
    """`expected_tool_calls` as `(name, arguments-or-None)`, MLflow's `parse_tool_call_expectations`.

    Raises:
        ValueError: an entry is not a `{"name": ..., "arguments": {...}}` mapping.
    """
    calls = (expectations or {}).get("expected_tool_calls")
    if not calls:
        return None
    out = []
    for call in calls:
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
            raise ValueError(f"expected_tool_calls entries need a string `name`, got {call!r}")
        args = call.get("arguments")
        if args is not None and not isinstance(args, dict):
            raise ValueError(f"Invalid arguments type: {type(args)}. Arguments must be a dict.")
        out.append((call["name"], args))
    return out


def _signature(name: str, args: Any, with_args: bool) -> str:
    return f"{name}({json.dumps(args or {}, sort_keys=True, default=str)})" if with_args else name


class ToolCallCorrectness(_BuiltinJudge):
    """Were the right tools called with reasonable arguments (against `expected_tool_calls` if given)?

    Without expectations the model judges the calls on their own (`should_exact_match=True`
    then skips, having nothing to match); with them, `should_exact_match=True` compares
    names (and arguments when every expected call gives them) in code, as MLflow does.
    """

    kind = "tool_call_correctness"
    _judged = ("trace", "expectations")
    _skip_when_missing: tuple[str, ...] | None = ()  # expectations are optional (ground-truth-free mode)

    def __init__(
        self,
        name: str | None = None,
        *,
        model: str | None = None,
        client: JudgeClient | None = None,
        timeout: float | None = None,
        inference_params: Mapping[str, Any] | None = None,
        should_exact_match: bool = False,
        should_consider_ordering: bool = False,
    ) -> None:
        if not isinstance(should_exact_match, bool) or not isinstance(should_consider_ordering, bool):
            raise ScorerDefinitionError("should_exact_match and should_consider_ordering must be bools")
        self.should_exact_match = should_exact_match
        self.should_consider_ordering = should_consider_ordering
        if should_exact_match:
            self._skip_when_missing = ("expectations",)
        super().__init__(name, model=model, client=client, timeout=timeout, inference_params=inference_params)

    def to_spec(self) -> dict[str, Any]:
        return {
            **super().to_spec(),
            "should_exact_match": self.should_exact_match,
            "should_consider_ordering": self.should_consider_ordering,
        }

    def prompt(self, **fields: Any) -> str | Feedback | None:
        trace: Trace = fields["trace"]
        expected = _expected_calls(fields["expectations"])
        if expected is None and self.should_exact_match:
            return None
        with_args = expected is not None and all(args is not None for _, args in expected)
        if expected is not None and self.should_exact_match:
            return self._exact(trace, expected, with_args)
        preamble, criteria = _FREE if expected is None else _FULL if with_args else _PARTIAL
        order = _ORDER_CHECK if self.should_consider_ordering else _ORDER_IGNORE
        sections: dict[str, str] = {"request": self.field(trace.inputs)}
        if expected is not None:
            lines = []
            for i, (tool, args) in enumerate(expected, 1):
                if with_args:
                    lines.append(
                        f"Expected Tool Call {i}: {tool}\n  Arguments: {json.dumps(args) if args else 'empty'}"
                    )
                else:
                    lines.append(f"Expected Tool {i}: {tool}")
            sections["expected_tool_calls"] = self.field("\n".join(lines))
        sections["actual_tool_calls"] = self.field(_format_called(trace))
        sections["available_tools"] = self.field(_format_available(_available_tools(trace)))
        return self._ask(
            f"{preamble}\n\nFocus only on the choice of tools and the arguments passed to them. Do NOT judge "
            f"whether the tools' outputs or implementations are correct.\n\nEvaluate:\n\n{criteria}\n\n{order}\n\n"
            'The result is "yes" if the tool calls and arguments are correct and reasonable, and "no" otherwise.',
            **sections,
        )

    def _exact(self, trace: Trace, expected: list[tuple[str, dict[str, Any] | None]], with_args: bool) -> Feedback:
        """MLflow's exact-match modes, verdict and rationale text included."""
        actual = [(c.name, c.inputs) for c in trace.tool_calls]
        if len(actual) != len(expected):
            return _code_verdict(
                self.name,
                False,
                f"Expected {len(expected)} tool call(s), but got {len(actual)} tool call(s).",
            )
        if self.should_consider_ordering:
            mismatches = []
            for i, ((a_name, a_args), (e_name, e_args)) in enumerate(zip(actual, expected, strict=True), 1):
                if _signature(a_name, a_args, with_args) != _signature(e_name, e_args, with_args):
                    if with_args:
                        mismatches.append(
                            f"Position {i}: expected {e_name}({json.dumps(e_args or {})}), "
                            f"got {a_name}({json.dumps(a_args or {}, default=str)})"
                        )
                    else:
                        mismatches.append(f"Position {i}: expected {e_name}, got {a_name}")
            if mismatches:
                return _code_verdict(self.name, False, f"Tool calls do not match in order: {'; '.join(mismatches)}")
            return _code_verdict(self.name, True, "All tool calls match expected sequence exactly.")
        got = {_signature(n, a, with_args) for n, a in actual}
        want = {_signature(n, a, with_args) for n, a in expected}
        if got == want:
            return _code_verdict(self.name, True, "All expected tool calls present (order ignored).")
        parts = []
        if want - got:
            parts.append(f"Missing: {want - got}")
        if got - want:
            parts.append(f"Unexpected: {got - want}")
        return _code_verdict(self.name, False, "; ".join(parts))


MORE_JUDGES: Final[dict[str, type[_BuiltinJudge]]] = {
    "Completeness": Completeness,
    "Equivalence": Equivalence,
    "Fluency": Fluency,
    "RetrievalSufficiency": RetrievalSufficiency,
    "Summarization": Summarization,
    "ToolCallCorrectness": ToolCallCorrectness,
    "ToolCallEfficiency": ToolCallEfficiency,
}
"""The judges of this module by their MLflow name."""

BUILTIN_JUDGES: Final[dict[str, type[Judge]]] = {**_FIRST_JUDGES, **MORE_JUDGES}
"""Every built-in judge class by its MLflow name (what `resolve_scorer("Safety()")` looks up)."""
