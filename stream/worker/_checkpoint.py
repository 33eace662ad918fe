"""Which offsets are safe to commit: the contiguous prefix of finished messages per partition.

Judges finish out of order, so a partition's messages wait here, in offset order, until every
message before them is finished too. Only that prefix is ever written out and committed, so
a crash can only cause redelivery, never loss.

Each partition has an assignment generation, bumped by `reset` (revoke). The loop reads it
when a batch is fetched and passes it to `add`: a message of a batch fetched before a revoke
is refused even if the partition came back in between, so a late entry can never stand in
for messages the reset dropped (and make a commit skip past them).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scorers import Assessment
from stream._exceptions import OffsetError

__all__ = ["Checkpoint", "DeadLetter", "Entry"]


@dataclass(slots=True)
class DeadLetter:
    """A message that could not be decoded, kept with its original bytes and why."""

    key: bytes | None
    value: bytes | None
    reason: str
    error: str
    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Entry:
    """One consumed message and its results; finished when `pending` reaches 0."""

    offset: int
    partition: int = 0
    pending: int = 0
    pairs: list[list[Assessment]] = field(default_factory=list)
    dead: DeadLetter | None = None
    tasks: list[Any] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)  # sinks.FeedbackRecord of the feedback topic
    raw: tuple[str, bytes] | None = None  # (trace_id, compressed trace) kept for re-runs


class Checkpoint:
    """Per-partition queues of entries; hands out finished prefixes and their commit offsets."""

    __slots__ = ("_gens", "_last", "_queues", "size")

    def __init__(self) -> None:
        self._queues: dict[Any, deque[Entry]] = {}
        self._last: dict[Any, int] = {}
        self._gens: dict[Any, int] = {}
        self.size = 0

    def generation(self, tp: Any) -> int:
        """The partition's assignment generation: read it when a batch is fetched, give it to `add`."""
        return self._gens.get(tp, 0)

    def add(self, tp: Any, entry: Entry, gen: int | None = None) -> bool:
        """Track a new message, unless it belongs to an older assignment of its partition.

        `gen` is `generation(tp)` as read when the message was fetched (None: the current
        one, for callers that add without awaiting in between). Offsets within a
        partition must increase. Returns False, tracking nothing, when `gen` is stale: the
        partition was reset since, and the message belongs to whoever owns it now.

        Raises:
            OffsetError: an offset went backwards without the partition being reset (a
                `StreamError` and a `RuntimeError`).
        """
        if gen is not None and gen != self._gens.get(tp, 0):
            return False
        last = self._last.get(tp, -1)
        if entry.offset <= last:
            raise OffsetError(
                f"offset went backwards on {tp}: {entry.offset} after {last}",
                partition=tp,
                offset=entry.offset,
                last=last,
            )
        self._last[tp] = entry.offset
        q = self._queues.get(tp)
        if q is None:
            q = self._queues[tp] = deque()
        q.append(entry)
        self.size += 1
        return True

    def take_ready(self) -> tuple[list[Entry], dict[Any, int]]:
        """Pop every finished prefix; returns the entries and `{tp: last_offset + 1}` to commit."""
        ready: list[Entry] = []
        offsets: dict[Any, int] = {}
        for tp, q in self._queues.items():
            last = -1
            while q and q[0].pending == 0:
                e = q.popleft()
                ready.append(e)
                last = e.offset
            if last >= 0:
                offsets[tp] = last + 1
        self.size -= len(ready)
        return ready, offsets

    def reset(self, tps: Iterable[Any]) -> list[Entry]:
        """Forget partitions (revoked or seeking back); returns their unfinished entries.

        Bumps each partition's generation, so entries of batches fetched before now are refused.
        """
        dropped: list[Entry] = []
        gens = self._gens
        for tp in tps:
            gens[tp] = gens.get(tp, 0) + 1
            q = self._queues.pop(tp, None)
            if q:
                dropped.extend(q)
            self._last.pop(tp, None)
        self.size -= len(dropped)
        return dropped

    def partitions(self) -> list[Any]:
        return list(self._queues)
