"""The feedback join in Redis: exact agreement counts whatever the arrival order or replays."""

from __future__ import annotations

import itertools
import random
import uuid

import orjson
import pytest

from sinks import FeedbackRecord, RedisSink
from tests.sinks.test_redis import make

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
