"""Which offsets are safe to commit: the contiguous prefix of finished messages per partition.

Judges finish out of order, so a partition's messages wait here, in offset order, until every
message before them is finished too. Only that prefix is ever written out and committed, so
a crash can only cause redelivery, never loss.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scorers import Assessment

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

    __slots__ = ("_last", "_queues", "size")

    def __init__(self) -> None:
        self._queues: dict[Any, deque[Entry]] = {}
        self._last: dict[Any, int] = {}
        self.size = 0

    def add(self, tp: Any, entry: Entry) -> None:
        """Track a new message. Offsets within a partition must increase.

        Raises:
            RuntimeError: an offset went backwards without the partition being reset.
        """
        last = self._last.get(tp, -1)
        if entry.offset <= last:
            raise RuntimeError(f"offset went backwards on {tp}: {entry.offset} after {last}")
        self._last[tp] = entry.offset
        q = self._queues.get(tp)
        if q is None:
            q = self._queues[tp] = deque()
        q.append(entry)
        self.size += 1

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
        """Forget partitions (revoked or seeking back); returns their unfinished entries."""
        dropped: list[Entry] = []
        for tp in tps:
            q = self._queues.pop(tp, None)
            if q:
                dropped.extend(q)
            self._last.pop(tp, None)
        self.size -= len(dropped)
        return dropped

    def partitions(self) -> list[Any]:
        return list(self._queues)
