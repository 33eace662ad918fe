"""The monitoring deploy (deploy/prometheus, deploy/alertmanager, deploy/grafana) against promtool
and against the metrics tracewatch really exports.

- `promtool check config`, `promtool check rules` and the promtool unit tests of the rules
  (deploy/prometheus/tests/*.yml, run in parallel) pass; every alert has a must-fire and a
  must-not-fire case, a severity, annotations and a runbook section.
- Every PromQL expression of every Grafana dashboard parses (promtool has no "parse"
  command: each expression becomes a recording rule in a temporary rules file, checked with
  `promtool check rules`), uses only metric names that `sinks.Metrics` registers or that the
  recording rules define, and only label names those metrics have.
- The checks catch breakage: a moved threshold or a dropped sample guard makes the unit
  tests fail, and the expression checks reject an unparsable query or a misspelt metric.

Needs `promtool` (Debian package `prometheus`; CI has it): the tests that run it are skipped
without it. `amtool` (package `prometheus-alertmanager`) is optional.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from sinks import Metrics
from sinks.mlflow import SinkMetrics

REPO = Path(__file__).resolve().parents[1]
PROM = REPO / "deploy" / "prometheus"
CONFIG = PROM / "prometheus.yml"
RULE_FILES = [PROM / "rules" / "recording.yml", PROM / "rules" / "alerts.yml"]
UNIT_TESTS = sorted((PROM / "tests").glob("*.yml"))
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RUNBOOKS = REPO / "docs" / "runbooks.md"

DATASOURCE = {"type": "prometheus", "uid": "tracewatch-prom"}
SEVERITIES = {"critical", "warning"}

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (Debian package `prometheus`; CI has it)"
)
TIMEOUT = 120


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def output(r: subprocess.CompletedProcess[str]) -> str:
    """promtool's output, with the blank lines it prints per test group squeezed out."""
    return "\n".join(line for line in (r.stdout + r.stderr).splitlines() if line.strip())


def load_yaml(path: Path) -> Any:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the rule and test files")
    return yaml.safe_load(path.read_text())


# ------------------------------------------------------------------ what tracewatch exports


@dataclass(frozen=True)
class Known:
    """Metric names a query may use, with their label names (None: not checked)."""

    labels: dict[str, frozenset[str] | None]


SCRAPE_LABELS = frozenset({"job", "instance", "service"})  # added by Prometheus / prometheus.yml
BUILTIN_SERIES: dict[str, frozenset[str] | None] = {
    "up": SCRAPE_LABELS,
    "ALERTS": None,  # the alerts' own labels
    "ALERTS_FOR_STATE": None,
}


def exported_metrics() -> dict[str, frozenset[str] | None]:
    """Series names `sinks.Metrics` and the MLflow sink's `sinks.mlflow.SinkMetrics` export
    (with `_total`/`_bucket`/`_sum`/`_count`) -> labels.

    Names come from the registry's public `collect()`; label names from the metric objects
    `Metrics` holds (`_labelnames`, prometheus_client's attribute for them; None, so not
    checked, for a family registered some other way).
    """
    registry = CollectorRegistry()
    labels_of: dict[str, frozenset[str]] = {}
    for metrics in (Metrics(registry), SinkMetrics(registry)):
        for obj in vars(metrics).values():
            if isinstance(obj, MetricWrapperBase) and hasattr(obj, "_labelnames"):
                labels_of[obj._name] = frozenset(obj._labelnames) | SCRAPE_LABELS
    out: dict[str, frozenset[str] | None] = {}
    for family in registry.collect():
        labels = labels_of.get(family.name)
        if family.type == "counter":
            out[f"{family.name}_total"] = labels
        elif family.type == "histogram":
            out[f"{family.name}_bucket"] = None if labels is None else labels | {"le"}
            out[f"{family.name}_sum"] = labels
            out[f"{family.name}_count"] = labels
        else:
            out[family.name] = labels
    return out


