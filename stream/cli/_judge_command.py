"""`tracewatch judge-server`: the fake judge in the foreground (its module loads only when run)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["judge_server_command"]


def judge_server_command(
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8900,
    latency: Annotated[float, typer.Option(help="Seconds added to every answer.")] = 0.0,
    jitter: Annotated[float, typer.Option(help="Extra random seconds, up to this much.")] = 0.0,
    rate_429: Annotated[float, typer.Option(help="Fraction of requests answered 429.")] = 0.0,
    retry_after: Annotated[float, typer.Option(help="Retry-After seconds sent with a 429.")] = 1.0,
    rate_500: Annotated[float, typer.Option(help="Fraction of requests answered 500.")] = 0.0,
    garbage_rate: Annotated[float, typer.Option(help="Fraction of answers that are not JSON.")] = 0.0,
    fail_fraction: Annotated[float, typer.Option(help="Fraction of prompts (by sha256) judged 'no'.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the fault RNG.")] = 0,
) -> None:
    """Run a fake OpenAI-compatible judge for tests and demos (POST /v1/chat/completions).

    Verdicts follow the prompt: "no" for a bad/unsafe marker or a hash under --fail-fraction.

    GET /stats shows requests by status and peak concurrency.
    """
    from stream.cli.judge_server import serve

    typer.echo(f"fake judge on http://{host}:{port}/v1 (GET /stats for counters)")
    serve(
        host,
        port,
        latency=latency,
        jitter=jitter,
        rate_429=rate_429,
        retry_after=retry_after,
        rate_500=rate_500,
        garbage_rate=garbage_rate,
        fail_fraction=fail_fraction,
        seed=seed,
    )
