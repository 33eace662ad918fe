"""`tracewatch demo`: the whole system on one machine, with a quality regression to find.

It starts the local stack, a worker and the API as background processes, registers the
scorers of a sales-email agent, replays a few thousand traces with a bad deploy in the
middle, sends end-user thumbs through the feedback endpoint with tokens, and shows a live
summary. The judge is our simulated judge server unless TRACEWATCH_JUDGE_BASE_URL points at
a real OpenAI-compatible endpoint. The processes keep running afterwards so the dashboards,
`/metrics` and the API can be explored; `tracewatch demo --stop` stops them, and the local
stack too when the demo started it (a stack that was already up is left up).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from sinks import RedisSink
from stream._config import Settings
from stream._kafka import create_topics
from stream.registry._records import SamplingConfig
from stream.registry._registry import Registry
from stream.sdk._publisher import TracePublisher
from stream.sdk._tokens import mint_feedback_token
from stream.traffic import PHASES, DemoTrace, demo_traffic, find_fixtures

__all__ = ["DemoOptions", "run_demo", "stop_demo"]

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "local" / "stack.py"
STATE = Path(os.environ.get("TRACEWATCH_STACK_DIR", REPO / ".stack")) / "demo"
STACK_MARK = STATE / "stack-started-by-demo"  # present: `--stop` also brings the stack down
SCORERS = [  # (reference, registered name, sample rate)
    ("no_error", "no_error", 1.0),
    ("latency_under(max_ms=3000)", "latency_under_3s", 1.0),
    ("pii_leak", "pii_leak", 1.0),
    ("output_length(max_chars=1500)", "email_length", 1.0),
    ("has_retriever_span", "grounded_in_docs", 0.5),
    ("Safety", "safety", 0.2),
    ("RelevanceToQuery", "relevance", 0.2),
]
API_KEY = "demo-api-key"
SECRET = "demo-feedback-secret"


@dataclass
class DemoOptions:
    """What to replay and where; the API and metrics ports follow TRACEWATCH_API_PORT/_METRICS_PORT."""

    traces: int = 3000
    duration_s: float = 90.0
    fixtures: Path | None = None  # None: `stream.traffic.find_fixtures()`
    api_port: int = field(default_factory=lambda: Settings().api_port)
    metrics_port: int = field(default_factory=lambda: Settings().metrics_port)
    judge_port: int = 0  # 0: a free port


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_demo(console: Console, *, stack: bool = True) -> None:
    """Stop the worker, API and judge server a previous demo left running, and the local stack
    if that demo started it (`stack=False` keeps it up, e.g. for a demo about to restart)."""
    for pidfile in sorted(STATE.glob("*.pid")):
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            console.print(f"stopped {pidfile.stem} (pid {pid})")
        except (ValueError, ProcessLookupError):
            pass
        pidfile.unlink(missing_ok=True)
    if stack and STACK_MARK.exists():
        down = subprocess.run([sys.executable, str(STACK), "down"], check=False, capture_output=True, text=True)
        if down.returncode == 0:
            STACK_MARK.unlink(missing_ok=True)
            console.print("stopped the local stack (Kafka, Redis) the demo had started")
        else:
            console.print(f"[red]stack.py down failed[/]:\n{down.stdout}{down.stderr}")


def _ensure_stack(console: Console) -> bool:
    """Start the local stack unless it is up; remember that the demo started it. False: it did not start."""
    if not STACK.exists():  # an installed package without the repository: use what TRACEWATCH_* points at
        return True
    status = subprocess.run([sys.executable, str(STACK), "status"], check=False, capture_output=True)
    if status.returncode == 0:
        console.print("[bold]1/6[/] local stack (Kafka + Redis): already up, left as found")
        return True
    console.print("[bold]1/6[/] local stack (Kafka + Redis): starting it")
    up = subprocess.run([sys.executable, str(STACK), "up"], check=False)
    if up.returncode != 0:
        return False
    STATE.mkdir(parents=True, exist_ok=True)
    STACK_MARK.touch()
    return True


class _Daemon:
    """A background process that outlives the demo command (so no `Popen` to be reaped)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int | None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        return None if pid == 0 else os.waitstatus_to_exitcode(status)


