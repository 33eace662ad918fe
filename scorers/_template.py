"""Judges as data: instruction templates (`make_judge`) and registry specs (`judge_from_spec`).

A template may use only `{{ inputs }}`, `{{ outputs }}`, `{{ expectations }}` and
`{{ trace }}` (MLflow's set, less `{{ conversation }}`: tracewatch scores single traces);
the variables it names are the scorer parameters it declares, so a template naming
`{{ expectations }}` is skipped on traces without any. Anything else is rejected when the
judge is defined, never when it runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from scorers._exceptions import ScorerDefinitionError
from scorers._judge import JudgeClient
from scorers._judges import BUILTIN_JUDGES, Guidelines, Judge
from scorers._trace import Trace
from scorers._verdict import VALUE_TYPES

__all__ = ["TEMPLATE_VARIABLES", "InstructionsJudge", "judge_from_spec", "make_judge"]

TEMPLATE_VARIABLES: Final = ("inputs", "outputs", "expectations", "trace")
"""The variables a `make_judge` template may use, as `{{ name }}`."""

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
    return tuple(v for v in TEMPLATE_VARIABLES if v in found)


class InstructionsJudge(Judge):
    """A judge from an instruction template (see `make_judge`)."""

    kind = "make_judge"

    def __init__(
        self,
        name: str,
        instructions: str,
        *,
        value_type: str = "bool",
        model: str | None = None,
        client: JudgeClient | None = None,
        timeout: float | None = None,
    ) -> None:
        if value_type not in VALUE_TYPES or value_type == "yes/no":
            raise ScorerDefinitionError(
                f"judge {name!r}: feedback_value_type must be bool, str, int or float"
            )
        self.instructions = instructions
        self.value_type = value_type
        params = _template_variables(name, instructions)
        super().__init__(name, params=params, model=model, client=client, timeout=timeout)

    def to_spec(self) -> dict[str, Any]:
        return {**super().to_spec(), "instructions": self.instructions}

    def prompt(self, **fields: Any) -> str | None:
        def render(m: re.Match[str]) -> str:
            value = fields[m.group(1)]
            return self.field(_trace_view(value) if m.group(1) == "trace" else value)

        return f"{_VAR.sub(render, self.instructions)}\n\n{self.answer_format()}"


def make_judge(
    name: str,
    instructions: str,
    *,
    feedback_value_type: type | str = bool,
    model: str | None = None,
    client: JudgeClient | None = None,
    timeout: float | None = None,
) -> InstructionsJudge:
    """Build a judge from instructions using `{{ inputs }}`, `{{ outputs }}`, `{{ expectations }}`
    and/or `{{ trace }}`; the model answers a `feedback_value_type` value.

    Raises:
        ScorerDefinitionError: the template uses no variable or an unknown one (the message
            lists the allowed ones), the value type is unsupported, or the model's provider is.

    Example:
        >>> judge = make_judge("concise", "Is {{ outputs }} concise?", feedback_value_type=bool)
        >>> sorted(judge.params)
        ['outputs']
    """
    type_name = _TYPE_NAMES.get(feedback_value_type, feedback_value_type)
    if not isinstance(type_name, str):
        raise ScorerDefinitionError(f"judge {name!r}: feedback_value_type must be bool, str, int or float")
    return InstructionsJudge(
        name, instructions, value_type=type_name, model=model, client=client, timeout=timeout
    )


_BY_KIND: Final[dict[str, type[Judge]]] = {cls.kind: cls for cls in BUILTIN_JUDGES.values()}
_SPEC_KEYS: Final[dict[str, frozenset[str]]] = {
    "guidelines": frozenset({"guidelines"}),
    "make_judge": frozenset({"instructions"}),
}


def judge_from_spec(spec: Mapping[str, Any]) -> Judge:
    """Rebuild a judge from `Judge.to_spec()` output, validating it as a registry record.

    Raises:
        ScorerDefinitionError: unknown `kind`, missing or unexpected keys, or any value the
            judge's constructor rejects (bad template, model, value type, guidelines).
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
    allowed = {"kind", "name", "model", "value_type", *extra}
    unexpected = sorted(set(spec).difference(allowed))
    missing = sorted(extra.difference(spec))
    if unexpected or missing:
        raise ScorerDefinitionError(
            f"judge spec {name!r} ({kind}): unexpected keys {unexpected}, missing keys {missing}"
        )
    model = spec.get("model")
    if model is not None and not isinstance(model, str):
        raise ScorerDefinitionError(f"judge spec {name!r}: model must be a string")
    value_type = spec.get("value_type")
    if kind == "make_judge":
        return make_judge(name, spec["instructions"], feedback_value_type=value_type or "bool", model=model)
    if value_type not in (None, "yes/no"):
        raise ScorerDefinitionError(f"judge spec {name!r}: built-in judges answer yes/no, not {value_type!r}")
    if kind == "guidelines":
        return Guidelines(name, spec["guidelines"], model=model)
    return _BY_KIND[kind](name, model=model)  # type: ignore[call-arg]
