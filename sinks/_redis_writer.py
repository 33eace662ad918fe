"""Writing to Redis: each (trace, scorer) pair recorded by one Lua script, a batch per round trip.

The script (`sinks/record.lua`, with the join functions of `sinks._join`) is loaded once per
sink configuration: the key prefix and the TTLs are baked into its text. See `sinks._redis`
for the idempotence and exactness guarantees.
"""

from __future__ import annotations

import hashlib
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis import exceptions as rexc

from scorers import Assessment
from sinks._exceptions import SinkDataError, SinkError
from sinks._join import FEEDBACK_LUA, JOIN_FUNCTIONS_LUA, FeedbackRecord, JoinCounts, parse_counts
from sinks._keys import RedisKeys, encode, minute_of, pair_state, summable
from sinks._redis_client import convert, converted, text

__all__ = ["RedisWriter", "WriteResult", "record_script"]

# The record script: its argument layout is documented at the top of `record.lua`.
_RECORD_LUA = (
    "\nlocal P = __PREFIX__\n" + JOIN_FUNCTIONS_LUA + resources.files("sinks").joinpath("record.lua").read_text()
)
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


def record_script(
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


def _payload(a: Assessment) -> str:
    """The stored JSON of an assessment (`Assessment.to_json`, computed once and shared)."""
    return a.to_json().decode()


@dataclass(slots=True)
class WriteResult:
    """What one `write_all` recorded: new pairs, new feedback events, and the join's moves."""

    new: list[bool]
    events_new: list[bool]
    joins: JoinCounts


class RedisWriter:
    """The write half of `RedisSink`: `write`, `write_all` and `store_raw`."""

    _client: aioredis.Redis
    keys: RedisKeys
    _trace_ttl_ms: int

    def _init_scripts(self, prefix: str, trace_ttl_ms: int, aggregate_ttl_ms: int) -> None:
        self._script, self._sha = record_script(prefix, trace_ttl_ms, aggregate_ttl_ms)
        self._fb_script, self._fb_sha = record_script(prefix, trace_ttl_ms, aggregate_ttl_ms, template=FEEDBACK_LUA)
        self._loaded = False

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
            with converted("write"):
                replies = await pipe.execute(raise_on_error=False)
            missing: list[tuple[bool, list[tuple[int, Any]]]] = []
            failure: tuple[int, BaseException] | None = None
            for (is_feedback, chunk), reply in zip(calls, replies, strict=True):
                if isinstance(reply, rexc.NoScriptError):
                    missing.append((is_feedback, chunk))
                elif isinstance(reply, BaseException):
                    failure = failure or (chunk[0][0], reply)
                elif is_feedback:
                    flags = text(reply[0])
                    for (i, _), flag in zip(chunk, flags, strict=True):
                        result.events_new[i] = flag == "1"
                    parse_counts(result.joins, text(reply[1]), text(reply[2]))
                else:
                    flags, message = text(reply[0]), text(reply[1])
                    for (i, _), flag in zip(chunk, flags, strict=True):
                        if flag == "E":
                            failure = failure or (i, rexc.ResponseError(message))
                        result.new[i] = flag == "1"
                    parse_counts(result.joins, text(reply[2]), text(reply[3]))
            if failure is not None:
                i, exc = failure
                err = convert(exc, "write")
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
        with converted("script_load"):
            sha = await self._client.script_load(self._script)
            fb_sha = await self._client.script_load(self._fb_script)
        if text(sha) != self._sha or text(fb_sha) != self._fb_sha:
            raise SinkError(f"SCRIPT LOAD returned {sha!r}, expected {self._sha}", sink="redis")
        self._loaded = True

    async def store_raw(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Keep traces (already compressed by the caller) for `trace_ttl`, in one round trip."""
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        for trace_id, data in items:
            pipe.set(self.keys.raw(trace_id), data, px=self._trace_ttl_ms)
        with converted("store_raw"):
            await pipe.execute()
