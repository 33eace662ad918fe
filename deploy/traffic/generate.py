"""Steady, realistic trace traffic for the tracewatch stack: replays MLflow fixture traces to Kafka.

What `tracewatch publish` cannot do for a live demo: every trace goes out under a fresh trace id
(a replayed id would be a no-op for the workers, whose Redis guard makes replays idempotent),
re-stamped to "now" (so end-to-end latency and the per-minute aggregates look live), at a paced
rate, with a chosen share of failed traces (MLflow state `ERROR`), and optionally an *incident*:
a window in which the failed share jumps, the quality regression `ScorerPassRateRegression`
exists to catch.

    python deploy/traffic/generate.py --fixtures ../shared/fixtures/mlflow --rate 10 \\
        --error-share 0.05 --incident-after 1800 --incident-duration 1500 --incident-error-share 0.6

Used by the `traffic` profile of docker-compose.yml and, as a library (`load_corpus`,
`TraceFactory`, `replay`), by tests/integration/test_prometheus_e2e.py. Only public APIs of
`scorers` (reading and decoding traces) and `stream` (settings, `TracePublisher`) are used.

Failed vs OK is decided by the trace itself (`Trace.ok`: state OK and no failed span), so the
fixtures folder may hold any traces. Within each phase the failed share is exact, not random:
an accumulator spreads the failed traces evenly, so a 5% share is one trace in twenty.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from scorers import DecodeError, iter_traces, trace_from_dict
from stream import Settings, TracePublisher

__all__ = [
    "Corpus",
    "ReplayStats",
    "Template",
    "TraceFactory",
    "build_parser",
    "incident_schedule",
    "load_corpus",
    "main",
    "replay",
]

DEFAULT_FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "mlflow"


def rfc3339_ms(epoch_ms: int) -> str:
    """`2026-11-26T20:49:52.975Z`, the form of MLflow's `info.request_time`."""
    dt = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def _span_trace_id(hex_id: str) -> bytes:
    """The OpenTelemetry trace id of the spans: the 16 id bytes, base64 (as MLflow writes it)."""
    return base64.b64encode(bytes.fromhex(hex_id))


@dataclass(frozen=True, slots=True)
class Template:
    """One fixture trace, serialized once; new traces are byte substitutions of it."""

    label: str
    data: bytes
    hex_id: str
    request_time: str
    duration_ms: int

    def render(self, hex_id: str, now_ms: int) -> bytes:
        """This trace under id `tr-<hex_id>`, ending at `now_ms`."""
        out = self.data.replace(self.hex_id.encode(), hex_id.encode())
        if len(self.hex_id) == 32:
            out = out.replace(_span_trace_id(self.hex_id), _span_trace_id(hex_id))
        if self.request_time:
            old = b'"request_time":"' + self.request_time.encode() + b'"'
            new = b'"request_time":"' + rfc3339_ms(now_ms - self.duration_ms).encode() + b'"'
            out = out.replace(old, new, 1)
        return out


@dataclass(slots=True)
class Corpus:
    """The templates, split by whether the trace succeeded."""

    ok: list[Template] = field(default_factory=list)
    failed: list[Template] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ok) + len(self.failed)


def _template(label: str, obj: dict[str, Any], experiment: str | None) -> Template:
    obj = copy.deepcopy(obj)
    info = obj["info"]
    if experiment is not None:
        location = info.setdefault("trace_location", {"type": "MLFLOW_EXPERIMENT"})
        location.setdefault("mlflow_experiment", {})["experiment_id"] = experiment
    trace_id = str(info.get("trace_id") or info.get("request_id"))
    hex_id = trace_id.removeprefix("tr-")
    try:
        duration = int(info.get("execution_duration_ms") or 0)
    except (TypeError, ValueError):
        duration = 0
    return Template(label, orjson.dumps(obj), hex_id, str(info.get("request_time") or ""), duration)