def recorded_metrics() -> dict[str, frozenset[str]]:
    """Recording rule names -> labels, read from the `level` of `level:metric:operations`."""
    out: dict[str, frozenset[str]] = {}
    for m in re.finditer(r"^\s*-?\s*record:\s*(\S+)\s*$", RULE_FILES[0].read_text(), re.MULTILINE):
        name = m.group(1)
        out[name] = frozenset(name.split(":")[0].split("_"))
    return out


@pytest.fixture(scope="module")
def known() -> Known:
    return Known({**exported_metrics(), **recorded_metrics(), **BUILTIN_SERIES})


def test_exported_metrics_match_the_design_contract() -> None:
    """The families DESIGN.md promises are there, so the checks below test against reality."""
    m = exported_metrics()
    for name, labels in {
        "tracewatch_traces_received_total": {"experiment"},
        "tracewatch_traces_invalid_total": {"reason"},
        "tracewatch_assessments_total": {"experiment", "scorer", "result"},
        "tracewatch_assessment_value_bucket": {"experiment", "scorer", "le"},
        "tracewatch_sampled_total": {"experiment", "scorer", "state"},
        "tracewatch_scorer_duration_seconds_bucket": {"scorer", "le"},
        "tracewatch_judge_requests_total": {"model", "status"},
        "tracewatch_judge_tokens_total": {"model", "kind"},
        "tracewatch_feedback_total": {"experiment", "name", "value"},
        "tracewatch_feedback_agreement_total": {"experiment", "scorer", "judge", "user"},
        "tracewatch_end_to_end_seconds_bucket": {"le"},
        "tracewatch_consumer_lag": {"topic", "partition"},
    }.items():
        assert name in m, name
        assert m[name] is not None and m[name] - SCRAPE_LABELS == labels, name


