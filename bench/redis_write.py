"""How many pairs per second `RedisSink.write` sustains (not a test; pytest does not collect it).

    python -m bench.redis_write [--batches 200] [--batch-size 500]

Starts a private redis-server on a free port (or uses TRACEWATCH_REDIS_URL), writes batches of
single-assessment pairs with unique trace ids, then the same batches again (replays), and
prints pairs/s for both, plus the share of time spent building the batch in Python.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid

import redis.asyncio as aioredis

from scorers import Assessment
from sinks import RedisSink

T0 = 1_750_000_000_000


def pairs_for(batch: int, size: int) -> list[list[Assessment]]:
    return [
        [
            Assessment(
                trace_id=f"tr-{batch:06d}{i:026x}",
                experiment_id=str(i % 3),
                scorer=f"scorer_{i % 5}",
                name=f"scorer_{i % 5}",
                value=(i % 4 == 0) if i % 2 else i / size,
                rationale="The answer addresses the question directly.",
                duration_s=0.002,
                created_ms=T0 + batch * 1000,
                trace_end_ms=T0 + batch * 1000 - 50,
            )
        ]
        for i in range(size)
    ]


async def run(url: str, batches: int, size: int) -> None:
    client = aioredis.Redis.from_url(url)
    prefix = f"twbench:{uuid.uuid4().hex}:"
    sink = RedisSink(client, prefix=prefix)
    data = [pairs_for(b, size) for b in range(batches)]
    await sink.write(data[0][:1])  # load the script
    try:
        for label in ("new", "replay"):
            t0 = time.perf_counter()
            for pairs in data:
                await sink.write(pairs)
            dt = time.perf_counter() - t0
            rate, per_batch = batches * size / dt, dt / batches * 1000
            print(f"{label:>6}: {rate:>9,.0f} pairs/s  ({per_batch:.1f} ms per batch of {size})")
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=5000)]
        for i in range(0, len(keys), 5000):
            await client.delete(*keys[i : i + 5000])
        await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=500)
    args = ap.parse_args()
    url = os.environ.get("TRACEWATCH_REDIS_URL")
    proc = None
    if not url:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        binary = shutil.which("redis-server") or "redis-server"
        cmd = [binary, "--port", str(port), "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.3)
    try:
        asyncio.run(run(url, args.batches, args.batch_size))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
