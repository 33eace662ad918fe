"""RedisSink against a real redis-server (see conftest.py)."""

from __future__ import annotations

import dataclasses
import math
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from typing import Any, cast

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from scorers import Assessment, AssessmentError, numeric_value
from sinks import Aggregate, RedisKeys, RedisSink, SinkDataError, SinkError, SinkUnavailableError

pytestmark = pytest.mark.integration

T0 = 1_750_000_020_000  # a trace end, 20 s into its minute
M0 = T0 // 60000
HOUR = 3600.0


def make(
    trace: str = "tr-1",
    scorer: str = "is_polite",
    *,
    name: str | None = None,
    value: object = True,
    exp: str = "1",
    version: int = 1,
    error: str | None = None,
    skip: str | None = None,
    end: int | None = T0,
    created: int = T0 + 5_000,
) -> Assessment:
    state = "skipped" if skip else ("error" if error else "scored")
    return Assessment(
        trace_id=trace,
        experiment_id=exp,
        scorer=scorer,
        name=name or scorer,
        scorer_version=version,
        value=None if (error or skip) else value,
        rationale="because",
        error=AssessmentError(error, "boom") if error else None,
        duration_s=0.25,
        created_ms=created,
        state=state,  # type: ignore[arg-type]
        skip_reason=skip,
        trace_end_ms=end,
    )


def batch() -> list[list[Assessment]]:
    return [
        [make("tr-1", "is_polite", value=True)],
        [
            make("tr-1", "quality", name="quality.relevance", value=0.8),
            make("tr-1", "quality", name="quality.safety", error="JUDGE_TIMEOUT"),
        ],
        [make("tr-2", "is_polite", skip="budget")],
        [make("tr-2", "length", value=42, end=None, created=T0 + 60_000)],
    ]


async def dump(c: aioredis.Redis, prefix: str) -> dict[Any, tuple[Any, Any, bool]]:
    """Every key under the prefix: type, content, and whether it has a TTL."""
    out: dict[Any, tuple[Any, Any, bool]] = {}
    async for k in c.scan_iter(match=f"{prefix}*", count=1000):
        kind = await c.type(k)
        content = await (c.hgetall(k) if kind == b"hash" else c.smembers(k))
        out[k] = (kind, content, await c.pttl(k) > 0)
    return out


async def agg(sink: RedisSink, exp: str, name: str) -> Aggregate:
    return await sink.aggregates(exp, name, start_minute=M0 - 5, end_minute=M0 + 5)


