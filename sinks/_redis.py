"""The Redis sink: the serving store of per-trace results, per-minute aggregates and coverage.

The key layout is in `sinks._keys` (`RedisKeys`). Each sampled (trace, scorer) pair is written
by one Lua script, atomically, and all pairs of a batch go out in one pipeline, so a batch costs
one round trip however many pairs it holds.

Idempotence. Delivery is at least once, so the script first sets a guard field
`done:{scorer}:{version}` in the trace hash with `HSETNX`. If the guard was already there the
pair is a replay: the script changes nothing and reports it as not new, and the worker counts
Prometheus metrics only for new pairs, so metrics agree with Redis under redelivery. The guard
holds the write's token (random per `write` call, or the caller's): a pipeline that the Redis
client retried after a dropped connection, or a batch the worker retries with the same token,
finds its own token and still reports the pair as new, without counting it twice.

Aggregates count in the minute the trace ended (`trace_end_ms`, or the assessment's
`created_ms` when unknown), not the minute it was scored, so they always equal a recomputation
from the per-trace results, whatever the replays and delays.

Exactness needs Redis configured as a store, not a cache:

- `maxmemory-policy noeviction`: an evicted trace hash loses its guards, and its replay
  would count again; an evicted aggregate silently loses counts. With `noeviction`, a full
  Redis rejects the whole script up front (`OOM`), which surfaces as `SinkUnavailableError`.
- persistence (AOF, `appendfsync everysec` or stricter): counts acknowledged before a
  restart must survive it, because the worker commits Kafka offsets after a flush.
- The guard lives as long as the trace hash (`trace_ttl`, renewed by each new pair of that
  trace). A replay older than that counts again: keep `trace_ttl` above the Kafka retention
  of the traces topic, or the longest replay you would ever run.

Per-minute hashes get their TTL when created (their minute's data arrives within minutes),
the trace hash on every new pair; all-time coverage (`cov:`) and the index sets never expire.
A trace keeps the latest assessment per *name*: two scorers that emit the same feedback name
on one trace overwrite each other's `a:{name}` field (both are still counted).

The script builds key names on the server from the prefix, so it needs a standalone Redis
(or a proxy that routes a whole script to one node), not Redis Cluster.
"""

from __future__ import annotations

import hashlib
import os
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from scorers import Assessment
from sinks._exceptions import SinkDataError, SinkError, SinkUnavailableError
from sinks._join import FEEDBACK_LUA, JOIN_FUNCTIONS_LUA, FeedbackRecord, JoinCounts, parse_counts
from sinks._keys import SEP, RedisKeys, decode, encode, minute_of, pair_state, summable

__all__ = ["Aggregate", "RedisSink", "WriteResult"]

