"""Turning what a user registers into a stored definition, and a stored version back into a scorer.

The same checks run at registration (where a failure is a `RegistryError` for the user) and
when a worker loads a record (where a failure is reported and the record skipped), because a
record in Redis may have been written by anyone who can reach Redis. In particular a code
reference is checked against the module allowlist *before* anything is imported, so a forged
record naming `os:system` never gets its module imported.

The allowlist is `Settings.scorer_modules` (`TRACEWATCH_SCORER_MODULES`) plus the built-ins:
built-in names (`no_error`, `latency_under(max_ms=2000)`, `Safety()`) and the `scorers`
package itself.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from scorers import AssessmentSource, AssessmentSourceType, Judge, Scorer, judge_from_spec, resolve_scorer
from stream._registry_records import RegistryError, ScorerVersion

# Internal to the registry (`stream._registry` and its tests): nothing here is public API.
__all__: list[str] = []

BUILTIN_MODULE: Final = "scorers"
"""Always allowed: the package of the built-in scorers and judges."""

_ENV: Final = "TRACEWATCH_SCORER_MODULES"


@dataclass(slots=True, frozen=True)
class Definition:
    """What a version stores (exactly one of `ref` or `spec`), plus the scorer it resolved to."""

    kind: Literal["code", "judge"]
    ref: str | None
    arguments: dict[str, Any] | None
    spec: dict[str, Any] | None
    scorer: Scorer


def module_of(ref: str) -> str | None:
    """The module an import reference names, or None for a built-in name (as `resolve_scorer` reads it)."""
    head, sep, _ = ref.strip().partition(":")
    if not sep or "(" in head:
        return None
    return head.strip()


def _allowed(module: str, allowlist: Collection[str]) -> bool:
    return any(module == m or module.startswith(m + ".") for m in allowlist)


def check_allowed(ref: str, allowlist: Collection[str]) -> None:
    """Refuse an import reference whose module is not on the allowlist (without importing it).

    Raises:
        RegistryError: naming the module and `TRACEWATCH_SCORER_MODULES`.
    """
    module = module_of(ref)
    if module is None or module == BUILTIN_MODULE or _allowed(module, [*allowlist, BUILTIN_MODULE]):
        return
    now = ", ".join(sorted(allowlist)) or "empty"
    raise RegistryError(
        f"scorer reference {ref!r}: module {module!r} is not allowed; add it (or a parent package) "
        f"to {_ENV} (comma-separated; now: {now})"
    )


def _split_call(ref: str) -> tuple[str, dict[str, Any] | None]:
    """`name(k=literal, ...)` -> (`name`, kwargs); anything else is kept whole, kwargs None."""
    head, sep, tail = ref.partition(":")
    is_import = bool(sep) and "(" not in head
    target = tail if is_import else ref
    try:
        node = ast.parse(target.strip(), mode="eval").body
    except SyntaxError:
        return ref, None
    if not isinstance(node, ast.Call) or node.args or not node.keywords:
        return ref, None
    kwargs: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            return ref, None
        try:
            value = ast.literal_eval(kw.value)
        except ValueError:
            return ref, None
        # Only values that survive a JSON round trip unchanged (no tuples, sets, bytes).
        try:
            if orjson.loads(orjson.dumps(value)) != value or isinstance(value, tuple):
                return ref, None
        except (TypeError, orjson.JSONEncodeError):
            return ref, None
        kwargs[kw.arg] = value
    name = ast.unparse(node.func)
    return (f"{head.strip()}:{name}" if is_import else name), kwargs


def _resolve(text: str, allowlist: Collection[str]) -> Scorer:
    check_allowed(text, allowlist)
    try:
        return resolve_scorer(text, allowed_modules=[*allowlist, BUILTIN_MODULE])
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
    if not module or not qualname or module == "__main__" or "<" in qualname:
        where = "in __main__" if module == "__main__" else "inside a function"
        raise RegistryError(f"scorer {obj.name!r} is defined {where}, so workers cannot import it; {hint}")
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
    text = item.strip()
    resolved = _resolve(text, allowlist)
    if isinstance(resolved, Judge):
        return Definition("judge", None, None, resolved.to_spec(), resolved)
    ref, kwargs = _split_call(text)
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