async def test_batch_lands_everywhere(client, prefix):
    sink = RedisSink(client, prefix=prefix, trace_ttl=HOUR, aggregate_ttl=2 * HOUR)
    assert await sink.write(batch()) == [True, True, True, True]

    t1 = await sink.get_trace("tr-1")
    assert t1 is not None
    assert t1["trace_id"] == "tr-1" and t1["experiment_id"] == "1" and t1["feedback"] == {}
    assert set(t1["assessments"]) == {"is_polite", "quality.relevance", "quality.safety"}
    polite = t1["assessments"]["is_polite"]
    assert polite["value"] is True and polite["outcome"] == "pass" and polite["rationale"] == "because"
    assert (
        polite["scorer_version"] == 1 and polite["trace_end_ms"] == T0 and polite["created_ms"] == T0 + 5000
    )
    assert polite["duration_s"] == 0.25 and polite["source"]["source_type"] == "CODE"
    assert t1["assessments"]["quality.safety"]["error"]["error_code"] == "JUDGE_TIMEOUT"
    t2 = await sink.get_trace("tr-2")
    assert t2 is not None
    assert t2["assessments"]["is_polite"]["state"] == "skipped"
    assert t2["assessments"]["length"]["value"] == 42
    assert await sink.get_trace("tr-missing") is None

    polite_agg = await agg(sink, "1", "is_polite")
    assert polite_agg == Aggregate(count=1, sum=1.0, passed=1)
    assert polite_agg.pass_rate == 1.0 and polite_agg.mean == 1.0 and polite_agg.error_rate == 0.0
    relevance = await agg(sink, "1", "quality.relevance")
    assert relevance == Aggregate(count=1, sum=0.8, values=1)
    assert relevance.pass_rate is None and relevance.mean == pytest.approx(0.8)
    safety = await agg(sink, "1", "quality.safety")
    assert safety == Aggregate(count=1, errors=1) and safety.mean is None and safety.error_rate == 1.0
    # Without a trace end the minute is the creation minute.
    assert await sink.aggregates("1", "length", start_minute=M0, end_minute=M0 + 1) == Aggregate()
    assert await sink.aggregates("1", "length", start_minute=M0 + 1, end_minute=M0 + 2) == Aggregate(
        count=1, sum=42.0, values=1
    )
    assert (await agg(sink, "1", "quality.relevance")).to_dict()["value"] == 1

    assert await sink.coverage("1", "is_polite") == {"scored": 1, "skipped": 1, "skipped:budget": 1}
    assert await sink.coverage("1", "quality") == {"scored": 1}  # one of two feedbacks failed: it ran
    assert await sink.coverage("1", "is_polite", start_minute=M0, end_minute=M0 + 1) == {
        "scored": 1,
        "skipped": 1,
        "skipped:budget": 1,
    }
    assert await sink.coverage("1", "length", start_minute=M0, end_minute=M0 + 1) == {}

    assert await sink.experiments() == {"1"}
    assert await sink.scorers("1") == {"is_polite", "quality", "length"}
    assert await sink.names("1") == {"is_polite", "quality.relevance", "quality.safety", "length"}

    # Every key is where RedisKeys says, and nothing else was written.
    keys = RedisKeys(prefix)
    expected_ttl = {
        keys.trace("tr-1"): HOUR,
        keys.trace("tr-2"): HOUR,
        keys.aggregate("1", "is_polite", M0): 2 * HOUR,
        keys.aggregate("1", "quality.relevance", M0): 2 * HOUR,
        keys.aggregate("1", "quality.safety", M0): 2 * HOUR,
        keys.aggregate("1", "length", M0 + 1): 2 * HOUR,
        keys.coverage_minute("1", "is_polite", M0): 2 * HOUR,
        keys.coverage_minute("1", "quality", M0): 2 * HOUR,
        keys.coverage_minute("1", "length", M0 + 1): 2 * HOUR,
        keys.coverage("1", "is_polite"): None,
        keys.coverage("1", "quality"): None,
        keys.coverage("1", "length"): None,
        keys.experiments: None,
        keys.scorers("1"): None,
        keys.names("1"): None,
    }
    stored = {k.decode() for k in (await dump(client, prefix))}
    assert stored == set(expected_ttl)
    for key, ttl in expected_ttl.items():
        pttl = await client.pttl(key)
        if ttl is None:
            assert pttl == -1, key
        else:
            assert ttl * 1000 - 60_000 < pttl <= ttl * 1000, key


