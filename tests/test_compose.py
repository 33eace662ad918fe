"""docker-compose.yml, the Dockerfile and the compose scrape config, checked without a Docker engine.

- `docker-compose config -q` accepts the file, with and without each profile (skipped
  when neither `docker-compose` nor `docker compose` is installed; CI installs docker-compose).
- Every service the stack needs is there and configured as the README's guarantees ask
  (KRaft Kafka, Redis with AOF and noeviction, two workers, the API on 0.0.0.0, Prometheus with
  exemplar storage, Alertmanager, Grafana, the simulated judge, the opt-in traffic and mlflow
  profiles, the MLflow sink scrapeable on the port Prometheus expects), and
  every `depends_on` condition can be met.
- Every file mounted into Prometheus, Grafana and Alertmanager exists in the repo, and what those
  servers read inside the container (the rule files of the scrape config, the dashboards folder
  of the provisioning) is covered by a mount.
- deploy/prometheus/prometheus.compose.yml passes `promtool check config` (its rule_files are
  relative to the file, so they resolve both in the repo and in the container), scrapes the
  compose services on the ports they listen on, and keeps the job names the alerts and
  dashboards use.
- Every tracewatch command the services run parses with our CLI (and the traffic generator's
  arguments with its parser); the Dockerfile's COPY sources exist and survive .dockerignore.

Values are read with compose's `${VAR:-default}` interpolation applied with the defaults (the
environment of the machine running the tests is ignored, so the shipped defaults are checked).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.helpers import load_generator

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PROM_COMPOSE = REPO / "deploy" / "prometheus" / "prometheus.compose.yml"
PROM_LOCAL = REPO / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = REPO / "deploy" / "grafana"

PROMTOOL = shutil.which("promtool")
TRACEWATCH_IMAGE = "tracewatch:local"
SERVICES = {
    "kafka", "topics", "redis", "worker", "api", "prometheus", "alertmanager", "grafana", "fake-judge", "traffic",
    "otlp", "mlflow-sink",
}  # fmt: skip
PROFILES = {"traffic": {"traffic"}, "mlflow": {"mlflow-sink"}}  # opt-in: started only with --profile
MONITORING = ("prometheus", "grafana", "alertmanager")


def compose_command() -> list[str] | None:
    """`docker-compose` (v1, what CI installs) or the `docker compose` plugin, if either is here."""
    if exe := shutil.which("docker-compose"):
        return [exe]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    return None


_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(text: str) -> str:
    """Compose's variable substitution with every variable unset: `${X:-d}` -> d, `$$` -> `$`."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if op and op.endswith("-"):
            return arg
        raise AssertionError(f"${{{name or m.group(4)}}} has no default: `docker-compose config` fails without it")

    return _VAR.sub(sub, text)


