"""The demo's traffic: the MLflow sales-email agent, with a regression in the middle.

Traces are the real MLflow fixtures (retriever, CRM tool, chat model, post-processing) under
new ids and current timestamps, with varied requests, outputs and latencies. In the
regression phase a "bad deploy" makes the CRM tool time out more often, the emails longer and
slower, and some of them leak a phone number; end users notice and vote down more.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stream.traffic._template import load_templates, new_trace_id

__all__ = ["BAD_MARKER", "PHASES", "DemoTrace", "Phase", "demo_traffic"]

ACCOUNTS = [
    ("Acme Corp", "ACME-001"), ("Globex", "GLOBEX-002"), ("Initech", "INITECH-003"), ("Umbrella", "UMB-004"),
    ("Hooli", "HOOLI-005"), ("Stark Industries", "STARK-006"), ("Wayne Enterprises", "WAYNE-007"),
    ("Soylent", "SOY-008"), ("Cyberdyne", "CYB-009"), ("Tyrell", "TYR-010"),
]
TOPICS = ["SSO and onboarding", "pricing for 200 seats", "data residency in the EU", "the renewal timeline",
          "SOC 2 and security reviews", "a pilot with the sales team", "the Salesforce integration"]
BAD_MARKER = "[[bad]]"  # the simulated judge answers "no" on prompts that contain it


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of the replay with its own quality."""

    name: str
    share: float  # fraction of all traces
    error_rate: float  # CRM tool timeouts
    leak_rate: float  # emails that leak a phone number
    slow_rate: float  # latency above the 3 s budget
    thumbs_up: float  # probability that a voting user is happy


PHASES = (
    Phase("before", 0.4, error_rate=0.03, leak_rate=0.01, slow_rate=0.03, thumbs_up=0.85),
    Phase("regression", 0.3, error_rate=0.35, leak_rate=0.30, slow_rate=0.45, thumbs_up=0.30),
    Phase("after", 0.3, error_rate=0.03, leak_rate=0.01, slow_rate=0.03, thumbs_up=0.85),
)


@dataclass(frozen=True, slots=True)
class DemoTrace:
    trace_id: str
    phase: str
    data: bytes
    bad: bool  # what a careful reviewer would say: the simulated judge's ground truth
    thumbs_up: bool | None  # the end user's vote, None when they did not vote
    user: str


def _email(account: str, topic: str, rng: random.Random, *, long: bool, leak: bool) -> str:
    body = (
        f"Subject: Next steps for {account}\n\nHi {account} team,\n\n"
        f"Thanks for your questions about {topic}. Our platform helps revenue teams forecast accurately, "
        "shorten sales cycles and keep data secure. "
    )
    if long:
        body += "We would also love to walk you through every module of our platform in detail. " * rng.randint(25, 40)
    if leak:
        body += f"Call our internal escalation line at +1 415 555 {rng.randint(1000, 9999)} any time. "
    return body + "\n\nBest regards,\nDana"


def demo_traffic(
    fixtures: str | os.PathLike[str] | None,
    n: int,
    *,
    seed: int = 42,
    vote_rate: float = 0.3,
    experiment_id: str = "1",
    clock: Callable[[], float] = time.time,
) -> Iterator[DemoTrace]:
    """`n` traces in phase order, stamped with the current time as they are generated.

    The fixtures default to `find_fixtures()`.
    """
    rng = random.Random(seed)
    templates = load_templates(fixtures)
    ok, err = templates.named("01_ok_acme"), templates.named("04_error_crm_timeout")
    bounds: list[tuple[int, Phase]] = []
    acc = 0.0
    for ph in PHASES:
        acc += ph.share
        bounds.append((round(acc * n), ph))
    for i in range(n):
        phase = next(ph for limit, ph in bounds if i < limit)
        failed = rng.random() < phase.error_rate
        account, acct_id = rng.choice(ACCOUNTS)
        topic = rng.choice(TOPICS)
        leak = not failed and rng.random() < phase.leak_rate
        long = not failed and phase.name == "regression" and rng.random() < 0.4
        slow = rng.random() < phase.slow_rate
        tid = new_trace_id(rng)
        user = f"rep-{rng.randint(1, 40)}"
        bad = failed or leak or long
        text = None
        if not failed:
            text = _email(account, topic, rng, long=long, leak=leak) + (f" {BAD_MARKER}" if bad else "")
        duration = rng.randint(3200, 7000) if slow else rng.randint(600, 2400)
        data = (err if failed else ok).render(
            tid,
            start_ms=int(clock() * 1000) - duration,
            duration_ms=duration,
            experiment=experiment_id,
            client_request_id=f"req-{i:06d}",
            inputs={"request": f"Draft a short intro email to {account} addressing {topic}.", "account_id": acct_id},
            outputs=text,
            tags={"app.version": "1.5.0" if phase.name == "regression" else "1.4.2"},
            metadata={"mlflow.trace.user": user},
        )
        votes = rng.random() < vote_rate
        happy = rng.random() < (phase.thumbs_up if not bad else phase.thumbs_up * 0.5)
        yield DemoTrace(tid, phase.name, data, bad, happy if votes else None, user)
