"""`tracewatch api`: refuses to start without API keys, warns without token secrets."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import stream.cli._api as cmd_api
from stream._config import Settings
from stream._exceptions import ConfigError
from stream.api._deadline import HeaderDeadlineProtocol


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("api")(cmd_api.api_command)
    app.command("noop")(lambda: None)  # two commands: "api" stays a subcommand
    return app


class FakeUvicorn:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def run(self, app: Any, **kwargs: Any) -> None:
        self.calls.append((app, kwargs))


@pytest.fixture
def env(monkeypatch):
    for name in ("TRACEWATCH_API_KEYS", "TRACEWATCH_FEEDBACK_SECRETS", "TRACEWATCH_API_HOST", "TRACEWATCH_API_PORT"):
        monkeypatch.delenv(name, raising=False)
    fake = FakeUvicorn()
    import uvicorn  # the command imports it when it runs

    monkeypatch.setattr(uvicorn, "run", fake.run)
    return monkeypatch, fake


def test_refuses_to_start_without_api_keys(cli, env) -> None:
    _, fake = env
    result = CliRunner().invoke(cli, ["api"])
    assert result.exit_code == 2
    assert "TRACEWATCH_API_KEYS" in result.output
    assert fake.calls == []


def test_warns_when_tokens_are_disabled_and_serves_on_the_configured_address(cli, env) -> None:
    monkeypatch, fake = env
    monkeypatch.setenv("TRACEWATCH_API_KEYS", "k1")
    result = CliRunner().invoke(cli, ["api"])
    assert result.exit_code == 0, result.output
    assert "TRACEWATCH_FEEDBACK_SECRETS" in result.output and "disabled" in result.output
    [(app, kwargs)] = fake.calls
    assert (kwargs["host"], kwargs["port"]) == ("127.0.0.1", 8080)
    assert app.title == "tracewatch"


def test_flags_override_and_workers_use_the_factory(cli, env) -> None:
    monkeypatch, fake = env
    monkeypatch.setenv("TRACEWATCH_API_KEYS", "k1")
    monkeypatch.setenv("TRACEWATCH_FEEDBACK_SECRETS", "s1")
    result = CliRunner().invoke(cli, ["api", "--host", "0.0.0.0", "--port", "9999", "--workers", "3"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    [(target, kwargs)] = fake.calls
    assert target == "stream.cli._api_server:app_from_env"
    assert (kwargs["host"], kwargs["port"], kwargs["workers"], kwargs["factory"]) == ("0.0.0.0", 9999, 3, True)


def test_served_with_the_header_deadline_from_the_environment(cli, env) -> None:
    monkeypatch, fake = env
    monkeypatch.setenv("TRACEWATCH_API_KEYS", "k1")
    monkeypatch.setenv("TRACEWATCH_API_HEADER_TIMEOUT", "3.5")
    monkeypatch.setenv("TRACEWATCH_API_BODY_TIMEOUT", "7")
    assert CliRunner().invoke(cli, ["api"]).exit_code == 0
    assert CliRunner().invoke(cli, ["api", "--workers", "2"]).exit_code == 0
    (_, one), (_, many) = fake.calls
    assert issubclass(one["http"], HeaderDeadlineProtocol) and one["http"].header_timeout == 3.5
    # Worker processes get the class by name (it is pickled) and read the env themselves.
    assert many["http"] is HeaderDeadlineProtocol and pickle.loads(pickle.dumps(many["http"])) is many["http"]
    assert Settings().api_body_timeout == 7.0


def test_bad_api_env_fails_at_startup(cli, env) -> None:
    monkeypatch, fake = env
    monkeypatch.setenv("TRACEWATCH_API_KEYS", "k1")
    monkeypatch.setenv("TRACEWATCH_API_RATE_LIMIT", "-5")
    result = CliRunner().invoke(cli, ["api"])
    assert result.exit_code == 2
    assert result.output == "TRACEWATCH_API_RATE_LIMIT=-5: must be >= 0\n"  # the variable, in one line
    assert fake.calls == []


def test_check_settings() -> None:
    with pytest.raises(ConfigError, match="TRACEWATCH_API_KEYS"):
        cmd_api.check_settings(Settings(api_keys=[]))
    assert cmd_api.check_settings(Settings(api_keys=["k"], feedback_secrets=["s"])) == []
    [warning] = cmd_api.check_settings(Settings(api_keys=["k"], feedback_secrets=[]))
    assert "tokens are disabled" in warning