def load_corpus(path: str | os.PathLike[str], experiments: list[str] | None = None) -> Corpus:
    """Read the traces under `path` (a folder of trace JSON, a JSONL file, ...).

    Files that are not traces (no `info` object, e.g. an index of ids) are ignored and listed in
    `Corpus.ignored`; other invalid traces raise. With `experiments`, every trace is copied into
    each of those experiments (the fixtures all belong to experiment "1").

    Raises:
        FileNotFoundError: nothing at `path`.
        scorers.DecodeError: a trace that does not decode.
        ValueError: no trace at all.
    """
    corpus = Corpus()
    for label, data in iter_traces(path):
        try:
            obj = orjson.loads(data)
            trace = trace_from_dict(obj)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("not_json", f"{label}: {exc}") from None
        except DecodeError as exc:
            if exc.reason in ("missing_info", "not_object"):
                corpus.ignored.append(label)
                continue
            raise
        bucket = corpus.ok if trace.ok else corpus.failed
        targets: list[str | None] = list(experiments) if experiments else [None]
        for exp in targets:
            bucket.append(_template(label, obj, exp))
    if not len(corpus):
        raise ValueError(f"no traces under {path}")
    return corpus


class TraceFactory:
    """Fresh traces from a corpus: `tr-` + 32 random hex digits, re-stamped to now.

    Whether the next trace is a failed one follows an exact share (see the module docstring);
    which template of its kind is drawn at random (seeded).
    """

    def __init__(self, corpus: Corpus, *, seed: int = 1, clock: Callable[[], float] = time.time) -> None:
        self.corpus = corpus
        self._rng = random.Random(seed)
        self._clock = clock
        self._acc = 0.0
        self.made = 0
        self.made_failed = 0

    def next(self, error_share: float) -> tuple[str, bytes]:
        """The next `(trace_id, wire bytes)`, failed with long-run share `error_share`.

        Raises:
            ValueError: the share asks for a kind of trace the corpus does not have.
        """
        self._acc += min(max(error_share, 0.0), 1.0)
        failed = self._acc >= 1.0 - 1e-9
        if failed:
            self._acc -= 1.0
        pool = self.corpus.failed if failed else self.corpus.ok
        if not pool:
            kind = "failed (state ERROR)" if failed else "OK"
            raise ValueError(f"error share {error_share} needs {kind} traces and the corpus has none")
        template = self._rng.choice(pool)
        hex_id = f"{self._rng.getrandbits(128):032x}"
        self.made += 1
        self.made_failed += failed
        return f"tr-{hex_id}", template.render(hex_id, int(self._clock() * 1000))


def incident_schedule(
    error_share: float, *, after: float | None = None, duration: float | None = None, incident_share: float = 0.8
) -> Callable[[float], float]:
    """Failed share as a function of seconds since start: `error_share`, and `incident_share`
    from `after` for `duration` seconds (forever when `duration` is None)."""

    def share(elapsed: float) -> float:
        if after is not None and elapsed >= after and (duration is None or elapsed < after + duration):
            return incident_share
        return error_share

    return share


@dataclass(slots=True)
class ReplayStats:
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0


