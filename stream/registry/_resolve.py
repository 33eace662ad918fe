"""Turning what a user registers into a stored definition, and a stored version back into a scorer.

The same checks run at registration (where a failure is a `RegistryError` for the user) and
when a worker loads a record (where a failure is reported and the record skipped), because a
record in Redis may have been written by anyone who can reach Redis. A code reference is
parsed by the strict grammar of `scorers.parse_reference` and checked against the module
allowlist *before* anything is imported, so a forged record naming `os:system`,
`allowed.mod:os.system('...')` or `allowed.pkg.__init__:x` never gets a module imported;
`resolve_scorer` then calls only attributes defined in the named module itself.

The allowlist is `Settings.scorer_modules` (`TRACEWATCH_SCORER_MODULES`). Built-ins
(`no_error`, `latency_under(max_ms=2000)`, `Safety()`) are always allowed by their bare
names; tracewatch's own packages are never the module of an import reference (their
internals are not scorers, and `scorers._resolve` could be made to resolve anything).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from scorers import (
    AssessmentSource,
    AssessmentSourceType,
    Judge,
    Scorer,
    ScorerDefinitionError,
    ScorerReference,
    judge_from_spec,
    module_allowed,
    parse_reference,
    resolve_scorer,
)
from stream.registry._records import RegistryError, ScorerVersion

# Internal to the registry (`stream.registry._registry` and its tests): nothing here is public API.
__all__: list[str] = []

_ENV: Final = "TRACEWATCH_SCORER_MODULES"


@dataclass(slots=True, frozen=True)
class Definition:
    """What a version stores (exactly one of `ref` or `spec`), plus the scorer it resolved to."""

    kind: Literal["code", "judge"]
    ref: str | None
    arguments: dict[str, Any] | None
    spec: dict[str, Any] | None
    scorer: Scorer


def parse(ref: object) -> ScorerReference:
    """Parse a reference by the grammar of `scorers.parse_reference`, importing nothing.

    Raises:
        RegistryError: the reference is not in the grammar (the message says why).
    """
    try:
        return parse_reference(ref)
    except ScorerDefinitionError as exc:
        raise RegistryError(str(exc)) from None


def check_allowed(ref: object, allowlist: Collection[str]) -> ScorerReference:
    """Parse `ref` and refuse a module not on the allowlist, all without importing anything.

    Returns:
        The parsed reference.

    Raises:
        RegistryError: not in the grammar, or the module is not allowed (naming the module
            and `TRACEWATCH_SCORER_MODULES`).
    """
    parsed = parse(ref)
    if parsed.module is None or module_allowed(parsed.module, allowlist):
        return parsed
    now = ", ".join(sorted(allowlist)) or "empty"
    raise RegistryError(
        f"scorer reference {parsed.text!r}: module {parsed.module!r} is not allowed; add it (or a parent "
        f"package) to {_ENV} (comma-separated; now: {now})"
    )


def _split_call(parsed: ScorerReference) -> tuple[str, dict[str, Any] | None]:
    """`name(k=literal, ...)` -> (`name`, kwargs); anything else is kept whole, kwargs None."""
    if not parsed.called or parsed.args or not parsed.kwargs:
        return parsed.text, None
    for value in parsed.kwargs.values():
        # Only values that survive a JSON round trip unchanged (no tuples, sets, bytes).
        try:
            if orjson.loads(orjson.dumps(value)) != value or isinstance(value, tuple):
                return parsed.text, None
        except (TypeError, orjson.JSONEncodeError):
            return parsed.text, None
    return parsed.target, dict(parsed.kwargs)


def _resolve(text: str, allowlist: Collection[str]) -> Scorer:
    check_allowed(text, allowlist)  # before `resolve_scorer` imports anything
    try:
        return resolve_scorer(text, allowed_modules=allowlist)
    except (TypeError, ValueError) as exc:  # ScorerDefinitionError is a TypeError
        raise RegistryError(str(exc)) from exc
    except Exception as exc:  # importing the module or calling the factory ran user code
        raise RegistryError(f"scorer reference {text!r} failed to load: {type(exc).__name__}: {exc}") from exc


def _judge(spec: Mapping[str, Any]) -> Judge:
    try:
        return judge_from_spec(spec)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"judge spec: {exc}") from exc


def _ref_of(obj: Scorer) -> str:
    """The import reference of a module-level `@scorer`, checked to resolve back to it."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    hint = (
        "register it by reference instead: a built-in name such as 'latency_under(max_ms=2000)', "
        "or 'package.module:attr' for a @scorer defined at the top level of an importable module"
    )
    top_level = isinstance(module, str) and isinstance(qualname, str) and qualname.isidentifier()
    if not top_level or module == "__main__":
        if "<lambda>" in str(qualname):
            where = "as a lambda"
        elif module == "__main__":
            where = "in __main__"
        else:
            where = "inside a function" if "<locals>" in str(qualname) else "in a class"
        raise RegistryError(
            f"scorer {obj.name!r} is defined {where}, so workers cannot import it (scorers are stored as "
            f"import references, never pickled); {hint}"
        )
    return f"{module}:{qualname}"


