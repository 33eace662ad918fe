"""What the scenarios share: the local stack, private namespaces, worker processes, polling.

Every scenario runs in its own namespace (topic prefix, consumer group, Redis prefix), so
runs never see each other's data or offsets, and other engineers' tests on the same broker
and Redis are untouched. `Namespace.cleanup` deletes the topics and keys afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from bench._kafka import delete_topics, produce_fast
from sinks import RedisKeys, RedisSink
from stream import Settings
from stream._kafka import create_topics

__all__ = [
    "CODE_REFS",
    "CODE_SCORERS",
    "REPO",
    "CpuMeter",
    "Namespace",
    "WorkerProc",
    "coverage_states",
    "coverage_totals",
    "ensure_stack",
    "free_port",
    "histogram_delta",
    "histogram_quantiles",
    "metric_samples",
    "proc_cpu_s",
    "proc_status_kb",
    "redis_command_usec",
    "redis_persistence",
    "release_stack",
    "wait_for_pairs",
    "wait_redis_quiet",
]

REPO = Path(__file__).resolve().parent.parent
CODE_SCORERS = ("output_word_count", "has_retriever_span", "latency_under")
CODE_REFS = tuple(f"{name}@1.0" for name in CODE_SCORERS)


def ensure_stack(say: Callable[[str], None]) -> dict[str, Any]:
    """Start the local Kafka + Redis (`deploy/local/stack.py up`) unless both already answer.

    Returns how (`stack`) and the broker's and Redis' pids (`pids`), for CPU accounting.
    """
    stack = [sys.executable, str(REPO / "deploy" / "local" / "stack.py")]
    status = subprocess.run([*stack, "status"], capture_output=True, text=True, cwd=REPO)
    how = "already up"
    if status.returncode != 0:
        say("starting the local stack (deploy/local/stack.py up) ...")
        up = subprocess.run([*stack, "up"], capture_output=True, text=True, cwd=REPO)
        if up.returncode != 0:
            raise RuntimeError(f"stack.py up failed:\n{up.stdout}\n{up.stderr}")
        how = "started by the bench"
        status = subprocess.run([*stack, "status"], capture_output=True, text=True, cwd=REPO)
    pids = {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(kafka|redis)\s*:.*?\(pid (\d+)\)", status.stdout, re.MULTILINE)}
    return {"stack": how, "pids": pids}


def release_stack(stack: dict[str, Any], say: Callable[[str], None]) -> None:
    """Leave the stack as the bench found it: stop it if `ensure_stack` started it."""
    if stack.get("stack") != "started by the bench":
        return
    down = subprocess.run([sys.executable, str(REPO / "deploy" / "local" / "stack.py"), "down"],
                          capture_output=True, text=True, cwd=REPO)
    say("stopped the local stack the bench had started" if down.returncode == 0
        else f"stack.py down failed:\n{down.stdout}\n{down.stderr}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status_kb(pid: int, field_name: str = "VmRSS") -> int | None:
    """A `/proc/<pid>/status` field in kB (`VmRSS`, `VmHWM`), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (from `/proc/<pid>/stat`)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            parts = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / ticks


@dataclass
class Namespace:
    """A private topic prefix, consumer group and Redis prefix for one scenario run."""

    name: str
    settings: Settings = field(init=False)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        base = Settings()
        self.settings = base.model_copy(
            update={
                "topic_prefix": f"bench.{self.tag}.{self.name}.",
                "consumer_group": f"bench-{self.tag}-{self.name}",
                "redis_prefix": f"bench:{self.tag}:{self.name}:",
                # Leftovers of a crashed bench expire on their own within the hour.
                "trace_ttl_s": 3600.0,
                "aggregate_ttl_s": 3600.0,
            }
        )

    @property
    def topic(self) -> str:
        return self.settings.topics.traces

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a `python -m stream ...` subprocess in this namespace."""
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEWATCH_")}
        env.update(
            {
                "TRACEWATCH_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
                "TRACEWATCH_REDIS_URL": s.redis_url,
                "TRACEWATCH_TOPIC_PREFIX": s.topic_prefix,
                "TRACEWATCH_CONSUMER_GROUP": s.consumer_group,
                "TRACEWATCH_REDIS_PREFIX": s.redis_prefix,
                "TRACEWATCH_TRACE_TTL_S": str(s.trace_ttl_s),
                "TRACEWATCH_AGGREGATE_TTL_S": str(s.aggregate_ttl_s),
                "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
            }
        )
        env.update(extra)
        return env

    async def create(self, partitions: int = 4) -> None:
        await create_topics(self.settings, partitions=partitions)

    async def prefill(
        self, items: Sequence[tuple[str, bytes]] | Any, *, on_progress: Callable[[int], None] | None = None,
        topic: str | None = None, partitions: int = 4,
    ) -> int:
        return await produce_fast(self.settings.kafka_bootstrap, topic or self.topic, items,
                                  partitions=partitions, on_progress=on_progress)

    def sink(self) -> RedisSink:
        return RedisSink.from_url(self.settings.redis_url, prefix=self.settings.redis_prefix)

    def keys(self) -> RedisKeys:
        return RedisKeys(self.settings.redis_prefix)

    async def cleanup(self) -> dict[str, int]:
        """Delete this namespace's topics and Redis keys (UNLINK in batches)."""
        topics = await delete_topics(self.settings.kafka_bootstrap, f"bench.{self.tag}.{self.name}.")
        client = aioredis.Redis.from_url(self.settings.redis_url)
        n = 0
        try:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=f"{self.settings.redis_prefix}*", count=10_000):
                batch.append(key)
                if len(batch) >= 10_000:
                    n += await client.unlink(*batch)
                    batch.clear()
            if batch:
                n += await client.unlink(*batch)
        finally:
            await client.aclose()
        return {"topics": len(topics), "keys": n}


