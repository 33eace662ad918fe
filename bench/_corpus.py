"""The benchmark corpus: realistic MLflow trace JSON made from the real fixtures.

Every scenario runs on the same `Corpus`: fresh `tr-` + 32 hex ids, three experiments,
outputs of varying length (so word counts differ) and latencies drawn from a log-normal
(so `latency_under` both passes and fails). Shapes follow the fixtures: mostly ~10 KB traces
with 6 spans, some errors (no outputs), some with assessments, a few ~30 KB ones.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["FIXTURES", "Corpus", "build_corpus", "rfc3339_ms"]

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "mlflow"

# (fixture stem, weight): mostly OK traces, some errors, some with assessments, a few large.
_MIX = (
    ("01_ok_acme", 24),
    ("02_ok_globex", 22),
    ("03_ok_initech", 22),
    ("04_error_crm_timeout", 8),
    ("05_with_assessments", 8),
    ("06_ok_long_output", 10),
    ("07_after_evaluate_and_judges", 6),
)
_EXPERIMENTS = ("1", "2", "3")
_SENTENCES = (
    "We appreciate your partnership and would love to walk you through how our platform helps revenue teams.",
    "Our enterprise tier includes SSO, SCIM provisioning and a dedicated onboarding manager.",
    "Pricing is per seat with annual billing, and volume discounts apply above 200 seats.",
    "Your data stays encrypted at rest and in transit, and we are SOC 2 Type II certified.",
    "Happy to set up a 30-minute call next week to go over the rollout plan with your team.",
    "Customers like yours typically shorten their sales cycle by two to three weeks.",
    "Let me know which of the attached case studies is closest to your situation.",
)


def rfc3339_ms(epoch_ms: int) -> str:
    """`2026-11-26T20:49:52.975Z`: MLflow's `request_time` form (always 24 characters)."""
    dt = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


@dataclass(slots=True)
class Corpus:
    """N traces as wire bytes, with what the scenarios need to know about each."""

    ids: list[str]
    data: list[bytes]
    request_time: list[str]
    duration_ms: list[int]
    experiments: tuple[str, ...] = _EXPERIMENTS
    sizes: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def with_end_at(self, i: int, end_ms: int) -> bytes:
        """Trace i re-timed so that it ends at `end_ms` (for end-to-end latency).

        The worker's end-to-end clock starts at the trace's own end (`request_time` +
        `execution_duration_ms`), so the publisher stamps the publish moment into it.
        """
        old = b'"request_time":"' + self.request_time[i].encode()
        new = b'"request_time":"' + rfc3339_ms(end_ms - self.duration_ms[i]).encode()
        return self.data[i].replace(old, new, 1)

    def cycle(self, n: int, *, seed: int = 1) -> Iterator[tuple[str, bytes]]:
        """`n` traces cycling through the corpus, each under a fresh id (for long runs).

        Replacing the id bytes is ~100x cheaper than building a trace, so a publisher can
        feed a million traces without becoming the bottleneck.
        """
        rng = random.Random(seed)
        ids = self.ids
        data = self.data
        m = len(ids)
        for k in range(n):
            i = k % m
            tid = f"tr-{rng.getrandbits(128):032x}"
            yield tid, data[i].replace(ids[i].encode(), tid.encode())


def _root(spans: list[dict[str, Any]]) -> int:
    for i, s in enumerate(spans):
        if not s.get("parent_span_id"):
            return i
    return 0


def _vary_text(text: str, rng: random.Random) -> str:
    """An email of a random length (10..600 words), in the fixture's shape."""
    head, _, _ = text.partition("\n\n")
    target = int(rng.lognormvariate(math.log(120), 0.9))
    target = max(10, min(target, 600))
    words: list[str] = []
    while len(words) < target:
        words.extend(rng.choice(_SENTENCES).split())
    body = " ".join(words[:target])
    return f"{head}\n\nHi team,\n\n{body}\n\nBest regards,\nDana"


def _load_templates(root: Path) -> list[tuple[dict[str, Any], int]]:
    out = []
    for stem, weight in _MIX:
        path = root / f"mlflow_trace_{stem}.json"
        out.append((orjson.loads(path.read_bytes()), weight))
    return out


def build_corpus(n: int, *, seed: int = 42, fixtures: Path = FIXTURES, now_ms: int | None = None) -> Corpus:
    """Make `n` traces (deterministic for a seed, apart from the time base).

    Request times spread over the hour before `now_ms`, so per-minute aggregates get many
    keys, as in production.

    Raises:
        FileNotFoundError: the fixtures are not where `fixtures` says.
    """
    rng = random.Random(seed)
    templates = _load_templates(fixtures)
    weights = [w for _, w in templates]
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    base_ms = now_ms - 3_600_000
    ids: list[str] = []
    data: list[bytes] = []
    times: list[str] = []
    durations: list[int] = []
    sizes: list[int] = []
    for k in range(n):
        tpl = rng.choices(templates, weights)[0][0]
        info = dict(tpl["info"])
        old_id = info["trace_id"]
        tid = f"tr-{rng.getrandbits(128):032x}"
        exp = rng.choice(_EXPERIMENTS)
        duration = max(20, min(int(rng.lognormvariate(math.log(900), 0.8)), 20_000))
        start_ms = base_ms + (k * 3_600_000) // max(n, 1)
        rt = rfc3339_ms(start_ms)
        info["request_time"] = rt
        info["execution_duration_ms"] = duration
        info["trace_location"] = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}}
        meta = dict(info.get("trace_metadata") or {})
        spans = list(tpl["data"]["spans"])
        if rng.random() < 0.1:  # an answer without retrieval: `has_retriever_span` fails
            spans = [s for s in spans if '"RETRIEVER"' not in str((s.get("attributes") or {}).get("mlflow.spanType"))]
        ri = _root(spans)
        root = dict(spans[ri])
        attrs = dict(root.get("attributes") or {})
        raw_out = attrs.get("mlflow.spanOutputs")
        if raw_out is not None:
            out = orjson.loads(raw_out)
            if isinstance(out, str):
                out = _vary_text(out, rng)
                encoded = orjson.dumps(out).decode()
                attrs["mlflow.spanOutputs"] = encoded
                meta["mlflow.traceOutputs"] = encoded[:250] + ("..." if len(encoded) > 250 else "")
                info["response_preview"] = encoded[:1000]
        # The root span's clock follows the new start and duration (nanoseconds).
        start_ns = start_ms * 1_000_000
        root["start_time_unix_nano"] = start_ns
        root["end_time_unix_nano"] = start_ns + duration * 1_000_000
        root["attributes"] = attrs
        spans[ri] = root
        info["trace_metadata"] = meta
        if "tags" in info and isinstance(info["tags"], dict):
            tags = dict(info["tags"])
            tags["mlflow.artifactLocation"] = f"mlruns/{exp}/traces/{tid}/artifacts"
            info["tags"] = tags
        blob = orjson.dumps({"info": info, "data": {**tpl["data"], "spans": spans}})
        blob = blob.replace(old_id.encode(), tid.encode())
        ids.append(tid)
        data.append(blob)
        times.append(rt)
        durations.append(duration)
        sizes.append(len(blob))
    ordered = sorted(sizes) or [0]
    stats = {
        "mean_bytes": sum(sizes) / max(len(sizes), 1),
        "p50_bytes": float(ordered[len(ordered) // 2]),
        "max_bytes": float(ordered[-1]),
        "share_over_25kb": sum(1 for s in sizes if s > 25_000) / max(len(sizes), 1),
    }
    return Corpus(ids, data, times, durations, sizes=stats)
