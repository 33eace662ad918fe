"""The feedback join in Redis: exact agreement counts whatever the arrival order or replays."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinks import FeedbackRecord, JoinCounts, RedisKeys, RedisSink
from sinks._join import parse_counts
from tests.sinks.conftest import delete_prefix
from tests.sinks.test_redis import M0, make

pytestmark = pytest.mark.integration


def vote(trace: str, thumb: str, user: str = "u1", name: str = "user_satisfaction", eid: str | None = None) -> FeedbackRecord:
    payload = orjson.dumps({"name": name, "value": thumb == "up", "source": {"source_id": user}})
    return FeedbackRecord(trace, name, user, thumb, payload, eid or uuid.uuid4().hex)


def expected_cells(verdicts: dict[str, str], votes: dict[tuple[str, str], str]) -> dict[str, int]:
    """Reference: every (verdict of a trace) x (current vote on that trace) cell, counted once."""
    cells: dict[str, int] = {}
    for (trace, _user), thumb in votes.items():
        if trace in verdicts:
            key = f"{verdicts[trace]}:{thumb}"
            cells[key] = cells.get(key, 0) + 1
    return cells


async def test_feedback_before_and_after_scores_same_counts(client, prefix):
    orders = []
    for before in (True, False):
        p = f"{prefix}{before}:"
        sink = RedisSink(client, prefix=p)
        pairs = [[make("tr-a", "judge", value=True)], [make("tr-b", "judge", value=False)]]
        events = [vote("tr-a", "up"), vote("tr-b", "up"), vote("tr-b", "down", user="u2")]
        if before:
            r1 = await sink.write_all([], events)
            r2 = await sink.write_all(pairs, [])
        else:
            r1 = await sink.write_all(pairs, [])
            r2 = await sink.write_all([], events)
        moved = sorted(r1.joins.agreements + r2.joins.agreements)
        orders.append((await sink.agreement("1", "judge"), await sink.votes("1", "user_satisfaction"), moved))
    assert orders[0] == orders[1]
    cells, votes, moved = orders[0]
    assert cells == {"pass:up": 1, "fail:up": 1, "fail:down": 1}
    assert votes == {"up": 2, "down": 1}
    assert moved == sorted([("1", "judge", "pass", "up"), ("1", "judge", "fail", "up"), ("1", "judge", "fail", "down")])


async def test_redelivery_and_duplicates_count_once(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    pairs = [[make("tr-a", "judge", value=True)]]
    ev = vote("tr-a", "down")
    first = await sink.write_all(pairs, [ev])
    again = await sink.write_all(pairs, [ev, ev])
    assert first.events_new == [True] and again.events_new == [False, False]
    assert again.joins.agreements == [] and again.joins.votes == []
    assert await sink.agreement("1", "judge") == {"pass:down": 1}


async def test_a_new_vote_replaces_the_old(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    await sink.write_all([[make("tr-a", "judge", value=True)]], [vote("tr-a", "up")])
    r = await sink.write_all([], [vote("tr-a", "down")])
    assert await sink.agreement("1", "judge") == {"pass:up": 0, "pass:down": 1}
    assert await sink.votes("1", "user_satisfaction") == {"up": 0, "down": 1}
    assert r.joins.agreements == [("1", "judge", "pass", "down")]
    doc = await sink.get_trace("tr-a")
    assert list(doc["feedback"]["user_satisfaction"]) == ["u1"]


async def test_non_boolean_feedback_is_stored_not_joined(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    text = FeedbackRecord("tr-a", "comment", "u1", "", orjson.dumps({"value": "too long"}), "e1")
    await sink.write_all([[make("tr-a", "judge", value=True)]], [text])
    assert await sink.agreement("1", "judge") == {}
    assert (await sink.get_trace("tr-a"))["feedback"]["comment"]["u1"] == {"value": "too long"}


async def test_random_orders_and_replays_match_recomputation(client, prefix):
    """Any interleaving of scores, votes, vote changes and replays ends at the same exact counts."""
    rng = random.Random(5)
    for round_ in range(6):
        p = f"{prefix}r{round_}:"
        sink = RedisSink(client, prefix=p)
        traces = [f"tr-{i}" for i in range(30)]
        verdicts = {t: rng.choice(["pass", "fail"]) for t in traces if rng.random() < 0.8}
        ops: list[tuple[str, object]] = [("pair", [make(t, "judge", value=v == "pass")]) for t, v in verdicts.items()]
        current: dict[tuple[str, str], str] = {}
        for t, user in itertools.product(traces, ["u1", "u2"]):
            if rng.random() < 0.6:
                for _ in range(rng.choice([1, 1, 2])):  # sometimes the user changes their mind
                    thumb = rng.choice(["up", "down"])
                    ops.append(("vote", vote(t, thumb, user=user)))
        # votes of one (trace, user) must keep their order (one partition); the rest shuffles
        rng.shuffle(ops)
        seen: dict[tuple[str, str], int] = {}
        ordered = []
        votes_by_key: dict[tuple[str, str], list[FeedbackRecord]] = {}
        for kind, item in ops:
            if kind == "vote":
                assert isinstance(item, FeedbackRecord)
                votes_by_key.setdefault((item.trace_id, item.user), []).append(item)
        for kind, item in ops:
            if kind == "vote":
                assert isinstance(item, FeedbackRecord)
                k = (item.trace_id, item.user)
                item = votes_by_key[k][seen.get(k, 0)]
                seen[k] = seen.get(k, 0) + 1
                current[k] = item.thumb
            ordered.append((kind, item))
        for i in range(0, len(ordered), 7):
            chunk = ordered[i : i + 7]
            pairs = [x for k, x in chunk if k == "pair"]
            events = [x for k, x in chunk if k == "vote"]
            await sink.write_all(pairs, events)  # type: ignore[arg-type]
            if rng.random() < 0.3:  # a redelivery of the same batch
                await sink.write_all(pairs, events)  # type: ignore[arg-type]
        got = {k: v for k, v in (await sink.agreement("1", "judge")).items() if v}
        assert got == expected_cells(verdicts, current), round_
        ups = sum(1 for (t, _), th in current.items() if th == "up" and t in verdicts)
        downs = sum(1 for (t, _), th in current.items() if th == "down" and t in verdicts)
        votes = await sink.votes("1", "user_satisfaction")
        assert (votes.get("up", 0), votes.get("down", 0)) == (ups, downs)


# --- separators in ids and names (issue 11, break 3) -------------------------------------------


async def test_experiment_id_with_a_separator_then_votes(client, prefix):
    """Repro: a `\\x1f` in the experiment id made `parse_counts` raise on every moved vote."""
    sink = RedisSink(client, prefix=prefix)
    exp = "x\x1fy"
    await sink.write_all([[make("tr-a", "judge", value=True, exp=exp)]], [])
    r = await sink.write_all([], [vote("tr-a", "up")])
    assert r.joins.votes == [(exp, "user_satisfaction", "up")]
    assert r.joins.agreements == [(exp, "judge", "pass", "up")] and r.joins.malformed == 0
    r = await sink.write_all([], [vote("tr-a", "down")])  # a changed vote moves the counts
    assert r.joins.agreements == [(exp, "judge", "pass", "down")]
    assert await sink.agreement(exp, "judge") == {"pass:up": 0, "pass:down": 1}
    assert await sink.votes(exp, "user_satisfaction") == {"up": 0, "down": 1}
    doc = await sink.get_trace("tr-a")
    assert doc is not None and doc["experiment_id"] == exp
    assert await sink.experiments() == {exp}
    # the vote arriving first, counted when the trace is scored, is reported the same way
    r = await sink.write_all([], [vote("tr-b", "up", user="u2")])
    r = await sink.write_all([[make("tr-b", "judge", value=False, exp=exp)]], [])
    assert r.joins.votes == [(exp, "user_satisfaction", "up")] and r.joins.agreements == [(exp, "judge", "fail", "up")]


@pytest.mark.parametrize("forged_first", [True, False])
async def test_feedback_name_starting_with_a_separator_stays_its_own_vote(client, prefix, forged_first):
    """Repro: a name `\\x1e...` posed as another user's counted-vote mark, suppressing that vote."""
    sink = RedisSink(client, prefix=prefix)
    forged = "\x1euser_satisfaction"
    await sink.write_all([[make("tr-a", "judge", value=True)]], [])
    real = [vote("tr-a", "up", user="bob")]
    fake = [vote("tr-a", "down", user="bob", name=forged)]
    moved = []
    for events in (fake, real) if forged_first else (real, fake):
        moved.append((await sink.write_all([], events)).joins)
    # bob changes his real vote: it must move from up to down, whatever the forged name did
    moved.append((await sink.write_all([], [vote("tr-a", "down", user="bob")])).joins)
    assert await sink.votes("1", "user_satisfaction") == {"up": 0, "down": 1}
    assert await sink.votes("1", forged) == {"down": 1}
    # two current votes (one per name) on one verdict: two cells, no more
    assert {k: v for k, v in (await sink.agreement("1", "judge")).items() if v} == {"pass:down": 2}
    assert all(j.malformed == 0 for j in moved)
    assert sorted(v for j in moved for v in j.votes) == sorted(
        [("1", "user_satisfaction", "up"), ("1", forged, "down"), ("1", "user_satisfaction", "down")]
    )
    doc = await sink.get_trace("tr-a")
    assert doc is not None
    assert doc["feedback"][forged]["bob"]["value"] is False
    assert doc["feedback"]["user_satisfaction"]["bob"]["value"] is False


