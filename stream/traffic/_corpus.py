"""Corpora: the benchmark's N varied traces, and cycling fixtures under fresh ids for tests.

The benchmark corpus: fresh `tr-` + 32 hex ids, three experiments, outputs of varying length
(so word counts differ) and latencies drawn from a log-normal (so `latency_under` both passes
and fails). Shapes follow the fixtures: mostly ~10 KB traces with 6 spans, some errors (no
outputs), some with assessments, a few ~30 KB ones. For a seed and `now_ms` the bytes are the
same from version to version, so benchmark figures stay comparable.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from stream.traffic._template import Template, load_templates, new_trace_id, rfc3339_ms

__all__ = ["Corpus", "build_corpus", "synth_traces"]

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


@dataclass(slots=True)
class Corpus:
    """N traces as wire bytes, with what the benchmark scenarios need to know about each."""

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
            tid = new_trace_id(rng)
            yield tid, data[i].replace(ids[i].encode(), tid.encode())


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


def build_corpus(
    n: int, *, seed: int = 42, fixtures: str | os.PathLike[str] | None = None, now_ms: int | None = None
) -> Corpus:
    """Make `n` traces (deterministic for a seed, apart from the time base).

    Request times spread over the hour before `now_ms`, so per-minute aggregates get many
    keys, as in production. The fixtures default to `find_fixtures()`.

    Raises:
        FileNotFoundError: the fixtures are not where `fixtures` says.
    """
    rng = random.Random(seed)
    found = load_templates(fixtures)
    templates = [(found.named(stem), weight) for stem, weight in _MIX]
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
        tid = new_trace_id(rng)
        exp = rng.choice(_EXPERIMENTS)
        duration = max(20, min(int(rng.lognormvariate(math.log(900), 0.8)), 20_000))
        start_ms = base_ms + (k * 3_600_000) // max(n, 1)
        no_retrieval = rng.random() < 0.1  # an answer without retrieval: `has_retriever_span` fails
        text = tpl.output_text
        blob = tpl.render(
            tid,
            start_ms=start_ms,
            duration_ms=duration,
            experiment=exp,
            outputs=None if text is None else _vary_text(text, rng),
            without_span_type="RETRIEVER" if no_retrieval else None,
            retime_children=False,  # both off: the corpus stays byte-identical across versions
            span_trace_ids=False,
        )
        ids.append(tid)
        data.append(blob)
        times.append(rfc3339_ms(start_ms))
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


def synth_traces(templates: Iterable[bytes], n: int, *, seed: int = 7, prefix: str = "") -> Iterator[tuple[str, bytes]]:
    """`n` (trace_id, json bytes) pairs cycling through the given traces, each under a fresh id."""
    rng = random.Random(seed)
    parsed = [Template.parse(f"#{k}", raw) for k, raw in enumerate(templates)]
    for i in range(n):
        tid = new_trace_id(rng, prefix)
        yield tid, parsed[i % len(parsed)].with_id(tid)
