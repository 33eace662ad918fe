"""Where a pair's results go: the Redis key layout and the few facts both sinks derive from a pair.

Redis (the `RedisSink` Lua script) and Prometheus (`Metrics.record_pairs`) must count a pair
the same way, or dashboards built on one disagree with the API built on the other. So the
state of a pair, the minute an assessment counts in and the number an aggregate sums live
here, once.

Key layout (`p` is the prefix, default `tw:`; `{exp}` is the experiment id with `%` and `:`
percent-encoded, so that keys stay unambiguous for any experiment id; MLflow's are digits):

    p t:{trace_id}                      hash   `exp` -> {exp}, `a:{name}` -> assessment JSON,
                                               `done:{scorer}:{version}` -> write token (the guard),
                                               `f:{name}` -> feedback JSON (written by the feedback join)
    p agg:{exp}:{name}:{minute}         hash   count, sum, pass, fail, error, value
    p cov:{exp}:{scorer}                hash   scored, error, skipped, skipped:{reason}, error:{code}
    p covm:{exp}:{scorer}:{minute}      hash   the same, per minute
    p experiments                       set    {exp} of every experiment
    p scorers:{exp}                     set    scorer names (the coverage keys)
    p names:{exp}                       set    assessment names (the aggregate keys)
"""

from __future__ import annotations

from collections.abc import Sequence

from scorers import Assessment

__all__ = ["RedisKeys"]

_MAX_SUMMABLE = 1e300
"""Larger magnitudes could overflow a float sum in Redis, which fails the script midway."""


def escape(part: str) -> str:
    """Percent-encode `%` and `:` so a key component never splits differently."""
    if "%" in part or ":" in part:
        return part.replace("%", "%25").replace(":", "%3A")
    return part


def unescape(part: str) -> str:
    """Undo `escape`."""
    if "%" in part:
        return part.replace("%3A", ":").replace("%25", "%")
    return part


class RedisKeys:
    """The names of the keys `RedisSink` writes under one prefix.

    The Lua script builds the same names on the server; `tests/sinks/test_redis.py` reads
    every key through this class, so a drift between the two fails there.

    Example:
        >>> RedisKeys("tw:").aggregate("7", "relevance", 29000000)
        'tw:agg:7:relevance:29000000'
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "tw:") -> None:
        self.prefix = prefix

    def trace(self, trace_id: str) -> str:
        """The per-trace hash: latest assessment per name, the experiment and the guards."""
        return f"{self.prefix}t:{trace_id}"

    def aggregate(self, experiment: str, name: str, minute: int) -> str:
        """Per-minute counters of one assessment name in one experiment."""
        return f"{self.prefix}agg:{escape(experiment)}:{name}:{minute}"

    def coverage(self, experiment: str, scorer: str) -> str:
        """All-time counts of pair states of one scorer in one experiment."""
        return f"{self.prefix}cov:{escape(experiment)}:{scorer}"

    def coverage_minute(self, experiment: str, scorer: str, minute: int) -> str:
        """Per-minute counts of pair states of one scorer in one experiment."""
        return f"{self.prefix}covm:{escape(experiment)}:{scorer}:{minute}"

    @property
    def experiments(self) -> str:
        """The set of experiment ids seen."""
        return f"{self.prefix}experiments"

    def scorers(self, experiment: str) -> str:
        """The set of scorer names seen in an experiment."""
        return f"{self.prefix}scorers:{escape(experiment)}"

    def names(self, experiment: str) -> str:
        """The set of assessment names seen in an experiment."""
        return f"{self.prefix}names:{escape(experiment)}"


def pair_state(pair: Sequence[Assessment]) -> tuple[str, str | None]:
    """The one final state of a sampled pair and its skip reason or error code.

    A skipped pair is skipped. A pair is `error` only when every assessment in it is an
    error: a scorer that returned several feedbacks, some failed, did run, so it is `scored`
    (the failed feedbacks still count as `error` in the aggregates).
    """
    first = pair[0]
    if first.state == "skipped":
        return "skipped", first.skip_reason or "unknown"
    if first.state == "error":
        for a in pair:
            if a.state != "error":
                return "scored", None
        err = first.error
        return "error", err.error_code if err is not None else "UNKNOWN"
    return "scored", None


def minute_of(a: Assessment) -> int:
    """The minute an assessment counts in: of the trace's end, so replays land in the same one."""
    end = a.trace_end_ms
    return (a.created_ms if end is None else end) // 60000


def summable(a: Assessment) -> float | None:
    """The number an aggregate adds (bools as 0/1), or None when there is none to add.

    Non-finite and astronomically large values are left out: Redis rejects an increment
    that would make the sum infinite, which would fail the write halfway.
    """
    try:
        x = a.numeric
    except OverflowError:  # an int too large for a float
        return None
    if x is None or not -_MAX_SUMMABLE <= x <= _MAX_SUMMABLE:  # also false for NaN
        return None
    return x
