"""The seed's code examples, read from the reference docs (never copied) and made runnable.

`examples()` splits `reference/mlflow-genai-evaluation-docs.txt` into its `.mdx` pages, and
each page into fenced blocks outside of which `#` lines are headings, so every Python block
(tagged `python`, or untagged but Python) is known by `(page, heading, n)`: its page, the
nearest heading above it and its position under that heading. `run()` applies `IMPORTS`,
the only change made to an example, and executes it the way a notebook would, returning the
namespace and the value of a trailing expression (the seed's `mlflow.genai.evaluate(...)`
calls are not assigned).
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import FIXTURES

SEED_DOCS = FIXTURES.parent.parent / "reference" / "mlflow-genai-evaluation-docs.txt"

# The explicit import rewrite: MLflow's modules -> tracewatch's. Nothing else in an example is
# changed. `import mlflow` gets a shim of plain aliases (`tests/seed/mlflow_shim.py`).
IMPORTS: dict[str, str] = {
    "import mlflow\n": "import tests.seed.mlflow_shim as mlflow\n",
    "from mlflow.genai.scorers import get_scorer\n": "from stream import get_scorer\n",
    "from mlflow.genai.scorers import list_scorers\n": "from stream import list_scorers\n",
    "from mlflow.genai.scorers import ": "from scorers import ",
    "from mlflow.genai.judges import ": "from scorers import ",
    "from mlflow.genai import ": "from scorers import ",
    "from mlflow.entities import ": "from scorers import ",
}

_PAGE = re.compile(r"^---\[FILE: (?P<name>[^\]]+)\]---\n.*?^```text\n(?P<body>.*?)^```\n\n-{20,}", re.M | re.S)
_HEADING = re.compile(r"^#{1,6} (?P<title>.+)$")


@dataclass(frozen=True, slots=True)
class Example:
    page: str
    heading: str
    n: int  # position among the Python blocks under this heading
    lang: str  # "python", or "" for an untagged block
    code: str

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.page, self.heading, self.n)


def _looks_like_python(code: str) -> bool:
    return bool(re.search(r"^\s*(def |@|import |from )", code, re.M))


def examples(path: Path = SEED_DOCS) -> list[Example]:
    """Every Python block of the seed, in page order."""
    out: list[Example] = []
    for page in _PAGE.finditer(path.read_text()):
        heading, fence, lang = "", None, ""
        buf: list[str] = []
        counts: dict[str, int] = {}
        for line in page["body"].splitlines(keepends=True):
            stripped = line.strip()
            if fence is None:
                if stripped.startswith("```"):
                    fence, lang, buf = line[: len(line) - len(line.lstrip())], stripped[3:], []
                elif m := _HEADING.match(stripped):
                    heading = m["title"]
                continue
            if stripped == "```":
                code = textwrap.dedent("".join(buf))
                if lang == "python" or (lang == "" and _looks_like_python(code)):
                    n = counts.get(heading, 0)
                    counts[heading] = n + 1
                    out.append(Example(page["name"], heading, n, lang, code))
                fence = None
                continue
            buf.append(line)
    return out


def example(page: str, heading: str, n: int = 0) -> Example:
    found = [e for e in examples() if e.key == (page, heading, n)]
    assert len(found) == 1, f"no example {n} under {heading!r} in {page} (did the seed change?)"
    return found[0]


def rewrite(code: str) -> str:
    """`code` with `IMPORTS` applied; fails if any MLflow import is left."""
    for theirs, ours in IMPORTS.items():
        code = re.sub(rf"^{re.escape(theirs)}", ours.replace("\\", "\\\\"), code, flags=re.M)
    left = re.findall(r"^\s*(?:import|from) mlflow\b.*$", code, flags=re.M)
    assert not left, f"imports without a rewrite: {left}"
    return code


def run(*blocks: Example, preamble: str = "", namespace: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
    """Execute `preamble` then `blocks` (rewritten) in one namespace, as cells of a notebook.

    `preamble` holds what a page uses without importing it (in MLflow's spelling: it is
    rewritten too). Returns the namespace and the value of the last block's trailing
    expression, if it ends with one (else None).
    """
    ns: dict[str, Any] = {"__name__": "seed_example"} if namespace is None else namespace
    cells = [("preamble", preamble)] if preamble else []
    cells += [(f"{b.page}:{b.heading}[{b.n}]", b.code) for b in blocks]
    value: Any = None
    for label, code in cells:
        tree = ast.parse(rewrite(code), filename=label)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        assert last is None or isinstance(last, ast.Expr)
        exec(compile(tree, label, "exec"), ns)
        value = None
        if last is not None:
            value = eval(compile(ast.Expression(last.value), label, "eval"), ns)
    return ns, value
