"""The bench's only aiokafka code: fast prefill, topic clean-up, reading a topic's end offsets.

Prefill is not what the bench measures, so it skips `TracePublisher`'s per-trace validation
and appends records straight into per-partition producer batches (lz4, as the publisher
compresses by default). The paced end-to-end run uses the real `TracePublisher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

__all__ = ["delete_topics", "list_topics", "produce_fast", "produce_paced"]


async def produce_fast(
    bootstrap: str,
    topic: str,
    items: Iterable[tuple[str, bytes]],
    *,
    partitions: int,
    on_progress: Callable[[int], None] | None = None,
    window: int = 64,
) -> int:
    """Write `(key, value)` records to `topic`, keyed to a partition by crc32; returns the count.

    At most `window` batches are unacknowledged; every batch is acknowledged on return.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        compression_type="lz4",
        linger_ms=5,
        max_batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
        client_id="tracewatch-bench",
    )
    await producer.start()
    count = 0
    pending: list[tuple[asyncio.Future[object], int]] = []
    batches = [producer.create_batch() for _ in range(partitions)]
    counts = [0] * partitions

    async def send(p: int) -> None:
        fut = await producer.send_batch(batches[p], topic, partition=p)
        pending.append((fut, counts[p]))
        batches[p] = producer.create_batch()
        counts[p] = 0
        if len(pending) >= window:
            await drain(len(pending) // 2)

    async def drain(k: int) -> None:
        nonlocal count
        head, pending[:] = pending[:k], pending[k:]
        await asyncio.gather(*(f for f, _ in head))
        n = sum(c for _, c in head)
        count += n
        if on_progress is not None:
            on_progress(n)

    try:
        for key, value in items:
            kb = key.encode()
            p = zlib.crc32(kb) % partitions
            if batches[p].append(key=kb, value=value, timestamp=None) is None:
                await send(p)
                if batches[p].append(key=kb, value=value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(value)} bytes does not fit a producer batch")
            counts[p] += 1
        for p in range(partitions):
            if counts[p]:
                await send(p)
        await drain(len(pending))
    finally:
        await producer.stop()
    return count


async def list_topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tracewatch-bench")
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with `prefix` (the bench's own namespace)."""
    if not prefix.startswith("bench."):
        raise ValueError(f"refusing to delete topics outside the bench namespace: {prefix!r}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tracewatch-bench")
    await admin.start()
    try:
        doomed = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
        if doomed:
            with contextlib.suppress(Exception):  # already gone, or being deleted: fine
                await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


async def produce_paced(
    bootstrap: str,
    topic: str,
    make: Callable[[int], tuple[str, bytes]],
    *,
    total: int,
    rate: float,
    partitions: int,
    on_sent: Callable[[int, str, float], None] | None = None,
    tick: float = 0.005,
) -> float:
    """Send `total` records at `rate`/s in ticks of `tick` seconds; returns the achieved rate.

    `make(k)` builds record k at its send moment (so it can carry that moment);
    `on_sent(k, key, t)` gets the `perf_counter()` taken just before record k was built.
    Every tick's records leave as one batch per partition (acks=all, lz4), like a publisher
    with `linger_ms` = `tick`. All sends are acknowledged on return.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type="lz4",
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
        client_id="tracewatch-bench",
    )
    await producer.start()
    futures: list[asyncio.Future[object]] = []
    sent = 0
    try:
        t0 = time.perf_counter()
        while sent < total:
            due = min(total, int((time.perf_counter() - t0) * rate) + 1)
            batches: dict[int, object] = {}
            while sent < due:
                t = time.perf_counter()
                key, value = make(sent)
                kb = key.encode()
                p = zlib.crc32(kb) % partitions
                batch = batches.get(p)
                if batch is None:
                    batch = batches[p] = producer.create_batch()
                if batch.append(key=kb, value=value, timestamp=None) is None:  # type: ignore[attr-defined]
                    futures.append(await producer.send_batch(batch, topic, partition=p))
                    batch = batches[p] = producer.create_batch()
                    batch.append(key=kb, value=value, timestamp=None)  # type: ignore[attr-defined]
                if on_sent is not None:
                    on_sent(sent, key, t)
                sent += 1
            for p, batch in batches.items():
                futures.append(await producer.send_batch(batch, topic, partition=p))
            if len(futures) > 1000:
                await asyncio.gather(*futures)
                futures.clear()
            await asyncio.sleep(tick)
        elapsed = time.perf_counter() - t0
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return total / elapsed if elapsed > 0 else 0.0
