"""OTLP: receiver spans/s vs a plain decode loop, assembler traces/s, root end -> assessments in Redis.

    python -m bench --only otlp          # the scenario (sizes follow --quick)
    python -m bench.otlp [--batches 20]  # only the receiver-vs-decode ratio

1. Ingest: batches like the OpenTelemetry SDK's BatchSpanProcessor exports (512 spans, traces
   of 4 spans with GenAI attributes, protobuf) through one `tracewatch otlp` process (its own
   process, HTTP, Kafka acks=all), against the same bodies parsed with
   `ExportTraceServiceRequest.FromString` and walked span by span in a loop.
2. Assembler: the spans of N traces are put on the spans topic through the receiver first,
   then one `tracewatch assemble` process drains them; traces/s from its first emitted trace
   to its last (event time is old by then, so the quiet period does not hold it back).
3. Latency: receiver + assembler + worker, traces sent over OTLP at half the pipeline's
   sustainable rate (measured first: all three stages running, fed as fast as the receiver
   takes it, traces/s reaching Redis); for each sampled trace, from its root span's end to
   its assessments being readable in Redis, split per stage. Expected: the quiet period plus at most ~250 ms.

Sizes stay small by default (the machine is shared); the lead runs the full sizes alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

KEY = "bench-otlp-key"
QUIET = 1.0  # the assembler's quiet period in the latency run (seconds)


def make_batches(n: int, spans: int) -> list[bytes]:
    """`n` protobuf export bodies of `spans` spans each (traces of 4 spans)."""
    out = []
    base = time.time_ns()
    for _ in range(n):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="bench")))
        ss = rs.scope_spans.add()
        ss.scope.name = "bench.otlp"
        trace_id = os.urandom(16)
        root = b""
        for i in range(spans):
            if i % 4 == 0:
                trace_id, root = os.urandom(16), b""
            span = Span(trace_id=trace_id, span_id=os.urandom(8), parent_span_id=root, name=f"op-{i % 4}")
            root = root or span.span_id
            span.start_time_unix_nano, span.end_time_unix_nano = base + i, base + i + 1_000_000
            for k, v in (("gen_ai.operation.name", "chat"), ("gen_ai.request.model", "gpt-4.1-mini")):
                span.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
            span.attributes.append(KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=120)))
            ss.spans.append(span)
        out.append(req.SerializeToString())
    return out


def decode_loop(bodies: list[bytes]) -> float:
    """Spans/s of a plain parse-and-walk loop over the bodies."""
    start = time.perf_counter()
    n = 0
    for body in bodies:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    n += len(span.trace_id) > 0
    return n / (time.perf_counter() - start)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def through_receiver(bodies: list[bytes], spans: int, concurrency: int) -> float:
    """Spans/s acknowledged by one receiver process (HTTP, protobuf, acks=all)."""
    port = _free_port()
    env = {
        **os.environ,
        "TRACEWATCH_API_KEYS": KEY,
        "TRACEWATCH_TOPIC_PREFIX": f"bench-otlp.{uuid.uuid4().hex[:8]}.",
        "TRACEWATCH_OTLP_HTTP_PORT": str(port),
        "TRACEWATCH_OTLP_GRPC_PORT": "-1",
        "TRACEWATCH_OTLP_METRICS_PORT": "-1",
    }
    subprocess.run([sys.executable, "-m", "stream", "topics", "create"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "stream", "otlp", "--log-level", "WARNING"], env=env)
    url = f"http://127.0.0.1:{port}/v1/traces"
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {KEY}"}
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(300):
                try:
                    await client.post(url, content=b"", headers=headers)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            queue = list(bodies)
            start = time.perf_counter()

            async def feed() -> None:
                while queue:
                    body = queue.pop()
                    r = await client.post(url, content=body, headers=headers)
                    r.raise_for_status()

            await asyncio.gather(*(feed() for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(30)
    return len(bodies) * spans / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-spans", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    bodies = make_batches(args.batches, args.batch_spans)
    plain = decode_loop(bodies)
    ingest = asyncio.run(through_receiver(bodies, args.batch_spans, args.concurrency))
    print(f"plain decode loop : {plain:12,.0f} spans/s")
    print(f"one receiver      : {ingest:12,.0f} spans/s (HTTP protobuf, Kafka acks=all)")
    print(f"ratio             : {ingest / plain:12.3f}")


if __name__ == "__main__":
    main()


# --- the `python -m bench` scenario ------------------------------------------------------------


def trace_body(n: int, *, end_ns: int | None = None) -> tuple[list[str], bytes]:
    """One OTLP export of `n` traces of 4 spans (root last, ending at `end_ns`); their ids."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="bench")))
    ss = rs.scope_spans.add()
    ss.scope.name = "bench.otlp"
    end = end_ns or time.time_ns()
    ids = []
    for _ in range(n):
        trace_id, root_id = os.urandom(16), os.urandom(8)
        ids.append("tr-" + trace_id.hex())
        for k, op in enumerate(("chat", "execute_tool", "embeddings")):
            child = Span(trace_id=trace_id, span_id=os.urandom(8), parent_span_id=root_id, name=f"{op}-{k}",
                         start_time_unix_nano=end - 5_000_000 + k, end_time_unix_nano=end - 1_000_000)
            child.attributes.append(KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value=op)))
            child.attributes.append(KeyValue(key="output.value", value=AnyValue(string_value="some answer words")))
            ss.spans.append(child)
        root = Span(trace_id=trace_id, span_id=root_id, name="agent", start_time_unix_nano=end - 6_000_000,
                    end_time_unix_nano=end)
        root.attributes.append(KeyValue(key="openinference.span.kind", value=AnyValue(string_value="AGENT")))
        root.attributes.append(KeyValue(key="input.value", value=AnyValue(string_value="a question")))
        root.attributes.append(KeyValue(key="output.value", value=AnyValue(string_value="an answer of words")))
        ss.spans.append(root)
    return ids, req.SerializeToString()


