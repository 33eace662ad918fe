"""Judges as data: instruction templates (`make_judge`) and registry specs (`judge_from_spec`).

A template may use MLflow's variables: `{{ inputs }}`, `{{ outputs }}`, `{{ expectations }}`,
`{{ trace }}` and `{{ conversation }}`; the variables it names are the scorer parameters
it declares, so a template naming `{{ expectations }}` is skipped on traces without any.
Anything else is rejected when the judge is defined, never when it runs.

`{{ conversation }}` (a session's turns) is accepted so MLflow code that defines such a
judge runs, with MLflow's rule that it may only be combined with `{{ expectations }}`; but
tracewatch scores single traces, so running one records an error saying so and the
registry refuses it (sessions are a later issue; see `docs/mlflow-compatibility.md`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args, get_origin

from scorers._assessment import Feedback
from scorers._exceptions import JudgeResponseError, ScorerDefinitionError
from scorers._judge import JudgeClient
from scorers._judges import Guidelines, Judge
from scorers._judges_more import BUILTIN_JUDGES
from scorers._trace import Trace
from scorers._verdict import VALUE_TYPES

__all__ = ["TEMPLATE_VARIABLES", "InstructionsJudge", "judge_from_spec", "make_judge"]

TEMPLATE_VARIABLES: Final = ("inputs", "outputs", "expectations", "trace", "conversation")
"""The variables a `make_judge` template may use, as `{{ name }}` (MLflow's set)."""

_SESSION_ONLY: Final = frozenset({"conversation"})
_NO_SESSIONS: Final = (
    "uses {{ conversation }}, which needs a session of traces; tracewatch scores single traces, "
    "so this judge cannot run or be registered here (write it with {{ inputs }}/{{ outputs }} or "
    "{{ trace }} instead)"
)

_VAR = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def _trace_view(trace: Trace) -> dict[str, Any]:
    """What a judge sees of a trace: the span tree's names, types, status and I/O."""
    return {
        "trace_id": trace.trace_id,
        "state": trace.status,
        "spans": [
            {
                "name": s.name,
                "type": s.span_type,
                "parent": s.parent_id,
                "id": s.span_id,
                "status": s.status_code,
                "inputs": s.inputs,
                "outputs": s.outputs,
            }
            for s in trace.spans
        ],
    }


_TYPE_NAMES: Final[dict[Any, str]] = {bool: "bool", str: "str", int: "int", float: "float"}


def _template_variables(name: str, instructions: Any) -> tuple[str, ...]:
    allowed = ", ".join("{{ " + v + " }}" for v in TEMPLATE_VARIABLES)
    if not isinstance(instructions, str) or not instructions.strip():
        raise ScorerDefinitionError(
            f"judge {name!r}: instructions must be a non-empty string using {allowed}"
        )
    found = [m.group(1) for m in _VAR.finditer(instructions)]
    unknown = sorted({v for v in found if v not in TEMPLATE_VARIABLES})
    if unknown:
        raise ScorerDefinitionError(
            f"judge {name!r}: unknown template variable(s) {', '.join(repr(u) for u in unknown)}; "
            f"the allowed variables are {allowed}"
        )
    if not found:
        raise ScorerDefinitionError(
            f"judge {name!r}: instructions use no template variable; use at least one of {allowed}"
        )
    if "conversation" in found and set(found) - {"conversation", "expectations"}:
        raise ScorerDefinitionError(
            f"judge {name!r}: {{{{ conversation }}}} can only be combined with {{{{ expectations }}}}, "
            "not with {{ inputs }}, {{ outputs }} or {{ trace }} (as in MLflow)"
        )
    return tuple(v for v in TEMPLATE_VARIABLES if v in found)


class InstructionsJudge(Judge):
    """A judge from an instruction template (see `make_judge`).

    `choices` (from `feedback_value_type=Literal[...]`) restricts a `str` answer to those
    values: they are listed in the prompt and any other answer is a `JUDGE_BAD_RESPONSE`.
    """

    kind = "make_judge"

    def __init__(
        self,
        name: str,
        instructions: str,
        *,
        value_type: str = "str",
        choices: tuple[str, ...] | None = None,
        description: str | None = None,
        model: str | None = None,
        client: JudgeClient | None = None,
        timeout: float | None = None,
        inference_params: Mapping[str, Any] | None = None,
    ) -> None:
        if value_type not in VALUE_TYPES or value_type == "yes/no":
            raise ScorerDefinitionError(
                f"judge {name!r}: feedback_value_type must be bool, str, int, float or a Literal of strings"
            )
        if choices is not None and (value_type != "str" or not choices or not all(isinstance(c, str) for c in choices)):
            raise ScorerDefinitionError(f"judge {name!r}: choices must be a non-empty list of strings")
        self.instructions = instructions
        self.value_type = value_type
        self.choices = tuple(choices) if choices else None
        self.description = description
        variables = _template_variables(name, instructions)
        self.needs_session = bool(_SESSION_ONLY.intersection(variables))
        params = tuple(v for v in variables if v not in _SESSION_ONLY)
        super().__init__(
            name, params=params, model=model, client=client, timeout=timeout, inference_params=inference_params
        )

    def to_spec(self) -> dict[str, Any]:
        spec = {**super().to_spec(), "instructions": self.instructions}
        if self.choices:
            spec["choices"] = list(self.choices)
        if self.description:
            spec["description"] = self.description
        return spec

    def answer_format(self) -> str:
        if not self.choices:
            return super().answer_format()
        listed = ", ".join(f'"{c}"' for c in self.choices)
        return (
            "Reply with only a JSON object and no other text, in this form:\n"
            f'{{"result": <one of {listed}>, "rationale": "<one or two sentences explaining the result>"}}\n'
            "Answer type: str"
        )

    def prompt(self, **fields: Any) -> str | None:
        if self.needs_session:
            raise ScorerDefinitionError(f"judge {self.name!r} {_NO_SESSIONS}")

        def render(m: re.Match[str]) -> str:
            value = fields[m.group(1)]
            return self.field(_trace_view(value) if m.group(1) == "trace" else value)

        return f"{_VAR.sub(render, self.instructions)}\n\n{self.answer_format()}"

    async def _judge(self, **fields: Any) -> Feedback | None:
        feedback = await super()._judge(**fields)
        if self.choices and feedback is not None and feedback.value not in self.choices:
            raise JudgeResponseError(
                f"judge {self.name!r} answered {feedback.value!r}, not one of {list(self.choices)}"
            )
        return feedback


def _value_type(name: str, feedback_value_type: Any) -> tuple[str, tuple[str, ...] | None]:
    """`(value_type, choices)` from a Python type, its name, or `Literal["a", "b"]`."""
    if get_origin(feedback_value_type) is Literal:
        choices = get_args(feedback_value_type)
        if choices and all(isinstance(c, str) for c in choices):
            return "str", tuple(choices)
        raise ScorerDefinitionError(f"judge {name!r}: a Literal feedback_value_type must list strings")
    type_name = _TYPE_NAMES.get(feedback_value_type, feedback_value_type)
    if not isinstance(type_name, str):
        raise ScorerDefinitionError(
            f"judge {name!r}: feedback_value_type must be bool, str, int, float or a Literal of strings"
        )
    return type_name, None


def make_judge(
    name: str,
    instructions: str,
    model: str | None = None,
    description: str | None = None,
    feedback_value_type: Any = str,
    inference_params: Mapping[str, Any] | None = None,
    *,
    client: JudgeClient | None = None,
    timeout: float | None = None,
) -> InstructionsJudge:
    """Build a judge from instructions using `{{ inputs }}`, `{{ outputs }}`, `{{ expectations }}`,
    `{{ trace }}` (and `{{ conversation }}`, see the module); MLflow's signature and defaults.

    The answer is a `str` unless `feedback_value_type` says `bool`, `int`, `float` or
    `Literal["a", "b", ...]`; `inference_params` (temperature, max_tokens, top_p, ...) are
    sent in every request body. MLflow's `base_url`/`extra_headers`/`model_api` are not
    accepted: endpoints and credentials are the operator's configuration (see `_providers`).

    Raises:
        ScorerDefinitionError: the template uses no variable or an unknown one (the message
            lists the allowed ones), the value type or inference_params are unsupported, or
            the model's provider is.

    Example:
        >>> judge = make_judge("concise", "Is {{ outputs }} concise?", feedback_value_type=bool)
        >>> sorted(judge.params), make_judge("tone", "Rate {{ outputs }}").value_type
        (['outputs'], 'str')
    """
    type_name, choices = _value_type(name, feedback_value_type)
    return InstructionsJudge(
        name,
        instructions,
        value_type=type_name,
        choices=choices,
        description=description,
        model=model,
        client=client,
        timeout=timeout,
        inference_params=inference_params,
    )


_BY_KIND: Final[dict[str, type[Judge]]] = {cls.kind: cls for cls in BUILTIN_JUDGES.values()}
_SPEC_KEYS: Final[dict[str, frozenset[str]]] = {
    "guidelines": frozenset({"guidelines"}),
    "make_judge": frozenset({"instructions"}),
}
_OPTIONAL_KEYS: Final[dict[str, frozenset[str]]] = {
    "make_judge": frozenset({"choices", "description"}),
    "tool_call_correctness": frozenset({"should_exact_match", "should_consider_ordering"}),
}


def judge_from_spec(spec: Mapping[str, Any]) -> Judge:
    """Rebuild a judge from `Judge.to_spec()` output, validating it as a registry record.

    Raises:
        ScorerDefinitionError: unknown `kind`, missing or unexpected keys, or any value the
            judge's constructor rejects (bad template, model, value type, guidelines), or a
            `{{ conversation }}` template (sessions are not scored here).
    """
    if not isinstance(spec, Mapping):
        raise ScorerDefinitionError(f"a judge spec must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    kinds = sorted([*_BY_KIND, "make_judge"])
    if kind not in kinds:
        raise ScorerDefinitionError(f"judge spec kind {kind!r} is unknown; use one of {', '.join(kinds)}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ScorerDefinitionError("judge spec needs a non-empty string `name`")
    extra = _SPEC_KEYS.get(kind, frozenset())
    allowed = {"kind", "name", "model", "value_type", "inference_params", *extra, *_OPTIONAL_KEYS.get(kind, ())}
    unexpected = sorted(set(spec).difference(allowed))
    missing = sorted(extra.difference(spec))
    if unexpected or missing:
        raise ScorerDefinitionError(
            f"judge spec {name!r} ({kind}): unexpected keys {unexpected}, missing keys {missing}"
        )
    model = spec.get("model")
    if model is not None and not isinstance(model, str):
        raise ScorerDefinitionError(f"judge spec {name!r}: model must be a string")
    params = spec.get("inference_params")
    value_type = spec.get("value_type")
    if kind == "make_judge":
        choices = spec.get("choices")
        judge = InstructionsJudge(
            name,
            spec["instructions"],
            value_type=value_type or "str",
            choices=tuple(choices) if isinstance(choices, list) else choices,
            description=spec.get("description"),
            model=model,
            inference_params=params,
        )
        if judge.needs_session:
            raise ScorerDefinitionError(f"judge spec {name!r} {_NO_SESSIONS}")
        return judge
    if value_type not in (None, "yes/no"):
        raise ScorerDefinitionError(f"judge spec {name!r}: built-in judges answer yes/no, not {value_type!r}")
    if kind == "guidelines":
        return Guidelines(name, spec["guidelines"], model=model, inference_params=params)
    options = {k: spec[k] for k in _OPTIONAL_KEYS.get(kind, ()) if k in spec}
    return _BY_KIND[kind](name, model=model, inference_params=params, **options)