# The prefix and TTLs are baked into the script text (one script per sink configuration). One
# call records a whole chunk of pairs: ARGV[1] is the write token, ARGV[2] a JSON array with one
# entry per pair: [trace_id, experiment, scorer, version, state, detail, minute, name, JSON,
# code, name, JSON, code, ...] (three per assessment); experiment, scorer, version and names
# come encoded (`sinks._keys.encode`), so the script never has to parse a key it built: it
# keeps the parts next to each key instead. `detail` is
# `skipped:{reason}` / `error:{code}` / ''. The code is `-` (skipped: not aggregated), `pass`,
# `fail`, `error`, a number to add as a value, or '' (counted only). Packing a chunk into one
# argument keeps the client's per-argument encoding cost off the hot path. Returns one
# character per pair ('1' new, '0' replay, 'E' rejected: an error in one pair does not stop the
# others) and the first error message.
_RECORD_LUA = """
local P = __PREFIX__
""" + JOIN_FUNCTIONS_LUA + """
local token = ARGV[1]
local pairs_ = cjson.decode(ARGV[2])
local out = {}
local firsterr = ''
-- Counts of the whole chunk are summed here first and written once per key at the end:
-- a chunk of 500 pairs touches a handful of aggregate and coverage keys, so this turns
-- thousands of HINCRBY calls into a few dozen.
local aggs, covs, covms = {}, {}, {}
local agg_parts, cov_parts = {}, {}
local function bump(tbl, key, field, n)
  local h = tbl[key]
  if not h then h = {}; tbl[key] = h end
  h[field] = (h[field] or 0) + n
end
local function record(k, p)
  local t = P .. 't:' .. p[1]
  local e, scorer, minute, version = p[2], p[3], p[7], p[4]
  local guard = 'done:' .. scorer .. ':' .. version
  local fresh = redis.call('HSETNX', t, guard, token) == 1
  if not fresh then
    out[k] = (redis.call('HGET', t, guard) == token) and '1' or '0'
    return
  end
  out[k] = '1'
  local first_exp = redis.call('HSETNX', t, 'exp', e) == 1
  local fields, verdicts = {}, {}
  for i = 8, #p, 3 do
    local name, code = p[i], p[i + 2]
    fields[#fields + 1] = 'a:' .. name
    fields[#fields + 1] = p[i + 1]
    if code == 'pass' or code == 'fail' then
      fields[#fields + 1] = 'o:' .. name
      fields[#fields + 1] = scorer .. US .. version .. US .. code
      verdicts[#verdicts + 1] = {name, code}
    end
  end
  redis.call('HSET', t, unpack(fields))
  redis.call('PEXPIRE', t, __TRACE_TTL__)
  join_new_verdicts(p[1], e, scorer, version, verdicts, first_exp)
  -- Only counting is left, in Lua tables: nothing below can fail halfway.
  for i = 8, #p, 3 do
    local name, code = p[i], p[i + 2]
    if code ~= '-' then
      local agg = e .. ':' .. name .. ':' .. minute
      if not agg_parts[agg] then agg_parts[agg] = {e, name} end
      bump(aggs, agg, 'count', 1)
      if code == 'pass' then
        bump(aggs, agg, 'pass', 1)
        bump(aggs, agg, 'sum', 1)
      elseif code == 'fail' or code == 'error' then
        bump(aggs, agg, code, 1)
      elseif code ~= '' then
        bump(aggs, agg, 'value', 1)
        bump(aggs, agg, 'sum', tonumber(code))
      end
    end
  end
  local state, detail = p[5], p[6]
  local cov = e .. ':' .. scorer
  if not cov_parts[cov] then cov_parts[cov] = {e, scorer} end
  bump(covs, cov, state, 1)
  bump(covms, cov .. ':' .. minute, state, 1)
  if detail ~= '' then
    bump(covs, cov, detail, 1)
    bump(covms, cov .. ':' .. minute, detail, 1)
  end
end
for k = 1, #pairs_ do
  local ok, err = pcall(record, k, pairs_[k])
  if not ok then
    out[k] = 'E'
    if firsterr == '' then firsterr = type(err) == 'table' and (err.err or 'error') or tostring(err) end
  end
end
for suffix, h in pairs(aggs) do
  local key = P .. 'agg:' .. suffix
  -- The first count of a minute sets its TTL and indexes the name; later ones need not.
  if redis.call('HINCRBY', key, 'count', h.count) == h.count then
    redis.call('PEXPIRE', key, __AGGREGATE_TTL__)
    local parts = agg_parts[suffix]
    redis.call('SADD', P .. 'names:' .. parts[1], parts[2])
  end
  for f, n in pairs(h) do
    if f == 'sum' then
      redis.call('HINCRBYFLOAT', key, 'sum', string.format('%.17g', n))
    elseif f ~= 'count' then
      redis.call('HINCRBY', key, f, n)
    end
  end
end
for suffix, h in pairs(covs) do
  local key = P .. 'cov:' .. suffix
  local new = false
  for f, n in pairs(h) do
    if redis.call('HINCRBY', key, f, n) == n and string.find(f, ':', 1, true) == nil then new = true end
  end
  -- cov never expires, nor do the index sets, so a first count is enough to index.
  if new then
    local parts = cov_parts[suffix]
    redis.call('SADD', P .. 'experiments', parts[1])
    redis.call('SADD', P .. 'scorers:' .. parts[1], parts[2])
  end
end
for suffix, h in pairs(covms) do
  local key = P .. 'covm:' .. suffix
  local new = false
  for f, n in pairs(h) do
    if redis.call('HINCRBY', key, f, n) == n then new = true end
  end
  if new then redis.call('PEXPIRE', key, __AGGREGATE_TTL__) end
end
return {table.concat(out), firsterr, table.concat(agreements, RS), table.concat(votes_counted, RS)}
"""
_THUMBS = frozenset(("up", "down", ""))  # need no encoding
_CHUNK = 500  # pairs per script call: bounds how long one call holds Redis (~5 ms)
_LUA_PLAIN = frozenset(string.ascii_letters + string.digits + ":_.-")