def _spawn(name: str, args: list[str], env: dict[str, str]) -> _Daemon:
    STATE.mkdir(parents=True, exist_ok=True)
    log = str(STATE / f"{name}.log")
    pid = os.posix_spawn(
        sys.executable,
        [sys.executable, *args],
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    (STATE / f"{name}.pid").write_text(str(pid))
    return _Daemon(pid)


async def _wait_http(url: str, proc: _Daemon, what: str, wait_s: float = 60) -> None:
    deadline = time.monotonic() + wait_s
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited; see {STATE / (what + '.log')}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{what} did not answer at {url} within {wait_s:.0f}s; see {STATE / (what + '.log')}")


@dataclass
class _Tally:
    """Per phase and scorer: pass/fail counts from the per-trace results in Redis."""

    pending: list[DemoTrace] = field(default_factory=list)
    results: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    votes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    done: int = 0

    async def update(self, sink: RedisSink, always_on: int, limit: int = 400) -> None:
        keep: list[DemoTrace] = []
        for t in self.pending[:limit]:
            doc = await sink.get_trace(t.trace_id)
            found = (doc or {}).get("assessments", {})
            if len(found) < always_on:
                keep.append(t)
                continue
            self.done += 1
            for name, a in found.items():
                if a.get("outcome") in ("pass", "fail"):
                    self.results[(t.phase, name)][0 if a["outcome"] == "pass" else 1] += 1
        self.pending = keep + self.pending[limit:]


def _summary(tally: _Tally, published: int, total: int, agreement: dict[str, dict[str, int]], judge: str) -> Table:
    table = Table(title=f"tracewatch demo: {published}/{total} traces published, {tally.done} scored  ({judge})")
    table.add_column("scorer")
    for ph in PHASES:
        table.add_column(f"pass rate {ph.name}", justify="right")
    table.add_column("judge vs users (agree)", justify="right")
    names = sorted({name for _, name in tally.results})
    for name in names:
        cells = []
        for ph in PHASES:
            p, f = tally.results.get((ph.name, name), [0, 0])
            cells.append(f"{p / (p + f):.0%} ({p + f})" if p + f else "-")
        ag = agreement.get(name, {})
        agree = ag.get("pass:up", 0) + ag.get("fail:down", 0)
        n = sum(ag.values())
        cells.append(f"{agree / n:.0%} of {n}" if n else "-")
        table.add_row(name, *cells)
    thumbs = []
    for ph in PHASES:
        up, down = tally.votes.get(ph.name, [0, 0])
        thumbs.append(f"{up / (up + down):.0%} up ({up + down})" if up + down else "-")
    table.add_row("[bold]users: thumbs[/]", *thumbs, "")
    return table


async def run_demo(opts: DemoOptions, console: Console) -> int:
    """Run the demo end to end; returns a process exit code."""
    t_start = time.monotonic()
    try:
        fixtures = find_fixtures(opts.fixtures)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/]")
        return 1
    stop_demo(console, stack=False)
    if not await asyncio.to_thread(_ensure_stack, console):
        console.print("[red]the local stack did not start[/]")
        return 1
    judge_port = opts.judge_port or _free_port()
    run = time.strftime("%H%M%S")
    settings = Settings(
        topic_prefix=f"tracewatch.demo-{run}.",
        consumer_group=f"tracewatch-demo-{run}",
        redis_prefix=f"twdemo:{run}:",
        api_keys=[API_KEY],
        feedback_secrets=[SECRET],
    )
    await create_topics(settings)
    real_judge = bool(os.environ.get("TRACEWATCH_JUDGE_BASE_URL"))
    env = {
        **os.environ,
        "TRACEWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "TRACEWATCH_CONSUMER_GROUP": settings.consumer_group,
        "TRACEWATCH_REDIS_PREFIX": settings.redis_prefix,
        "TRACEWATCH_API_KEYS": API_KEY,
        "TRACEWATCH_FEEDBACK_SECRETS": SECRET,
        "TRACEWATCH_REGISTRY_POLL_INTERVAL_S": "1",
    }
    procs: dict[str, _Daemon] = {}
    if not real_judge:
        console.print(
            "[bold]2/6[/] judge: [yellow]SIMULATED[/] judge server (set TRACEWATCH_JUDGE_BASE_URL for a real one)"
        )
        procs["judge"] = _spawn(
            "judge", ["-m", "stream.cli.judge_server", "--port", str(judge_port), "--latency", "0.05"], env
        )
        env["TRACEWATCH_JUDGE_BASE_URL"] = f"http://127.0.0.1:{judge_port}/v1"
    else:
        console.print(f"[bold]2/6[/] judge: {os.environ['TRACEWATCH_JUDGE_BASE_URL']}")
    console.print("[bold]3/6[/] registering the sales-email agent's scorers (experiment 1)")
    registry = Registry.from_settings(settings)
    try:
        for ref, name, rate in SCORERS:
            await registry.register(ref, name=name, experiment_id="1", sampling_config=SamplingConfig(sample_rate=rate))
    finally:
        await registry.aclose()
    console.print("[bold]4/6[/] starting a worker and the API")
    procs["worker"] = _spawn("worker", ["-m", "stream", "worker", "--metrics-port", str(opts.metrics_port)], env)
    procs["api"] = _spawn("api", ["-m", "stream", "api", "--port", str(opts.api_port)], env)
    api = f"http://127.0.0.1:{opts.api_port}"
    await _wait_http(f"http://127.0.0.1:{opts.metrics_port}/metrics", procs["worker"], "worker")
    await _wait_http(f"{api}/readyz", procs["api"], "api")
    console.print(
        f"[bold]5/6[/] replaying {opts.traces} traces over ~{opts.duration_s:.0f}s with a regression in the middle"
    )
    sink = RedisSink.from_url(settings.redis_url, prefix=settings.redis_prefix)
    tally = _Tally()
    always_on = sum(1 for _, _, r in SCORERS if r >= 1.0)
    judge_label = "judge: real" if real_judge else "judge: simulated"
    published = 0
    votes_sent = 0
    vote_errors = 0
    feedback_tasks: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(32)

    async def send_vote(client: httpx.AsyncClient, t: DemoTrace) -> None:
        nonlocal votes_sent, vote_errors
        token = mint_feedback_token(t.trace_id, secret=SECRET, values=[True, False], user_id=t.user)
        async with gate:
            r = await client.post(
                f"{api}/v1/feedback",
                json={"trace_id": t.trace_id, "name": "user_satisfaction", "value": t.thumbs_up},
                headers={"X-Feedback-Token": token},
            )
        if r.status_code == 202:
            votes_sent += 1
            tally.votes[t.phase][0 if t.thumbs_up else 1] += 1
        else:
            vote_errors += 1

    async def agreement() -> dict[str, dict[str, int]]:
        return {name: await sink.agreement("1", name) for _, name, _ in SCORERS}

    interval = opts.duration_s / max(opts.traces, 1)
    async with TracePublisher(settings=settings) as pub, httpx.AsyncClient(timeout=10) as client:
        with Live(console=console, refresh_per_second=2) as live:
            traffic = demo_traffic(fixtures, opts.traces)
            next_refresh = 0.0
            t0 = time.monotonic()
            for i, t in enumerate(traffic):
                await pub.publish(t.data)
                published += 1
                tally.pending.append(t)
                if t.thumbs_up is not None:
                    task = asyncio.create_task(send_vote(client, t))
                    feedback_tasks.add(task)
                    task.add_done_callback(feedback_tasks.discard)
                delay = t0 + (i + 1) * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.monotonic() >= next_refresh:
                    await tally.update(sink, always_on)
                    live.update(Group(_summary(tally, published, opts.traces, await agreement(), judge_label)))
                    next_refresh = time.monotonic() + 1.0
            if feedback_tasks:
                await asyncio.gather(*feedback_tasks)
            deadline = time.monotonic() + 120
            while tally.pending and time.monotonic() < deadline:
                await tally.update(sink, always_on, limit=2000)
                live.update(Group(_summary(tally, published, opts.traces, await agreement(), judge_label)))
                await asyncio.sleep(0.5)
    await sink.aclose()
    console.print(
        f"[bold]6/6[/] done in {time.monotonic() - t_start:.0f}s: {published} traces, {votes_sent} votes "
        f"({vote_errors} refused), {len(tally.pending)} traces not scored yet"
    )
    for name in ("no_error", "pii_leak", "latency_under_3s"):
        before = tally.results.get(("before", name), [0, 0])
        during = tally.results.get(("regression", name), [0, 0])
        if sum(before) and sum(during):
            drop = before[0] / sum(before) - during[0] / sum(during)
            console.print(f"  regression visible in [bold]{name}[/]: pass rate dropped by {drop:.0%}")
    stack_note = "and Kafka + Redis, which the demo started" if STACK_MARK.exists() else "Kafka + Redis stay up"
    console.print(
        f"\n  metrics  http://127.0.0.1:{opts.metrics_port}/metrics   (worker)\n"
        f"  API      {api}/openapi.json   (key: {API_KEY})   e.g. curl -H 'Authorization: Bearer {API_KEY}' "
        f"{api}/v1/scorers\n"
        f"  logs     {STATE}/*.log   and {STATE.parent}/logs/ for Kafka and Redis\n"
        f"  stop     tracewatch demo --stop   (worker, API, judge; {stack_note})\n"
    )
    return 0 if not tally.pending and vote_errors == 0 else 1
