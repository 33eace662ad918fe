"""The key encoding: every key and packed value is injective in its parts, whatever their bytes."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sinks import RedisKeys
from sinks._keys import REC, SEP, decode, encode, pack, unpack

# Parts an attacker would pick (separators, escape sequences, braces, newlines, empty), any
# Unicode (surrogates cannot reach us: they are not UTF-8), and very long strings.
tricky = st.sampled_from(
    ["", "1", "%", ":", SEP, REC, "%3A", "%25", "%1F", "%1E", "%%", "a:b", "{x}", "}{", "\n", "\x00", REC + "x", "é"]
)
part = st.one_of(
    tricky,
    st.text(st.characters(codec="utf-8"), max_size=12),
    st.lists(st.one_of(tricky, st.text(max_size=3)), max_size=6).map("".join),
    st.builds(lambda s, n: s * n, st.sampled_from(["a", ":", "%1F", "é" + SEP, REC]), st.integers(300, 3000)),
)


@given(part)
def test_encode_leaves_no_separator_and_decodes_back(p: str) -> None:
    e = encode(p)
    assert not any(s in e for s in (":", SEP, REC))
    assert "%" not in re.sub("%(?:25|3A|1E|1F)", "", e)  # every % starts an escape
    assert decode(e) == p
    assert unpack(pack(p, p), 2) == [p, p]


@given(st.text(st.sampled_from("abcXYZ019-_."), max_size=40))
def test_ordinary_ids_are_unchanged(p: str) -> None:
    """Keys of ordinary ids stay byte-identical to earlier versions (dashboards, old data)."""
    assert encode(p) == p and decode(p) == p


def test_known_keys_are_unchanged() -> None:
    k = RedisKeys("tw:")
    assert k.aggregate("7", "quality.relevance", 29000000) == "tw:agg:7:quality.relevance:29000000"
    assert k.coverage("a:b", "is_polite") == "tw:cov:a%3Ab:is_polite"  # as the old escape wrote it
    assert (
        k.agreement("1", "judge") == "tw:agr:1:judge"
        and k.votes("1", "user_satisfaction") == "tw:fbc:1:user_satisfaction"
    )


@settings(max_examples=300)
@given(st.tuples(part, part, part, st.integers(0, 10**8)), st.tuples(part, part, part, st.integers(0, 10**8)))
def test_distinct_tuples_never_share_a_key_or_packed_value(
    a: tuple[str, str, str, int], b: tuple[str, str, str, int]
) -> None:
    k = RedisKeys("tw:")
    keys_a = _keys(k, *a)
    if a == b:
        assert keys_a == _keys(k, *b)
        return
    keys_b = _keys(k, *b)
    # a key family is injective in its own arguments ...
    for (fam, args_a, key_a), (_, args_b, key_b) in zip(keys_a, keys_b, strict=True):
        assert (key_a == key_b) == (args_a == args_b), fam
    # ... and no two families, or two argument tuples, ever meet
    every = keys_a + keys_b
    assert len({key for _, _, key in every}) == len({(fam, args) for fam, args, _ in every})
    # packed values (the join's hash fields and reported counts): injective over tuples of
    # any arity, and never starting with the mark prefix RS
    full_a, full_b = (*a[:3], str(a[3]), a[0]), (*b[:3], str(b[3]), b[0])
    packed: dict[str, tuple[str, ...]] = {}
    for t in {full_a[:n] for n in range(1, 6)} | {full_b[:n] for n in range(1, 6)}:
        v = pack(*t)
        assert packed.setdefault(v, t) == t
        assert not v.startswith(REC) and REC not in v


def _keys(k: RedisKeys, exp: str, s: str, name: str, minute: int) -> list[tuple[str, tuple[object, ...], str]]:
    return [
        ("agg", (exp, name, minute), k.aggregate(exp, name, minute)),
        ("cov", (exp, s), k.coverage(exp, s)),
        ("covm", (exp, s, minute), k.coverage_minute(exp, s, minute)),
        ("scorers", (exp,), k.scorers(exp)),
        ("names", (exp,), k.names(exp)),
        ("agr", (exp, s), k.agreement(exp, s)),
        ("fbc", (exp, name), k.votes(exp, name)),
        ("t", (s,), k.trace(s)),
        ("raw", (s,), k.raw(s)),
    ]


def test_decode_never_raises_on_foreign_text() -> None:
    """Stored text not written by `encode` (older versions) decodes without an error."""
    cases = {"%": "%", "%zz": "%zz", "%3": "%3", "100%": "100%", "%3a": "%3a", "%%3A": "%:", "a%3Ab": "a:b"}
    for text, want in cases.items():
        assert decode(text) == want
    assert unpack("a" + SEP + "b", 3) is None and unpack("", 1) == [""]