async def replay(
    publisher: TracePublisher,
    factory: TraceFactory,
    *,
    rate: float,
    error_share: float | Callable[[float], float],
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    tick: float = 0.1,
    report: Callable[[str], None] | None = None,
    report_every: float = 10.0,
) -> ReplayStats:
    """Publish `rate` traces per second until `duration` seconds passed or `stop` is set.

    Every trace is acknowledged by Kafka before the call returns (a failure raises
    `stream.PublishError`). After a stall the schedule catches up, so the long-run rate holds.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    share_at = error_share if callable(error_share) else (lambda _elapsed: float(error_share))
    loop = asyncio.get_running_loop()
    start = loop.time()
    stats = ReplayStats()
    failed_before = factory.made_failed
    next_report = report_every
    while True:
        elapsed = loop.time() - start
        if (stop is not None and stop.is_set()) or (duration is not None and elapsed >= duration):
            break
        due = int(rate * elapsed) + 1 - stats.sent
        if due > 0:
            share = share_at(elapsed)
            batch = [factory.next(share)[1] for _ in range(due)]
            stats.sent += await publisher.publish_many(batch, window=max(due, 1))
        if report is not None and elapsed >= next_report:
            next_report += report_every
            report(
                f"{elapsed:7.0f}s sent {stats.sent} traces ({factory.made_failed - failed_before} failed); "
                f"failed share now {share_at(elapsed):.0%}"
            )
        if stop is None:
            await asyncio.sleep(tick)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
    stats.failed = factory.made_failed - failed_before
    stats.seconds = loop.time() - start
    return stats


# ---------------------------------------------------------------------------------- command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="generate.py",
        description="Replay MLflow fixture traces to Kafka at a steady rate, under fresh ids, "
        "with a share of failed traces and an optional incident.",
    )
    env = os.environ.get
    p.add_argument(
        "--fixtures",
        type=Path,
        default=Path(env("TRACEWATCH_FIXTURES", str(DEFAULT_FIXTURES))),
        help="Folder (or JSONL file) of trace JSON [env TRACEWATCH_FIXTURES; default ../shared/fixtures/mlflow]",
    )
    p.add_argument("--rate", type=float, default=10.0, help="Traces per second (default 10).")
    p.add_argument("--duration", type=float, default=0.0, help="Seconds to run; 0 runs until SIGTERM/SIGINT.")
    p.add_argument("--error-share", type=float, default=0.05, help="Share of failed traces normally (0.05).")
    p.add_argument(
        "--incident-after", type=float, default=0.0, help="Seconds until the incident starts; 0: no incident."
    )
    p.add_argument("--incident-duration", type=float, default=0.0, help="Incident length in seconds; 0: it never ends.")
    p.add_argument("--incident-error-share", type=float, default=0.8, help="Failed share during the incident.")
    p.add_argument(
        "--experiments",
        default="",
        help="Comma-separated experiment ids to spread the traces over (default: as in the files).",
    )
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers [env TRACEWATCH_KAFKA_BOOTSTRAP]")
    p.add_argument("--seed", type=int, default=None, help="Seed of ids and template choice (default: random).")
    return p


def _say(message: str) -> None:
    print(f"traffic: {message}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace) -> ReplayStats:
    experiments = [e.strip() for e in args.experiments.split(",") if e.strip()] or None
    corpus = load_corpus(args.fixtures, experiments)
    for label in corpus.ignored:
        _say(f"not a trace, ignored: {label}")
    schedule = incident_schedule(
        args.error_share,
        after=args.incident_after if args.incident_after > 0 else None,
        duration=args.incident_duration if args.incident_duration > 0 else None,
        incident_share=args.incident_error_share,
    )
    # Fail before publishing anything if a phase needs traces the corpus does not have.
    shares = {args.error_share} | ({args.incident_error_share} if args.incident_after > 0 else set())
    for share in shares:
        if (share > 0 and not corpus.failed) or (share < 1 and not corpus.ok):
            raise ValueError(f"failed share {share} needs both OK and failed traces in {args.fixtures}")
    settings = Settings()
    if args.bootstrap:
        settings = settings.model_copy(update={"kafka_bootstrap": args.bootstrap})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    incident = (
        f"; incident from {args.incident_after:.0f}s"
        f"{f' for {args.incident_duration:.0f}s' if args.incident_duration > 0 else ''}"
        f" at {args.incident_error_share:.0%} failed"
        if args.incident_after > 0
        else ""
    )
    _say(
        f"{len(corpus.ok)} OK + {len(corpus.failed)} failed templates from {args.fixtures} -> "
        f"{settings.topics.traces} on {settings.kafka_bootstrap}: {args.rate:g}/s, "
        f"{args.error_share:.0%} failed{incident}"
    )
    factory = TraceFactory(corpus, seed=args.seed if args.seed is not None else random.randrange(2**32))
    async with TracePublisher(settings=settings) as pub:
        stats = await replay(
            pub,
            factory,
            rate=args.rate,
            error_share=schedule,
            duration=args.duration if args.duration > 0 else None,
            stop=stop,
            report=_say,
        )
    _say(f"done: {stats.sent} traces ({stats.failed} failed) in {stats.seconds:.0f}s")
    return stats


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rate <= 0:
        _say("--rate must be positive")
        return 2
    try:
        asyncio.run(_run(args))
    except (FileNotFoundError, ValueError, DecodeError) as exc:
        _say(f"error: {exc}")
        return 2
    except Exception as exc:  # PublishError and friends: say what, exit non-zero
        _say(f"error: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
