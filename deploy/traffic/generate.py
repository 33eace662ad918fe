"""Steady, realistic trace traffic for the tracewatch stack: replays MLflow fixture traces to Kafka.

What `tracewatch publish` cannot do for a live demo: every trace goes out under a fresh trace id,
re-stamped to "now", at a paced rate, with a chosen share of failed traces (MLflow state `ERROR`),
and optionally an *incident*: a window in which the failed share jumps, the quality regression
`ScorerPassRateRegression` exists to catch.

    python deploy/traffic/generate.py --rate 10 \\
        --error-share 0.05 --incident-after 1800 --incident-duration 1500 --incident-error-share 0.6

This is the command line of `stream.traffic` (templates, `TraceFactory`, `replay`), the one trace
generator shared with the demo, the benchmark and the tests. Used by the `traffic` profile of
docker-compose.yml. The fixtures default to `../shared/fixtures/mlflow` beside the repository
(or `$TRACEWATCH_SHARED/fixtures/mlflow`).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
from pathlib import Path

from scorers import DecodeError
from stream import Settings, TracePublisher
from stream.traffic import (
    ReplayStats,
    Templates,
    TraceFactory,
    find_fixtures,
    incident_schedule,
    load_templates,
    replay,
)

__all__ = [
    "ReplayStats",
    "Templates",
    "TraceFactory",
    "build_parser",
    "incident_schedule",
    "load_templates",
    "main",
    "replay",
]


# ---------------------------------------------------------------------------------- command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="generate.py",
        description="Replay MLflow fixture traces to Kafka at a steady rate, under fresh ids, "
        "with a share of failed traces and an optional incident.",
    )
    p.add_argument(
        "--fixtures",
        type=Path,
        default=None,
        help="Folder (or JSONL file) of trace JSON [default ../shared/fixtures/mlflow beside the repository, "
        "or $TRACEWATCH_SHARED/fixtures/mlflow]",
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
    fixtures = find_fixtures(args.fixtures)
    corpus = load_templates(fixtures, experiments)
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
            raise ValueError(f"failed share {share} needs both OK and failed traces in {fixtures}")
    settings = Settings(kafka_bootstrap=args.bootstrap) if args.bootstrap else Settings()  # validated either way
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
        f"{len(corpus.ok)} OK + {len(corpus.failed)} failed templates from {fixtures} -> "
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
