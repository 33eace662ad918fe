"""A package whose import leaves a mark, for the registry-reference tests.

`tests.fixtures_pkg.marker_scorers` is the allowlisted module those tests aim hostile references
at: importing the package or the module, or calling one of its factories, appends a line to the
file named by `TW_REFERENCE_MARKS` (when set), so a test can prove that a refused reference
imported and called nothing.
"""

from __future__ import annotations

import os

MARKS_ENV = "TW_REFERENCE_MARKS"


def mark(event: str) -> None:
    """Record `event` in the marks file, if a test asked for one."""
    path = os.environ.get(MARKS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(event + "\n")


mark("import tests.fixtures_pkg")