class _Procs:
    """`tracewatch otlp` / `assemble` / `worker` subprocesses in one bench namespace."""

    def __init__(self, ns: Any, log_dir: Any) -> None:
        self.ns, self.log_dir = ns, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"otlp-{args[0]}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "stream", *args, "--log-level", "WARNING"],
                                env=self.ns.env(**env), stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


async def _post_all(url: str, bodies: list[bytes], concurrency: int = 4) -> None:
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {KEY}",
               "x-mlflow-experiment-id": "1"}
    queue = list(bodies)
    async with httpx.AsyncClient(timeout=60) as client:

        async def feed() -> None:
            while queue:
                body = queue.pop()
                for _ in range(100):
                    r = await client.post(url, content=body, headers=headers)
                    if r.status_code not in (429, 503):
                        break
                    await asyncio.sleep(0.1)
                r.raise_for_status()

        await asyncio.gather(*(feed() for _ in range(concurrency)))


async def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def _count_traces(settings: Any, want: int, timeout: float) -> tuple[float, float, int]:
    """Read the traces topic until `want` distinct traces: (first seen, last seen, count)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(settings.topics.traces, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen: set[bytes] = set()
    first = last = 0.0
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for msgs in batch.values():
                for m in msgs:
                    seen.add(m.key or b"")
                    last = time.perf_counter()
                    first = first or last
    finally:
        await consumer.stop()
    return first, last, len(seen)


async def _scenario(ctx: Any) -> dict[str, Any]:
    from bench._infra import Namespace, free_port

    quick = ctx.quick
    out: dict[str, Any] = {}
    # 1. receiver vs plain decode loop
    n_batches = 20 if quick else 200
    bodies = make_batches(n_batches, 512)
    plain = decode_loop(bodies)
    ns = Namespace("otlp")
    await ns.create()
    procs = _Procs(ns, ctx.log_dir)
    try:
        http = free_port()
        recv_env = {"TRACEWATCH_API_KEYS": KEY, "TRACEWATCH_OTLP_HTTP_PORT": str(http),
                    "TRACEWATCH_OTLP_GRPC_PORT": "-1", "TRACEWATCH_OTLP_METRICS_PORT": "-1"}
        procs.start("otlp", **recv_env)
        url = f"http://127.0.0.1:{http}/v1/traces"
        await _wait_http(url)
        t0 = time.perf_counter()
        await _post_all(url, bodies, concurrency=8)
        ingest = n_batches * 512 / (time.perf_counter() - t0)
        out["ingest"] = {"spans": n_batches * 512, "batch_spans": 512, "rate": ingest, "decode_loop_rate": plain,
                         "ratio": ingest / plain}
        ctx.say(f"otlp ingest: {ingest:,.0f} spans/s vs plain decode {plain:,.0f} spans/s")

        # 2. assembler drain (spans prefilled through the receiver, roots last in each body)
        n_traces = 2_000 if quick else 20_000
        asm_bodies = [trace_body(128, end_ns=time.time_ns() - 30 * 10**9)[1] for _ in range(n_traces // 128)]
        n_traces = len(asm_bodies) * 128
        # the ingest spans sit on the same topic: count only the new traces
        await _post_all(url, asm_bodies, concurrency=4)
        asm_env = {"TRACEWATCH_ASSEMBLER_QUIET_INTERVAL": str(QUIET), "TRACEWATCH_ASSEMBLER_METRICS_PORT": "-1",
                   "TRACEWATCH_ASSEMBLER_GROUP": f"{ns.settings.consumer_group}-asm"}
        procs.start("assemble", **asm_env)
        first, last, got = await _count_traces(ns.settings, n_traces + n_batches * 128, timeout=300)
        rate = (got - 1) / (last - first) if last > first else 0.0
        out["assembler"] = {"traces": got, "rate": rate}
        ctx.say(f"assembler: {rate:,.0f} traces/s ({got:,} traces)")

        # 3. latency at half the pipeline's rate, through receiver + assembler + worker
        from bench._infra import WorkerProc

        # The traces topic still holds the assembler run's traces: the worker starts past them
        # (else it drains that backlog during the run and its wait is counted as latency).
        await _skip_to_end(ns.settings)
        worker = WorkerProc(ns, log_path=ctx.log_dir / "otlp-worker.log")
        sink = ns.sink()
        seconds = ctx.e2e_seconds
        tick = 0.05
        sample: dict[str, int] = {}
        pending: dict[str, int] = {}
        lat: list[float] = []
        sending = True
        # per-stage split of the sampled traces: receiver ack, assembler emission (the traces
        # topic message's timestamp, stamped when the assembler produced it), Redis readable
        acked: dict[str, int] = {}
        emitted: dict[str, int] = {}
        found: dict[str, int] = {}

        async def poll() -> None:  # readable in Redis: polled every 20 ms while sending and after
            deadline = None
            while pending or sending:
                for tid in list(pending):
                    doc = await sink.get_trace(tid)
                    if doc and doc.get("assessments"):
                        found[tid] = now = time.time_ns()
                        lat.append((now - pending.pop(tid)) / 1e6)
                if not sending:
                    deadline = deadline or time.monotonic() + 60
                    if time.monotonic() > deadline:
                        return
                await asyncio.sleep(0.02)

        async def watch_traces() -> None:  # the traces topic's timestamps of the sampled traces
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(ns.settings.topics.traces, bootstrap_servers=ns.settings.kafka_bootstrap,
                                        auto_offset_reset="latest", enable_auto_commit=False)
            await consumer.start()
            try:
                while sending or len(emitted) < len(sample):
                    batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                    for msgs in batch.values():
                        for m in msgs:
                            tid = (m.key or b"").decode()
                            if tid in sample:
                                emitted[tid] = m.timestamp * 1_000_000
            finally:
                await consumer.stop()

        try:
            watcher = asyncio.create_task(watch_traces())
            headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {KEY}",
                       "x-mlflow-experiment-id": "1"}
            async with httpx.AsyncClient(timeout=30) as client:
                # warm-up: one trace through receiver, assembler and worker (group joined) first
                warm, body = trace_body(1)
                (await client.post(url, content=body, headers=headers)).raise_for_status()
                deadline = time.monotonic() + 60
                while not ((await sink.get_trace(warm[0])) or {}).get("assessments"):
                    if time.monotonic() > deadline:
                        raise RuntimeError("otlp latency: the warm-up trace never reached Redis")
                    await asyncio.sleep(0.05)
                # The sustainable rate of the whole pipeline (receiver, assembler, worker, Kafka,
                # Redis and this load generator share the machine), not the assembler's alone.
                pipeline = await _pipeline_rate(url, sink, 6_000 if quick else 20_000)
                out["pipeline"] = {"rate": pipeline}
                ctx.say(f"pipeline (receiver + assembler + worker): {pipeline:,.0f} traces/s to Redis")
                offered = max(20.0, pipeline / 2)
                per_tick = max(1, round(offered * tick))
                poller = asyncio.create_task(poll())
                start = time.perf_counter()
                k = 0
                while time.perf_counter() - start < seconds:
                    end_ns = time.time_ns()
                    ids, body = trace_body(per_tick, end_ns=end_ns)
                    r = await client.post(url, content=body, headers=headers)
                    r.raise_for_status()
                    if k % 4 == 0:
                        sample[ids[0]] = pending[ids[0]] = end_ns
                        acked[ids[0]] = time.time_ns()
                    k += 1
                    await asyncio.sleep(max(0.0, start + k * tick - time.perf_counter()))
            sent = k * per_tick
            sending = False
            await poller
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher, 10)
        finally:
            await sink.aclose()
            worker.stop()
        lat.sort()

        def q(p: float) -> float | None:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None

        stages = _stages(sample, acked, emitted, found)
        out["latency"] = {"offered_rate": sent / seconds, "seconds": seconds, "sampled": len(sample),
                          "measured": len(lat), "p50_ms": q(0.5), "p99_ms": q(0.99), "quiet_ms": QUIET * 1000,
                          "stages": stages}
        for name, st in stages.items():
            ctx.say(f"  {name}: p50 {st['p50_ms']} ms, p99 {st['p99_ms']} ms, max {st['max_ms']} ms (n={st['n']})")
        ctx.say(f"otlp latency root end -> Redis: p50 {q(0.5)} ms, p99 {q(0.99)} ms (quiet {QUIET * 1000:.0f} ms)")
    finally:
        procs.stop()
        await ns.cleanup()
    return out


async def _pipeline_rate(url: str, sink: Any, n_traces: int) -> float:
    """Traces/s through receiver + assembler + worker into Redis, fed as fast as the receiver takes it.

    Root ends are old (event time still holds each trace for the quiet period after its spans
    reach Kafka, which delays the first result, not the rate); the rate is counted from the
    first trace scored in Redis to the last.
    """
    from bench._infra import CODE_SCORERS, coverage_totals

    bodies = [trace_body(128, end_ns=time.time_ns() - 30 * 10**9)[1] for _ in range(max(1, n_traces // 128))]
    want = len(bodies) * 128
    name = CODE_SCORERS[0]

    async def done() -> int:
        return (await coverage_totals(sink, ["1"], [name]))[name]

    base = await done()
    feeder = asyncio.create_task(_post_all(url, bodies, concurrency=4))
    first = last = 0.0
    first_n = 0
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            n = await done() - base
            now = time.perf_counter()
            if n and not first:
                first, first_n = now, n
            if n >= want:
                last = now
                break
            await asyncio.sleep(0.05)
    finally:
        await feeder
    return (want - first_n) / (last - first) if last > first else 0.0


async def _skip_to_end(settings: Any) -> None:
    """Commit the worker group's offsets at the end of the traces topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.consumer_group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topics.traces, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit(dict(ends))
    finally:
        await consumer.stop()


def _pick(xs: list[float], p: float) -> float | None:
    return round(xs[min(len(xs) - 1, int(p * len(xs)))], 1) if xs else None


def _stages(
    sample: dict[str, int], acked: dict[str, int], emitted: dict[str, int], found: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """p50/p99/max of each stage of the sampled traces (ms): root end -> receiver ack ->
    assembler emission (traces topic timestamp) -> assessments readable in Redis."""
    spans = {
        "receiver (root end -> spans acked)": [(acked[t] - e) / 1e6 for t, e in sample.items() if t in acked],
        "assembler (spans acked -> trace produced)": [(emitted[t] - acked[t]) / 1e6 for t in sample
                                                      if t in emitted and t in acked],
        "worker (trace produced -> readable in Redis)": [(found[t] - emitted[t]) / 1e6 for t in sample
                                                         if t in found and t in emitted],
    }
    out: dict[str, dict[str, Any]] = {}
    for name, xs in spans.items():
        xs.sort()
        out[name] = {"n": len(xs), "p50_ms": _pick(xs, 0.5), "p99_ms": _pick(xs, 0.99), "max_ms": _pick(xs, 1.0)}
    return out


def run(ctx: Any) -> dict[str, Any]:
    return asyncio.run(_scenario(ctx))