async def coverage_totals(sink: RedisSink, experiments: Sequence[str], scorers: Sequence[str]) -> dict[str, int]:
    """Pairs that reached a final state (scored + error + skipped), per scorer, over experiments."""
    out = dict.fromkeys(scorers, 0)
    for exp in experiments:
        for name in scorers:
            c = await sink.coverage(exp, name)
            out[name] += c.get("scored", 0) + c.get("error", 0) + c.get("skipped", 0)
    return out


async def coverage_states(sink: RedisSink, experiments: Sequence[str], scorer: str) -> dict[str, int]:
    """The coverage hash of one scorer summed over experiments (`scored`, `error`, ...)."""
    out: dict[str, int] = {}
    for exp in experiments:
        for k, v in (await sink.coverage(exp, scorer)).items():
            out[k] = out.get(k, 0) + v
    return out


@dataclass
class DrainTiming:
    """When the first and the last pair showed up, and how many were there at first sight."""

    started: float
    first_seen: float | None = None
    first_count: int = 0
    done: float | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)

    def steady_rate(self, total: int) -> float:
        """Traces/s from the first observed result to the last (startup excluded)."""
        if self.first_seen is None or self.done is None or self.done <= self.first_seen:
            return 0.0
        return (total - self.first_count) / (self.done - self.first_seen)

    def wall_rate(self, total: int) -> float:
        if self.done is None:
            return 0.0
        return total / (self.done - self.started)


async def wait_for_pairs(
    count: Callable[[], Awaitable[int]],
    want: int,
    *,
    timeout: float,
    started: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    interval: float = 0.1,
    alive: Callable[[], bool] | None = None,
) -> DrainTiming:
    """Poll `count()` until it reaches `want`, recording first/last sight (perf_counter)."""
    timing = DrainTiming(started if started is not None else time.perf_counter())
    deadline = time.perf_counter() + timeout
    while True:
        n = await count()
        now = time.perf_counter()
        timing.samples.append((now, n))
        if n > 0 and timing.first_seen is None:
            timing.first_seen, timing.first_count = now, n
        if on_progress is not None:
            on_progress(n)
        if n >= want:
            timing.done = now
            return timing
        if now > deadline:
            raise TimeoutError(f"only {n} of {want} results after {timeout:.0f} s")
        if alive is not None and not alive():
            raise RuntimeError(f"the process under test exited with {n} of {want} results")
        await asyncio.sleep(interval)


