"""An allowlisted scorer module that leaves a mark when imported or called (see the package).

It also imports things a reference must never reach through it: `os`, `subprocess`,
`os.system` under its own name, and a scorer defined elsewhere.
"""

from __future__ import annotations

import os  # noqa: F401  (reachable from this module's namespace: `marker_scorers:os.system(...)`)
import subprocess  # noqa: F401
from os import system  # noqa: F401  (`marker_scorers:system(...)` must not call it)
from typing import Any

from scorers import Guidelines, Scorer, no_error, scorer
from tests.fixtures_pkg import mark

mark("import tests.fixtures_pkg.marker_scorers")


@scorer
def good(outputs: Any) -> bool:
    """The legitimate target: a top-level @scorer of this module."""
    return True


def make_good(threshold: int = 1) -> Scorer:
    """A legitimate factory; calling it leaves a mark."""
    mark(f"call make_good({threshold!r})")
    return scorer(name=f"good_{threshold}")(lambda outputs: len(str(outputs)) >= threshold)


def not_a_factory(command: str = "") -> int:
    """Defined here but returns no scorer."""
    mark("call not_a_factory")
    return 0


class Holder:
    """A class that is not a Scorer: calling it would run its constructor."""

    inner = good

    def __init__(self, *args: Any) -> None:
        mark("call Holder")

    @staticmethod
    def make() -> Scorer:
        mark("call Holder.make")
        return good


alias = make_good  # defined elsewhere under another name: `marker_scorers:alias(...)` is refused
borrowed = no_error()  # a scorer defined in `scorers._builtin`, only imported here
tone = Guidelines(name="tone", guidelines="Be polite.")  # a built-in judge: data, allowed by name
CONSTANT = 7
