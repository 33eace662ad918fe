"""The `scorers` package surface: curated `__all__`, no import side effects, one httpx module."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import scorers

PACKAGE = Path(scorers.__file__).parent


def private_modules():
    for info in pkgutil.iter_modules([str(PACKAGE)]):
        if info.name.startswith("_"):
            yield importlib.import_module(f"scorers.{info.name}")


def test_root_reexports_every_private_all() -> None:
    exported = set(scorers.__all__)
    assert len(exported) == len(scorers.__all__)
    for module in private_modules():
        assert hasattr(module, "__all__"), module.__name__
        missing = set(module.__all__) - exported
        assert not missing, f"{module.__name__} exports {missing} that the package root does not"
    for name in scorers.__all__:
        assert getattr(scorers, name) is not None
    public = {n for n in vars(scorers) if not n.startswith("_")}
    private_module_names = {m.__name__.rsplit(".", 1)[1] for m in private_modules()}
    assert public - exported - private_module_names == set()


def test_all_is_sorted_like_ruff() -> None:
    def key(name: str) -> tuple[int, str]:
        # isort-style: CONSTANTS, then Classes, then functions.
        kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
        return kind, name

    assert scorers.__all__ == sorted(scorers.__all__, key=key)


def test_scorer_and_judge_callables_have_docstrings() -> None:
    names = [
        name
        for module in (
            "_scorer",
            "_builtin",
            "_judge",
            "_judges",
            "_judges_more",
            "_ensemble",
            "_rules",
            "_providers",
            "_limiter",
            "_template",
            "_verdict",
            "_resolve",
            "_evaluate",
        )
        for name in importlib.import_module(f"scorers.{module}").__all__
    ]
    for name in names:
        obj = getattr(scorers, name)
        if callable(obj) and name != "TraceRecords":
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_import_has_no_side_effects_and_httpx_lives_in_one_module() -> None:
    code = (
        "import sys, scorers; "
        "from scorers import _judges; "
        "assert len(_judges._default_clients) == 0; "
        "assert 'stream' not in sys.modules and 'sinks' not in sys.modules; "
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
    importers = sorted(
        p.name
        for p in PACKAGE.glob("*.py")
        if re.search(r"^\s*(import httpx|from httpx)", p.read_text(), re.M)
    )
    assert importers == ["_judge.py"]
