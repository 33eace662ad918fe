"""Redis storage of the scorer registry: JSON records, a change counter and a change channel.

This module only moves JSON between Python and Redis; what a record means, and whether a
change is allowed, is decided by the caller (`stream`'s `Registry`). Layout, under a
deployment prefix `P` (e.g. `tw:`):

    P registry:<experiment>:<name>   string  one record, JSON (both parts `_keys.encode`d)
    P registry:index                 set     members `["<experiment>","<name>"]` (JSON), one per record
    P registry:versions              hash    field `["<experiment>","<name>"]`: last version handed out
    P registry:generation            string  INCR'd by every change, never reset
    P registry:changes               pub/sub a message on every change

So every key of the registry is either one of the three fixed keys or named by the index.

A change (`update`) is one optimistic transaction: `WATCH` the record, read it, let the
caller compute the new value, then `MULTI` write or delete it, update the index, `INCR` the
generation and `PUBLISH` to the channel, `EXEC`. A concurrent change to the same record
makes `EXEC` fail and the whole read-compute-write is retried, so two writers never lose
each other's versions. Readers poll the generation (one `GET`) and reload when it moved;
the channel only makes them notice sooner, so a lost message delays a reload, never loses it.

Version numbers come from their own counter (`HINCRBY`), which `delete` leaves in place: a scorer deleted
and registered again continues at the next number, so `(name, version)` is never reused (the
Redis sink's replay guards are keyed by it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.client import PubSub

from sinks._exceptions import SinkDataError
from sinks._keys import encode
from sinks._redis_client import client_from_url, converted

__all__ = ["RegistryChanges", "RegistryStore", "StoredRecord"]

_MAX_ATTEMPTS = 50


@dataclass(slots=True, frozen=True)
class StoredRecord:
    """One record as stored: its key parts and decoded JSON, or why it could not be decoded."""

    experiment_id: str
    name: str
    data: Any
    error: str | None = None


class RegistryStore:
    """Reads and writes registry records in Redis (see the module docstring for the layout).

    Args:
        client: a `redis.asyncio.Redis`, owned by the caller unless made by `from_url`.
        prefix: prepended to every key and to the channel name.

    Raises (every method):
        SinkUnavailableError: Redis cannot be reached or refuses writes right now.
        SinkError: any other Redis failure (permissions, misconfiguration).
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = "tw:") -> None:
        self._client = client
        self.prefix = prefix
        self.index_key = f"{prefix}registry:index"
        self.versions_key = f"{prefix}registry:versions"
        self.generation_key = f"{prefix}registry:generation"
        self.channel = f"{prefix}registry:changes"
        self._owns_client = False

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "tw:", socket_timeout: float = 5.0, connect_timeout: float = 2.0
    ) -> RegistryStore:
        """A store with its own client for `url`, closed by `aclose` (connects on first use).

        Like the sink's client, it retries a command twice, quickly, to ride over a stale
        pooled connection; every write here is idempotent or guarded by `WATCH`.

        Raises:
            ValueError: the URL is malformed.
        """
        client = client_from_url(url, socket_timeout=socket_timeout, connect_timeout=connect_timeout)
        store = cls(client, prefix=prefix)
        store._owns_client = True
        return store

    async def aclose(self) -> None:
        """Close the client if `from_url` made it."""
        if self._owns_client:
            with converted("registry_close"):
                await self._client.aclose()

    def record_key(self, experiment_id: str, name: str) -> str:
        """The key of one record; both parts encoded so `a:b`/`c` and `a`/`b:c` never share one."""
        return f"{self.prefix}registry:{encode(experiment_id)}:{encode(name)}"

    @staticmethod
    def member(experiment_id: str, name: str) -> str:
        """How a record is named in the index and the versions hash: `["<experiment>","<name>"]`."""
        return orjson.dumps([experiment_id, name]).decode()

    async def generation(self) -> int:
        """The change counter: it moves on every change (0 before the first one)."""
        with converted("registry_generation"):
            raw = await self._client.get(self.generation_key)
        return int(raw) if raw is not None else 0

    async def get(self, experiment_id: str, name: str) -> Any:
        """One record's decoded JSON, or None when there is none.

        Raises:
            SinkDataError: the stored value is not JSON.
        """
        with converted("registry_get"):
            raw = await self._client.get(self.record_key(experiment_id, name))
        if raw is None:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise SinkDataError(
                f"registry record {experiment_id}/{name} is not JSON: {exc}",
                sink="redis",
                operation="registry_get",
            ) from exc

    async def load_all(self) -> tuple[int, list[StoredRecord]]:
        """The generation and every record, sorted by (experiment, name).

        The generation is read before the records, so it is never newer than they are: a
        reader that stores it and compares later reloads at worst once too often.
        """
        with converted("registry_load"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(self.generation_key)
                pipe.smembers(self.index_key)
                raw_gen, members = await pipe.execute()
            ids: list[tuple[str, str]] = []
            for member in members:
                try:
                    exp, name = orjson.loads(member)
                    ids.append((str(exp), str(name)))
                except (orjson.JSONDecodeError, ValueError, TypeError):
                    continue  # not ours; a malformed index entry names no record to load
            ids.sort()
            values = await self._client.mget([self.record_key(e, n) for e, n in ids]) if ids else []
        records: list[StoredRecord] = []
        for (exp, name), raw in zip(ids, values, strict=True):
            if raw is None:
                continue  # deleted between the index read and the MGET
            try:
                records.append(StoredRecord(exp, name, orjson.loads(raw)))
            except orjson.JSONDecodeError as exc:
                records.append(StoredRecord(exp, name, None, f"not JSON: {exc}"))
        return (int(raw_gen) if raw_gen is not None else 0), records

    async def next_version(self, experiment_id: str, name: str) -> int:
        """Hand out the next version number of a scorer (1, 2, ...; never reused)."""
        with converted("registry_version"):
            return int(await self._client.hincrby(self.versions_key, self.member(experiment_id, name), 1))

    async def update(
        self, experiment_id: str, name: str, change: Callable[[Any], Any], *, op: str = "update"
    ) -> Any:
        """Atomically replace one record with `change(current)`; None from `change` deletes it.

        `change` gets the decoded current record (None when there is none) and must be a pure
        function: it may run more than once when another writer gets in between. An exception
        from it aborts the change and propagates unchanged. Each change bumps the generation
        and publishes `{"op", "experiment_id", "name"}` on the channel.

        Returns:
            What `change` returned (the stored record, or None after a delete).

        Raises:
            SinkDataError: the current value is not JSON, or the record stayed contended.
        """
        key = self.record_key(experiment_id, name)
        member = self.member(experiment_id, name)
        message = orjson.dumps({"op": op, "experiment_id": experiment_id, "name": name})
        with converted("registry_update"):
            async with self._client.pipeline(transaction=True) as pipe:
                for _ in range(_MAX_ATTEMPTS):
                    try:
                        await pipe.watch(key)
                        raw = await pipe.get(key)
                        current = None if raw is None else orjson.loads(raw)
                        new = change(current)
                        pipe.multi()  # type: ignore[no-untyped-call]
                        if new is None:
                            pipe.delete(key)
                            pipe.srem(self.index_key, member)
                        else:
                            pipe.set(key, orjson.dumps(new))
                            pipe.sadd(self.index_key, member)
                        pipe.incr(self.generation_key)
                        pipe.publish(self.channel, message)
                        await pipe.execute()
                        return new
                    except rexc.WatchError:
                        continue
                    except orjson.JSONDecodeError as exc:
                        raise SinkDataError(
                            f"registry record {experiment_id}/{name} is not JSON: {exc}",
                            sink="redis",
                            operation="registry_update",
                        ) from exc
                    finally:
                        await pipe.reset()  # type: ignore[no-untyped-call]
        raise SinkDataError(
            f"registry record {experiment_id}/{name} kept changing under {_MAX_ATTEMPTS} attempts",
            sink="redis",
            operation="registry_update",
        )

    async def changes(self) -> RegistryChanges:
        """Subscribe to the change channel (the subscription is live when this returns)."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            with converted("registry_subscribe"):
                await pubsub.subscribe(self.channel)
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        return RegistryChanges(pubsub)


class RegistryChanges:
    """A live subscription to the registry's change channel; close it with `aclose`."""

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    async def wait(self, wait_timeout: float) -> bool:
        """Wait up to `wait_timeout` seconds for change messages; True if any arrived.

        Messages that are already queued are drained, so a burst of changes wakes the
        caller once.

        Raises:
            SinkUnavailableError: the subscription's connection failed (the client
                reconnects and resubscribes on the next call).
        """
        with converted("registry_changes"):
            msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_timeout)
            if msg is None:
                return False
            while await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.0) is not None:
                pass
            return True

    async def aclose(self) -> None:
        """Unsubscribe and release the connection."""
        with converted("registry_changes_close"):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
