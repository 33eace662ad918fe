"""Issue 11, break 5: a scorer reference is data and never runs code it was not allowed to.

Every hostile reference of `tests.reference_corpus` is refused through each way in that needs
no Redis (`parse_reference`, `resolve_scorer`, the registry's `define` and `Registry.register`,
the `tracewatch scorers register` CLI in-process and as a subprocess), and the allowlisted
marker module (`tests.fixtures_pkg.marker_scorers`) proves nothing was imported or called: its
import and its factories append to a marks file. The integration twin
(`tests/integration/test_registry_references.py`) writes the same references into Redis.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from scorers import (
    ScorerDefinitionError,
    ScorerReference,
    ScorerReferenceError,
    module_allowed,
    parse_reference,
    resolve_scorer,
)
from sinks import RegistryStore
from stream._config import Settings
from stream.cli._scorers import scorers_app
from stream.registry._records import RegistryError, ScorerVersion, utcnow
from stream.registry._registry import Registry
from stream.registry._resolve import check_allowed, define
from tests.reference_corpus import AFTER_IMPORT, ALLOW, BEFORE_IMPORT, MARKER

REPO = Path(__file__).resolve().parents[2]
DEAD_REDIS = "redis://127.0.0.1:1/0"
PACKAGE = "tests.fixtures_pkg"


def _forget_marker_modules() -> None:
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]


class Marks:
    """The marks file of the marker package and the flag a shell payload would create."""

    def __init__(self, tmp: Path) -> None:
        self.file = tmp / "marks.txt"
        self.flag = tmp / "pwned"

    def ref(self, template: str) -> str:
        return template.replace("{flag}", str(self.flag))

    def events(self) -> list[str]:
        return self.file.read_text().splitlines() if self.file.exists() else []

    def assert_untouched(self, what: str) -> None:
        assert self.events() == [], f"{what}: imported or called {self.events()}"
        assert not any(n == PACKAGE or n.startswith(PACKAGE + ".") for n in sys.modules), what
        assert not self.flag.exists(), f"{what}: a payload ran"

    def assert_not_called(self, what: str) -> None:
        calls = [e for e in self.events() if not e.startswith("import ")]
        assert calls == [], f"{what}: called {calls}"
        assert not self.flag.exists(), f"{what}: a payload ran"


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Marks]:
    m = Marks(tmp_path)
    monkeypatch.setenv("TW_REFERENCE_MARKS", str(m.file))
    _forget_marker_modules()
    yield m
    _forget_marker_modules()


def _refs(marks: Marks, corpus: tuple[str, ...]) -> list[str]:
    return [marks.ref(r) for r in corpus]


# -- the legitimate references still work --------------------------------------------------------


def test_the_marker_module_is_usable_so_refusals_are_meaningful(marks: Marks) -> None:
    assert resolve_scorer(f"{MARKER}:good", allowed_modules=ALLOW).name == "good"
    assert resolve_scorer(f"{MARKER}:make_good(threshold=3)", allowed_modules=ALLOW).name == "good_3"
    assert resolve_scorer(f"{MARKER}:tone", allowed_modules=ALLOW).name == "tone"  # a built-in judge
    assert marks.events() == [f"import {PACKAGE}", f"import {MARKER}", "call make_good(3)"]
    d = define(f"{MARKER}:make_good(threshold=2)", ALLOW)
    assert (d.ref, d.arguments) == (f"{MARKER}:make_good", {"threshold": 2})
    assert resolve_scorer(" latency_under( 100 ) ").name == "latency_under"


def test_grammar_of_a_good_reference() -> None:
    parsed = parse_reference("  a.b_c:make(1, 'x', k=[1, {'y': None}], t=int) ")
    assert parsed == ScorerReference(
        "a.b_c:make(1, 'x', k=[1, {'y': None}], t=int)", "a.b_c", "make", True, (1, "x"),
        {"k": [1, {"y": None}], "t": "int"},
    )
    assert parsed.target == "a.b_c:make"
    assert parse_reference("no_error") == ScorerReference("no_error", None, "no_error", False)
    assert parse_reference("Guidelines(guidelines='Sé poli: a@b')").kwargs == {"guidelines": "Sé poli: a@b"}


@pytest.mark.parametrize(
    ("module", "allowed"),
    [("mypkg", True), ("mypkg.sub", True), ("mypkg_evil", False), ("mypkgx.sub", False), ("my", False),
     ("other.mypkg", False)],
)
def test_allowlist_matches_whole_segments(module: str, allowed: bool) -> None:
    assert module_allowed(module, ["mypkg", "", "  "]) is allowed


# -- the hostile corpus, refused before any import ----------------------------------------------


def test_corpus_is_refused_by_the_grammar_or_the_allowlist_before_import(marks: Marks) -> None:
    for ref in _refs(marks, BEFORE_IMPORT):
        try:
            parsed = check_allowed(ref, ALLOW)
        except RegistryError:
            pass
        else:  # only a built-in form gets past the pre-import check; it names nothing importable
            assert parsed.module is None, ref
        with pytest.raises(ScorerDefinitionError):
            resolve_scorer(ref, allowed_modules=ALLOW)
        with pytest.raises(RegistryError):
            define(ref, ALLOW)
        marks.assert_untouched(repr(ref))


def test_corpus_is_refused_without_an_allowlist_too(marks: Marks) -> None:
    """The worker's `--scorer` and `evaluate --scorer` have no allowlist; the grammar still holds."""
    for ref in _refs(marks, BEFORE_IMPORT):
        try:
            if parse_reference(ref).module is not None:
                continue  # a well-formed reference to another module: only an allowlist refuses it
        except ScorerReferenceError:
            pass
        with pytest.raises(ScorerDefinitionError):
            resolve_scorer(ref)
        marks.assert_untouched(repr(ref))