def define(item: Scorer | str | Mapping[str, Any], allowlist: Collection[str]) -> Definition:
    """Validate what a user registers and turn it into a storable `Definition`.

    `item` is a reference string, a judge spec dict (`Judge.to_spec()`), a `Judge`, or a
    module-level `@scorer`. Judges, including built-in ones given by reference such as
    `"Safety(model='openai:/gpt-4.1-mini')"`, are stored as their spec.

    Raises:
        RegistryError: one message saying what to fix (module not allowed, not importable,
            not a scorer, bad arguments, bad judge template or spec, ...).
    """
    if isinstance(item, Judge):
        judge = _judge(item.to_spec())
        return Definition("judge", None, None, judge.to_spec(), judge)
    if isinstance(item, Scorer):
        ref = _ref_of(item)
        resolved = _resolve(ref, allowlist)
        if resolved is not item and getattr(resolved, "__wrapped__", None) is not item.__wrapped__:
            raise RegistryError(
                f"scorer {item.name!r}: {ref!r} resolves to a different object; register it by reference"
            )
        return Definition("code", ref, None, None, resolved)
    if isinstance(item, Mapping):
        judge = _judge(item)
        return Definition("judge", None, None, judge.to_spec(), judge)
    if not isinstance(item, str) or not item.strip():
        raise RegistryError(
            f"cannot register {type(item).__name__}: pass a reference string, a judge spec dict or a Scorer"
        )
    parsed = check_allowed(item, allowlist)
    resolved = _resolve(parsed.text, allowlist)
    if isinstance(resolved, Judge):
        return Definition("judge", None, None, resolved.to_spec(), resolved)
    ref, kwargs = _split_call(parsed)
    return Definition("code", ref, kwargs, None, resolved)


def renamed(obj: Scorer, name: str) -> Scorer:
    """`obj` under the registered `name` (the feedback name and metric label), never mutating `obj`."""
    if obj.name == name:
        return obj
    if isinstance(obj, Judge):
        # A judge's feedback names come from its own bound method, so rebuild rather than copy.
        return _judge({**obj.to_spec(), "name": name})
    clone = copy.copy(obj)
    clone.name = name
    if obj.source.source_type == AssessmentSourceType.CODE and obj.source.source_id == obj.name:
        clone.source = AssessmentSource(AssessmentSourceType.CODE, name)
    return clone


def build_scorer(version: ScorerVersion, name: str, allowlist: Collection[str]) -> Scorer:
    """The runtime scorer of a stored version, named `name`, with the registration checks.

    Raises:
        RegistryError: the module is not on the allowlist (nothing is imported then), or the
            reference or spec no longer resolves.
    """
    if version.kind == "judge":
        return _judge({**(version.spec or {}), "name": name})
    return renamed(_resolve(version.reference, allowlist), name)