# --------------------------------------------------------------------- a small PromQL lexer

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<space>\s+)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {
    *_LABEL_LIST_KEYWORDS,
    "offset", "bool", "and", "or", "unless", "atan2", "inf", "nan",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
_MATCHER = re.compile(r"""([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)""")


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """The vector selectors of a PromQL expression: (metric name, label names matched)."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr) if m.lastgroup != "space"]
    out: list[tuple[str, set[str]]] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "other" and text in "[{":
            # a range/subquery, or a selector without a metric name before it
            close = "]" if text == "[" else "}"
            j = i + 1
            while j < len(tokens) and tokens[j][1] != close:
                j += 1
            if text == "{":
                body = "".join(t for _, t in tokens[i + 1 : j])
                names = dict((k, v.strip("\"'`")) for k, v in _MATCHER.findall(body))
                out.append((names.get("__name__", ""), set(names)))
            i = j + 1
            continue
        if kind == "ident":
            if text in _LABEL_LIST_KEYWORDS and nxt == "(":
                while i < len(tokens) and tokens[i][1] != ")":  # skip the label list
                    i += 1
            elif nxt == "(" or text.lower() in _KEYWORDS:
                pass  # a function, an operator or a keyword
            else:
                labels: set[str] = set()
                if nxt == "{":
                    j = i + 2
                    while j < len(tokens) and tokens[j][1] != "}":
                        j += 1
                    body = "".join(t for _, t in tokens[i + 2 : j])
                    labels = {k for k, _ in _MATCHER.findall(body)}
                    i = j
                out.append((text, labels))
        i += 1
    return out


def unknown_names(expr: str, known: Known) -> list[str]:
    """Problems with the metric and label names of `expr` (empty when all is known)."""
    problems = []
    sels = selectors(expr)
    if not sels and "vector(" not in expr:
        problems.append("no metric at all")
    for name, labels in sels:
        if name not in known.labels:
            problems.append(f"unknown metric {name!r}")
            continue
        allowed = known.labels[name]
        if allowed is not None and labels - allowed - {"__name__"}:
            problems.append(f"{name} has no label(s) {sorted(labels - allowed)} (it has {sorted(allowed)})")
    return problems


def test_selector_lexer() -> None:
    assert selectors(
        'histogram_quantile(0.95, sum by (le, model) (rate(a_bucket{model=~"x|y", le!="1"}[5m] offset 1h)))'
        " / on (model) group_left () (b:c:d - 0.15) unless bool ALERTS"
    ) == [("a_bucket", {"model", "le"}), ("b:c:d", set()), ("ALERTS", set())]
    assert selectors('{__name__="up", job="x"}') == [("up", {"__name__", "job"})]
    assert selectors('label_replace(vector(0.95), "scorer", "no_error", "", "") * 1e3') == []


# ---------------------------------------------------------------------------- rule files


@needs_promtool
def test_prometheus_config_is_valid() -> None:
    r = promtool("check", "config", CONFIG)
    assert r.returncode == 0, output(r)
    assert "SUCCESS: 2 rule files found" in r.stdout, output(r)


@needs_promtool
def test_rule_files_are_valid() -> None:
    r = promtool("check", "rules", *RULE_FILES)
    assert r.returncode == 0, output(r)


@pytest.fixture(scope="module")
def unit_test_runs() -> dict[Path, subprocess.CompletedProcess[str]]:
    """`promtool test rules` on every test file, the files in parallel (each run is serial)."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        runs = pool.map(lambda f: promtool("test", "rules", f.name, cwd=f.parent), UNIT_TESTS)
        return dict(zip(UNIT_TESTS, runs, strict=True))


def test_there_are_rule_unit_tests() -> None:
    assert {p.name for p in UNIT_TESTS} >= {"recording_test.yml", "alerts_quality_test.yml"}


@needs_promtool
@pytest.mark.parametrize("path", UNIT_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(path: Path, unit_test_runs: dict[Path, subprocess.CompletedProcess[str]]) -> None:
    r = unit_test_runs[path]
    assert r.returncode == 0, output(r)
    assert "SUCCESS" in r.stdout, output(r)


def rules() -> Iterator[dict[str, Any]]:
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            yield from group["rules"]


def test_recording_rules_follow_the_naming_convention() -> None:
    for rule in rules():
        if "record" not in rule:
            continue
        name, expr = rule["record"], rule["expr"]
        level, metric, ops = [*name.split(":"), "", ""][:3]
        assert name.count(":") == 2 and level and metric.startswith("tracewatch_") and ops, name
        for label in level.split("_"):  # the level names the labels that are kept
            assert re.search(rf"\b{label}\b", expr), f"{name}: level label {label!r} not in the expression"


def test_every_alert_has_severity_annotations_and_a_runbook() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", m.group(1).strip().lower()).replace(" ", "-")
        for m in re.finditer(r"^#{1,6}\s+(.+)$", RUNBOOKS.read_text(), re.MULTILINE)
    }
    alerts = [r for r in rules() if "alert" in r]
    assert len(alerts) >= 9
    for rule in alerts:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        ann = rule.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), name
        assert ann.get("runbook_url") == f"docs/runbooks.md#{name.lower()}", name
        assert name.lower() in anchors, f"{name}: no section in {RUNBOOKS.name}"


def test_every_alert_has_a_must_fire_and_a_must_not_fire_test() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for group in load_yaml(path).get("tests", []):
            for case in group.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert not alerts - fires, f"alerts without a must-fire test: {sorted(alerts - fires)}"
    assert not alerts - quiet, f"alerts without a must-not-fire test: {sorted(alerts - quiet)}"


def test_unit_tests_evaluate_recording_rules_before_alerts() -> None:
    """Without group_eval_order promtool orders groups by name, and an alert would read the
    recorded series of the previous step. Every group of the rule files must be listed."""
    groups = {path.name: [g["name"] for g in load_yaml(path)["groups"]] for path in RULE_FILES}
    for path in UNIT_TESTS:
        spec = load_yaml(path)
        wanted = [g for f in spec["rule_files"] for g in groups[Path(f).name]]
        assert sorted(spec.get("group_eval_order", [])) == sorted(wanted), path.name


