"""Config that always validates: flags and variables through the same `Settings`, one line per
bad value naming the flag or the variable, exit 2, and no command stopped by a setting it
does not use (issue 12 item 4, issue 20 item 3)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import stream.worker._runtime as runtime
from scorers import JudgeClient
from stream._config import Settings, load_settings
from stream._exceptions import ConfigError
from stream.cli._app import app

_ALL = (*(f"TRACEWATCH_{name.upper()}" for name in Settings.model_fields), "TRACEWATCH_SCORERS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch) -> None:
    for name in _ALL:
        monkeypatch.delenv(name, raising=False)


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def one_line(result: Any) -> str:
    """The command's error: exit 2, one line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# ------------------------------------------------------------------ Settings itself


def test_judge_in_flight_has_one_default() -> None:
    from stream.worker._loop import WorkerOptions

    assert WorkerOptions().judge_max_in_flight is None  # the worker takes Settings'
    assert Settings().judge_max_in_flight == 32


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        ({"partitions": ("--partitions", -3)}, "--partitions -3: must be >= 1"),
        ({"judge_max_in_flight": ("--judge-max-in-flight", 0)}, "--judge-max-in-flight 0: must be >= 1"),
        ({"redis_url": ("--redis-url", "notaurl")}, "--redis-url notaurl: must be a redis://"),
        ({"metrics_port": ("--metrics-port", -2)}, "--metrics-port -2: must be >= -1"),
    ],
)
def test_flags_are_validated(flags, line) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(flags=flags)
    assert str(info.value).startswith(line)


@pytest.mark.parametrize(
    ("var", "value", "line"),
    [
        ("TRACEWATCH_PARTITIONS", "0", "TRACEWATCH_PARTITIONS=0: must be >= 1"),
        ("TRACEWATCH_PARTITIONS", "four", "TRACEWATCH_PARTITIONS=four: must be a whole number"),
        ("TRACEWATCH_JUDGE_MAX_IN_FLIGHT", "0", "TRACEWATCH_JUDGE_MAX_IN_FLIGHT=0: must be >= 1"),
        ("TRACEWATCH_METRICS_PORT", "70000", "TRACEWATCH_METRICS_PORT=70000: must be <= 65535"),
        ("TRACEWATCH_COMPRESSION", "brotli", "TRACEWATCH_COMPRESSION=brotli: must be 'none', 'gzip'"),
        ("TRACEWATCH_KAFKA_BOOTSTRAP", "host:port", "TRACEWATCH_KAFKA_BOOTSTRAP=host:port: must be host:port"),
        ("TRACEWATCH_JUDGE_PRICES", "{nope", "TRACEWATCH_JUDGE_PRICES={nope: must be a JSON object"),
        ("TRACEWATCH_JUDGE_BASE_URL", "api.openai.com", "TRACEWATCH_JUDGE_BASE_URL=api.openai.com: must be an http"),
    ],
)
def test_variables_are_named(monkeypatch, var, value, line) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(line), str(info.value)
    assert "\n" not in str(info.value)


def test_secrets_are_never_echoed(monkeypatch) -> None:
    monkeypatch.setenv("TRACEWATCH_API_KEYS", "s3cret")
    with pytest.raises(ConfigError) as info:
        load_settings(flags={"api_keys": ("--api-keys", 42)})
    assert "s3cret" not in str(info.value) and "42" not in str(info.value)


def test_metrics_port_minus_one_disables_from_flag_and_variable(monkeypatch) -> None:
    # `worker --help` says -1 disables /metrics: the variable means the same as the flag.
    monkeypatch.setenv("TRACEWATCH_METRICS_PORT", "-1")
    assert load_settings().metrics_port == -1
    assert load_settings(flags={"metrics_port": ("--metrics-port", -1)}).metrics_port == -1


def test_unused_settings_do_not_stop_a_command(monkeypatch) -> None:
    monkeypatch.setenv("TRACEWATCH_REDIS_URL", "notaurl")
    monkeypatch.setenv("TRACEWATCH_API_PORT", "http")
    s = load_settings(uses=("kafka_bootstrap", "partitions"), flags={"partitions": ("--partitions", 6)})
    assert s.partitions == 6
    with pytest.raises(ConfigError, match=r"^TRACEWATCH_REDIS_URL=notaurl"):
        load_settings(uses=("redis_url",))