def test_worker_scorer_option_uses_the_same_grammar(marks: Marks) -> None:
    from stream.registry._scorer_set import parse_scorer_option

    for ref in (f"{MARKER}:os.system('touch {marks.flag}')@1.0", f"{MARKER}:Holder.make()@0.5"):
        with pytest.raises(ScorerDefinitionError):
            parse_scorer_option(ref, resolve_scorer)
    for ref in (f"{MARKER}:good@nan", f"{MARKER}:good@-1", f"{MARKER}:good@2"):
        with pytest.raises(ValueError, match="sample rate"):
            parse_scorer_option(ref, resolve_scorer)
    marks.assert_untouched("--scorer")
    # An `@` inside literal arguments is not the rate separator.
    judge = parse_scorer_option("Guidelines(name='mail', guidelines='Write to a@b.example')", resolve_scorer)
    assert (judge.name, judge.sample_rate) == ("mail", 1.0)


def test_defined_elsewhere_is_refused_after_import_but_never_called(marks: Marks) -> None:
    for ref in _refs(marks, AFTER_IMPORT):
        with pytest.raises(ScorerDefinitionError):
            resolve_scorer(ref, allowed_modules=ALLOW)
        with pytest.raises(RegistryError):
            define(ref, ALLOW)
        marks.assert_not_called(repr(ref))


async def test_python_api_refuses_the_corpus_before_redis(marks: Marks) -> None:
    settings_ = Settings(scorer_modules=list(ALLOW), redis_url=DEAD_REDIS)
    registry = Registry(RegistryStore.from_url(DEAD_REDIS, prefix="twtest:refs:"), settings_)
    for ref in _refs(marks, BEFORE_IMPORT):
        with pytest.raises(RegistryError) as info:
            await registry.register(ref, experiment_id="1")
        assert "registry unavailable" not in str(info.value)  # refused before Redis was asked
        marks.assert_untouched(repr(ref))
    for ref in _refs(marks, AFTER_IMPORT):
        with pytest.raises(RegistryError):
            await registry.register(ref, experiment_id="1")
        marks.assert_not_called(repr(ref))


def test_stored_versions_are_checked_by_the_same_grammar(marks: Marks) -> None:
    """A record read from Redis is a `ScorerVersion`: a hostile `ref` or argument name fails validation."""
    ungrammatical = 0
    for ref in _refs(marks, BEFORE_IMPORT):
        try:
            parse_reference(ref)
            continue  # grammatical (a prefix trick, an unknown built-in): refused when built
        except ScorerReferenceError:
            ungrammatical += 1
        with pytest.raises(ValueError, match=r"ref|scorer reference|code version"):
            ScorerVersion(version=1, kind="code", ref=ref, created_at=utcnow())
    assert ungrammatical > 80
    for arguments in ({"__class__": 1}, {"\uff54hreshold": 1}, {"x)(": 1}, {"lambda": 1}, {"x": float("inf")}):
        with pytest.raises(ValueError):
            ScorerVersion(version=1, kind="code", ref=f"{MARKER}:make_good", arguments=arguments,
                          created_at=utcnow())
    marks.assert_untouched("ScorerVersion")


