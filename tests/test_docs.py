"""Executable documentation: the code blocks of README.md, docs/*.md and bench/README.md run here.

* **Python blocks** run with `pytest-examples` (its `eval_example` fixture), each as its own
  module, as a user would paste it: with the environment below and the working directory laid
  out like the repository's (`../shared/fixtures/mlflow` exists).
* **Shell blocks** (`bash`, `sh`, `shell`, `console`) run whole in `bash -eo pipefail`, each line a
  command that must succeed, against the test stack (`make test`'s Kafka and Redis) and an API
  this module starts (`tracewatch api`, a subprocess on a free port). A line starting a server
  (`tracewatch worker`, `tracewatch api`) runs in the background and is stopped when its block
  ends.
* Placeholders are this file's `SKIP` list only, each with a reason; an entry that no longer
  matches a block fails, so the list cannot go stale. Other fence languages (`promql`, the
  architecture drawing) are not run; the metric names in them are checked by
  `tests/integration/test_metrics_coverage.py`.

The environment a block sees (also what a reader would export for the local stack): the test
stack's `TRACEWATCH_KAFKA_BOOTSTRAP` and `TRACEWATCH_REDIS_URL` (its test database), a topic and
Redis key prefix of its own, the API's `TRACEWATCH_API_PORT`, an API key and a feedback secret;
`PYTHONPATH` holds the working directory, where the README's scorers are saved as
`mypkg/checks.py` (as the README says to do before `scorers register`).

Also here, with no services: the README's configuration table against the settings models, the
skip reasons the CoverageLow runbook names against those the code produces, and
`python -m bench --render` on a missing file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRACEWATCH_SHARED", REPO.parent / "shared"))  # holds fixtures/mlflow

pytest_examples = pytest.importorskip("pytest_examples", reason="pytest-examples (a dev dependency) runs the Python blocks")
from pytest_examples import CodeExample, EvalExample, find_examples  # noqa: E402

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]
SHELL_LANGS = {"bash", "sh", "shell", "console"}

# (file, a line of the block) -> why the block is not run. Keep this minimal.
SKIP: dict[tuple[str, str], str] = {
    ("README.md", "make demo"): "`make demo` installs the package and runs a 2-minute demo on the default ports; "
    "`make test` would recurse into this very run (tests/integration/test_demo.py covers the demo)",
    ("bench/README.md", "make bench"): "benchmarks run for minutes each and take both cores; "
    "`--render`'s error path is tested below",
}

SERVER_LINE = re.compile(r"^\s*tracewatch\s+(worker|api)\b")
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


# ------------------------------------------------------------------------------- the blocks


@dataclass(frozen=True)
class ShellBlock:
    path: Path
    line: int
    source: str

    @property
    def rel(self) -> str:
        return self.path.relative_to(REPO).as_posix()

    def skip_reason(self) -> str | None:
        for (rel, marker), reason in SKIP.items():
            if rel == self.rel and any(line.strip().startswith(marker) for line in self.source.splitlines()):
                return reason
        return None


def shell_blocks(path: Path) -> list[ShellBlock]:
    text = path.read_text()
    out = []
    for m in FENCE.finditer(text):
        info = m.group(1).strip().split()
        if info and info[0].lower() in SHELL_LANGS:
            out.append(ShellBlock(path, text.count("\n", 0, m.start()) + 1, m.group(2)))
    return out


ALL_SHELL = [b for p in DOCS if p.exists() for b in shell_blocks(p)]
ALL_PYTHON = list(find_examples(*[p for p in DOCS if p.exists()]))


def test_every_skip_entry_matches_a_block() -> None:
    used = {(b.rel, marker) for b in ALL_SHELL for (rel, marker) in SKIP
            if rel == b.rel and any(line.strip().startswith(marker) for line in b.source.splitlines())}
    assert set(SKIP) <= used, f"stale SKIP entries (no such block any more): {sorted(set(SKIP) - used)}"


# ------------------------------------------------------------------------ the environment


@dataclass
class DocEnv:
    cwd: Path
    env: dict[str, str]
    api_url: str


README_SCORERS_MARKER = "def is_short"


def _readme_scorers() -> str:
    for ex in ALL_PYTHON:
        if ex.path.name == "README.md" and README_SCORERS_MARKER in ex.source:
            return ex.source
    raise AssertionError(f"README.md has no Python block defining the scorers ({README_SCORERS_MARKER!r})")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"`tracewatch api` exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"`tracewatch api` not ready within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def doc_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocEnv]:
    """A working directory laid out like the repository's, topics of its own, and a running API."""
    from stream._config import Settings

    root = tmp_path_factory.mktemp("docs")
    (root / "shared").symlink_to(SHARED.resolve(), target_is_directory=True)
    cwd = root / "main"
    (cwd / "mypkg").mkdir(parents=True)
    (cwd / "mypkg" / "__init__.py").write_text("")
    (cwd / "mypkg" / "checks.py").write_text(_readme_scorers())

    tag = uuid.uuid4().hex[:10]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEWATCH_") or k in {
        "TRACEWATCH_KAFKA_BOOTSTRAP", "TRACEWATCH_SHARED"}}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(cwd), str(REPO), env.get("PYTHONPATH")])),
        TRACEWATCH_KAFKA_BOOTSTRAP=Settings().kafka_bootstrap,
        TRACEWATCH_REDIS_URL=TEST_REDIS_URL,
        TRACEWATCH_REDIS_PREFIX=f"twdocs:{tag}:",
        TRACEWATCH_TOPIC_PREFIX=f"twdocs.{tag}.",
        TRACEWATCH_CONSUMER_GROUP=f"twdocs-{tag}",
        TRACEWATCH_PARTITIONS="2",
        TRACEWATCH_API_PORT=str(port),
        TRACEWATCH_METRICS_PORT="0",
        TRACEWATCH_API_KEYS=f"docs-key-{tag}",
        TRACEWATCH_FEEDBACK_SECRETS=f"docs-secret-{tag}",
    )
    subprocess.run([sys.executable, "-m", "stream", "topics", "create"], env=env, cwd=cwd, check=True,
                   timeout=120, capture_output=True)
    log = root / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream", "api"], env=env, cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
        yield DocEnv(cwd, env, url)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        from tests.conftest import _delete_prefix, _delete_topics

        _delete_prefix(env["TRACEWATCH_REDIS_PREFIX"])
        _delete_topics(Settings(topic_prefix=env["TRACEWATCH_TOPIC_PREFIX"]))


