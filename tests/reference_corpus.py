"""Hostile scorer references, shared by the unit and integration registry-reference tests.

Every entry must be refused *before* anything is imported or called when the allowlist is
`ALLOW` (exactly the marker module). `{flag}` is replaced by a path that a shell command in
the reference would create if it ever ran. `AFTER_IMPORT` lists references that pass the
grammar and the allowlist, so the marker module is imported, but that name something not
defined in it: refused before any call.
"""

from __future__ import annotations

MARKER = "tests.fixtures_pkg.marker_scorers"
ALLOW = (MARKER,)
M = MARKER

BEFORE_IMPORT: tuple[str, ...] = (
    # the payloads from issue 11
    "scorers._resolve:inspect.os.system('touch {flag}')",
    f"{M}:os.system('touch {{flag}}')",
    "tests.fixtures_pkg.__init__:good",
    f"{M}:good\nimport os",
    # attribute walks
    f"{M}:Holder.inner",
    f"{M}:Holder.make()",
    f"{M}:good.__wrapped__",
    f"{M}:subprocess.run(['touch', '{{flag}}'])",
    f"{M}:os.path",
    # calls that are not one call with literals
    f"{M}:make_good()()",
    f"{M}:make_good(1)(2)",
    f"{M}:make_good(1).name",
    f"{M}:make_good[0]",
    f"{M}:make_good(1)[0]",
    f"{M}:make_good(__import__('os').system('touch {{flag}}'))",
    f"{M}:make_good(threshold=open('{{flag}}', 'w'))",
    f"{M}:make_good(threshold=os)",
    f"{M}:make_good(*[1])",
    f"{M}:make_good(**{{'threshold': 1}})",
    f"{M}:make_good(lambda: 1)",
    f"{M}:make_good(1 if 1 else 2)",
    f"{M}:make_good(1) or (2)",
    f"{M}:make_good(1)#)",
    f"{M}:make_good(1",
    f"{M}:make_good)",
    f"{M}:make_good(1);(2)",
    f"{M}:make_good([x for x in (1,)])",
    f"{M}:make_good(f'{{1}}')",
    # dunders and keywords
    f"{M}:__builtins__",
    f"{M}:__loader__",
    f"{M}:__dict__",
    f"{M}:__import__('os')",
    f"{M}:make_good(__class__=1)",
    "tests.fixtures_pkg.__main__:good",
    "tests.fixtures_pkg.__init__.marker_scorers:good",
    f"{M}:lambda",
    "import:good",
    # relative, empty and malformed module paths
    ".marker_scorers:good",
    "..fixtures_pkg.marker_scorers:good",
    "tests..fixtures_pkg.marker_scorers:good",
    f"{M}.:good",
    ":good",
    f"{M}:",
    f"{M}::good",
    f"{M}:good:good",
    "1tests.fixtures_pkg.marker_scorers:good",
    "tests/fixtures_pkg/marker_scorers:good",
    # prefix tricks: the parent package, a sibling sharing the prefix, a longer name
    "tests.fixtures_pkg:mark('x')",
    "tests:fixtures_pkg",
    f"{M}_evil:good",
    f"{M}x:good",
    "tests.fixtures_pkg.marker_scorers_evil.sub:good",
    "tests.fixtures_pkgx.marker_scorers:good",
    # whitespace and control characters
    f"{M}:good\n",
    f"{M}:good\r",
    f"\n{M}:good",
    f"{M}:good\t",
    f"{M} :good",
    f"{M}: good",
    "tests.fixtures_pkg. marker_scorers:good",
    f"{M}:make_good (1)",
    f"{M}:make_good(\n1)",
    f"{M}:make_good(1,\n)",
    f"{M}:good\x00",
    f"\u00a0{M}:good",
    f"{M}:good\u2028",
    f"{M}:make_good(\u00a01)",
    "tests.fixtures_pkg.marker\u200b_scorers:good",
    f"{M}:good\u202e",
    f"{M}:make_good(threshold=1\ufeff)",
    # Unicode lookalikes (Python would fold some of them to the ASCII name by NFKC)
    f"{M}:\uff47ood",  # fullwidth g
    "tests.fixtures_pkg.marker_\u0455corers:good",  # Cyrillic dze
    "tests.\ufb01xtures_pkg.marker_scorers:good",  # fi ligature
    "\U0001d42dests.fixtures_pkg.marker_scorers:good",  # mathematical bold t
    f"{M}:make_good(\uff54hreshold=1)",  # fullwidth t in an argument name
    f"{M}:g\u043eod",  # Cyrillic o
    # tracewatch's own packages and plain builtins
    "scorers._resolve:resolve_scorer('os:system')",
    "scorers:no_error",
    "scorers._builtin:no_error",
    "stream.registry._registry:Registry",
    "sinks:RegistryStore",
    "os:system('touch {flag}')",
    "__import__('os').system('touch {flag}')",
    "eval('1')",
    "exec",
    "open('{flag}', 'w')",
    "no_error.__class__",
    "no_error(1)(2)",
    "latency_under(max_ms=__import__('os').getpid())",
    # sizes
    "",
    "   ",
    "a" * 5000,
    f"{M}:" + "a" * 200,
    "a." * 200 + "b:good",
)

AFTER_IMPORT: tuple[str, ...] = (
    f"{M}:system('touch {{flag}}')",  # `from os import system`: imported into the module
    f"{M}:os",  # a module
    f"{M}:subprocess",
    f"{M}:alias(2)",  # `alias = make_good`: not defined under that name
    f"{M}:borrowed",  # a scorer defined in scorers._builtin
    f"{M}:Holder",  # a class that is not a Scorer
    f"{M}:Holder()",
    f"{M}:CONSTANT",
    f"{M}:missing",
    f"{M}:Scorer",  # imported from scorers
    f"{M}:scorer(1)",
    f"{M}:mark('call')",  # imported from the package
)
