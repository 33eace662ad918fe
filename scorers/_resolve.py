"""Turning a scorer reference (CLI flag, registry record) into a `Scorer`.

Two forms are accepted (the exact grammar is in `scorers._reference`):

- a built-in name, bare or called with literal arguments: `no_error`,
  `latency_under(max_ms=2000)`, `Guidelines(name="tone", guidelines="Be polite.")`;
- an import reference `package.module:attr`, optionally called the same way, where `attr`
  is a `Scorer` or a factory returning one, defined in that very module.

A reference is data and can never run code of its own: it is parsed by a strict grammar
before anything is imported, its arguments are evaluated with `ast.literal_eval` only, the
module must be on the allowlist (when one is given) before it is imported, and the attribute
is looked up in the module's own namespace and must have been *defined* there (not imported
into it) before it is called. So `mod:os.system(...)`, `mod:system(...)` after
`from os import system`, `mod:Class.method` and `mod:__builtins__` are all refused.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Collection
from types import ModuleType
from typing import Any, Final

from scorers._builtin import BUILTIN_SCORERS
from scorers._exceptions import ScorerDefinitionError
from scorers._judges import Judge
from scorers._judges_more import BUILTIN_JUDGES
from scorers._reference import ScorerReference, ScorerReferenceError, module_allowed, parse_reference
from scorers._rules import RULE_SCORERS
from scorers._scorer import SCORER_PARAMS, Scorer
from scorers._template import make_judge

__all__ = ["builtin_names", "resolve_scorer"]

_BUILTINS: Final[dict[str, Callable[..., Any]]] = {
    **BUILTIN_SCORERS,
    **BUILTIN_JUDGES,
    **RULE_SCORERS,
    "make_judge": make_judge,
}


def builtin_names() -> list[str]:
    """Every name `resolve_scorer` knows without an import reference, sorted."""
    return sorted(_BUILTINS)


def _looks_like_scorer_fn(obj: Callable[..., Any]) -> bool:
    try:
        names = set(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return False
    return bool(names) and names <= set(SCORER_PARAMS)


def _call(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], ref: str) -> Scorer:
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




_MISSING: Final = object()


def _defined_here(obj: object, module: str, attr: str) -> bool:
    """Whether `module.attr` was defined in `module`, rather than imported into it.

    - a `Scorer` (what `@scorer` makes): the decorated function's module, which `Scorer`
      copies to `__module__`. A judge built from a built-in judge class (`tone =
      Guidelines(...)`, or a rule such as `RegexMatch(...)`) is data, not code, so it is
      accepted wherever it was built;
    - a function or class (a factory): its `__module__` is `module` and its `__qualname__`
      is `attr`, i.e. a top-level `def`/`class` under that name (no lambdas, methods,
      aliases or `functools.partial`s);
    - anything else (modules, builtins like `os.system`, instances): never.
    """
    if isinstance(obj, Scorer):
        if getattr(obj, "__module__", None) == module:
            return True
        data = isinstance(obj, (Judge, *RULE_SCORERS.values()))  # built-in classes configured by data
        return data and type(obj).__module__.partition(".")[0] == "scorers"
    if inspect.isfunction(obj) or inspect.isclass(obj):
        return getattr(obj, "__module__", None) == module and getattr(obj, "__qualname__", None) == attr
    return False


def _import(parsed: ScorerReference, ref: str) -> ModuleType:
    module_name = parsed.module
    assert module_name is not None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ScorerDefinitionError(
            f"scorer reference {ref!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    # `sys.modules` can be made to map a name to another module; the name must be its own.
    if getattr(module, "__name__", None) != module_name:
        raise ScorerReferenceError(
            f"scorer reference {ref!r}: importing {module_name!r} gave module {getattr(module, '__name__', None)!r}"
        )
    return module


def _resolve_import(parsed: ScorerReference, ref: str) -> Scorer:
    module = _import(parsed, ref)
    attr = parsed.attr
    # The module's own namespace: no module `__getattr__` hook, no attribute walk.
    obj = vars(module).get(attr, _MISSING)
    if obj is _MISSING:
        raise ScorerDefinitionError(f"scorer reference {ref!r}: {parsed.module!r} has no {attr!r}")
    if not isinstance(obj, Scorer) and not (inspect.isfunction(obj) or inspect.isclass(obj)):
        raise ScorerReferenceError(
            f"scorer reference {ref!r}: {attr!r} is a {type(obj).__name__}, not a Scorer or a factory of one "
            "(a function or Scorer class defined in that module)"
        )
    if not _defined_here(obj, module.__name__, attr):
        where = getattr(obj, "__module__", None)
        origin = f" (it comes from {where!r})" if isinstance(where, str) and where != module.__name__ else ""
        raise ScorerReferenceError(
            f"scorer reference {ref!r}: {attr!r} is not defined at the top level of "
            f"{parsed.module!r}{origin}; reference a @scorer or a scorer factory defined in that module"
        )
    if isinstance(obj, Scorer):
        if parsed.called:
            raise ScorerDefinitionError(
                f"scorer reference {ref!r}: {attr!r} is a Scorer; it takes no arguments"
            )
        return obj
    if inspect.isclass(obj) and not issubclass(obj, Scorer):
        raise ScorerReferenceError(
            f"scorer reference {ref!r}: {attr!r} is a class but not a Scorer subclass"
        )
    if not parsed.called and _looks_like_scorer_fn(obj):
        raise ScorerDefinitionError(
            f"scorer reference {ref!r}: {attr!r} is a plain function; decorate it with @scorer"
        )
    return _call(obj, parsed.args, parsed.kwargs, ref)


def resolve_scorer(ref: str, *, allowed_modules: Collection[str] | None = None) -> Scorer:
    """Resolve a built-in name or `package.module:attr` reference to a `Scorer`.

    Everything that can be refused without importing is refused first: the grammar
    (`parse_reference`) and the allowlist. Only then is the module imported, and the
    attribute is called (with the parsed literals) only if it was defined in that module.

    Args:
        ref: e.g. `"output_word_count"`, `"latency_under(max_ms=2000)"`,
            `"Safety(model='openai:/gpt-4.1-mini')"` or `"my_app.scorers:is_polite"`.
        allowed_modules: when given, import references must name one of these modules or
            a submodule of one (the registry's allowlist, `TRACEWATCH_SCORER_MODULES`);
            None (the operator's own command line) allows any module outside tracewatch.

    Raises:
        ScorerReferenceError: not in the grammar, module not allowed, or the attribute is not
            defined in its module (nothing imported in the first two cases, nothing called).
        ScorerDefinitionError: unknown built-in (with suggestions), module not importable,
            attribute missing, bad arguments, or the attribute is neither a `Scorer` nor a
            factory returning one.
    """
    parsed = parse_reference(ref)
    if parsed.module is None:
        factory = _BUILTINS.get(parsed.attr)
        if factory is None:
            close = difflib.get_close_matches(parsed.attr, _BUILTINS, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ScorerReferenceError(
                f"unknown built-in scorer {parsed.attr!r}.{hint} Built-ins: {', '.join(builtin_names())}; "
                "or use an import reference `package.module:attr`."
            )
        return _call(factory, parsed.args, parsed.kwargs, ref)
    if allowed_modules is not None and not module_allowed(parsed.module, allowed_modules):
        raise ScorerReferenceError(
            f"scorer reference {ref!r}: module {parsed.module!r} is not in the allowlist "
            f"({', '.join(sorted(allowed_modules)) or 'empty'})"
        )
    return _resolve_import(parsed, ref)
