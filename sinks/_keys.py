"""Where a pair's results go: the Redis key layout and the few facts both sinks derive from a pair.

Redis (the `RedisSink` Lua script) and Prometheus (`Metrics.record_pairs`) must count a pair
the same way, or dashboards built on one disagree with the API built on the other. So the
state of a pair, the minute an assessment counts in and the number an aggregate sums live
here, once.

Key layout (`p` is the prefix, default `tw:`). Every user-controlled part inside a key or a
packed value (experiment ids, scorer, assessment and feedback names, user ids, versions) is
written as `encode(part)`, shown `{exp}`, `{name}` ... below; a trace id is always the whole
rest of its key and goes in as is:

    p t:{trace_id}                      hash   `exp` -> {exp}, `a:{name}` -> assessment JSON,
                                               `o:{name}` -> {scorer} US {version} US pass|fail,
                                               `done:{scorer}:{version}` -> write token (the guard),
                                               `f:{fname} US {user}` -> feedback JSON,
                                               `e:{fname}` -> expectation JSON
    p agg:{exp}:{name}:{minute}         hash   count, sum, pass, fail, error, value
    p cov:{exp}:{scorer}                hash   scored, error, skipped, skipped:{reason}, error:{code}
    p covm:{exp}:{scorer}:{minute}      hash   the same, per minute
    p experiments                       set    {exp} of every experiment
    p scorers:{exp}                     set    {scorer} names (the coverage keys)
    p names:{exp}                       set    {name}s (the aggregate keys)
    p agr:{exp}:{scorer}                hash   pass:up, pass:down, fail:up, fail:down (`sinks._join`)
    p fbc:{exp}:{fname}                 hash   up, down
    p v: / ag: / fe: / raw:{trace_id}   the join's per-trace state and the stored wire form

Why this is unambiguous whatever the bytes: `encode` percent-encodes the escape character `%`
and every separator used anywhere (`:` in keys, US `\\x1f` between packed parts, RS `\\x1e`
between reported records and as the join's mark prefix), so an encoded part contains no
separator and decodes to exactly one string. Joining encoded parts with a separator is then
injective over tuples of a fixed arity, and the Lua scripts only concatenate encoded parts
or split at separators, never inside a part. Ordinary ids (letters, digits, `-`, `_`, `.`)
encode to themselves, so their keys are unchanged from earlier versions; keys written by
versions before this encoding with separators in a part are not migrated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from scorers import Assessment

__all__ = ["REC", "SEP", "RedisKeys", "decode", "encode", "pack", "unpack"]

_MAX_SUMMABLE = 1e300
"""Larger magnitudes could overflow a float sum in Redis, which fails the script midway."""


SEP = "\x1f"
"""Between the encoded parts of one packed value (a hash field or value holding several parts)."""
REC = "\x1e"
"""Between packed records in a script's reply; also the join's mark prefix in `v:` hashes."""

_ENCODE = str.maketrans({"%": "%25", ":": "%3A", REC: "%1E", SEP: "%1F"})
_DECODE = {"%25": "%", "%3A": ":", "%1E": REC, "%1F": SEP}
_ESCAPED = re.compile("%(?:25|3A|1E|1F)")


def encode(part: str) -> str:
    """`part` with `%` and every separator percent-encoded: no separator left, and injective.

    The identity on ordinary ids, which is the hot path (a few per pair written), so it
    scans before it allocates.

    Example:
        >>> encode("a:b"), encode("7")
        ('a%3Ab', '7')
    """
    if "%" in part or ":" in part or SEP in part or REC in part:
        return part.translate(_ENCODE)
    return part


def decode(part: str) -> str:
    """Undo `encode`. Never raises: a `%` not followed by one of its codes is kept as is."""
    if "%" in part:
        return _ESCAPED.sub(_decode_match, part)
    return part


def _decode_match(m: re.Match[str]) -> str:
    return _DECODE[m.group()]


def pack(*parts: str) -> str:
    """Parts as one packed value: encoded, joined by SEP (what the scripts build and parse)."""
    return SEP.join([encode(p) for p in parts])


def unpack(value: str, n: int) -> list[str] | None:
    """The `n` parts of a `pack`ed value, decoded; None when it does not have exactly `n`."""
    parts = value.split(SEP)
    if len(parts) != n:
        return None
    return [decode(p) for p in parts]


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
        return f"{self.prefix}agg:{encode(experiment)}:{encode(name)}:{minute}"

    def coverage(self, experiment: str, scorer: str) -> str:
        """All-time counts of pair states of one scorer in one experiment."""
        return f"{self.prefix}cov:{encode(experiment)}:{encode(scorer)}"

    def coverage_minute(self, experiment: str, scorer: str, minute: int) -> str:
        """Per-minute counts of pair states of one scorer in one experiment."""
        return f"{self.prefix}covm:{encode(experiment)}:{encode(scorer)}:{minute}"

    @property
    def experiments(self) -> str:
        """The set of experiment ids seen (encoded)."""
        return f"{self.prefix}experiments"

    def scorers(self, experiment: str) -> str:
        """The set of scorer names seen in an experiment (encoded)."""
        return f"{self.prefix}scorers:{encode(experiment)}"

    def names(self, experiment: str) -> str:
        """The set of assessment names seen in an experiment (encoded)."""
        return f"{self.prefix}names:{encode(experiment)}"

    def agreement(self, experiment: str, scorer: str) -> str:
        """Judge-vs-user cells of one scorer in one experiment (the feedback join)."""
        return f"{self.prefix}agr:{encode(experiment)}:{encode(scorer)}"

    def votes(self, experiment: str, name: str) -> str:
        """Current `up`/`down` counts of one feedback name in one experiment."""
        return f"{self.prefix}fbc:{encode(experiment)}:{encode(name)}"

    def raw(self, trace_id: str) -> str:
        """The stored (compressed) wire form of a sampled trace."""
        return f"{self.prefix}raw:{trace_id}"


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
