"""Realistic traffic for the demo: the MLflow sales-email agent, with a regression in the middle.

Traces are the real MLflow fixtures (retriever, CRM tool, chat model, post-processing) under
new ids and current timestamps, with varied requests, outputs and latencies. In the
regression phase a "bad deploy" makes the CRM tool time out more often, the emails longer and
slower, and some of them leak a phone number; end users notice and vote down more.
"""

from __future__ import annotations

import copy
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["DemoTrace", "Phase", "demo_traffic", "load_templates"]

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


def load_templates(fixtures: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OK and the failing (CRM timeout) agent traces from the MLflow fixtures."""
    ok = orjson.loads((fixtures / "mlflow_trace_01_ok_acme.json").read_bytes())
    err = orjson.loads((fixtures / "mlflow_trace_04_error_crm_timeout.json").read_bytes())
    return ok, err


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


def _retime(trace: dict[str, Any], start_ns: int, duration_ms: int) -> None:
    info = trace["info"]
    info["request_time"] = datetime.fromtimestamp(start_ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
    info["execution_duration_ms"] = duration_ms
    spans = trace["data"]["spans"]
    t0 = min(s["start_time_unix_nano"] for s in spans)
    scale = duration_ms * 1e6 / max(1, max(s["end_time_unix_nano"] for s in spans) - t0)
    for s in spans:
        s["start_time_unix_nano"] = start_ns + int((s["start_time_unix_nano"] - t0) * scale)
        s["end_time_unix_nano"] = start_ns + int((s["end_time_unix_nano"] - t0) * scale)


def demo_traffic(
    fixtures: Path, n: int, *, seed: int = 42, vote_rate: float = 0.3, experiment_id: str = "1"
) -> Iterator[DemoTrace]:
    """`n` traces in phase order, stamped with the current time as they are generated."""
    rng = random.Random(seed)
    ok, err = load_templates(fixtures)
    bounds: list[tuple[int, Phase]] = []
    acc = 0.0
    for ph in PHASES:
        acc += ph.share
        bounds.append((round(acc * n), ph))
    for i in range(n):
        phase = next(ph for limit, ph in bounds if i < limit)
        failed = rng.random() < phase.error_rate
        trace = copy.deepcopy(err if failed else ok)
        account, acct_id = rng.choice(ACCOUNTS)
        topic = rng.choice(TOPICS)
        leak = not failed and rng.random() < phase.leak_rate
        long = not failed and phase.name == "regression" and rng.random() < 0.4
        slow = rng.random() < phase.slow_rate
        tid = f"tr-{uuid.UUID(int=rng.getrandbits(128)).hex}"
        info = trace["info"]
        info["trace_id"] = tid
        info["client_request_id"] = f"req-{i:06d}"
        info["trace_location"] = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}
        info["tags"] = {**info.get("tags", {}), "app.version": "1.5.0" if phase.name == "regression" else "1.4.2"}
        user = f"rep-{rng.randint(1, 40)}"
        info["trace_metadata"] = {**info.get("trace_metadata", {}), "mlflow.trace.user": user}
        request = {"request": f"Draft a short intro email to {account} addressing {topic}.", "account_id": acct_id}
        bad = failed or leak or long
        root = next(s for s in trace["data"]["spans"] if not s.get("parent_span_id"))
        root["attributes"]["mlflow.spanInputs"] = orjson.dumps(request).decode()
        root["attributes"]["mlflow.traceRequestId"] = orjson.dumps(tid).decode()
        if not failed:
            text = _email(account, topic, rng, long=long, leak=leak) + (f" {BAD_MARKER}" if bad else "")
            root["attributes"]["mlflow.spanOutputs"] = orjson.dumps(text).decode()
        duration = rng.randint(3200, 7000) if slow else rng.randint(600, 2400)
        _retime(trace, time.time_ns() - duration * 1_000_000, duration)
        votes = rng.random() < vote_rate
        happy = rng.random() < (phase.thumbs_up if not bad else phase.thumbs_up * 0.5)
        yield DemoTrace(tid, phase.name, orjson.dumps(trace), bad, happy if votes else None, user)
