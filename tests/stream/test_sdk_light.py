"""The publisher SDK is light: `from stream import TracePublisher` costs only what publishing needs."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from stream._config import Settings
from stream._exceptions import ConfigError
from stream.sdk import PublisherConfig, TracePublisher

HEAVY = ("redis", "fastapi", "uvicorn", "starlette", "pydantic_settings", "stream.registry", "stream.worker", "stream.api")


@pytest.mark.parametrize(
    "statement",
    ["from stream import TracePublisher", "from stream import log_feedback, mint_feedback_token", "import stream.sdk"],
)
def test_the_sdk_imports_nothing_heavy(statement: str) -> None:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == []
    assert "aiokafka" in loaded or statement != "from stream import TracePublisher"


def test_defaults_match_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP", "TOPIC_PREFIX", "COMPRESSION", "MAX_TRACE_BYTES"):
        monkeypatch.delenv(f"TRACEWATCH_{name}", raising=False)
    settings = Settings()
    assert PublisherConfig.from_env() == PublisherConfig.of(settings) == PublisherConfig()
    assert PublisherConfig().traces_topic == settings.topics.traces


def test_the_environment_reads_as_settings_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEWATCH_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("tracewatch_topic_prefix", "team-a.")  # any case, as pydantic-settings
    monkeypatch.setenv("TRACEWATCH_COMPRESSION", "zstd")
    monkeypatch.setenv("TRACEWATCH_MAX_TRACE_BYTES", " 2048 ")
    settings = Settings()
    config = PublisherConfig.from_env()
    assert config == PublisherConfig.of(settings)
    assert config.traces_topic == settings.topics.traces == "team-a.traces"


@pytest.mark.parametrize(
    ("name", "value"),
    [("TRACEWATCH_COMPRESSION", "brotli"), ("TRACEWATCH_MAX_TRACE_BYTES", "12"), ("TRACEWATCH_MAX_TRACE_BYTES", "1MB")],
)
def test_a_bad_variable_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        PublisherConfig.from_env()
    with pytest.raises(ValueError):  # stream.Settings refuses the same value
        Settings()


def test_the_publisher_takes_plain_arguments_or_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEWATCH_KAFKA_BOOTSTRAP", "from-env:9092")
    producer: Any = object()  # never started: only the configuration is under test
    pub = TracePublisher(producer=producer)
    assert pub._settings.kafka_bootstrap == "from-env:9092"
    assert pub.topic == "tracewatch.traces"
    pub = TracePublisher("given:9092", topic="mine", producer=producer)
    assert (pub._settings.kafka_bootstrap, pub.topic) == ("given:9092", "mine")
    pub = TracePublisher(settings=Settings(kafka_bootstrap="s:9092", topic_prefix="x."), producer=producer)
    assert (pub._settings.kafka_bootstrap, pub.topic) == ("s:9092", "x.traces")
