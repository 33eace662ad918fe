"""Helpers shared by tests: traces made from the real MLflow fixtures (by `stream.traffic`), ports, metrics."""

from __future__ import annotations

from typing import Any

from stream.traffic import synth_traces

__all__ = ["free_port", "fresh_judge", "load_generator", "parse_metrics", "synth_traces"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text exposition -> {(name, labels): value} (exemplars and comments ignored)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def fresh_judge(server: Any, **overrides: Any) -> Any:
    """A `JudgeServer` back to a clean state for the next test, and returned.

    Its switches go back to the `JudgeServerConfig` defaults (plus `overrides`), requests a
    previous test timed out on are given up to 2 s to finish server-side (they would
    otherwise count in this test's stats), and every counter is zeroed.
    """
    import time
    from dataclasses import asdict

    from stream.cli.judge_server import JudgeServerConfig

    server.configure(**{**asdict(JudgeServerConfig()), **overrides})
    deadline = time.monotonic() + 2.0
    while server.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    server.reset()
    return server


def load_generator():  # type: ignore[no-untyped-def]
    """deploy/traffic/generate.py as a module (it is a script, not part of a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "tracewatch_traffic_generate"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "deploy" / "traffic" / "generate.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module
