"""The dependency direction is the architecture: scorers <- sinks <- stream, checked on every import."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"scorers": {"scorers"}, "sinks": {"scorers", "sinks"}, "stream": {"scorers", "sinks", "stream"}}
PROJECT = set(ALLOWED)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_inward(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for mod in imports_of(path) & PROJECT:
            if mod not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, "layering broken:\n" + "\n".join(bad)


@pytest.mark.parametrize("client,home", [("aiokafka", "stream/_kafka.py"), ("redis", "sinks/"), ("httpx", None)])
def test_third_party_clients_stay_at_their_edge(client: str, home: str | None) -> None:
    if home is None:
        return
    users = [
        str(p.relative_to(ROOT))
        for pkg in ALLOWED
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if client in imports_of(p)
    ]
    strays = [u for u in users if not u.startswith(home) and not u.startswith("stream/worker/_loop") and u != "stream/worker/_runtime.py"]
    assert not strays, f"{client} imported outside {home}: {strays}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_public_api_is_sorted_and_real(package: str) -> None:
    mod = importlib.import_module(package)
    names = list(mod.__all__)
    assert len(names) == len(set(names))  # order: ruff RUF022 (isort-style) in `make lint`
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing
    public = {n for n in vars(mod) if not n.startswith("_")} - {"annotations"}
    submodules = {n for n in public if type(getattr(mod, n)).__name__ == "module"}
    assert public - submodules - set(names) == set(), "exported but not in __all__"
