"""deploy/local/stack.py's Redis Cluster option: a real 3-primary cluster from `redis-server` on loopback.

Only the cluster is started (`--only redis-cluster`), in a stack dir and on ports of its own, so
this needs neither Kafka nor the test stack and leaves `make up`'s services alone.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "deploy" / "local" / "stack.py"
BUS = 10000

pytestmark = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-cli")), reason="needs redis-server and redis-cli"
)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _base_port() -> int:
    for base in range(27000, 28000, 10):
        if all(_free(p) and _free(p + BUS) for p in range(base, base + 3)):
            return base
    pytest.skip("no 3 free consecutive ports (and bus ports) in 27000..28000")


def stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(STACK), *args], capture_output=True, text=True, env=env, timeout=90)


def pids(stack_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted((stack_dir / "run").glob("redis-cluster-*.pid"))]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def node_ids(ports: list[int]) -> list[str]:
    return [redis.Redis(port=p).execute_command("CLUSTER", "MYID").decode() for p in ports]


def test_cluster_up_status_reup_down(tmp_path: Path) -> None:
    base = _base_port()
    ports = [base, base + 1, base + 2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEWATCH_")}
    env |= {
        "TRACEWATCH_STACK_DIR": str(tmp_path),
        "TRACEWATCH_REDIS_CLUSTER": "3",
        "TRACEWATCH_REDIS_CLUSTER_PORT": str(base),
    }
    started: list[int] = []
    try:
        up = stack(env, "up", "--only", "redis-cluster")
        started = pids(tmp_path)
        assert up.returncode == 0, up
        assert f"redis+cluster://127.0.0.1:{base}" in up.stdout
        assert "created: 3 primaries" in up.stdout
        assert "kafka" not in up.stdout and "redis  :" not in up.stdout  # only the cluster
        assert len(started) == 3

        for port in ports:
            node = redis.Redis(port=port)
            info = node.cluster("INFO")
            assert info["cluster_state"] == "ok"
            assert int(info["cluster_slots_assigned"]) == int(info["cluster_slots_ok"]) == 16384
            assert int(info["cluster_known_nodes"]) == int(info["cluster_size"]) == 3
            conf = node.config_get("*")
            assert conf["appendonly"] == "yes" and conf["maxmemory-policy"] == "noeviction"
            assert conf["dir"] == str(tmp_path / "redis-cluster" / str(port))
            assert (tmp_path / "redis-cluster" / str(port) / "nodes.conf").exists()

        rc = RedisCluster(host="127.0.0.1", port=base)
        try:
            masters = [n for n in rc.get_nodes() if n.server_type == "primary"]
            assert sorted(n.port for n in masters) == ports
            slots = rc.cluster_slots()
            covered = sorted((lo, hi) for lo, hi in slots)
            assert covered[0][0] == 0 and covered[-1][1] == 16383
            assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(covered))
            # keys with different hash tags spread over all three primaries
            tags = [f"exp{i}" for i in range(30)]
            for tag in tags:
                rc.set(f"{{{tag}}}:k", tag)
                rc.set(f"{{{tag}}}:other", tag)  # same tag, same slot
            assert len({rc.keyslot(f"{{{t}}}:k") for t in tags}) > 1
            assert all(rc.keyslot(f"{{{t}}}:k") == rc.keyslot(f"{{{t}}}:other") for t in tags)
            per_node = {p: redis.Redis(port=p).dbsize() for p in ports}
            assert all(n > 0 for n in per_node.values()), per_node
            assert sum(per_node.values()) == 2 * len(tags)
            assert rc.get("{exp7}:k") == b"exp7"
        finally:
            rc.close()
        cli = subprocess.run(
            ["redis-cli", "-c", "-p", str(base), "GET", "{exp3}:k"], capture_output=True, text=True, timeout=10
        )
        assert cli.stdout.strip() == "exp3"

        status = stack(env, "status", "--only", "redis-cluster")
        assert status.returncode == 0, status
        assert "3 primaries, cluster_state:ok" in status.stdout

        # re-`up` keeps the running cluster: same processes, same node ids, same data
        ids = node_ids(ports)
        again = stack(env, "up", "--only", "redis-cluster")
        assert again.returncode == 0, again
        assert "already a cluster" in again.stdout and "creating" not in again.stdout
        assert pids(tmp_path) == started and node_ids(ports) == ids

        # down stops exactly what up started; status then says so
        down = stack(env, "down", "--only", "redis-cluster")
        assert down.returncode == 0, down
        assert not any(alive(p) for p in started)
        assert pids(tmp_path) == []
        assert stack(env, "status", "--only", "redis-cluster").returncode == 3
    finally:
        for pid in started:  # never leave servers behind, even when an assertion failed
            if alive(pid):
                os.kill(pid, 9)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"TRACEWATCH_REDIS_CLUSTER": "2"}, "needs 3..16 primaries"),
        ({"TRACEWATCH_REDIS_CLUSTER": "x"}, "is not a number"),
        (
            {"TRACEWATCH_REDIS_CLUSTER": "3", "TRACEWATCH_REDIS_CLUSTER_PORT": "6378", "TRACEWATCH_REDIS_PORT": "6379"},
            "collide",
        ),
        (
            {
                "TRACEWATCH_REDIS_CLUSTER": "3",
                "TRACEWATCH_REDIS_CLUSTER_PORT": "9082",
                "TRACEWATCH_KAFKA_PORT": "19083",
            },
            "collide",
        ),  # a bus port (+10000) on Kafka's
        ({"TRACEWATCH_REDIS_CLUSTER": "3", "TRACEWATCH_REDIS_CLUSTER_PORT": "55534"}, "<= 65535"),
        ({}, "set TRACEWATCH_REDIS_CLUSTER"),
    ],
)
def test_bad_cluster_settings_are_refused(tmp_path: Path, extra: dict[str, str], message: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEWATCH_")}
    env |= {"TRACEWATCH_STACK_DIR": str(tmp_path), **extra}
    done = stack(env, "up", "--only", "redis-cluster")
    assert done.returncode == 1 and message in done.stderr, done
    assert not (tmp_path / "run").exists()  # refused before starting anything
