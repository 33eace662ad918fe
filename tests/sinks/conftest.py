"""A real Redis for the sink tests: `TRACEWATCH_REDIS_URL` when it answers, else a private server.

The private `redis-server` listens on a free port picked by binding port 0, saves nothing and
is killed when the session ends. Each test gets its own key prefix and deletes its keys after.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import redis
import redis.asyncio as aioredis


@dataclass(frozen=True)
class RedisServer:
    url: str
    private: bool  # True when we started it: server-wide stats are ours alone


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    url = os.environ.get("TRACEWATCH_REDIS_URL")
    if url and _answers(url):
        yield RedisServer(url, private=False)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no reachable TRACEWATCH_REDIS_URL and no redis-server binary")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start")
            time.sleep(0.02)
        yield RedisServer(url, private=True)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def prefix() -> str:
    return f"twtest:{uuid.uuid4().hex}:"


@pytest.fixture
async def client(redis_server: RedisServer, prefix: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_server.url)
    try:
        yield c
    finally:
        await delete_prefix(c, prefix)
        await c.aclose()


async def delete_prefix(c: aioredis.Redis, prefix: str) -> None:
    keys = [k async for k in c.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await c.delete(*keys)
