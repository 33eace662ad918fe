"""The fake judge server over real loopback HTTP: verdicts, faults, stats, CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from stream.cli.judge_server import FakeJudge, JudgeServerConfig
from tests.helpers import fresh_judge

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def srv(judge_server):
    return fresh_judge(judge_server)


_HTTP: dict[str, httpx.Client] = {}


@pytest.fixture(scope="module", autouse=True)
def http_client():
    # One pooled client: building an httpx.Client per call costs ~20 ms (TLS context).
    with httpx.Client(timeout=5) as client:
        _HTTP["client"] = client
        yield client
    _HTTP.clear()


def ask(srv, prompt: str, model: str = "gpt-4.1-mini") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    return _HTTP["client"].post(f"{srv.base_url}/chat/completions", json=body)


def verdict(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return orjson.loads(response.json()["choices"][0]["message"]["content"])


def test_answers_follow_the_prompt(srv) -> None:
    ok = ask(srv, "Is this polite? Thank you kindly.")
    body = ok.json()
    assert body["model"] == "gpt-4.1-mini" and body["object"] == "chat.completion"
    assert verdict(ok) == {"result": "yes", "rationale": "The content meets the criteria."}
    usage = body["usage"]
    assert usage["prompt_tokens"] == len("Is this polite? Thank you kindly.") // 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert verdict(ask(srv, "response: [[bad]]"))["result"] == "no"
    assert verdict(ask(srv, "content: [[unsafe]]"))["result"] == "no"
    assert verdict(ask(srv, "Rate it.\nAnswer type: number"))["result"] in (4, 5)
    assert verdict(ask(srv, "Rate [[bad]].\nAnswer type: number"))["result"] == 1
    assert verdict(ask(srv, "Polite?\nAnswer type: bool"))["result"] is True
    garbage = ask(srv, "[[garbage]]").json()["choices"][0]["message"]["content"]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(garbage)


def test_fail_fraction_is_a_pure_function_of_the_prompt(srv) -> None:
    srv.configure(fail_fraction=0.3)
    prompts = [f"prompt number {i}" for i in range(60)]
    first = [verdict(ask(srv, p))["result"] for p in prompts]
    assert first == [verdict(ask(srv, p))["result"] for p in prompts]
    assert 8 <= first.count("no") <= 30
    srv.configure(fail_fraction=1.0)
    assert verdict(ask(srv, "anything"))["result"] == "no"


def test_faults_429_500_and_garbage(srv) -> None:
    srv.configure(rate_429=1.0, retry_after=0.25)
    limited = ask(srv, "p")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "0.25"
    srv.configure(rate_429=0.0, rate_500=1.0)
    assert ask(srv, "p").status_code == 500
    srv.configure(rate_500=0.0, garbage_rate=1.0)
    content = ask(srv, "p").json()["choices"][0]["message"]["content"]
    assert not content.lstrip().startswith("{")
    assert _HTTP["client"].post(f"{srv.base_url}/chat/completions", content=b"nope").status_code == 400
    stats = _HTTP["client"].get(srv.base_url.removesuffix("/v1") + "/stats").json()
    assert stats["by_status"] == {"429": 1, "500": 1, "200": 1, "400": 1}
    assert stats["requests"] == 4 and stats["answers"] == {"garbage": 1}


def test_seeded_faults_are_reproducible(srv) -> None:
    def run() -> list[int]:
        srv.configure(rate_429=0.5, seed=42)
        return [ask(srv, "same prompt").status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert 3 <= first.count(429) <= 17


async def test_stats_track_concurrency_and_latency(srv) -> None:
    srv.configure(latency=0.1)
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=5) as client:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        start = time.perf_counter()
        responses = await asyncio.gather(*(client.post("/chat/completions", json=body) for _ in range(8)))
        elapsed = time.perf_counter() - start
    assert all(r.status_code == 200 for r in responses)
    assert 0.1 <= elapsed < 0.6
    stats = srv.stats()
    assert stats["max_in_flight"] == 8 and stats["in_flight"] == 0 and stats["requests"] == 8
    srv.reset()
    assert srv.stats()["requests"] == 0 and srv.stats()["max_in_flight"] == 0


def test_config_validation_and_app_without_server() -> None:
    with pytest.raises(ValueError, match="rate_429"):
        JudgeServerConfig(rate_429=1.5)
    with pytest.raises(ValueError):
        JudgeServerConfig(latency=-1)
    judge = FakeJudge(JudgeServerConfig(fail_fraction=0.1))
    assert judge.stats()["config"]["fail_fraction"] == 0.1


def test_module_cli_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stream.cli.judge_server", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for flag in (
        "--latency",
        "--jitter",
        "--rate-429",
        "--retry-after",
        "--rate-500",
        "--garbage-rate",
        "--seed",
    ):
        assert flag in out.stdout