# -- the CLI ---------------------------------------------------------------------------------------


def test_cli_register_refuses_the_corpus(marks: Marks, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEWATCH_REDIS_URL", DEAD_REDIS)
    monkeypatch.setenv("TRACEWATCH_SCORER_MODULES", MARKER)
    app = typer.Typer()
    app.add_typer(scorers_app, name="scorers")
    runner = CliRunner()
    for ref in _refs(marks, BEFORE_IMPORT + AFTER_IMPORT):
        if ref.startswith("-"):
            continue
        result = runner.invoke(app, ["scorers", "register", ref])
        if not ref.strip():
            assert result.exit_code == 2, (ref, result.output)  # "give either REF or --judge-spec"
            continue
        assert result.exit_code == 2, (ref, result.output)
        assert "error:" in result.output and "registry unavailable" not in result.output, (ref, result.output)
        if ref in _refs(marks, BEFORE_IMPORT):
            marks.assert_untouched(repr(ref))
        else:
            marks.assert_not_called(repr(ref))
        _forget_marker_modules()
        marks.file.unlink(missing_ok=True)


def test_cli_subprocess_with_the_issue_payload_runs_nothing(tmp_path: Path) -> None:
    """The exact break: an empty allowlist, `tracewatch scorers register` in its own process."""
    flag = tmp_path / "pwned"
    env = {**os.environ, "TRACEWATCH_REDIS_URL": DEAD_REDIS, "TRACEWATCH_SCORER_MODULES": "",
           "TW_REFERENCE_MARKS": str(tmp_path / "marks.txt"), "PYTHONPATH": str(REPO)}
    for ref in (f"scorers._resolve:inspect.os.system('touch {flag}')",):  # one process: ~2 s
        proc = subprocess.run(
            [sys.executable, "-m", "stream", "scorers", "register", ref],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert not flag.exists(), ref
    assert not (tmp_path / "marks.txt").exists()


# -- generated references ------------------------------------------------------------------------

_PIECES = st.sampled_from([
    "a", "b_1", "_x", "__init__", "__", "os", "system", "tests", "fixtures_pkg", "marker_scorers", "good",
    "make_good", ".", "..", ":", "::", "(", ")", "()", "[0]", "'", '"', ",", "=", "*", "**", " ", "\n", "\t",
    "\x00", "\u00a0", "\u200b", "\u202e", "\uff47", "\u0455", "\ufb01", "1", "1.5", "None", "True", "int",
    "lambda", "import", "#", "{", "}", "[", "]", "@", "\\", "-", "é", "\U0001d42d", "1e999", "0x10",
])
REFERENCE_TEXT = st.one_of(
    st.text(max_size=80),
    st.lists(_PIECES, max_size=14).map("".join),
    st.tuples(st.lists(_PIECES, max_size=6).map("".join), st.text(max_size=20)).map(lambda t: f"{MARKER}:{t[0]}{t[1]}"),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REFERENCE_TEXT)
def test_generated_references_parse_or_raise_the_typed_error_and_import_nothing(text: str) -> None:
    before = set(sys.modules)
    try:
        parsed = parse_reference(text)
    except ScorerReferenceError:
        parsed = None
    with contextlib.suppress(RegistryError):
        check_allowed(text, ())  # the registry's pre-import check, with an empty allowlist
    assert set(sys.modules) == before
    if parsed is not None:
        # What parses is in the grammar: ASCII identifiers, no dunders, nothing after the call.
        names = [*(parsed.module or "").split("."), parsed.attr, *parsed.kwargs] if parsed.module else [
            parsed.attr, *parsed.kwargs]
        for name in names:
            assert name.isascii() and name.isidentifier() and not name.startswith("__"), name
        assert "\n" not in parsed.text and parsed.text == text.strip(" ")
        assert parsed.called == parsed.text.endswith(")")


@settings(max_examples=200, deadline=None)
@given((st.from_type(object) | st.binary() | st.integers() | st.none()).filter(lambda v: not isinstance(v, str)))
def test_non_strings_raise_the_typed_error(value: Any) -> None:
    with pytest.raises(ScorerReferenceError):
        parse_reference(value)
