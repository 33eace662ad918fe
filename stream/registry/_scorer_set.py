"""The scorers a worker runs right now, and the per-trace decision of which ones apply.

A `ScorerSet` is an immutable snapshot: the registry swaps in a new one on change, so the
hot loop reads a plain tuple with no locks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scorers import Trace

__all__ = ["ActiveScorer", "ScorerSet", "parse_scorer_option"]

Predicate = Callable[[Trace], bool]


@dataclass(slots=True, frozen=True)
class ActiveScorer:
    """One scorer as the worker runs it: which version, how often, on which traces."""

    scorer: Any  # scorers.Scorer (duck-typed: name, is_async, run, arun)
    name: str
    version: int = 1
    sample_rate: float = 1.0
    predicate: Predicate | None = None
    experiment_id: str | None = None  # None: every experiment
    budget: Any = None  # optional guardrail with `take() -> bool` (registry)

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate of {self.name!r} must be in [0, 1], got {self.sample_rate}")


@dataclass(slots=True, frozen=True)
class ScorerSet:
    """An immutable snapshot of active scorers, ordered by descending rate."""

    scorers: tuple[ActiveScorer, ...] = ()
    generation: int = 0
    names: frozenset[str] = field(default=frozenset())

    @classmethod
    def of(cls, scorers: Sequence[ActiveScorer], generation: int = 0) -> ScorerSet:
        ordered = tuple(sorted(scorers, key=lambda a: -a.sample_rate))
        keys = [(a.experiment_id, a.name) for a in ordered]
        dupes = {k for k in keys if keys.count(k) > 1}
        if dupes:
            raise ValueError(f"scorer names must be unique per experiment, repeated: {sorted(map(str, dupes))}")
        return cls(ordered, generation, frozenset(a.name for a in ordered))

    def __len__(self) -> int:
        return len(self.scorers)


def parse_scorer_option(text: str, resolve: Callable[[str], Any]) -> ActiveScorer:
    """Parse `REF[@RATE]` from the command line, e.g. `output_word_count@0.5`.

    `REF` is a built-in name or `package.module:attr`, resolved by `resolve` (normally
    `scorers.resolve_scorer`, which refuses anything outside the reference grammar before
    importing). The rate is checked first, so a bad rate never gets as far as an import.
    A text ending in `)` has no rate: an `@` inside its literal arguments is not a separator.

    Raises:
        ValueError: the rate is not a number in [0, 1] (the message says so).
    """
    ref, sep, rate_text = text.rpartition("@")
    if not sep or text.endswith(")"):
        ref, rate_text = text, "1.0"
    try:
        rate = float(rate_text)
    except ValueError:
        raise ValueError(f"scorer {text!r}: sample rate {rate_text!r} is not a number (use REF@0.25)") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"scorer {text!r}: sample rate must be in [0, 1], got {rate_text!r}")
    scorer = resolve(ref)
    return ActiveScorer(scorer=scorer, name=str(scorer.name), sample_rate=rate)
