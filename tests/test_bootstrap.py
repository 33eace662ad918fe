"""deploy/local/bootstrap.sh, shared by `make demo`, `make test` and .ci/run.

Where it cannot install (not root, or no apt-get), it names exactly what to install and exits 1
before touching anything; where all is present it is a quiet, quick no-op.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "local" / "bootstrap.sh"
BASH = shutil.which("bash") or "/bin/bash"


def run_on_bare_machine(tmp_path: Path, uid: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The script with a PATH holding only the shell tools it needs (no redis, java, mvn, apt-get, ...)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "sed", "head"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    fake_id = bin_dir / "id"
    fake_id.write_text(f"#!/bin/sh\necho {uid}\n")
    fake_id.chmod(0o755)
    env = {"PATH": str(bin_dir), "PYTHON": sys.executable, "HOME": str(tmp_path)}
    return subprocess.run([BASH, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("uid", [1000, 0], ids=["not-root", "root-without-apt"])
def test_names_what_to_install_and_fails_where_it_cannot_install(tmp_path: Path, uid: int) -> None:
    done = run_on_bare_machine(tmp_path, uid, "--test")
    assert done.returncode == 1, done
    wanted = "redis-server openjdk-17-jre-headless maven kcat prometheus prometheus-alertmanager docker-compose"
    assert f"apt-get install --no-install-recommends {wanted}" in done.stderr
    for program in ("redis-server", "java", "mvn", "kcat", "promtool", "amtool", "docker-compose"):
        assert program in done.stderr
    assert ("run as root" in done.stderr) == (uid != 0)


def test_demo_needs_fewer_packages_than_tests(tmp_path: Path) -> None:
    done = run_on_bare_machine(tmp_path, 1000)
    assert done.returncode == 1
    assert "apt-get install --no-install-recommends redis-server openjdk-17-jre-headless maven\n" in done.stderr


def _installed_from_here() -> bool:
    done = subprocess.run([sys.executable, "-I", "-c", "import stream; print(stream.__file__)"],
                          capture_output=True, text=True, cwd="/")
    return done.returncode == 0 and Path(done.stdout.strip()).resolve().parent.parent == REPO


@pytest.mark.skipif(
    not all(shutil.which(p) for p in ("redis-server", "java", "mvn")) or not _installed_from_here(),
    reason="the demo's system packages or this checkout's editable install are not here (it would install them)",
)
def test_quiet_quick_no_op_when_all_is_present() -> None:
    t0 = time.monotonic()
    done = subprocess.run([BASH, str(SCRIPT), "-q"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done
    assert time.monotonic() - t0 < 10