# ------------------------------------------------------------------------- running blocks


def _script(block: ShellBlock) -> str:
    """The block as a bash script: servers in the background, stopped when the block ends."""
    lines = ["trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for line in block.source.splitlines():
        if SERVER_LINE.match(line):
            line = f"{line.split(' #')[0].rstrip()} &"
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.mark.integration
@pytest.mark.parametrize("block", ALL_SHELL, ids=lambda b: f"{b.rel}:{b.line}")
def test_shell_block(block: ShellBlock, doc_env: DocEnv) -> None:
    reason = block.skip_reason()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(["bash", "-eo", "pipefail", "-c", _script(block)], cwd=doc_env.cwd, env=doc_env.env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (
        f"{block.rel}:{block.line} failed (exit {proc.returncode}):\n{block.source}\n"
        f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    )


@pytest.mark.integration
@pytest.mark.parametrize("example", ALL_PYTHON, ids=str)
def test_python_block(example: CodeExample, eval_example: EvalExample, doc_env: DocEnv,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("TRACEWATCH_")]:
        monkeypatch.delenv(name)
    for name, value in doc_env.env.items():
        if name.startswith("TRACEWATCH_"):
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(doc_env.cwd)
    monkeypatch.syspath_prepend(str(doc_env.cwd))
    eval_example.run(example)


# ------------------------------------------------------ the configuration table vs Settings

# Variables read outside the settings models, each with the file that reads it.
OUTSIDE_SETTINGS = {
    "TRACEWATCH_API_URL": "the SDK's API address (stream/sdk/_feedback.py); the API itself binds to API_HOST/PORT",
    "TRACEWATCH_SCORERS": "the worker's fixed scorers, read by the `worker` command next to its --scorer flag",
}
NAME = re.compile(r"`((?:TRACEWATCH_|\.\.\._)[A-Z0-9_]+)`")


def settings_env() -> dict[str, str]:
    """Every variable of the settings models -> `Model.field`."""
    from stream._config import Settings

    models: list[type] = [Settings]
    with contextlib.suppress(ImportError):
        from stream.api._models import ApiOptions

        models.append(ApiOptions)
    out = {}
    for model in models:
        prefix = str(model.model_config.get("env_prefix", "")).upper()  # type: ignore[attr-defined]
        for field in model.model_fields:  # type: ignore[attr-defined]
            out[f"{prefix}{field.upper()}"] = f"{model.__name__}.{field}"
    return out


def config_table(readme: str) -> list[tuple[int, list[str]]]:
    """(line, variable names) of each row of the README's configuration table, `..._X` kept as is."""
    section = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    start = readme.count("\n", 0, readme.index("\n## Configuration")) + 2
    rows = []
    for i, line in enumerate(section.splitlines()):
        if line.startswith("|") and not line.startswith(("| variable", "|---")):
            first = line.split("|")[1]
            rows.append((start + i, NAME.findall(first)))
    return rows


def expand(names: list[str], known: set[str]) -> list[str]:
    """`TRACEWATCH_A_B` / `..._C` -> the names meant: `...` stands for a prefix of the first name."""
    full = names[0]
    out = [full]
    for short in names[1:]:
        if not short.startswith("..._"):
            full = short
            out.append(short)
            continue
        parts = full.split("_")
        candidates = ["_".join(parts[:k]) + short[3:] for k in range(len(parts) - 1, 0, -1)]
        out.append(next((c for c in candidates if c in known), candidates[0]))
    return out


def test_config_table_matches_settings() -> None:
    readme = (REPO / "README.md").read_text()
    fields = settings_env()
    known = set(fields) | set(OUTSIDE_SETTINGS)
    documented: dict[str, int] = {}
    for line, names in config_table(readme):
        assert names, f"README.md:{line}: a configuration row without a `TRACEWATCH_*` variable"
        for name in expand(names, known):
            documented[name] = line
    unknown = {n: f"README.md:{line}" for n, line in documented.items() if n not in known}
    assert not unknown, f"configuration rows naming no setting: {unknown}"
    missing = {n: f for n, f in fields.items() if n not in documented}
    assert not missing, f"settings missing from the README's configuration table: {missing}"
    code = "\n".join(p.read_text() for p in (REPO / "stream").rglob("*.py"))
    for name, what in OUTSIDE_SETTINGS.items():
        assert name in documented, f"{name} ({what}) is not in the configuration table"
        assert f'"{name}"' in code, f"stream/ no longer reads {name}: drop it from OUTSIDE_SETTINGS"


def test_expand_abbreviations() -> None:
    known = {"TRACEWATCH_CONSUMER_SESSION_TIMEOUT", "TRACEWATCH_CONSUMER_HEARTBEAT_INTERVAL",
             "TRACEWATCH_CONSUMER_MAX_POLL_INTERVAL"}
    assert expand(["TRACEWATCH_CONSUMER_SESSION_TIMEOUT", "..._HEARTBEAT_INTERVAL", "..._MAX_POLL_INTERVAL"], known) \
        == sorted(known, key=["TRACEWATCH_CONSUMER_SESSION_TIMEOUT", "TRACEWATCH_CONSUMER_HEARTBEAT_INTERVAL",
                              "TRACEWATCH_CONSUMER_MAX_POLL_INTERVAL"].index)


# ------------------------------------------------------------------ skip reasons in the docs

SKIP_REASON_SOURCES = [REPO / "scorers" / "_scorer.py", REPO / "scorers" / "_assessment.py",
                       *sorted((REPO / "stream" / "worker").glob("*.py"))]


SKIP_REASON = re.compile(r'return\s+"(missing_[a-z_]+)"|skip_reason\s*(?:=|or)\s*"([a-z_]+)"')


def produced_skip_reasons() -> set[str]:
    """The skip reasons the code sets: a scorer's missing argument, `no_result`, the worker's `budget`."""
    return {r for path in SKIP_REASON_SOURCES for pair in SKIP_REASON.findall(path.read_text()) for r in pair if r}


def test_coverage_runbook_names_the_real_skip_reasons() -> None:
    real = produced_skip_reasons()
    assert {"budget", "no_result", "missing_outputs"} <= real, f"skip reasons not found in the code: {real}"
    runbook = (REPO / "docs" / "runbooks.md").read_text()
    section = runbook.split("\n## CoverageLow", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`((?:missing|no|budget)[a-z_]*)`", section))
    assert named <= real, f"CoverageLow names skip reasons the code never produces: {sorted(named - real)}"
    assert real <= named, f"CoverageLow does not explain these skip reasons: {sorted(real - named)}"
    guarantees = (REPO / "README.md").read_text()
    listed = set(re.findall(r"Skips carry a reason\s*\(([^)]*)\)", guarantees)[0].replace("`", "").replace(",", " ").split())
    assert listed == real, f"README's coverage guarantee lists {sorted(listed)}, the code produces {sorted(real)}"


# ----------------------------------------------------------------------- bench --render


def test_bench_render_of_a_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "--render", str(tmp_path / "missing.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "missing.json" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "bad.json").write_text("[1, 2]")
    proc = subprocess.run([sys.executable, "-m", "bench", "--render", str(tmp_path / "bad.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_shell_lines_are_well_formed() -> None:
    """Every shell block at least parses (also the skipped ones)."""
    for block in ALL_SHELL:
        proc = subprocess.run(["bash", "-n", "-c", block.source], capture_output=True, text=True)
        assert proc.returncode == 0, f"{block.rel}:{block.line}: {proc.stderr}"
        for line in block.source.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                shlex.split(line, comments=True)