def test_rule_expressions_use_exported_metrics(known: Known) -> None:
    problems = [f"{r.get('record') or r.get('alert')}: {p}" for r in rules() for p in unknown_names(r["expr"], known)]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------ the checks catch breakage


def broken_copy(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """deploy/prometheus copied to tmp_path/name with one edit in rules/alerts.yml."""
    dest = tmp_path / name
    shutil.copytree(PROM, dest)
    alerts = dest / "rules" / "alerts.yml"
    text = alerts.read_text()
    assert text.count(old) == 1, old
    alerts.write_text(text.replace(old, new))
    return dest


def only_section(test_file: Path, alert: str) -> None:
    """Cut a unit-test file down to the cases of one alert (its `# ---- <alert>` section), to
    keep the mutation runs short; promtool's cost is per evaluation step."""
    text = test_file.read_text()
    head, _, cases = text.partition("\ntests:\n")
    sections = re.split(r"\n(?=  # -+ \w+\n)", cases)
    [section] = [s for s in sections if re.match(rf"\s*# -+ {alert}\n", s)]
    test_file.write_text(f"{head}\ntests:\n{section}\n")


@needs_promtool
def test_broken_alert_rules_fail_the_unit_tests(tmp_path: Path) -> None:
    """Moving the regression threshold silences a must-fire case; dropping the sample guard
    makes a quiet night page. Either way `promtool test rules` must fail, on that alert."""
    guard = "\n          and\n          experiment_scorer:tracewatch_scored:increase10m >= 50\n"
    control = broken_copy(tmp_path, "control", "ratio_rate1d - 0.15", "ratio_rate1d - 0.15")  # unchanged
    threshold = broken_copy(tmp_path, "threshold", "ratio_rate1d - 0.15", "ratio_rate1d - 0.50")
    no_guard = broken_copy(tmp_path, "guard", guard, "\n")
    for d in (control, threshold, no_guard):
        only_section(d / "tests" / "alerts_quality_test.yml", "ScorerPassRateRegression")
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = list(
            pool.map(
                lambda d: promtool("test", "rules", "alerts_quality_test.yml", cwd=d / "tests"),
                [control, threshold, no_guard],
            )
        )
    control_run, threshold_run, no_guard_run = runs
    assert control_run.returncode == 0, output(control_run)  # the cut-down file passes as it is
    for r in (threshold_run, no_guard_run):
        assert r.returncode != 0, output(r)
    # The must-fire case: expected the alert at 2h20m, nothing fired.
    assert re.search(
        r"alertname: ScorerPassRateRegression, time: 2h20m,\s*exp:\[\s*0:.*?got:\[\]", output(threshold_run), re.DOTALL
    ), output(threshold_run)
    # The quiet-night case (4 verdicts/min): expected nothing, the alert fired.
    assert re.search(
        r"alertname: ScorerPassRateRegression, time: 2h25m,\s*exp:\[\],\s*got:\[\s*0:", output(no_guard_run)
    ), output(no_guard_run)


@needs_promtool
def test_unparsable_alert_rule_fails_the_rule_check(tmp_path: Path) -> None:
    lag = "deriv(tracewatch_consumer_lag[10m]) > 0"
    broken = broken_copy(tmp_path, "syntax", lag, lag.replace("[10m])", "[10m]"))
    r = promtool("check", "rules", broken / "rules" / "alerts.yml")
    assert r.returncode != 0, output(r)
    assert '"ConsumerLagGrowing": could not parse expression' in output(r), output(r)


def test_expression_checks_catch_unknown_names(known: Known) -> None:
    assert unknown_names("sum(rate(tracewatch_traces_recieved_total[5m]))", known) == [
        "unknown metric 'tracewatch_traces_recieved_total'"
    ]
    # tracewatch_scorer_duration_seconds has no experiment label: such a panel would be empty
    [problem] = unknown_names('rate(tracewatch_scorer_duration_seconds_bucket{experiment="1"}[5m])', known)
    assert "no label(s) ['experiment']" in problem
    assert unknown_names("experiment_scorer:tracewatch_pass_rate:ratio_rate5m", known) == []


@needs_promtool
def test_expression_parse_check_catches_bad_queries(tmp_path: Path) -> None:
    failures = parse_failures(
        [
            ("good", "sum(rate(tracewatch_traces_received_total[5m]))"),
            ("bad", "sum(rate(tracewatch_traces_received_total[5m])"),
        ],
        tmp_path,
    )
    assert list(failures) == ["bad"], failures


# ---------------------------------------------------------------------------- dashboards


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in DASHBOARDS}


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels in order, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__interval_ms": "30000",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr: str, defined: set[str]) -> tuple[str, set[str]]:
    """`expr` with Grafana variables replaced by concrete values, and the undefined ones."""
    undefined: set[str] = set()

    def value(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        if name in GRAFANA_VARIABLES:
            return GRAFANA_VARIABLES[name]
        if name not in defined:
            undefined.add(name)
        return "x"

    return _VARIABLE.sub(value, expr), undefined


def variable_query(var: dict[str, Any]) -> str:
    q = var.get("query", "")
    return str(q.get("query", "") if isinstance(q, dict) else q)


@dataclass
class Query:
    where: str
    expr: str  # variables substituted
    undefined: set[str]


def dashboard_queries() -> list[Query]:
    """Every PromQL query of every dashboard: panel targets (rows included), annotations, and
    the selector inside `label_values(selector, label)` / the query of `query_result(query)`."""
    out = []
    for fname, dash in dashboards().items():
        variables = dash.get("templating", {}).get("list", [])
        defined = {v["name"] for v in variables}

        def add(where: str, expr: str, fname: str = fname, defined: set[str] = defined) -> None:
            sub, undefined = substitute(expr, defined)
            out.append(Query(f"{fname}: {where}", sub, undefined))

        for panel in all_panels(dash.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    add(f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"])
        for ann in dash.get("annotations", {}).get("list", []):
            if ann.get("expr"):
                add(f"annotation {ann.get('name')!r}", ann["expr"])
        for var in variables:
            if var.get("type") != "query":
                continue
            q = variable_query(var).strip()
            label_values = re.fullmatch(r"label_values\((.*),\s*\w+\s*\)", q, re.DOTALL)
            query_result = re.fullmatch(r"query_result\((.*)\)", q, re.DOTALL)
            if m := label_values or query_result:
                add(f"variable {var['name']!r}", m.group(1))
            else:
                assert re.fullmatch(r"label_values\(\s*\w+\s*\)|label_names\(.*\)|metrics\(.*\)", q), (fname, q)
    return out


def parse_failures(exprs: list[tuple[str, str]], tmp_path: Path) -> dict[str, str]:
    """Which expressions promtool cannot parse: one recording rule (in its own group, named
    after the query) per expression, checked with `promtool check rules`."""
    groups = [
        {"name": f"q{i}", "rules": [{"record": f"dashboard_query:check:q{i}", "expr": expr}]}
        for i, (_, expr) in enumerate(exprs)
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(json.dumps({"groups": groups}, indent=1))  # JSON is YAML
    r = promtool("check", "rules", path)
    if r.returncode == 0:
        return {}
    text = output(r)
    bad = {int(m.group(1)) for m in re.finditer(r'group "q(\d+)"', text)}
    assert bad, text  # failed, but on no expression of ours?
    return {exprs[i][0]: text for i in sorted(bad)}


def test_dashboards_exist() -> None:
    names = {p.stem for p in DASHBOARDS}
    assert names >= {"tracewatch-overview", "tracewatch-scorer-quality", "tracewatch-feedback", "tracewatch-judges"}


def test_dashboards_are_well_formed() -> None:
    uids = set()
    for fname, dash in dashboards().items():
        assert 36 <= dash["schemaVersion"] <= 41, fname
        assert dash["uid"] and dash["uid"] not in uids, fname
        uids.add(dash["uid"])
        ids = [p["id"] for p in all_panels(dash["panels"])]
        assert len(ids) == len(set(ids)), f"{fname}: duplicate panel ids"
        for panel in all_panels(dash["panels"]):
            assert {"h", "w", "x", "y"} <= set(panel.get("gridPos", {})), (fname, panel.get("title"))
            if panel["type"] == "row":
                continue
            assert panel.get("datasource") == DATASOURCE, (fname, panel.get("title"))
            assert panel.get("targets"), (fname, panel.get("title"))
            for target in panel["targets"]:
                assert target.get("datasource") == DATASOURCE, (fname, panel.get("title"))
        for var in dash["templating"]["list"]:
            if var.get("type") == "query":
                assert var.get("datasource") == DATASOURCE, (fname, var["name"])


def test_scorer_dashboard_has_variables_and_exemplars() -> None:
    dash = dashboards()["tracewatch-scorer-quality.json"]
    variables = {v["name"]: variable_query(v) for v in dash["templating"]["list"]}
    assert variables["experiment"].startswith("label_values(") and variables["scorer"].startswith("label_values(")
    exemplar_exprs = [t["expr"] for p in all_panels(dash["panels"]) for t in p.get("targets", []) if t.get("exemplar")]
    assert any("tracewatch_assessment_value_bucket" in e for e in exemplar_exprs)


def test_dashboard_queries_use_defined_variables() -> None:
    problems = [f"{q.where}: undefined ${sorted(q.undefined)}" for q in dashboard_queries() if q.undefined]
    assert not problems, "\n".join(problems)


def test_dashboard_queries_never_turn_no_data_into_zero() -> None:
    """A panel that shows 0 when nothing was scored reads as "everything failed"."""
    bad = [q.where for q in dashboard_queries() if re.search(r"\bor\s+(on\s*\(\s*\)\s*)?vector\(", q.expr)]
    assert not bad, bad


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) > 40
    failures = parse_failures([(q.where, q.expr) for q in queries], tmp_path)
    assert not failures, "\n".join(failures)


def test_dashboard_queries_use_exported_metrics(known: Known) -> None:
    problems = [f"{q.where}: {p}" for q in dashboard_queries() for p in unknown_names(q.expr, known)]
    assert not problems, "\n".join(problems)


def test_grafana_provisioning() -> None:
    ds = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    [source] = [d for d in ds["datasources"] if d["uid"] == DATASOURCE["uid"]]
    assert source["type"] == "prometheus"
    [dest] = source["jsonData"]["exemplarTraceIdDestinations"]
    assert dest["name"] == "trace_id" and dest["url"].endswith("/v1/traces/$${__value.raw}")
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "tracewatch.yml")["providers"]
    assert [p["type"] for p in providers] == ["file"] and providers[0]["options"]["path"]


# -------------------------------------------------------------------------- alertmanager


def test_alertmanager_routes_by_severity_to_webhooks() -> None:
    cfg = load_yaml(ALERTMANAGER)
    receivers = {r["name"]: r for r in cfg["receivers"]}
    routes = {m: r["receiver"] for r in cfg["route"]["routes"] for m in r["matchers"]}
    for severity in SEVERITIES:
        receiver = receivers[routes[f'severity="{severity}"']]
        assert receiver["webhook_configs"][0]["url"].startswith("http"), severity
    assert cfg["route"]["receiver"] in receivers


@pytest.mark.skipif(AMTOOL is None, reason="amtool not on PATH (Debian package `prometheus-alertmanager`)")
def test_alertmanager_config_with_amtool() -> None:
    assert AMTOOL is not None
    r = subprocess.run([AMTOOL, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    for labels, receiver in [
        (["severity=critical", "alertname=ScorerPassRateRegression"], "tracewatch-page"),
        (["severity=warning", "alertname=CoverageLow"], "tracewatch-ticket"),
        (["alertname=Other"], "tracewatch-default"),
    ]:
        r = subprocess.run(
            [AMTOOL, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels],
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.stdout.strip() == receiver, (labels, r.stdout, r.stderr)
