"""Parity with MLflow: the same scorers and trace accessors, run by MLflow 3.17.2 and by us.

`cases.py` holds the scorers and the accessor probe; `mlflow_side.py` runs them in MLflow's
venv (`tests/mlflow_venv.py`) the way `mlflow.genai.evaluate` does; this test runs them the
way the worker does (`Scorer.run`, then `assessments_for`, the records the sinks store) and
compares field by field. Every difference must be listed in the machine-readable table of
`docs/mlflow-compatibility.md`, and every listed difference must still be observed, so the
list can neither hide a regression nor go stale.

MLflow's output depends only on the files it reads, so it is cached under the cache folder
keyed by their hash: a warm run takes about a second, a cold one about five.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scorers import assessments_for, decode_trace
from tests.mlflow_venv import CACHE, MLFLOW_VERSION, mlflow_python

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DOC = ROOT / "docs" / "mlflow-compatibility.md"
FIXTURES = ROOT.parent / "shared" / "fixtures" / "mlflow"
_DIGEST = ".metadata.mlflow.assessment.scorerDigest"  # MLflow's hash of its own serialised scorer
TABLE_ROW = re.compile(r"^\|\s*(D\d+)\s*\|([^|]*)\|([^|]+)\|([^|]+)\|([^|]+)\|\s*$")
GLOB = re.compile(r"`([^`]+)`")


def fixture_paths() -> list[Path]:
    return sorted(FIXTURES.glob("mlflow_trace_*.json"))


def mlflow_results() -> dict[str, Any]:
    """MLflow's side, from the cache when its inputs have not changed."""
    paths = fixture_paths()
    digest = hashlib.sha256(MLFLOW_VERSION.encode())
    for p in [HERE / "cases.py", HERE / "mlflow_side.py", *paths]:
        digest.update(p.name.encode() + b"\0" + p.read_bytes())
    cached = CACHE / "parity" / f"{digest.hexdigest()[:32]}.json"
    if cached.exists():
        return dict(json.loads(cached.read_text()))
    py = mlflow_python()
    if py is None:
        pytest.fail("no MLflow venv: run `python3 tests/mlflow_venv.py` (needs network once)")
    env = {**os.environ, "PYTHONPATH": "", "MLFLOW_TRACKING_URI": f"file://{CACHE / 'parity-mlruns'}"}
    done = subprocess.run(
        [str(py), str(HERE / "mlflow_side.py"), *map(str, paths)],
        capture_output=True, text=True, timeout=300, env=env, cwd=str(HERE), check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(done.stdout)
    tmp.replace(cached)
    return dict(json.loads(done.stdout))


def tracewatch_results() -> dict[str, Any]:
    """Our side: the same cases, run as the worker runs them."""
    os.environ.pop("TRACEWATCH_PARITY_SIDE", None)
    sys.modules.pop("tests.parity.cases", None)
    from tests.parity import cases

    out: dict[str, Any] = {"aggregations": {s.name: list(s.aggregations) for s in cases.SCORERS}, "traces": {}}
    for path in fixture_paths():
        trace = decode_trace(path.read_bytes())
        results: dict[str, list[dict[str, Any]]] = {}
        for s in cases.SCORERS:
            res = s.run(trace)
            stored = assessments_for(
                trace.trace_id, trace.experiment_id, s.name, feedbacks=res.feedbacks, skip_reason=res.skip_reason
            )
            results[s.name] = [
                cases.feedback_fields(
                    {
                        "name": a.name,
                        "value": a.value,
                        "rationale": a.rationale,
                        "error": None if a.error is None else a.error.to_dict(),
                        "source_type": a.source.source_type,
                        "source_id": a.source.source_id,
                        "metadata": a.metadata,
                    }
                )
                for a in stored
                if a.state != "skipped"  # a skip is a coverage record, not a feedback
            ]
        out["traces"][path.name] = {"probe": json.loads(json.dumps(cases.probe(trace), default=repr)), "results": results}
    return out


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Flatten dicts (one compared field per key) so a difference names the exact field."""
    if isinstance(value, dict):  # an empty one adds nothing: no metadata and {} are the same
        for k, v in value.items():
            _flat(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> tuple[dict[str, tuple[Any, Any]], dict[str, int]]:
    """Every compared field whose values differ, keyed `result:<trace>:<scorer>:<field>` or
    `trace:<trace>:<accessor>`, plus the counts (pairs, identical pairs, fields, identical fields)."""
    diffs: dict[str, tuple[Any, Any]] = {}
    counts = {"pairs": 0, "pairs_identical": 0, "pairs_identical_but_digest": 0, "fields": 0, "fields_identical": 0}
    for name, agg in theirs["aggregations"].items():
        if ours["aggregations"].get(name) != agg:
            diffs[f"aggregations:{name}"] = (ours["aggregations"].get(name), agg)
    for tname, their in theirs["traces"].items():
        tkey = tname.removeprefix("mlflow_trace_").removesuffix(".json")
        our = ours["traces"][tname]
        for sname, their_fbs in their["results"].items():
            our_fbs = our["results"].get(sname)
            a: dict[str, Any] = {"count": None if our_fbs is None else len(our_fbs)}
            b: dict[str, Any] = {"count": len(their_fbs)}
            for i, fb in enumerate(our_fbs or []):
                _flat(f"[{i}]", fb, a)
            for i, fb in enumerate(their_fbs):
                _flat(f"[{i}]", fb, b)
            counts["pairs"] += 1
            same = same_but_digest = True
            for field in sorted(set(a) | set(b)):
                if a.get(field, "<absent>") != b.get(field, "<absent>"):
                    diffs[f"result:{tkey}:{sname}:{field}"] = (a.get(field, "<absent>"), b.get(field, "<absent>"))
                    same = False
                    same_but_digest &= field.endswith(_DIGEST)
            counts["pairs_identical"] += same
            counts["pairs_identical_but_digest"] += same_but_digest
        for path, value in their["probe"].items():
            counts["fields"] += 1
            got = our["probe"].get(path, "<absent>")
            if got == value:
                counts["fields_identical"] += 1
            else:
                diffs[f"trace:{tkey}:{path}"] = (got, value)
    return diffs, counts


def listed_differences() -> dict[str, list[str]]:
    """The compatibility table: difference id -> the globs of the compared keys it covers.

    Each row must also say what differs, why and how to get MLflow's behaviour (non-empty cells).
    """
    rows: dict[str, list[str]] = {}
    for line in DOC.read_text().splitlines():
        m = TABLE_ROW.match(line)
        if m is None:
            continue
        globs = GLOB.findall(m.group(2))
        assert globs and all(c.strip() for c in m.groups()[2:]), f"incomplete row in {DOC.name}: {line}"
        rows[m.group(1)] = globs
    assert rows, f"no difference table found in {DOC}"
    return rows


def _listed(key: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, g) for g in globs)


@pytest.fixture(scope="module")
def compared() -> tuple[dict[str, tuple[Any, Any]], dict[str, int]]:
    return differences(tracewatch_results(), mlflow_results())


def test_every_difference_is_listed(compared) -> None:
    diffs, counts = compared
    listed = listed_differences()
    unlisted = {k: v for k, v in diffs.items() if not any(_listed(k, g) for g in listed.values())}
    report = "\n".join(f"  {k}: ours={v[0]!r:.200} mlflow={v[1]!r:.200}" for k, v in sorted(unlisted.items()))
    assert not unlisted, f"{len(unlisted)} differences from MLflow not in {DOC.name}:\n{report}\ncounts: {counts}"


def test_every_listed_difference_is_observed(compared) -> None:
    diffs, _ = compared
    stale = [i for i, g in listed_differences().items() if not any(_listed(k, g) for k in diffs)]
    assert not stale, f"listed in {DOC.name} but no longer observed (remove them): {stale}"


def test_the_comparison_covers_everything(compared) -> None:
    _, counts = compared
    n_traces = len(fixture_paths())
    from tests.parity import cases

    assert n_traces >= 7 and counts["pairs"] == n_traces * len(cases.SCORERS)
    assert counts["fields"] > 1000


if __name__ == "__main__":  # `python -m tests.parity.test_parity`: print the counts and differences
    d, c = differences(tracewatch_results(), mlflow_results())
    for k, v in sorted(d.items()):
        print(f"{k}: ours={v[0]!r:.150} mlflow={v[1]!r:.150}")
    print(c)
