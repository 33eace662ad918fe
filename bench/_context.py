"""The state one `python -m bench` run hands to every scenario."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from bench._corpus import Corpus
from bench._infra import CpuMeter

__all__ = ["Context", "make_progress"]


def make_progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        refresh_per_second=4,
    )


@dataclass
class Context:
    """Options, the shared corpus, the progress display and results so far."""

    quick: bool
    traces: int
    long_traces: int
    e2e_seconds: float
    corpus: Corpus
    out_dir: Path
    console: Console
    progress: Progress
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    stack_pids: dict[str, int] = field(default_factory=dict)

    def meter(self, **pids: int) -> CpuMeter:
        """A started `CpuMeter` over Kafka, Redis and the given processes."""
        return CpuMeter({**self.stack_pids, **pids}).start()

    @property
    def log_dir(self) -> Path:
        d = self.out_dir / "logs"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def say(self, text: str) -> None:
        self.progress.console.print(text)

    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[Callable[..., None]]:
        """A progress row; yields `update(completed=..., note=...)` and marks it done on exit."""
        tid: TaskID = self.progress.add_task(description, total=total, note="")
        t0 = time.perf_counter()

        def update(completed: float | None = None, *, advance: float | None = None, note: str | None = None,
                   total: float | None = None) -> None:
            kw: dict[str, Any] = {}
            if completed is not None:
                kw["completed"] = completed
            if advance is not None:
                kw["advance"] = advance
            if note is not None:
                kw["note"] = note
            if total is not None:
                kw["total"] = total
            self.progress.update(tid, **kw)

        try:
            yield update
        finally:
            task = self.progress.tasks[[t.id for t in self.progress.tasks].index(tid)]
            if task.total is None or task.completed < task.total:
                self.progress.update(tid, total=task.completed or 1, completed=task.completed or 1)
            self.progress.update(tid, note=(task.fields.get("note") or "") + f" ({time.perf_counter() - t0:.1f}s)")
            self.progress.stop_task(tid)

    def rate(self, name: str, key: str = "rate") -> float | None:
        r = self.results.get(name) or {}
        v = r.get(key)
        return float(v) if isinstance(v, (int, float)) and v > 0 else None