def _lua_literal(text: str) -> str:
    """A Lua string literal of `text`, every unusual byte as a `\\ddd` escape: nothing to inject."""
    out = ['"']
    for ch in text:
        if ch in _LUA_PLAIN:
            out.append(ch)
        else:
            out.extend(f"\\{b:03d}" for b in ch.encode())
    out.append('"')
    return "".join(out)


def _record_script(
    prefix: str, trace_ttl_ms: int, aggregate_ttl_ms: int, template: str | None = None
) -> tuple[str, str]:
    """A script (the record script by default) for one sink configuration, and its SHA1."""
    text = (
        (template or _RECORD_LUA)
        .replace("__PREFIX__", _lua_literal(prefix))
        .replace("__TRACE_TTL__", str(trace_ttl_ms))
        .replace("__AGGREGATE_TTL__", str(aggregate_ttl_ms))
    )
    return text, hashlib.sha1(text.encode()).hexdigest()


_MAX_RANGE_MINUTES = 31 * 1440
_UNAVAILABLE_PREFIXES = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


@dataclass(slots=True, frozen=True)
class Aggregate:
    """Counts of one assessment name in one experiment, summed over a range of minutes.

    `count` is every scored or errored assessment; `passed`, `failed` and `errors` split it by
    outcome; `values` counts numeric non-boolean results. `sum` adds every number, booleans as
    1/0, so `mean` of a pass/fail scorer is its pass rate. String results that are neither
    pass nor fail count only in `count`.
    """

    count: int = 0
    sum: float = 0.0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    values: int = 0

    @property
    def pass_rate(self) -> float | None:
        """Share of pass among pass and fail results; None when there were none."""
        n = self.passed + self.failed
        return self.passed / n if n else None

    @property
    def mean(self) -> float | None:
        """Mean of the numeric results (booleans as 1/0); None when there were none."""
        n = self.passed + self.failed + self.values
        return self.sum / n if n else None

    @property
    def error_rate(self) -> float | None:
        """Share of errors among all counted results; None when nothing was counted."""
        return self.errors / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the summary API, with the Redis field names."""
        return {
            "count": self.count,
            "sum": self.sum,
            "pass": self.passed,
            "fail": self.failed,
            "error": self.errors,
            "value": self.values,
            "pass_rate": self.pass_rate,
            "mean": self.mean,
            "error_rate": self.error_rate,
        }


def _convert(exc: BaseException, operation: str) -> SinkError:
    """Our error for a Redis client error: is waiting going to help, or is the data at fault?"""
    msg = f"redis {operation} failed: {exc}"
    if isinstance(exc, (rexc.AuthenticationError, rexc.AuthorizationError, rexc.NoPermissionError)):
        return SinkError(msg, sink="redis", operation=operation)
    if isinstance(
        exc,
        (
            rexc.ConnectionError,
            rexc.TimeoutError,
            rexc.ReadOnlyError,
            rexc.OutOfMemoryError,
            rexc.MasterDownError,
            rexc.TryAgainError,
            rexc.ClusterDownError,
            rexc.InvalidResponse,
            OSError,
        ),
    ):
        return SinkUnavailableError(msg, sink="redis", operation=operation)
    if isinstance(exc, rexc.ResponseError):
        if str(exc).startswith(_UNAVAILABLE_PREFIXES):
            return SinkUnavailableError(msg, sink="redis", operation=operation)
        return SinkDataError(msg, sink="redis", operation=operation)
    if isinstance(exc, rexc.DataError):
        return SinkDataError(msg, sink="redis", operation=operation)
    return SinkError(msg, sink="redis", operation=operation)


@contextmanager
def _converted(operation: str) -> Iterator[None]:
    """Raise our `SinkError` types, chained, for anything the Redis client raises."""
    try:
        yield
    except (rexc.RedisError, OSError) as exc:
        raise _convert(exc, operation) from exc


def _payload(a: Assessment) -> str:
    """The stored JSON of an assessment (`Assessment.to_json`, computed once and shared)."""
    return a.to_json().decode()


def _text(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def client_from_url(url: str, *, socket_timeout: float = 5.0, connect_timeout: float = 2.0) -> aioredis.Redis:
    """The one way tracewatch opens Redis: timeouts, and two quick retries over a stale connection.

    Raises:
        ValueError: The URL is malformed.
    """
    return aioredis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        health_check_interval=30,
    )


@dataclass(slots=True)
class WriteResult:
    """What one `write_all` recorded: new pairs, new feedback events, and the join's moves."""

    new: list[bool]
    events_new: list[bool]
    joins: JoinCounts


