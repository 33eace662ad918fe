"""The grammar of a scorer reference, checked as text before anything is imported or called.

A reference is data that anyone who can write to Redis can forge, so everything that reads
one (`resolve_scorer`, the registry on write *and* on read, the worker's `--scorer`) parses
it here first, and nothing is imported unless it parses. The grammar, after trimming ASCII
spaces at both ends:

    reference := target [ "(" arguments ")" ]
    target    := NAME                           a built-in (`no_error`, `Guidelines`)
               | MODULE ":" NAME                an attribute of an importable module
    MODULE    := NAME ( "." NAME )*             absolute, at most 255 characters
    NAME      := [A-Za-z_][A-Za-z0-9_]*         ASCII only, at most 128 characters, not a
                                                Python keyword, not starting with "__"
    arguments := Python call arguments whose values are literals (`ast.literal_eval`: str,
                 bytes, numbers, tuples, lists, dicts, sets, True/False/None) or the bare
                 type names `bool`, `int`, `float`, `str`; keyword names ASCII as above;
                 no `*args` / `**kwargs`

and, anywhere in the text: at most 4096 characters, no whitespace but the ASCII space (and
that only inside the argument list), no control, format (bidi, zero-width), surrogate,
private-use or unassigned characters. So a reference names exactly one attribute: no
dotted walks (`mod:a.b`), no call chains (`f()()`), no subscripts, no dunders (`__init__`,
`__builtins__`), no relative modules (`.mod`), no Unicode lookalikes (Python folds fullwidth `os` to
`os` by NFKC, so a non-ASCII name is refused rather than normalised), no newlines.

Import references never name tracewatch's own packages (`scorers`, `sinks`, `stream`):
built-ins are reached by their bare names, and the internals of those packages (such as
`scorers._resolve`, which imports `inspect` and can resolve any reference) are no one's
scorers. The allowlist check (`module_allowed`) and the "defined in that module" check of
the attribute happen in `resolve_scorer`, still before any call.
"""

from __future__ import annotations

import ast
import keyword
import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Final

from scorers._exceptions import ScorerDefinitionError

__all__ = ["ScorerReference", "ScorerReferenceError", "module_allowed", "parse_reference"]

MAX_REFERENCE_CHARS: Final = 4096
MAX_MODULE_CHARS: Final = 255
MAX_NAME_CHARS: Final = 128
RESERVED_PACKAGES: Final = frozenset({"scorers", "sinks", "stream"})
"""tracewatch's own packages: never the module of an import reference (built-ins go by name)."""

_NAME: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_TARGET: Final = re.compile(rf"(?:(?P<module>{_NAME}(?:\.{_NAME})*):)?(?P<attr>{_NAME})", re.ASCII)
_ASCII_NAME: Final = re.compile(_NAME, re.ASCII)
_TYPE_NAMES: Final = frozenset({"bool", "str", "int", "float"})
# Unicode categories refused anywhere: control, format, surrogate, private use, unassigned,
# line and paragraph separators; space separators other than U+0020 are refused too.
_BAD_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})


class ScorerReferenceError(ScorerDefinitionError):
    """A scorer reference is not in the grammar (see the module docstring), or names something
    that may not be loaded; raised before anything is imported or called."""


@dataclass(slots=True, frozen=True)
class ScorerReference:
    """A parsed reference: what to look up, and the literal arguments to call it with.

    Attributes:
        text: the reference as given, trimmed of ASCII spaces.
        module: the module of an import reference; None for a built-in name.
        attr: the one attribute (or built-in name) it names.
        called: written with parentheses (possibly empty ones).
        args, kwargs: the literal arguments, already evaluated.
    """

    text: str
    module: str | None
    attr: str
    called: bool
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """`module:attr`, or the built-in name: the reference without its arguments."""
        return self.attr if self.module is None else f"{self.module}:{self.attr}"


def _refuse(ref: str, why: str) -> ScorerReferenceError:
    return ScorerReferenceError(f"scorer reference {ref!r}: {why}")


def _check_name(name: str, what: str, ref: str) -> None:
    if len(name) > MAX_NAME_CHARS:
        raise _refuse(ref, f"{what} {name[:20]!r}... is longer than {MAX_NAME_CHARS} characters")
    if name.startswith("__"):
        raise _refuse(ref, f"{what} {name!r} starts with '__' (dunder and private names are never scorers)")
    if keyword.iskeyword(name):
        raise _refuse(ref, f"{what} {name!r} is a Python keyword")