def interpolated(value: Any) -> Any:
    """`value` (parsed YAML) with every string interpolated, as compose does after parsing."""
    if isinstance(value, str):
        return interpolate(value)
    if isinstance(value, dict):
        return {k: interpolated(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolated(v) for v in value]
    return value


def load_yaml(text: str) -> Any:
    yaml = pytest.importorskip("yaml", reason="PyYAML (a dev dependency) reads the compose file")
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    spec = interpolated(load_yaml(COMPOSE.read_text()))
    assert isinstance(spec, dict) and isinstance(spec.get("services"), dict)
    return spec


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def prom_compose() -> dict[str, Any]:
    return dict(load_yaml(PROM_COMPOSE.read_text()))


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    assert isinstance(cmd, list), f"write commands as lists (exec form), not {cmd!r}"
    return [str(c) for c in cmd]


def env(service: dict[str, Any]) -> dict[str, str]:
    e = service.get("environment") or {}
    if isinstance(e, list):
        e = dict(item.split("=", 1) for item in e)
    return {k: str(v) for k, v in e.items()}


def flag(cmd: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in a command line."""
    for i, arg in enumerate(cmd):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(cmd):
            return cmd[i + 1]
    return None


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short syntax `SRC:DST[:MODE]`."""
    out = []
    for v in service.get("volumes", []):
        assert isinstance(v, str), f"use the short volume syntax: {v!r}"
        src, dst, *_ = v.split(":")
        out.append((src, dst))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """Where a container path of a service comes from in the repo (None: no bind mount covers it)."""
    best: tuple[int, Path] | None = None
    for src, dst in mounts(service):
        if not is_bind(src):
            continue
        p, d = PurePosixPath(container_path), PurePosixPath(dst)
        if p == d or d in p.parents:
            rest = p.relative_to(d)
            cand = (REPO / src / rest).resolve()
            if best is None or len(d.parts) > best[0]:
                best = (len(d.parts), cand)
    return None if best is None else best[1]




# ------------------------------------------------------------------------- docker-compose


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_docker_compose_config_accepts_the_file(profile: str | None) -> None:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed (CI installs docker-compose)")
    args = [*cmd, "-f", str(COMPOSE)]
    if profile:
        args += ["--profile", profile]
    # The environment's own TRACEWATCH_* settings must not leak into the check.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRACEWATCH_", "GRAFANA_", "COMPOSE_"))}
    r = subprocess.run([*args, "config", "-q"], cwd=REPO, env=clean, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    listed = subprocess.run([*args, "config", "--services"], cwd=REPO, env=clean, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    # v2 lists a profile's services only with --profile; v1 (1.29) always lists them
    always = SERVICES - set().union(*PROFILES.values())
    assert always | (PROFILES[profile] if profile else set()) <= set(listed.stdout.split()) <= SERVICES


def test_every_service_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES


def test_kafka_is_a_single_kraft_node(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"]), kafka["image"]
    e = env(kafka)
    assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "zookeeper" not in str(kafka).lower()
    # containers reach it as kafka:9092, which is what every tracewatch service is told
    assert "PLAINTEXT://kafka:9092" in e["KAFKA_ADVERTISED_LISTENERS"]
    assert e["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # topics come from `topics`
    assert "healthcheck" in kafka


def test_redis_is_persistent_and_never_evicts(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    redis = services["redis"]
    cmd = command(redis)
    assert flag(cmd, "--appendonly") == "yes" and flag(cmd, "--maxmemory-policy") == "noeviction"
    [(volume, target)] = mounts(redis)
    assert target == "/data" and not is_bind(volume) and volume in compose["volumes"]


def test_tracewatch_services_share_the_image_and_settings(services: dict[str, dict[str, Any]]) -> None:
    ours = {n: s for n, s in services.items() if s.get("image") == TRACEWATCH_IMAGE}
    assert set(ours) == {"topics", "worker", "api", "fake-judge", "traffic", "otlp", "mlflow-sink"}
    for name, s in ours.items():
        assert s["build"]["context"] == "." and s["build"].get("dockerfile", "Dockerfile") == "Dockerfile", name
        e = env(s) if name != "fake-judge" else {"TRACEWATCH_KAFKA_BOOTSTRAP": "kafka:9092"}
        assert e.get("TRACEWATCH_KAFKA_BOOTSTRAP") == "kafka:9092", name
    for name in ("worker", "api", "mlflow-sink"):
        assert env(services[name])["TRACEWATCH_REDIS_URL"].startswith("redis://redis:6379"), name


def test_roles(services: dict[str, dict[str, Any]]) -> None:
    assert command(services["topics"]) == ["topics", "create"]
    worker = services["worker"]
    assert command(worker)[0] == "worker"
    assert worker["deploy"]["replicas"] >= 2
    assert not worker.get("ports"), "replicas cannot share a host port; Prometheus finds them by DNS"
    assert "container_name" not in worker
    api = command(services["api"])
    assert api[0] == "api" and flag(api, "--host") == "0.0.0.0"
    assert env(services["api"]).get("TRACEWATCH_API_KEYS"), "the API refuses to start without keys"
    judge = services["fake-judge"]
    assert command(judge)[:1] == ["judge-server"]
    assert flag(command(judge), "--host") == "0.0.0.0" and flag(command(judge), "--port") == "8900"
    assert judge["labels"]["org.tracewatch.simulated"] == "true"
    assert "SIMULATED" in judge["labels"]["org.tracewatch.description"]
    assert env(worker)["TRACEWATCH_JUDGE_BASE_URL"] == "http://fake-judge:8900/v1"
    for profile, names in PROFILES.items():
        for name in names:
            assert services[name]["profiles"] == [profile], name
    assert {n for n, s in services.items() if s.get("profiles")} == set().union(*PROFILES.values())
    sink = services["mlflow-sink"]
    assert command(sink) == ["sink", "mlflow"]
    uri = env(sink)["MLFLOW_TRACKING_URI"]
    assert re.fullmatch(r"https?://[^/]+.*", uri) and not re.search(r"//(127\.|localhost|\[::1\])", uri), (
        "a loopback default would be the container itself"
    )
    if "host.docker.internal" in uri:
        assert "host.docker.internal:host-gateway" in sink.get("extra_hosts", []), "Linux engines need the mapping"
    prom = command(services["prometheus"])
    assert "--enable-feature=exemplar-storage" in prom


def test_depends_on_conditions_can_be_met(services: dict[str, dict[str, Any]]) -> None:
    one_shot = {n for n, s in services.items() if s.get("restart", "no") in ("no", "on-failure")}
    for name, s in services.items():
        deps = s.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: give depends_on conditions"
        for dep, cond in deps.items():
            assert dep in services, (name, dep)
            condition = cond["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy: it has no healthcheck"
            elif condition == "service_completed_successfully":
                assert dep in one_shot, f"{name} waits for {dep} to exit, but {dep} restarts forever"
            else:
                assert condition == "service_started", (name, dep, condition)
    for name in ("worker", "api", "traffic", "mlflow-sink"):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully", name
    long_running = set(services) - {"topics", "traffic"}
    missing = [n for n in long_running if "healthcheck" not in services[n]]
    assert not missing, f"no healthcheck: {missing}"


def test_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, s in services.items():
        for port in s.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


# ------------------------------------------------------------------------ mounted files


def test_files_mounted_into_monitoring_exist(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    for name in MONITORING:
        binds = [(src, dst) for src, dst in mounts(services[name]) if is_bind(src)]
        assert binds, f"{name} mounts nothing of ours"
        for src, dst in binds:
            path = (REPO / src).resolve()
            assert path.exists(), f"{name}: {src} (mounted at {dst}) is not in the repo"
            assert REPO in path.parents, f"{name}: {src} is outside the repo"
        for src, _ in mounts(services[name]):
            if not is_bind(src):
                assert src in compose.get("volumes", {}), f"{name}: volume {src} is not declared"


def test_prometheus_reads_our_config_and_rules(
    services: dict[str, dict[str, Any]], prom_compose: dict[str, Any]
) -> None:
    prom = services["prometheus"]
    config = flag(command(prom), "--config.file")
    assert config is not None
    assert host_path(prom, config) == PROM_COMPOSE
    # rule_files are relative to the config file: each must be mounted where that points
    rule_files = prom_compose["rule_files"]
    assert rule_files
    for rule in rule_files:
        in_container = str(PurePosixPath(config).parent / rule)
        src = host_path(prom, in_container)
        assert src is not None and src.is_file(), f"{rule} -> {in_container}: not mounted"
        assert src == (PROM_COMPOSE.parent / rule).resolve()  # the same files promtool checks
    assert {*rule_files} == {*load_yaml(PROM_LOCAL.read_text())["rule_files"]}


def test_alertmanager_reads_our_config(services: dict[str, dict[str, Any]], prom_compose: dict[str, Any]) -> None:
    am = services["alertmanager"]
    config = flag(command(am), "--config.file")
    assert config is not None
    assert host_path(am, config) == REPO / "deploy" / "alertmanager" / "alertmanager.yml"
    listen = flag(command(am), "--web.listen-address")
    assert listen is not None
    [target] = [t for a in prom_compose["alerting"]["alertmanagers"] for c in a["static_configs"] for t in c["targets"]]
    assert target == f"alertmanager:{listen.rsplit(':', 1)[1]}"


def test_grafana_reads_our_provisioning_and_dashboards(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    assert host_path(grafana, "/etc/grafana/provisioning") == GRAFANA / "provisioning"
    providers = load_yaml((GRAFANA / "provisioning" / "dashboards" / "tracewatch.yml").read_text())["providers"]
    for provider in providers:
        folder = host_path(grafana, provider["options"]["path"])
        assert folder is not None and sorted(folder.glob("*.json")), provider
    home = env(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        path = host_path(grafana, home)
        assert path is not None and path.is_file(), home
    # The provisioned data source's URL must reach Prometheus from inside the Grafana container.
    sources = load_yaml((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    for source in sources:
        host = re.sub(r"^\w+://|:\d+.*$|/.*$", "", source["url"])
        if host in ("127.0.0.1", "localhost"):
            assert grafana.get("network_mode") == "service:prometheus", (
                f"{source['url']} is Grafana's own loopback: run it in Prometheus' network namespace"
            )
            published = [str(p) for p in services["prometheus"].get("ports", [])]
            assert any(p.endswith(":3000") for p in published), "Grafana's port must be published by prometheus"
        else:
            assert host in services, source["url"]


# ---------------------------------------------------------------------- scrape config


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not on PATH (Debian package `prometheus`; CI has it)")
def test_promtool_accepts_the_compose_scrape_config() -> None:
    assert PROMTOOL is not None
    r = subprocess.run(
        [PROMTOOL, "check", "config", str(PROM_COMPOSE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 rule files found" in r.stdout + r.stderr


def test_scrape_config_targets_the_compose_services(
    services: dict[str, dict[str, Any]], prom_compose: dict[str, Any]
) -> None:
    jobs = {j["job_name"]: j for j in prom_compose["scrape_configs"]}
    local_jobs = {j["job_name"] for j in load_yaml(PROM_LOCAL.read_text())["scrape_configs"]}
    assert local_jobs <= set(jobs), "alerts and dashboards select on these job names"
    assert prom_compose["global"] == load_yaml(PROM_LOCAL.read_text())["global"]
    # every replica of the worker is its own target (DNS), on the port it serves /metrics on
    [sd] = jobs["tracewatch-worker"]["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    assert str(sd["port"]) == env(services["worker"])["TRACEWATCH_METRICS_PORT"]
    assert "static_configs" not in jobs["tracewatch-worker"]
    # the MLflow sink likewise, on its metrics port, listening beyond its own loopback
    [sd] = jobs["tracewatch-mlflow-sink"]["dns_sd_configs"]
    sink = env(services["mlflow-sink"])
    assert sd["names"] == ["mlflow-sink"] and sd["type"] == "A"
    assert str(sd["port"]) == sink["TRACEWATCH_MLFLOW_SINK_METRICS_PORT"]
    assert sink["TRACEWATCH_METRICS_HOST"] == "0.0.0.0"
    assert f"127.0.0.1:{sd['port']}/metrics" in str(services["mlflow-sink"]["healthcheck"]["test"])
    [api_target] = jobs["tracewatch-api"]["static_configs"][0]["targets"]
    assert api_target == f"api:{flag(command(services['api']), '--port')}"
    for job in jobs.values():
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host = target.rsplit(":", 1)[0]
                assert host in services or host in ("127.0.0.1", "localhost"), (job["job_name"], target)


# ------------------------------------------------------------------ commands and image


def parse_cli(args: list[str]) -> dict[str, Any]:
    """Parse a `tracewatch ...` command line with our CLI (options and types), without running it."""
    import typer.main

    from stream.cli._app import app

    cmd: Any = typer.main.get_command(app)
    name = "tracewatch"
    while hasattr(cmd, "commands"):  # a group: descend into the named sub-command
        assert args, f"{name}: no sub-command"
        name, *args = args
        assert name in cmd.commands, f"`tracewatch {name}` is not a command (known: {sorted(cmd.commands)})"
        cmd = cmd.commands[name]
    return dict(cmd.make_context(name, list(args)).params)


@pytest.mark.parametrize("name", ["topics", "worker", "api", "fake-judge", "otlp", "mlflow-sink"])
def test_service_commands_parse(services: dict[str, dict[str, Any]], name: str) -> None:
    service = services[name]
    assert "entrypoint" not in service  # the image's: tracewatch
    params = parse_cli(command(service))
    if name == "worker":
        from scorers import resolve_scorer
        from stream.registry._scorer_set import parse_scorer_option

        assert params["scorer"]
        for ref in params["scorer"]:
            parse_scorer_option(ref, resolve_scorer)  # raises on an unknown scorer or a bad rate


def test_traffic_runs_the_generator_from_the_image(services: dict[str, dict[str, Any]]) -> None:
    traffic = services["traffic"]
    entry = traffic["entrypoint"]
    assert entry[0] == "python"
    assert f"COPY deploy/traffic/generate.py {entry[1]}" in DOCKERFILE.read_text()
    args = load_generator().build_parser().parse_args(command(traffic))
    assert args.rate > 0 and 0 <= args.error_share < args.incident_error_share <= 1
    [(_src, dst)] = mounts(traffic)
    assert str(args.fixtures) == dst


def _ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    out = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pat = line.lstrip("!").strip("/")
        rx = re.escape(pat).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        out.append((negated, re.compile(rx.replace(r"\?", "[^/]"))))
    return out


def ignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, rx in _ignore_patterns():
        if any(rx.fullmatch(c) for c in candidates):
            result = not negated
    return result


def test_dockerfile_builds_a_non_root_tracewatch_image() -> None:
    text = DOCKERFILE.read_text()
    instructions = [
        line.split(None, 1)
        for line in re.sub(r"\\\n", " ", text).splitlines()
        if line.strip() and not line.startswith("#")
    ]
    [base] = [arg for op, arg in instructions if op == "FROM"]
    assert base.strip() == "python:3.11-slim"
    users = [arg.strip() for op, arg in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    entrypoints = [arg.strip() for op, arg in instructions if op == "ENTRYPOINT"]
    assert entrypoints[-1] == '["tracewatch"]'
    assert any(op == "RUN" and re.search(r"pip install (--no-deps )?\.(\s|$)", arg) for op, arg in instructions)
    for op, arg in instructions:
        if op == "COPY":
            *sources, _dest = arg.split()
            for src in sources:
                assert (REPO / src).exists(), src
                assert not ignored(src), f".dockerignore drops {src}, which the Dockerfile copies"
                if (REPO / src).is_dir():
                    py = next((REPO / src).glob("*.py"))
                    assert not ignored(str(py.relative_to(REPO))), py
    # nothing else goes into the build context: VCS, local state, caches, tests
    for path in (".git/HEAD", ".stack/kafka/x", ".env", "tests/conftest.py", "stream/__pycache__/x.pyc"):
        assert ignored(path), path