def test_parse_counts_reports_what_it_cannot_parse(caplog):
    counts = JoinCounts()
    good = "\x1f".join(["a%3Ab", "judge", "pass", "up"])
    parse_counts(counts, "\x1e".join([good, "x\x1fy", "1\x1fs\x1fmaybe\x1fup", ""]), "1\x1fn\x1fup\x1e1\x1fn")
    assert counts.agreements == [("a:b", "judge", "pass", "up")] and counts.votes == [("1", "n", "up")]
    assert counts.malformed == 4 and "malformed" in caplog.text


# Parts of ids and names an attacker would pick, any Unicode, and very long ones.
_tricky = st.sampled_from(
    ["", "%", ":", "\x1f", "\x1e", "%3A", "%1F", "{x}", "\n", "a:b", "\x1euser_satisfaction", "1"]
)
_part = st.one_of(
    _tricky,
    st.text(st.characters(codec="utf-8"), max_size=8),
    st.lists(st.one_of(_tricky, st.text(max_size=2)), min_size=1, max_size=4).map("".join),
    st.builds(lambda s, n: s * n, st.sampled_from(["x", "\x1f:", "%é"]), st.integers(200, 2000)),
)
_two = st.lists(_part, min_size=2, max_size=2, unique=True)


@st.composite
def _join_histories(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, list[object]]]]:
    """Two experiments, scorers, feedback names and users; verdicts and votes in any order."""
    exps, scorers, names, users = draw(_two), draw(_two), draw(_two), draw(_two)
    traces = [f"tr-{i}" for i in range(3)]
    trace_exp = {t: draw(st.sampled_from(exps)) for t in traces}
    ops: list[tuple[str, object]] = []
    for t in traces:
        for s in scorers:
            if draw(st.booleans()):
                ops.append(("pair", [make(t, s, value=draw(st.booleans()), exp=trace_exp[t])]))
    for _ in range(draw(st.integers(1, 10))):
        t, n, u = draw(st.sampled_from(traces)), draw(st.sampled_from(names)), draw(st.sampled_from(users))
        ops.append(("vote", vote(t, draw(st.sampled_from(["up", "down"])), user=u, name=n)))
    ops = draw(st.permutations(ops))
    batches: list[tuple[str, list[object]]] = []
    i = 0
    while i < len(ops):
        k = draw(st.integers(1, 3))
        chunk = [x for _, x in ops[i : i + k]]
        batches.append(("write", chunk))
        if draw(st.integers(0, 3)) == 0:
            batches.append(("write", chunk))  # a redelivered batch
        i += k
    return [*exps, *scorers, *names, *users], batches


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(_join_histories())
async def test_join_counts_equal_recomputation_whatever_the_names(client, history):
    """Key injection: through the real scripts, counts equal a plain recomputation for any names."""
    (e1, e2, s1, s2, n1, n2, _, _), batches = history
    p = f"twtest:{uuid.uuid4().hex}:"
    sink = RedisSink(client, prefix=p)
    verdicts: dict[tuple[str, str], tuple[str, str]] = {}  # (trace, scorer) -> (exp, pass|fail)
    trace_exp: dict[str, str] = {}
    current: dict[tuple[str, str, str], str] = {}  # (trace, name, user) -> thumb
    seen_events: set[str] = set()
    reported = JoinCounts()
    try:
        for _, chunk in batches:
            pairs = [x for x in chunk if isinstance(x, list)]
            events = [x for x in chunk if isinstance(x, FeedbackRecord)]
            r = await sink.write_all(pairs, events)
            reported.agreements += r.joins.agreements
            reported.votes += r.joins.votes
            reported.malformed += r.joins.malformed
            for pair in pairs:
                a = pair[0]
                trace_exp.setdefault(a.trace_id, a.experiment_id)
                verdicts.setdefault((a.trace_id, a.scorer), (a.experiment_id, a.outcome))
            for ev in events:
                if ev.event_id not in seen_events:
                    seen_events.add(ev.event_id)
                    current[(ev.trace_id, ev.name, ev.user)] = ev.thumb
        assert reported.malformed == 0
        for exp in (e1, e2):
            for s in (s1, s2):
                want: Counter[str] = Counter()
                for (t, scorer), (_, verdict) in verdicts.items():
                    if scorer == s and trace_exp[t] == exp:
                        want.update(f"{verdict}:{th}" for (vt, _, _), th in current.items() if vt == t)
                got = {k: v for k, v in (await sink.agreement(exp, s)).items() if v}
                assert got == dict(want), (exp, s)
            for n in (n1, n2):
                want_v = Counter(th for (t, name, _), th in current.items() if name == n and trace_exp.get(t) == exp)
                got_v = {k: v for k, v in (await sink.votes(exp, n)).items() if v}
                assert got_v == dict(want_v), (exp, n)
        # every reported move decodes to a real (experiment, scorer|name): Prometheus labels are right
        assert {(e, s) for e, s, _, _ in reported.agreements} <= {(e, s) for e in (e1, e2) for s in (s1, s2)}
        assert {(e, n) for e, n, _ in reported.votes} <= {(e, n) for e in (e1, e2) for n in (n1, n2)}
        for t, exp in trace_exp.items():
            doc = await sink.get_trace(t)
            assert doc is not None and doc["experiment_id"] == exp
            want_fb = {(n, u) for (vt, n, u) in current if vt == t}
            assert {(n, u) for n, by in doc["feedback"].items() for u in by} == want_fb
        assert await sink.experiments() == set(trace_exp.values())
        for exp in set(trace_exp.values()):  # aggregates and coverage under the same names
            mine = Counter(s for (t, s) in verdicts if trace_exp[t] == exp)
            assert await sink.scorers(exp) == await sink.names(exp) == set(mine)
            for s, n in mine.items():
                assert await sink.coverage(exp, s) == {"scored": n}
                assert (await sink.aggregates(exp, s, start_minute=M0, end_minute=M0 + 1)).count == n
        # only keys RedisKeys names for the generated parts (nothing spilled into another's key)
        keys = RedisKeys(p)
        agr = {k.decode() async for k in client.scan_iter(match=f"{p}agr:*", count=1000)}
        assert agr <= {keys.agreement(e, s) for e in (e1, e2) for s in (s1, s2)}
        fbc = {k.decode() async for k in client.scan_iter(match=f"{p}fbc:*", count=1000)}
        assert fbc <= {keys.votes(e, n) for e in (e1, e2) for n in (n1, n2)}
    finally:
        await delete_prefix(client, p)