def _check_characters(text: str, ref: str) -> None:
    for i, ch in enumerate(text):
        if ch == " " or (" " < ch < "\x7f"):
            continue
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            raise _refuse(ref, f"character U+{ord(ch):04X} at {i} is not allowed (no newlines, tabs, "
                               "control, invisible or non-ASCII space characters)")


def _literal(node: ast.expr) -> Any:
    # `feedback_value_type=int` reads naturally; the bare type names become their names.
    if isinstance(node, ast.Name) and node.id in _TYPE_NAMES:
        return node.id
    return ast.literal_eval(node)


def _arguments(source: str, ref: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Evaluate `(...)` as the literal arguments of one call, never with `eval`."""
    text = "f" + source
    try:
        node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        why = exc.msg if isinstance(exc, SyntaxError) else type(exc).__name__
        raise _refuse(ref, f"the argument list is not valid: {why}") from None
    # Exactly one call of the placeholder: rules out `f(1)(2)`, `f(1) or (2)`, ...
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "f"):
        raise _refuse(ref, "expected one name, optionally called once with literal arguments")
    if node.end_lineno != 1 or node.end_col_offset != len(text.encode()):
        raise _refuse(ref, "nothing may follow the closing parenthesis (no comments)")
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
            # The parser folds identifiers by NFKC; the name as written must already be ASCII.
            written = ast.get_source_segment(text, kw) or ""
            if not written.startswith(kw.arg) or _ASCII_NAME.fullmatch(kw.arg) is None:
                raise _refuse(ref, f"argument name {written.partition('=')[0].strip()!r} is not ASCII")
            _check_name(kw.arg, "argument name", ref)
            kwargs[kw.arg] = _literal(kw.value)
    except ScorerReferenceError:
        raise
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise _refuse(
            ref,
            "arguments must be literals (numbers, strings, lists, dicts, True/False/None): "
            f"{type(exc).__name__}: {exc}",
        ) from None
    return tuple(args), kwargs


def parse_reference(ref: object) -> ScorerReference:
    """Parse a reference by the grammar above, importing and calling nothing.

    Total: for any input it returns or raises `ScorerReferenceError`, nothing else.

    Raises:
        ScorerReferenceError: the reference is not a string in the grammar, or its module is
            one of tracewatch's own packages.
    """
    if not isinstance(ref, str):
        raise ScorerReferenceError(f"a scorer reference must be a string, got {type(ref).__name__}")
    text = ref.strip(" ")
    if not text:
        raise ScorerReferenceError("a scorer reference must be a non-empty string")
    if len(text) > MAX_REFERENCE_CHARS:
        raise ScorerReferenceError(
            f"a scorer reference is at most {MAX_REFERENCE_CHARS} characters, got {len(text)}"
        )
    _check_characters(text, ref)
    head, paren, rest = text.partition("(")
    match = _TARGET.fullmatch(head)
    if match is None:
        raise _refuse(
            ref,
            "expected a built-in name or `package.module:attr` (ASCII identifiers, no spaces, "
            "one attribute, no leading dot), optionally called with literal arguments",
        )
    module, attr = match.group("module"), match.group("attr")
    if module is not None:
        if len(module) > MAX_MODULE_CHARS:
            raise _refuse(ref, f"the module path is longer than {MAX_MODULE_CHARS} characters")
        for part in module.split("."):
            _check_name(part, "module name", ref)
        if module.partition(".")[0] in RESERVED_PACKAGES:
            raise _refuse(
                ref,
                f"module {module!r} is part of tracewatch itself; name a built-in by its bare name "
                "(e.g. 'no_error', 'Guidelines(...)') or reference your own module",
            )
    _check_name(attr, "attribute", ref)
    if not paren:
        return ScorerReference(text, module, attr, called=False)
    args, kwargs = _arguments(paren + rest, ref)
    return ScorerReference(text, module, attr, called=True, args=args, kwargs=kwargs)


def module_allowed(module: str, allowlist: Collection[str]) -> bool:
    """`module` is an allowlisted module or inside an allowlisted package.

    Matching is by whole dotted segments: `mypkg` allows `mypkg` and `mypkg.sub`, never
    `mypkg_evil` or `mypkgx.sub`. Allowlist entries are compared as written (after trimming
    spaces); an entry that is not a module path can never match a parsed module.
    """
    for entry in allowlist:
        allowed = entry.strip()
        if allowed and (module == allowed or module.startswith(allowed + ".")):
            return True
    return False