def test_every_judge_knob_reaches_the_client(monkeypatch) -> None:
    env = {
        "TRACEWATCH_JUDGE_BASE_URL": "http://127.0.0.1:1/v1",
        "TRACEWATCH_JUDGE_API_KEY": "k",
        "TRACEWATCH_JUDGE_MAX_IN_FLIGHT": "3",
        "TRACEWATCH_JUDGE_RPM": "600",
        "TRACEWATCH_JUDGE_TPM": "90000",
        "TRACEWATCH_JUDGE_TIMEOUT": "2.5",
        "TRACEWATCH_JUDGE_MAX_RETRIES": "1",
        "TRACEWATCH_JUDGE_PRICES": '{"gpt-4.1-mini": [0.4, 1.6], "gpt-4o": 2.5}',
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ours = JudgeClient(**Settings().judge_client_options())
    theirs = JudgeClient.from_env()  # scorers' own reading of the same variables
    for client in (ours, theirs):
        assert (client.base_url, client.max_in_flight, client.timeout, client.max_retries) == (
            "http://127.0.0.1:1/v1", 3, 2.5, 1,
        )
        assert client._rpm is not None and client._tpm is not None
        assert client.cost_of("gpt-4.1-mini", 1000, 1000) == pytest.approx(2.0)
        assert client.cost_of("gpt-4o", 1000, 0) == pytest.approx(2.5)


def test_the_worker_builds_its_judge_client_from_settings(monkeypatch) -> None:
    import inspect

    src = inspect.getsource(runtime.run_worker)
    assert "judge_client_options()" in src


# ------------------------------------------------------------------ per command


@pytest.fixture
def no_worker(monkeypatch) -> list[Settings]:
    runs: list[Settings] = []

    async def fake_run_worker(settings, scorers, **kwargs) -> int:
        runs.append(settings)
        return 0

    monkeypatch.setattr(runtime, "run_worker", fake_run_worker)
    return runs


def test_topics_create_names_the_variable() -> None:
    line = one_line(run("topics", "create", env={"TRACEWATCH_PARTITIONS": "0"}))
    assert line == "TRACEWATCH_PARTITIONS=0: must be >= 1"


def test_topics_create_refuses_negative_partitions() -> None:
    assert one_line(run("topics", "create", "--partitions", "-3")) == "--partitions -3: must be >= 1"


def test_worker_names_the_flag_and_the_variable(no_worker) -> None:
    assert one_line(run("worker", "-s", "no_error", "--judge-max-in-flight", "0")) == (
        "--judge-max-in-flight 0: must be >= 1"
    )
    line = one_line(run("worker", "-s", "no_error", env={"TRACEWATCH_REDIS_URL": "notaurl"}))
    assert line.startswith("TRACEWATCH_REDIS_URL=notaurl: ")
    assert one_line(run("worker", "-s", "no_error", env={"TRACEWATCH_METRICS_PORT": "-5"})) == (
        "TRACEWATCH_METRICS_PORT=-5: must be >= -1"
    )
    assert not no_worker


def test_worker_ignores_api_settings_and_takes_flags(no_worker) -> None:
    env = {"TRACEWATCH_API_PORT": "nope", "TRACEWATCH_METRICS_PORT": "-1"}
    result = run("worker", "-s", "no_error", "--judge-max-in-flight", "5", env=env)
    assert result.exit_code == 0, result.output
    [s] = no_worker
    assert (s.judge_max_in_flight, s.metrics_port) == (5, -1)


def test_publish_names_the_variable(tmp_path) -> None:
    (tmp_path / "t.jsonl").write_text("{}\n")
    line = one_line(run("publish", str(tmp_path / "t.jsonl"), env={"TRACEWATCH_KAFKA_BOOTSTRAP": "a:b:c"}))
    assert line.startswith("TRACEWATCH_KAFKA_BOOTSTRAP=a:b:c: must be host:port")


def test_scorers_commands_name_the_variable_and_the_flag() -> None:
    line = one_line(run("scorers", "list", env={"TRACEWATCH_REDIS_URL": "notaurl"}))
    assert line.startswith("TRACEWATCH_REDIS_URL=notaurl: must be a redis://")
    line = one_line(run("scorers", "list", "--redis-url", "http://x"))
    assert line.startswith("--redis-url http://x: must be a redis://")


def test_api_names_the_variable() -> None:
    line = one_line(run("api", env={"TRACEWATCH_API_PORT": "-1", "TRACEWATCH_API_KEYS": "k"}))
    assert line == "TRACEWATCH_API_PORT=-1: must be >= 0"
    line = one_line(run("api", "--port", "99999", env={"TRACEWATCH_API_KEYS": "k"}))
    assert line == "--port 99999: must be <= 65535"
    line = one_line(run("api", env={"TRACEWATCH_API_KEYS": "k", "TRACEWATCH_API_RATE_LIMIT": "-1"}))
    assert line == "TRACEWATCH_API_RATE_LIMIT=-1: must be >= 0"


def test_evaluate_names_the_variable_and_the_flag(fixtures_dir) -> None:
    line = one_line(run("evaluate", str(fixtures_dir), "-s", "no_error", env={"TRACEWATCH_JUDGE_RPM": "0"}))
    assert line == "TRACEWATCH_JUDGE_RPM=0: must be > 0"
    line = one_line(run("evaluate", str(fixtures_dir), "-s", "no_error", "--judge-max-in-flight", "0"))
    assert line == "--judge-max-in-flight 0: must be >= 1"


def test_evaluate_ignores_settings_it_does_not_use(fixtures_dir) -> None:
    result = run("evaluate", str(fixtures_dir), "-s", "no_error", env={"TRACEWATCH_REDIS_URL": "notaurl"})
    assert result.exit_code == 0, result.output


def test_evaluate_calls_side_files_not_traces(fixtures_dir) -> None:
    # Like `publish`: trace_ids.json is an index, not an invalid trace.
    result = run("evaluate", str(fixtures_dir), "-s", "no_error")
    assert result.exit_code == 0, result.output
    assert "not a trace, ignored:" in result.output and "trace_ids.json" in result.output
    assert "invalid record" not in result.output
    assert "(0 invalid)" in result.output


def test_demo_names_the_variable(monkeypatch) -> None:
    import stream.cli._demo as demo

    started: list[Any] = []

    async def fake_run_demo(opts, console) -> int:
        started.append(opts)
        return 0

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert one_line(run("demo", env={"TRACEWATCH_API_PORT": "x"})) == "TRACEWATCH_API_PORT=x: must be a whole number"
    result = run("demo", env={"TRACEWATCH_API_PORT": "58080", "TRACEWATCH_METRICS_PORT": "59108"})
    assert result.exit_code == 0, result.output
    assert (started[0].api_port, started[0].metrics_port) == (58080, 59108)
