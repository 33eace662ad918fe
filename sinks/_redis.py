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

import redis.asyncio as aioredis

from sinks._keys import RedisKeys
from sinks._redis_client import client_from_url, converted
from sinks._redis_reader import Aggregate, RedisReader
from sinks._redis_writer import RedisWriter, WriteResult

__all__ = ["Aggregate", "RedisSink", "WriteResult"]


class RedisSink(RedisWriter, RedisReader):
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
        self._init_scripts(prefix, *ttls)
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
            with converted("close"):
                await self._client.aclose()