async def test_replay_changes_nothing(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    await sink.write(batch())
    before = await dump(client, prefix)
    # A replay re-scored later, with a different verdict: still the same pairs.
    replay = [[dataclasses.replace(a, value=False, created_ms=T0 + 999_999) for a in p] for p in batch()]
    assert await sink.write(replay) == [False, False, False, False]
    assert await sink.write(batch()) == [False, False, False, False]
    assert await dump(client, prefix) == before


async def test_new_scorer_version_counts_again(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    assert await sink.write([[make(value=True)]]) == [True]
    assert await sink.write([[make(value=False, version=2)], [make(value=True)]]) == [True, False]
    assert await agg(sink, "1", "is_polite") == Aggregate(count=2, sum=1.0, passed=1, failed=1)
    trace = await sink.get_trace("tr-1")
    assert trace is not None
    latest = trace["assessments"]["is_polite"]
    assert latest["scorer_version"] == 2 and latest["value"] is False
    assert await sink.coverage("1", "is_polite") == {"scored": 2}


async def test_repeat_within_a_batch_counts_once(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    pair = [make()]
    assert await sink.write([pair, [make("tr-2")], pair]) == [True, True, False]
    assert (await agg(sink, "1", "is_polite")).count == 2


async def test_retry_with_same_token_reports_new_without_counting_twice(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    assert await sink.write(batch(), token="batch-7") == [True] * 4
    before = await dump(client, prefix)
    # As after a SinkUnavailableError whose pipeline had in fact landed.
    assert await sink.write(batch(), token="batch-7") == [True] * 4
    assert await dump(client, prefix) == before
    assert await sink.write(batch(), token="batch-8") == [False] * 4


async def test_script_reloaded_after_script_flush(redis_server, client, prefix):
    if not redis_server.private:
        pytest.skip("SCRIPT FLUSH would disturb others on a shared Redis (the restart test covers it)")
    sink = RedisSink(client, prefix=prefix)
    assert await sink.write([[make("tr-1")]]) == [True]
    await client.script_flush()
    assert await sink.write([[make("tr-2")], [make("tr-1")]]) == [True, False]
    assert (await agg(sink, "1", "is_polite")).count == 2


async def test_experiment_ids_with_colons_stay_apart(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    await sink.write([[make("tr-1", "s", exp="a:b")], [make("tr-2", "b:s", exp="a")]])
    assert (await agg(sink, "a:b", "s")).count == 1
    assert (await agg(sink, "a", "b:s")).count == 1
    assert await sink.coverage("a:b", "s") == {"scored": 1}
    assert await sink.experiments() == {"a", "a:b"}
    assert await sink.scorers("a:b") == {"s"}


async def test_odd_values_do_not_break_the_script(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    pairs = [
        [make("tr-1", "s", value=float("nan"))],
        [make("tr-2", "s", value=float("inf"))],
        [make("tr-3", "s", value=1e308)],
        [make("tr-4", "s", value=10**400)],
        [make("tr-5", "s", value="maybe")],
        [make("tr-6", "s", value={"nested": [1, 2]})],
        [make("tr-7", "s", value=2.5)],
    ]
    assert await sink.write(pairs) == [True] * 7
    assert await agg(sink, "1", "s") == Aggregate(count=7, sum=2.5, values=1)
    t4 = await sink.get_trace("tr-4")
    assert t4 is not None and t4["assessments"]["s"]["value"] == repr(10**400)


async def test_malformed_pairs_send_nothing(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    with pytest.raises(SinkDataError) as info:
        await sink.write([[make()], []])
    assert info.value.index == 1
    with pytest.raises(SinkDataError) as info:
        await sink.write([[make("tr-1"), make("tr-2")]])
    assert info.value.index == 0
    assert await dump(client, prefix) == {}
    assert await sink.write([]) == []


async def test_rejected_script_is_a_data_error(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    await client.set(RedisKeys(prefix).trace("tr-bad"), "not a hash")
    with pytest.raises(SinkDataError) as info:
        await sink.write([[make("tr-ok")], [make("tr-bad")]])
    assert info.value.index == 1 and info.value.sink == "redis" and info.value.operation == "write"
    assert isinstance(info.value.__cause__, rexc.ResponseError)
    assert await sink.get_trace("tr-ok") is not None  # the other pair of the batch landed


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: nothing listens there


async def test_redis_down_is_unavailable(prefix):
    c = aioredis.Redis(
        host="127.0.0.1",
        port=closed_port(),
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    sink = RedisSink(c, prefix=prefix)
    try:
        with pytest.raises(SinkUnavailableError) as info:
            await sink.write(batch())
        assert isinstance(info.value.__cause__, rexc.ConnectionError)
        with pytest.raises(SinkUnavailableError):
            await sink.ping()
        with pytest.raises(SinkUnavailableError):
            await sink.get_trace("tr-1")
        with pytest.raises(SinkUnavailableError):
            await sink.aggregates("1", "s", start_minute=M0, end_minute=M0 + 2)
    finally:
        await c.aclose()


async def test_stopped_server_is_unavailable_then_recovers(tmp_path, prefix):
    """A private server stopped mid-run: writes fail as unavailable; a new server takes them."""
    port = closed_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    c = aioredis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
    sink = RedisSink(c, prefix=prefix)
    proc = start_server(cmd, port)
    try:
        assert await sink.write([[make("tr-1")]]) == [True]
        proc.terminate()
        proc.wait(10)
        with pytest.raises(SinkUnavailableError):
            await sink.write([[make("tr-2")]])
        proc = start_server(cmd, port)  # empty: the script cache is gone too
        assert await sink.write([[make("tr-2")]]) == [True]
    finally:
        proc.terminate()
        proc.wait(10)
        await c.aclose()


def start_server(cmd: list[str], port: int) -> subprocess.Popen[bytes]:
    if shutil.which(cmd[0]) is None:
        pytest.skip("no redis-server binary")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis(port=port, socket_connect_timeout=0.5)
    try:
        for _ in range(500):
            try:
                probe.ping()
                return proc
            except (rexc.ConnectionError, OSError):
                time.sleep(0.02)
    finally:
        probe.close()
    proc.terminate()
    raise RuntimeError("redis-server did not start")


async def test_from_url_owns_its_client_and_injected_clients_stay_open(redis_server, client, prefix):
    sink = RedisSink.from_url(redis_server.url, prefix=prefix, trace_ttl=60)
    try:
        await sink.ping()
        assert await sink.write([[make()]]) == [True]
        assert 0 < await client.pttl(RedisKeys(prefix).trace("tr-1")) <= 60_000
    finally:
        await sink.aclose()
    await RedisSink(client, prefix=prefix).aclose()
    assert await client.ping()  # a client passed in belongs to the caller


async def test_any_prefix_is_safe_in_the_script(client, prefix):
    odd = prefix + "q\"'\n\\é]]--:"
    sink = RedisSink(client, prefix=odd)
    assert await sink.write([[make()]]) == [True]
    assert await client.hget(RedisKeys(odd).trace("tr-1"), "exp") == b"1"
    assert (await agg(sink, "1", "is_polite")).count == 1


async def test_decoded_responses_work_too(redis_server, client, prefix):
    decoded = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        sink = RedisSink(decoded, prefix=prefix)
        assert await sink.write(batch()) == [True] * 4
        trace = await sink.get_trace("tr-1")
        assert trace is not None and trace["assessments"]["is_polite"]["value"] is True
        assert await agg(sink, "1", "quality.relevance") == Aggregate(count=1, sum=0.8, values=1)
        assert await sink.coverage("1", "is_polite") == {"scored": 1, "skipped": 1, "skipped:budget": 1}
        assert await sink.names("1") == {"is_polite", "quality.relevance", "quality.safety", "length"}
    finally:
        await decoded.aclose()


async def test_minute_ranges_are_checked(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    with pytest.raises(ValueError):
        await sink.aggregates("1", "s", start_minute=10, end_minute=9)
    with pytest.raises(ValueError):
        await sink.aggregates("1", "s", start_minute=0, end_minute=32 * 1440)
    with pytest.raises(ValueError):
        await sink.coverage("1", "s", start_minute=10)
    assert await sink.aggregates("1", "s", start_minute=10, end_minute=10) == Aggregate()


async def test_aggregates_sum_over_minutes(client, prefix):
    sink = RedisSink(client, prefix=prefix)
    pairs = [[make(f"tr-{i}", "s", value=i % 2 == 0, end=T0 + i * 60_000)] for i in range(6)]
    await sink.write(pairs)
    assert await sink.aggregates("1", "s", start_minute=M0, end_minute=M0 + 6) == Aggregate(
        count=6, sum=3.0, passed=3, failed=3
    )
    assert await sink.aggregates("1", "s", start_minute=M0 + 1, end_minute=M0 + 3) == Aggregate(
        count=2, sum=1.0, passed=1, failed=1
    )


class CountingRedis(aioredis.Redis):
    """Counts round trips: direct commands, and pipelines with their sizes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.direct: list[str] = []
        self.pipelines: list[int] = []

    async def execute_command(self, *args, **options):
        self.direct.append(str(args[0]))
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def counted(raise_on_error=True):
            self.pipelines.append(len(pipe.command_stack))
            return await execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


async def evalsha_calls(c: aioredis.Redis) -> int:
    stats = await c.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_big_batch_is_one_pipeline(redis_server, prefix):
    c = cast(CountingRedis, CountingRedis.from_url(redis_server.url))
    try:
        sink = RedisSink(c, prefix=prefix)
        pairs = [[make(f"tr-{i}", f"s{i % 7}", value=i / 2000)] for i in range(2000)]
        before = await evalsha_calls(c)
        c.direct.clear()
        assert await sink.write(pairs) == [True] * 2000
        assert c.direct == ["SCRIPT LOAD", "SCRIPT LOAD"]  # record + feedback scripts, once per sink
        assert c.pipelines == [4]  # one round trip: 4 script calls of 500 pairs each
        if redis_server.private:  # server-wide stats are ours alone
            assert await evalsha_calls(c) - before == 4
        c.direct.clear()
        assert await sink.write(pairs) == [False] * 2000
        assert c.direct == [] and c.pipelines == [4, 4]
        assert (await sink.aggregates("1", "s3", start_minute=M0, end_minute=M0 + 1)).count == 286
    finally:
        keys = [k async for k in c.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await c.delete(*keys)
        await c.aclose()


# --- property: aggregates equal a recomputation from the per-trace results -------------------

TRACES = {"tr-a": ("1", T0), "tr-b": ("1", None), "tr-c": ("2:x", T0 + 61_000)}
VALUES = st.one_of(
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6),
    st.sampled_from([float("nan"), float("inf"), 1e308, "yes", "no", "maybe", None]),
)


@st.composite
def variant(draw, trace: str, scorer: str) -> list[Assessment]:
    """One possible result of scoring `trace` with `scorer`; replays may differ."""
    exp, end = TRACES[trace]
    created = T0 + draw(st.integers(-120_000, 120_000))
    kind = draw(st.sampled_from(["scored", "error", "skipped", "multi", "multi_error"]))
    base = {"exp": exp, "end": end, "created": created}
    if kind == "scored":
        return [make(trace, scorer, value=draw(VALUES), **base)]
    if kind == "error":
        return [make(trace, scorer, error=draw(st.sampled_from(["E1", "E2"])), **base)]
    if kind == "skipped":
        return [make(trace, scorer, skip=draw(st.sampled_from(["budget", "missing_inputs"])), **base)]
    second = {"error": "E3"} if kind == "multi_error" else {"value": draw(VALUES)}
    return [
        make(trace, scorer, name=f"{scorer}.x", error="E3", **base),
        make(trace, scorer, name=f"{scorer}.y", **second, **base),
    ]


@st.composite
def histories(draw) -> list[list[list[Assessment]]]:
    """Batches of pairs, with replays (possibly re-scored differently) in random places."""
    keys = draw(
        st.lists(st.tuples(st.sampled_from(sorted(TRACES)), st.sampled_from(["s1", "s2"])), unique=True)
    )
    events = []
    for trace, scorer in keys:
        for _ in range(draw(st.integers(1, 3))):
            events.append(draw(variant(trace, scorer)))
    events = draw(st.permutations(events))
    batches, i = [], 0
    while i < len(events):
        n = draw(st.integers(1, 4))
        batches.append(events[i : i + n])
        i += n
    return batches


def summable(d: dict) -> float | None:
    if d["outcome"] == "error":
        return None
    x = numeric_value(d["value"])
    return x if x is not None and math.isfinite(x) and abs(x) <= 1e300 else None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories())
async def test_aggregates_equal_recomputation_from_traces(client, history):
    prefix = f"twtest:{uuid.uuid4().hex}:"
    sink = RedisSink(client, prefix=prefix)
    try:
        for b in history:
            await sink.write(b)
        expected: dict[tuple[str, str, int], Counter] = defaultdict(Counter)
        sums: dict[tuple[str, str, int], float] = defaultdict(float)
        coverage: dict[tuple[str, str], Counter] = defaultdict(Counter)
        for trace, (exp, _) in TRACES.items():
            stored = await sink.get_trace(trace)
            if stored is None:
                continue
            by_scorer = defaultdict(list)
            for d in stored["assessments"].values():
                by_scorer[d["scorer"]].append(d)
                if d["state"] == "skipped":
                    continue
                end = d["trace_end_ms"]
                key = (exp, d["name"], (d["created_ms"] if end is None else end) // 60000)
                expected[key]["count"] += 1
                x = summable(d)
                if d["outcome"] != "value":
                    expected[key][d["outcome"]] += 1
                elif x is not None:
                    expected[key]["value"] += 1
                if x is not None:
                    sums[key] += x
            for scorer, ds in by_scorer.items():
                cov = coverage[(exp, scorer)]
                if ds[0]["state"] == "skipped":
                    cov["skipped"] += 1
                    cov[f"skipped:{ds[0]['skip_reason']}"] += 1
                elif all(d["state"] == "error" for d in ds):
                    cov["error"] += 1
                    cov[f"error:{ds[0]['error']['error_code']}"] += 1
                else:
                    cov["scored"] += 1

        for (exp, name, minute), c in expected.items():
            got = await sink.aggregates(exp, name, start_minute=minute, end_minute=minute + 1)
            assert (got.count, got.passed, got.failed, got.errors, got.values) == (
                c["count"],
                c["pass"],
                c["fail"],
                c["error"],
                c["value"],
            )
            assert math.isclose(got.sum, sums[(exp, name, minute)], rel_tol=1e-9, abs_tol=1e-6)
        keys = RedisKeys(prefix)
        agg_keys = {k.decode() async for k in client.scan_iter(match=f"{prefix}agg:*", count=1000)}
        assert agg_keys == {keys.aggregate(*k) for k in expected}
        for (exp, scorer), cov in coverage.items():
            assert await sink.coverage(exp, scorer) == dict(cov)
    finally:
        keys_ = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys_:
            await client.delete(*keys_)


def test_sink_errors_form_one_tree():
    assert issubclass(SinkUnavailableError, SinkError) and issubclass(SinkDataError, SinkError)
