"""Turning a scorer reference (CLI flag, registry record) into a `Scorer`.

Two forms are accepted:

- a built-in name, bare or called with literal arguments: `no_error`,
  `latency_under(max_ms=2000)`, `Guidelines(name="tone", guidelines="Be polite.")`;
- an import reference `package.module:attr`, optionally called the same way, where `attr`
  is a `Scorer` or a factory returning one.

Arguments are parsed with `ast` and evaluated with `ast.literal_eval` only: a reference
is data and can never run code of its own.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import inspect
from collections.abc import Callable, Collection
from typing import Any, Final

from scorers._builtin import BUILTIN_SCORERS
from scorers._exceptions import ScorerDefinitionError
from scorers._judges import BUILTIN_JUDGES
from scorers._scorer import SCORER_PARAMS, Scorer
from scorers._template import make_judge

__all__ = ["builtin_names", "resolve_scorer"]

_BUILTINS: Final[dict[str, Callable[..., Any]]] = {
    **BUILTIN_SCORERS,
    **BUILTIN_JUDGES,
    "make_judge": make_judge,
}


def builtin_names() -> list[str]:
    """Every name `resolve_scorer` knows without an import reference, sorted."""
    return sorted(_BUILTINS)


def _dotted(node: ast.expr, ref: str) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise ScorerDefinitionError(
            f"scorer reference {ref!r}: expected a name, optionally called with literals"
        )
    parts.append(node.id)
    return ".".join(reversed(parts))


_TYPE_NAMES: Final = frozenset({"bool", "str", "int", "float"})


def _literal(node: ast.expr) -> Any:
    # `feedback_value_type=int` reads naturally; the bare type names become their names.
    if isinstance(node, ast.Name) and node.id in _TYPE_NAMES:
        return node.id
    return ast.literal_eval(node)


def _parse(text: str, ref: str) -> tuple[str, bool, list[Any], dict[str, Any]]:
    """Split `name(args)` into the dotted name, whether it is called, and literal args."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ScorerDefinitionError(f"scorer reference {ref!r} is not valid: {exc.msg}") from None
    if not isinstance(node, ast.Call):
        return _dotted(node, ref), False, [], {}
    name = _dotted(node.func, ref)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    try:
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise ValueError("*args")
            args.append(_literal(arg))
        for kw in node.keywords:
            if kw.arg is None:
                raise ValueError("**kwargs")
            kwargs[kw.arg] = _literal(kw.value)
    except ValueError as exc:
        raise ScorerDefinitionError(
            f"scorer reference {ref!r}: arguments must be literals (numbers, strings, lists, dicts, "
            f"True/False/None): {exc}"
        ) from None
    return name, True, args, kwargs


def _looks_like_scorer_fn(obj: Callable[..., Any]) -> bool:
    try:
        names = set(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return False
    return bool(names) and names <= set(SCORER_PARAMS)


def _call(factory: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], ref: str) -> Scorer:
    try:
        made = factory(*args, **kwargs)
    except ScorerDefinitionError:
        raise
    except TypeError as exc:
        raise ScorerDefinitionError(f"scorer reference {ref!r}: bad arguments: {exc}") from exc
    if not isinstance(made, Scorer):
        raise ScorerDefinitionError(
            f"scorer reference {ref!r}: the factory returned {type(made).__name__}, not a Scorer"
        )
    return made


def resolve_scorer(ref: str, *, allowed_modules: Collection[str] | None = None) -> Scorer:
    """Resolve a built-in name or `package.module:attr` reference to a `Scorer`.

    Args:
        ref: e.g. `"output_word_count"`, `"latency_under(max_ms=2000)"`,
            `"Safety(model='openai:/gpt-4.1-mini')"` or `"my_app.scorers:is_polite"`.
        allowed_modules: when given, import references must name one of these modules or
            a submodule of one (the registry's allowlist, `TRACEWATCH_SCORER_MODULES`).

    Raises:
        ScorerDefinitionError: unknown name (with suggestions), module not allowed or not
            importable, attribute missing, non-literal arguments, or the attribute is neither
            a `Scorer` nor a factory returning one.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ScorerDefinitionError("a scorer reference must be a non-empty string")
    head, sep, tail = ref.strip().partition(":")
    if not sep or "(" in head:
        name, called, args, kwargs = _parse(ref, ref)
        factory = _BUILTINS.get(name)
        if factory is None:
            close = difflib.get_close_matches(name, _BUILTINS, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ScorerDefinitionError(
                f"unknown built-in scorer {name!r}.{hint} Built-ins: {', '.join(builtin_names())}; "
                "or use an import reference `package.module:attr`."
            )
        return _call(factory, args, kwargs, ref)
    module_name = head.strip()
    if allowed_modules is not None and not any(
        module_name == m or module_name.startswith(m + ".") for m in allowed_modules
    ):
        raise ScorerDefinitionError(
            f"scorer reference {ref!r}: module {module_name!r} is not in the allowlist "
            f"({', '.join(sorted(allowed_modules)) or 'empty'})"
        )
    attr_path, called, args, kwargs = _parse(tail, ref)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ScorerDefinitionError(
            f"scorer reference {ref!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ScorerDefinitionError(
                f"scorer reference {ref!r}: {module_name!r} has no {attr_path!r}"
            ) from None
    if isinstance(obj, Scorer):
        if called:
            raise ScorerDefinitionError(
                f"scorer reference {ref!r}: {attr_path!r} is a Scorer; it takes no arguments"
            )
        return obj
    if callable(obj):
        if not called and _looks_like_scorer_fn(obj):
            raise ScorerDefinitionError(
                f"scorer reference {ref!r}: {attr_path!r} is a plain function; decorate it with @scorer"
            )
        return _call(obj, args, kwargs, ref)
    raise ScorerDefinitionError(
        f"scorer reference {ref!r}: {attr_path!r} is a {type(obj).__name__}, not a Scorer or a factory of one"
    )
