"""The feedback join in Redis: end-user votes meet pass/fail verdicts on the same trace.

Either side may arrive first, and either may be redelivered, so the join lives in the Redis
scripts, atomically, and counts each (verdict, vote) cell exactly once:

- A vote is one per (trace, feedback name, user): `v:{trace}` maps `{name} US {user}` to its
  thumb (`up`/`down`); a new vote replaces the old one. The field `RS {name} US {user}` marks
  the vote as counted: every part is `encode`d (`sinks._keys`), so a vote field never starts
  with RS and no name or user id can pose as another's vote or mark. Each feedback event is applied once
  (`fe:{trace}` remembers event ids), so a redelivered event changes nothing.
- A verdict is a pass/fail assessment; the record script also writes `o:{name}` =
  `{scorer} US {version} US pass|fail` into the trace hash, a compact form the join can read.
- `ag:{trace}` remembers, per (scorer, version, assessment name, vote), which cell was
  counted in `agr:{experiment}:{scorer}` (fields `pass:up`, `pass:down`, `fail:up`,
  `fail:down`). Counting is "move the count to the current cell": the same cell twice is a
  no-op, a changed vote decrements the old cell and increments the new one. So the Redis
  counts always equal a recomputation from the current verdicts and votes.
- `fbc:{experiment}:{name}` counts current votes (`up`/`down`) the same way. A vote that
  arrives before its trace was scored has no experiment yet; the record script counts it
  when it first sets the trace's experiment.

Python hands the scripts every name already encoded, so Lua only concatenates parts and
splits at separators that no part contains. The scripts report each count they moved (packed
the same way; `parse_counts` decodes them), so Prometheus counters (`feedback_total`,
`feedback_agreement_total`) are incremented for real changes only, never for replays.
Prometheus counters cannot go down: after a changed vote the Redis cells hold the current
truth while the Prometheus counters have counted both votes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sinks._keys import REC, unpack

__all__ = [
    "FEEDBACK_LUA",
    "JOIN_FUNCTIONS_LUA",
    "FeedbackRecord",
    "JoinCounts",
    "parse_counts",
]

log = logging.getLogger("tracewatch.sinks")

_JUDGES = frozenset(("pass", "fail"))
_THUMBS = frozenset(("up", "down"))

# Shared by both scripts; expects P (prefix) and the __TRACE_TTL__ placeholder. Every name,
# user id, experiment, scorer and version here is encoded (no ':', US or RS inside), so joining
# them with separators is unambiguous and a split at a separator never cuts inside a part.
JOIN_FUNCTIONS_LUA = r"""
local agreements, votes_counted = {}, {}
local US, RS = '\31', '\30'
local function agree(tid, e, scorer, version, aname, code, vk, thumb)
  local ag = P .. 'ag:' .. tid
  local f = scorer .. US .. version .. US .. aname .. US .. vk
  local cell = code .. ':' .. thumb
  local old = redis.call('HGET', ag, f)
  if old == cell then return end
  local key = P .. 'agr:' .. e .. ':' .. scorer
  if old then redis.call('HINCRBY', key, old, -1) end
  redis.call('HINCRBY', key, cell, 1)
  redis.call('HSET', ag, f, cell)
  redis.call('PEXPIRE', ag, __TRACE_TTL__)
  agreements[#agreements + 1] = e .. US .. scorer .. US .. code .. US .. thumb
end
local function count_vote(v, e, vk, fname, thumb)
  local ck = RS .. vk
  local old = redis.call('HGET', v, ck)
  if old == thumb then return end
  local key = P .. 'fbc:' .. e .. ':' .. fname
  if old then redis.call('HINCRBY', key, old, -1) end
  redis.call('HINCRBY', key, thumb, 1)
  redis.call('HSET', v, ck, thumb)
  votes_counted[#votes_counted + 1] = e .. US .. fname .. US .. thumb
end
local function join_new_verdicts(tid, e, scorer, version, verdicts, first_exp)
  local v = P .. 'v:' .. tid
  if (not first_exp and #verdicts == 0) or redis.call('EXISTS', v) == 0 then return end
  local votes = redis.call('HGETALL', v)
  for j = 1, #votes, 2 do
    local vk, thumb = votes[j], votes[j + 1]
    if string.sub(vk, 1, 1) ~= RS then
      -- a field this script did not write (older data) is skipped, not a script error
      local fname = string.match(vk, '^(.-)' .. US)
      if first_exp and fname then count_vote(v, e, vk, fname, thumb) end
      for _, vd in ipairs(verdicts) do agree(tid, e, scorer, version, vd[1], vd[2], vk, thumb) end
    end
  end
end
"""

# ARGV[1]: JSON array of events [trace_id, name, user, thumb or '', json, event_id, kind], with
# name, user and thumb encoded (`sinks._keys.encode`).
FEEDBACK_LUA = r"""
local P = __PREFIX__
""" + JOIN_FUNCTIONS_LUA + r"""
local evs = cjson.decode(ARGV[1])
local out = {}
for k = 1, #evs do
  local ev = evs[k]
  local tid, fname, user, thumb, fjson, eid, kind = ev[1], ev[2], ev[3], ev[4], ev[5], ev[6], ev[7]
  local t = P .. 't:' .. tid
  local seen = P .. 'fe:' .. tid
  if redis.call('HSETNX', seen, eid, 1) == 0 then
    out[k] = '0'
  else
    out[k] = '1'
    redis.call('PEXPIRE', seen, __TRACE_TTL__)
    if kind == 'expectation' then
      redis.call('HSET', t, 'e:' .. fname, fjson)
    else
      local vk = fname .. US .. user
      redis.call('HSET', t, 'f:' .. vk, fjson)
      if thumb ~= '' then
        local v = P .. 'v:' .. tid
        redis.call('HSET', v, vk, thumb)
        redis.call('PEXPIRE', v, __TRACE_TTL__)
        local e = redis.call('HGET', t, 'exp')
        if e then
          count_vote(v, e, vk, fname, thumb)
          local all = redis.call('HGETALL', t)
          for j = 1, #all, 2 do
            local f = all[j]
            if string.sub(f, 1, 2) == 'o:' then
              local s, ver, code = string.match(all[j + 1], '^(.-)' .. US .. '(.-)' .. US .. '(.*)$')
              if s then agree(tid, e, s, ver, string.sub(f, 3), code, vk, thumb) end
            end
          end
        end
      end
    end
    redis.call('PEXPIRE', t, __TRACE_TTL__)
  end
end
return {table.concat(out), table.concat(agreements, RS), table.concat(votes_counted, RS)}
"""


@dataclass(slots=True, frozen=True)
class FeedbackRecord:
    """One feedback or expectation event as the sink stores it.

    `thumb` is `up`/`down` for boolean feedback (joined with verdicts), `''` otherwise;
    `payload` is the event's JSON as shown by `get_trace`. Names and user ids may hold any
    characters, separators included: the sink encodes them.
    """

    trace_id: str
    name: str
    user: str
    thumb: str
    payload: bytes
    event_id: str
    kind: str = "feedback"


@dataclass(slots=True)
class JoinCounts:
    """Counts the scripts moved: `(experiment, scorer, judge, user)` and `(experiment, name, thumb)`.

    `malformed` counts reported items that did not parse (logged, left out), so a bad item
    costs its own Prometheus increment, never the worker or the rest of the batch.
    """

    agreements: list[tuple[str, str, str, str]] = field(default_factory=list)
    votes: list[tuple[str, str, str]] = field(default_factory=list)
    malformed: int = 0


def parse_counts(counts: JoinCounts, agreements: str, votes: str) -> None:
    """Add the script's reported moves to `counts`, names decoded.

    Never raises: the reply comes from Redis, and a worker that crashed on it would crash
    again on every replay (the counts are moved already, so the replay reports nothing and
    the increments would be lost anyway). An item without the expected parts or values is
    logged and counted in `counts.malformed` instead.
    """
    if agreements:
        for item in agreements.split(REC):
            a = unpack(item, 4)
            if a is None or a[2] not in _JUDGES or a[3] not in _THUMBS:
                _malformed(counts, "agreement", item)
            else:
                counts.agreements.append((a[0], a[1], a[2], a[3]))
    if votes:
        for item in votes.split(REC):
            v = unpack(item, 3)
            if v is None or v[2] not in _THUMBS:
                _malformed(counts, "vote", item)
            else:
                counts.votes.append((v[0], v[1], v[2]))


def _malformed(counts: JoinCounts, kind: str, item: str) -> None:
    counts.malformed += 1
    log.warning("feedback join reported a malformed %s count %r; not counted in Prometheus", kind, item[:200])