class WorkerProc:
    """`python -m stream worker` as a subprocess of the bench, with RSS and CPU sampling."""

    def __init__(
        self,
        ns: Namespace,
        refs: Sequence[str] = CODE_REFS,
        *,
        processes: int = 1,
        log_path: Path | None = None,
        extra_env: dict[str, str] | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        self.ns = ns
        self.metrics_port = free_port() if processes == 1 else _free_port_range(processes)
        args = [*wrap] if wrap else [sys.executable]
        args += ["-m", "stream", "worker", "--processes", str(processes), "--log-level", "WARNING",
                 "--metrics-port", str(self.metrics_port)]
        for r in refs:
            args += ["--scorer", r]
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(args, env=ns.env(**(extra_env or {})), cwd=REPO,
                                     stdout=self._log, stderr=self._log)
        self.processes = processes

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def pids(self) -> list[int]:
        """The worker processes: the child itself, or its children with `--processes N`."""
        if self.processes == 1:
            return [self.proc.pid]
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children", encoding="ascii") as fh:
                return [int(p) for p in fh.read().split()]
        except FileNotFoundError:
            return []

    def rss_mb(self) -> float:
        return sum((proc_status_kb(p) or 0) for p in self.pids()) / 1024

    def peak_rss_mb(self) -> float:
        return max([(proc_status_kb(p, "VmHWM") or 0) for p in self.pids()] or [0]) / 1024

    def cpu_s(self) -> float:
        return sum((proc_cpu_s(p) or 0.0) for p in self.pids())

    async def metrics(self) -> str:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics")
            return r.text

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the worker finishes in-flight work and commits), SIGKILL after `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if self.processes == 1 else signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not subprocess.DEVNULL:
            with contextlib.suppress(Exception):
                self._log.close()  # type: ignore[union-attr]
        return int(self.proc.returncode or 0)


def _free_port_range(n: int) -> int:
    for _ in range(50):
        base = free_port()
        if base + n < 65535:
            return base
    return free_port()


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text -> {(sample name, labels): value}."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def histogram_quantiles(
    samples: str | dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, qs: Sequence[float]
) -> dict[float, float] | None:
    """Quantiles of a Prometheus histogram by linear interpolation in its buckets (as PromQL)."""
    buckets: dict[float, float] = {}
    if isinstance(samples, str):
        samples = metric_samples(samples)
    for (sample, labels), value in samples.items():
        if sample == f"{name}_bucket":
            le = dict(labels)["le"]
            bound = float("inf") if le in ("+Inf", "inf") else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + value
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    out: dict[float, float] = {}
    for q in qs:
        rank = q * total
        prev_b, prev_c = 0.0, 0.0
        for b in bounds:
            c = buckets[b]
            if c >= rank:
                if b == float("inf"):
                    out[q] = prev_b
                else:
                    out[q] = prev_b + (b - prev_b) * ((rank - prev_c) / max(c - prev_c, 1e-12))
                break
            prev_b, prev_c = b, c
    return out


class CpuMeter:
    """CPU use between `start()` and `stop()`: the machine, this process, and named processes.

    `stop()` returns `machine_busy` (0..1 of all cores), `<name>_cores` for this process
    (`bench`) and each named pid (worker, kafka, redis), and `others_cores`: what the rest of
    the machine (other engineers' work) used meanwhile.
    """

    def __init__(self, pids: dict[str, int] | None = None) -> None:
        self._pids = dict(pids or {})
        self._t0 = 0.0
        self._sys0: tuple[int, int] = (0, 0)
        self._own0 = 0.0
        self._cpu0: dict[str, float] = {}

    @staticmethod
    def _stat() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as fh:
            parts = [int(x) for x in fh.readline().split()[1:]]
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
        return sum(parts), idle

    def start(self) -> CpuMeter:
        self._t0 = time.perf_counter()
        self._sys0 = self._stat()
        t = os.times()
        self._own0 = t.user + t.system
        self._cpu0 = {name: proc_cpu_s(pid) or 0.0 for name, pid in self._pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        total, idle = self._stat()
        t = os.times()
        wall = max(time.perf_counter() - self._t0, 1e-9)
        d_total = max(total - self._sys0[0], 1)
        busy = 1.0 - (idle - self._sys0[1]) / d_total
        out = {"machine_busy": busy, "bench_cores": (t.user + t.system - self._own0) / wall}
        for name, pid in self._pids.items():
            out[f"{name}_cores"] = ((proc_cpu_s(pid) or 0.0) - self._cpu0.get(name, 0.0)) / wall
        ours = sum(v for k, v in out.items() if k.endswith("_cores"))
        out["others_cores"] = max(0.0, busy * len(os.sched_getaffinity(0)) - ours)
        return out


def histogram_delta(before: str, after: str, name: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of histogram `name` in `after`, minus their values in `before`."""
    old = metric_samples(before)
    return {k: v - old.get(k, 0.0) for k, v in metric_samples(after).items() if k[0] == f"{name}_bucket"}


async def redis_command_usec(url: str) -> dict[str, float]:
    """Total time Redis spent executing commands so far, in µs: all commands and EVALSHA alone.

    The difference of two readings says how busy the Redis main thread was in between (other
    clients included), which `/proc` CPU time cannot split from persistence work.
    """
    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    total = sum(float(v.get("usec", 0)) for v in stats.values() if isinstance(v, dict))
    evalsha = float((stats.get("cmdstat_evalsha") or {}).get("usec", 0))
    return {"all": total, "evalsha": evalsha}


async def redis_persistence(url: str) -> dict[str, int]:
    """Forks so far (AOF rewrites, RDB saves) and whether one is running or scheduled.

    A rewrite forks the whole Redis (the main thread stops for the fork, ~70 ms at 1.3 GB
    here) and its child takes a core for seconds: on a 2-core box that shows in latency.
    """
    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("persistence")
        stats = await client.info("stats")
    finally:
        await client.aclose()
    busy = int(info.get("aof_rewrite_in_progress", 0)) + int(info.get("aof_rewrite_scheduled", 0)) + int(
        info.get("rdb_bgsave_in_progress", 0))
    return {"forks": int(stats.get("total_forks", 0)), "busy": busy,
            "latest_fork_usec": int(stats.get("latest_fork_usec", 0))}


async def wait_redis_quiet(url: str, timeout: float = 60.0) -> float:
    """Wait until no AOF rewrite or RDB save runs (our clean-ups trigger them); returns seconds waited."""
    t0 = time.perf_counter()
    while (await redis_persistence(url))["busy"] and time.perf_counter() - t0 < timeout:
        await asyncio.sleep(0.5)
    return time.perf_counter() - t0