class RedisSink:
    """Writes assessments to Redis and reads them back for the API.

    Args:
        client: A `redis.asyncio.Redis`, owned by the caller (who closes it). Either
            `decode_responses` setting works.
        prefix: Prepended to every key, so several deployments or tests can share a Redis.
        trace_ttl: Seconds a trace hash (and so its replay guards) lives after its last new pair.
        aggregate_ttl: Seconds a per-minute aggregate or coverage hash lives after its first
            write: the retention of per-minute history. All-time coverage and the index sets
            do not expire.

    Example:
        >>> sink = RedisSink(redis.asyncio.Redis.from_url(url))
        >>> new = await sink.write([[assessment]])   # [True], then [False] on a replay
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "tw:",
        trace_ttl: float = 7 * 86400,
        aggregate_ttl: float = 30 * 86400,
    ) -> None:
        if trace_ttl <= 0 or aggregate_ttl <= 0:
            raise ValueError("trace_ttl and aggregate_ttl must be positive")
        self._client = client
        self.keys = RedisKeys(prefix)
        ttls = (max(1, int(trace_ttl * 1000)), max(1, int(aggregate_ttl * 1000)))
        self._trace_ttl_ms = ttls[0]
        self._script, self._sha = _record_script(prefix, *ttls)
        self._fb_script, self._fb_sha = _record_script(prefix, *ttls, template=FEEDBACK_LUA)
        self._loaded = False
        self._owns_client = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "tw:",
        trace_ttl: float = 7 * 86400,
        aggregate_ttl: float = 30 * 86400,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> RedisSink:
        """A sink with its own client for `url` (`redis://host:port/db`), closed by `aclose`.

        The client retries a failed command or pipeline twice, quickly, to ride over a stale
        pooled connection; longer outages surface as `SinkUnavailableError` for the worker's
        own backoff. Retried pipelines are safe: writes are idempotent and keep their token.

        Raises:
            ValueError: The URL is malformed.
        """
        client = client_from_url(url, socket_timeout=socket_timeout, connect_timeout=connect_timeout)
        sink = cls(client, prefix=prefix, trace_ttl=trace_ttl, aggregate_ttl=aggregate_ttl)
        sink._owns_client = True
        return sink

    async def aclose(self) -> None:
        """Close the client if `from_url` made it; a client passed in belongs to the caller."""
        if self._owns_client:
            with _converted("close"):
                await self._client.aclose()

    async def write(self, pairs: Sequence[Sequence[Assessment]], *, token: str | None = None) -> list[bool]:
        """Record a batch of pairs; say which were new (see `write_all`, which also joins feedback)."""
        return (await self.write_all(pairs, (), token=token)).new

    async def write_all(
        self,
        pairs: Sequence[Sequence[Assessment]],
        events: Sequence[FeedbackRecord] = (),
        *,
        token: str | None = None,
    ) -> WriteResult:
        """Record a batch of pairs in one pipeline; say which were new.

        Each inner sequence holds the assessments of one sampled (trace, scorer) pair, all of
        the same trace, scorer and scorer version. A pair seen before (same trace, scorer and
        version) changes nothing and reports False, as does a repeat within the batch.

        Args:
            pairs: The batch.
            token: Identifies this write. Pass the same token when retrying a batch after
                `SinkUnavailableError`, so pairs that landed in the failed attempt still
                report True; by default each call gets a random one.

        Returns:
            One bool per pair: True when this write recorded it.

        Raises:
            SinkUnavailableError: Redis is unreachable, timed out, read-only or out of memory.
                Pairs may have landed; retrying is safe.
            SinkDataError: A pair is empty or mixes traces or scorers (nothing is sent then),
                or Redis rejected a pair's script (`index` says which).
            SinkError: Authentication or permission failure.
        """
        n = len(pairs)
        result = WriteResult([False] * n, [False] * len(events), JoinCounts())
        if n == 0 and not events:
            return result
        tok = token or os.urandom(8).hex()
        entries: list[tuple[int, list[Any]]] = []
        seen: set[tuple[str, str, int, str]] = set()
        # A batch repeats a few experiments and scorers, and a name is usually its scorer's:
        # remembering the last encoding saves most `encode` calls on the hot path.
        last_exp, e_exp = "", ""
        for i, pair in enumerate(pairs):
            if not pair:
                raise SinkDataError("empty pair", sink="redis", operation="write", index=i)
            a0 = pair[0]
            trace_id, exp, scorer, version = a0.trace_id, a0.experiment_id, a0.scorer, a0.scorer_version
            run = a0.run_id
            ident = (trace_id, scorer, version, run)
            if ident in seen:
                continue
            seen.add(ident)
            state, detail = pair_state(pair)
            if exp != last_exp:
                last_exp, e_exp = exp, encode(exp)
            e_scorer = encode(scorer)
            entry: list[Any] = [
                trace_id,
                e_exp,
                e_scorer,
                encode(f"{version}~{run}") if run else str(version),
                state,
                "" if detail is None else f"{state}:{detail}",
                str(minute_of(a0)),
            ]
            for a in pair:
                if a is not a0 and (
                    a.trace_id != trace_id
                    or a.scorer != scorer
                    or a.experiment_id != exp
                    or a.scorer_version != version
                    or a.run_id != run
                ):
                    raise SinkDataError(
                        "a pair mixes traces, experiments, scorers or versions",
                        sink="redis",
                        operation="write",
                        index=i,
                    )
                if a.state == "skipped":
                    code = "-"
                else:
                    code = a.outcome
                    if code == "value":
                        x = summable(a)
                        code = "" if x is None else repr(x)
                name = a.name
                entry += (e_scorer if name == scorer else encode(name), _payload(a), code)
            entries.append((i, entry))
        calls: list[tuple[bool, list[tuple[int, Any]]]] = [
            (False, entries[k : k + _CHUNK]) for k in range(0, len(entries), _CHUNK)
        ]
        rows: list[tuple[int, Any]] = []
        last_name, e_name = "", ""
        for i, ev in enumerate(events):
            if ev.name != last_name:
                last_name, e_name = ev.name, encode(ev.name)
            thumb = ev.thumb if ev.thumb in _THUMBS else encode(ev.thumb)
            rows.append((i, [ev.trace_id, e_name, encode(ev.user), thumb, ev.payload.decode(), ev.event_id, ev.kind]))
        calls += [(True, rows[k : k + _CHUNK]) for k in range(0, len(rows), _CHUNK)]
        await self._run(tok, calls, result)
        return result

    async def _run(self, token: str, calls: list[tuple[bool, list[tuple[int, Any]]]], result: WriteResult) -> None:
        """Send every script call in one pipeline; reload the scripts on NOSCRIPT and resend those."""
        if not self._loaded:
            await self._load()
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            for is_feedback, chunk in calls:
                blob = orjson.dumps([e for _, e in chunk])
                if is_feedback:
                    pipe.execute_command("EVALSHA", self._fb_sha, 0, blob)
                else:
                    pipe.execute_command("EVALSHA", self._sha, 0, token, blob)
            with _converted("write"):
                replies = await pipe.execute(raise_on_error=False)
            missing: list[tuple[bool, list[tuple[int, Any]]]] = []
            failure: tuple[int, BaseException] | None = None
            for (is_feedback, chunk), reply in zip(calls, replies, strict=True):
                if isinstance(reply, rexc.NoScriptError):
                    missing.append((is_feedback, chunk))
                elif isinstance(reply, BaseException):
                    failure = failure or (chunk[0][0], reply)
                elif is_feedback:
                    flags = _text(reply[0])
                    for (i, _), flag in zip(chunk, flags, strict=True):
                        result.events_new[i] = flag == "1"
                    parse_counts(result.joins, _text(reply[1]), _text(reply[2]))
                else:
                    flags, message = _text(reply[0]), _text(reply[1])
                    for (i, _), flag in zip(chunk, flags, strict=True):
                        if flag == "E":
                            failure = failure or (i, rexc.ResponseError(message))
                        result.new[i] = flag == "1"
                    parse_counts(result.joins, _text(reply[2]), _text(reply[3]))
            if failure is not None:
                i, exc = failure
                err = _convert(exc, "write")
                if isinstance(err, SinkDataError):
                    err.index = i
                raise err from exc
            if not missing:
                return
            # Redis restarted or its script cache was flushed since we loaded the scripts.
            await self._load()
            calls = missing
            if attempt:
                break
        raise SinkError("redis kept answering NOSCRIPT after SCRIPT LOAD", sink="redis", operation="write")

    async def _load(self) -> None:
        with _converted("script_load"):
            sha = await self._client.script_load(self._script)
            fb_sha = await self._client.script_load(self._fb_script)
        if _text(sha) != self._sha or _text(fb_sha) != self._fb_sha:
            raise SinkError(f"SCRIPT LOAD returned {sha!r}, expected {self._sha}", sink="redis")
        self._loaded = True

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        """The stored results of one trace, or None when Redis has nothing (or no longer) for it.

        Returns:
            `{"trace_id", "experiment_id", "assessments": {name: dict},
            "feedback": {name: {user: event dict}}, "expectations": {name: value}}`;
            `experiment_id` is None while only feedback has arrived for the trace.
        """
        with _converted("get_trace"):
            raw = await self._client.hgetall(self.keys.trace(trace_id))
        if not raw:
            return None
        assessments: dict[str, Any] = {}
        feedback: dict[str, dict[str, Any]] = {}
        expectations: dict[str, Any] = {}
        experiment: str | None = None
        for k, v in raw.items():
            key = _text(k)
            if key.startswith("a:"):
                assessments[decode(key[2:])] = orjson.loads(v)
            elif key.startswith("f:"):
                name, _, user = key[2:].partition(SEP)
                feedback.setdefault(decode(name), {})[decode(user)] = orjson.loads(v)
            elif key.startswith("e:"):
                expectations[decode(key[2:])] = orjson.loads(v).get("value")
            elif key == "exp":
                experiment = decode(_text(v))
        return {
            "trace_id": trace_id,
            "experiment_id": experiment,
            "assessments": assessments,
            "feedback": feedback,
            "expectations": expectations,
        }

    async def aggregates(
        self, experiment: str, scorer: str, *, start_minute: int, end_minute: int
    ) -> Aggregate:
        """Sum the per-minute aggregates of one assessment name over `[start_minute, end_minute)`.

        Args:
            experiment: Experiment id.
            scorer: The assessment name: the scorer's name unless it returns several named
                feedbacks, each aggregated under its own name.
            start_minute: First minute (Unix ms // 60000), included.
            end_minute: Last minute, excluded.

        Raises:
            ValueError: The range is reversed or longer than 31 days.
            SinkUnavailableError: Redis is unreachable.
        """
        hashes = await self._minutes("aggregates", start_minute, end_minute, experiment, scorer, agg=True)
        count = passed = failed = errors = values = 0
        total = 0.0
        for h in hashes:
            if not h:
                continue
            f = {_text(k): v for k, v in h.items()}
            count += int(f.get("count", 0))
            total += float(f.get("sum", 0))
            passed += int(f.get("pass", 0))
            failed += int(f.get("fail", 0))
            errors += int(f.get("error", 0))
            values += int(f.get("value", 0))
        return Aggregate(count, total, passed, failed, errors, values)

    async def coverage(
        self,
        experiment: str,
        scorer: str,
        *,
        start_minute: int | None = None,
        end_minute: int | None = None,
    ) -> dict[str, int]:
        """Pair states of one scorer: `scored`, `error`, `skipped`, `skipped:{reason}`, `error:{code}`.

        All-time totals by default; with both minutes, the sum over `[start_minute, end_minute)`
        by the minute the traces ended (kept for `aggregate_ttl`).

        Raises:
            ValueError: Only one minute given, or a bad range.
            SinkUnavailableError: Redis is unreachable.
        """
        if start_minute is None and end_minute is None:
            with _converted("coverage"):
                hashes = [await self._client.hgetall(self.keys.coverage(experiment, scorer))]
        elif start_minute is None or end_minute is None:
            raise ValueError("give both start_minute and end_minute, or neither")
        else:
            hashes = await self._minutes("coverage", start_minute, end_minute, experiment, scorer, agg=False)
        out: dict[str, int] = {}
        for h in hashes:
            for k, v in h.items():
                key = _text(k)
                out[key] = out.get(key, 0) + int(v)
        return out

    async def _minutes(
        self, operation: str, start: int, end: int, experiment: str, name: str, *, agg: bool
    ) -> list[dict[Any, Any]]:
        if end < start or end - start > _MAX_RANGE_MINUTES:
            raise ValueError(f"bad minute range [{start}, {end}): reversed or over 31 days")
        key = self.keys.aggregate if agg else self.keys.coverage_minute
        pipe = self._client.pipeline(transaction=False)
        for minute in range(start, end):
            pipe.hgetall(key(experiment, name, minute))
        with _converted(operation):
            result: list[dict[Any, Any]] = await pipe.execute()
        return result

    async def agreement(self, experiment: str, scorer: str) -> dict[str, int]:
        """Current judge-vs-user cells of a scorer: `pass:up`, `pass:down`, `fail:up`, `fail:down`."""
        with _converted("agreement"):
            raw = await self._client.hgetall(self.keys.agreement(experiment, scorer))
        return {_text(k): int(v) for k, v in raw.items()}

    async def votes(self, experiment: str, name: str) -> dict[str, int]:
        """Current votes of a boolean feedback name: `up` and `down` counts (one per user and trace)."""
        with _converted("votes"):
            raw = await self._client.hgetall(self.keys.votes(experiment, name))
        return {_text(k): int(v) for k, v in raw.items()}

    async def trace_raw(self, trace_id: str) -> bytes | None:
        """The stored (compressed) wire form of a sampled trace, kept for re-scoring, or None."""
        with _converted("trace_raw"):
            data = await self._client.get(self.keys.raw(trace_id))
        return None if data is None else (data.encode() if isinstance(data, str) else bytes(data))

    async def store_raw(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Keep traces (already compressed by the caller) for `trace_ttl`, in one round trip."""
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        for trace_id, data in items:
            pipe.set(self.keys.raw(trace_id), data, px=self._trace_ttl_ms)
        with _converted("store_raw"):
            await pipe.execute()

    async def experiments(self) -> set[str]:
        """The experiment ids that have results."""
        with _converted("experiments"):
            members = await self._client.smembers(self.keys.experiments)
        return {decode(_text(m)) for m in members}

    async def scorers(self, experiment: str) -> set[str]:
        """The scorers that have coverage in an experiment (keys for `coverage`)."""
        with _converted("scorers"):
            members = await self._client.smembers(self.keys.scorers(experiment))
        return {decode(_text(m)) for m in members}

    async def names(self, experiment: str) -> set[str]:
        """The assessment names that have aggregates in an experiment (keys for `aggregates`)."""
        with _converted("names"):
            members = await self._client.smembers(self.keys.names(experiment))
        return {decode(_text(m)) for m in members}

    async def ping(self) -> None:
        """Check that Redis answers, for readiness probes.

        Raises:
            SinkUnavailableError: It does not.
        """
        with _converted("ping"):
            await self._client.ping()
