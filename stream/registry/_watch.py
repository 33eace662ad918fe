"""Live reload: keep a worker's `ScorerSet` in step with the registry, without restarts.

`RegistryWatcher.current()` is what the worker calls on every batch: it returns the last
snapshot, a plain attribute read with no I/O and no lock (a `ScorerSet` is immutable and the
watcher replaces the reference in one assignment, so a batch sees the old set or the new
one, never a mix).

Two paths trigger a reload, and both end in the same check, "did the generation counter
move?": a message on the registry's pub/sub channel (immediate), and a poll of the counter
every `poll_interval` seconds. Pub/sub gives millisecond reloads; polling makes a lost
message (a dropped connection, a subscriber that was reconnecting) cost at most one interval,
well within DESIGN.md's five seconds. When Redis is unreachable the watcher keeps the last
good snapshot, logs once per outage, and retries on the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sinks import RegistryChanges, SinkError
from stream.registry._registry import Registry, RegistryIssue
from stream.registry._scorer_set import ScorerSet

__all__ = ["RegistryWatcher"]

log = logging.getLogger("tracewatch.registry")


class RegistryWatcher:
    """Keeps the current `ScorerSet` of a registry, reloading on every change.

    Args:
        registry: where the records come from (the watcher does not close it).
        poll_interval: seconds between checks of the generation counter.
        pubsub: also listen on the change channel (False: polling only).

    Attributes:
        reloads: snapshots built since `start` (the first one included).
        last_reload_s: how long the last snapshot took to build.

    Example:
        >>> watcher = RegistryWatcher(Registry.from_settings(settings))
        >>> await watcher.start()                  # raises if the registry cannot be read
        >>> worker = Worker(..., scorers=watcher.current)
        >>> ...
        >>> await watcher.stop()
    """

    def __init__(self, registry: Registry, *, poll_interval: float = 2.0, pubsub: bool = True) -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
        self.registry = registry
        self.poll_interval = poll_interval
        self.pubsub = pubsub
        self.reloads = 0
        self.last_reload_s = 0.0
        self._set = ScorerSet()
        self._task: asyncio.Task[None] | None = None
        self._changes: RegistryChanges | None = None
        self._failing = False

    def current(self) -> ScorerSet:
        """The scorers to run now (no I/O; call it per batch)."""
        return self._set

    @property
    def errors(self) -> tuple[RegistryIssue, ...]:
        """Records the last snapshot refused to run (also logged)."""
        return self.registry.snapshot_errors

    async def start(self) -> None:
        """Subscribe, build the first snapshot, then watch in the background.

        Raises:
            SinkError: the registry cannot be read at startup (a worker should not start
                with no idea of what to score).
        """
        if self._task is not None:
            raise RuntimeError("RegistryWatcher already started")
        if self.pubsub:
            # Subscribe before the first snapshot, so no change can fall between the two.
            self._changes = await self.registry.store.changes()
        try:
            await self._reload()
        except BaseException:
            await self._close_changes()
            raise
        self._task = asyncio.create_task(self._run(), name="registry-watcher")

    async def stop(self) -> None:
        """Stop watching and release the subscription; `current()` keeps the last snapshot."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_changes()

    async def reload_if_changed(self) -> bool:
        """Check the generation now and rebuild if it moved; True if a new snapshot was swapped in."""
        generation = await self.registry.store.generation()
        if generation == self._set.generation:
            return False
        await self._reload()
        return True

    async def _reload(self) -> None:
        t0 = time.perf_counter()
        snapshot = await self.registry.snapshot()
        self._set = snapshot  # one reference swap: readers see the old set or the new one
        self.reloads += 1
        self.last_reload_s = time.perf_counter() - t0
        log.info(
            "registry generation %d: %d active scorer(s) %s (%.1f ms)",
            snapshot.generation,
            len(snapshot),
            sorted(snapshot.names),
            self.last_reload_s * 1000,
        )

    async def _wait(self) -> None:
        """Until a change message arrives or `poll_interval` passes."""
        if self._changes is None:
            await asyncio.sleep(self.poll_interval)
            return
        try:
            await self._changes.wait(self.poll_interval)
        except SinkError as exc:
            # The client reconnects and resubscribes on the next call; meanwhile polling covers.
            if not self._failing:
                log.warning("registry change channel failed, polling every %.1f s: %s", self.poll_interval, exc)
            self._failing = True
            await asyncio.sleep(self.poll_interval)

    async def _run(self) -> None:
        while True:
            await self._wait()
            try:
                await self.reload_if_changed()
            except SinkError as exc:
                if not self._failing:
                    log.warning("registry unreachable, keeping %d scorer(s): %s", len(self._set), exc)
                self._failing = True
                continue
            except Exception:  # a bug in a reload must not end live reload for the process
                log.exception("registry reload failed, keeping %d scorer(s)", len(self._set))
                continue
            if self._failing:
                log.info("registry reachable again")
                self._failing = False

    async def _close_changes(self) -> None:
        changes, self._changes = self._changes, None
        if changes is not None:
            try:
                await changes.aclose()
            except SinkError as exc:
                log.debug("closing the registry subscription: %s", exc)
