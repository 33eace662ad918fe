"""Peer: the same consume-decode-sample-score-write work as a faust-streaming agent.

    python -m bench.faust_app worker -l warn     (configured by BENCH_FAUST_* env vars)

Not imported by the bench itself: building a faust `App` is module-level work, so this
module is only ever the main module of its own subprocess (`bench/peers.py` starts it).

Per `take()` batch the agent decodes each trace with `decode_trace`, samples it with the
same `sample_u` rule, runs the same three scorers, serializes each result exactly as the
worker does (`assessments_for(...)[0].to_json()`), and writes one pipelined round trip to
Redis: per pair an HSET of the assessment into the trace hash and an HINCRBY of the
scorer's coverage counter. Faust commits offsets itself. Compared with the tracewatch
worker it does less: no idempotence guard (Lua), no assessments topic, no per-minute
aggregates, no Prometheus; the comparison is generous to faust.
"""

from __future__ import annotations

import os

import faust
import redis.asyncio as aioredis

from scorers import DecodeError, assessments_for, decode_trace, resolve_scorer
from stream import sample_u

BOOTSTRAP = os.environ.get("BENCH_FAUST_BROKER", "127.0.0.1:9092")
TOPIC = os.environ.get("BENCH_FAUST_TOPIC", "bench.faust.traces")
PREFIX = os.environ.get("BENCH_FAUST_PREFIX", "bench:faust:")
REDIS_URL = os.environ.get("BENCH_FAUST_REDIS_URL", "redis://127.0.0.1:6379/0")
PARTITIONS = int(os.environ.get("BENCH_FAUST_PARTITIONS", "4"))
TAKE = int(os.environ.get("BENCH_FAUST_TAKE", "1000"))
SCORERS = [
    (resolve_scorer(ref.split("@")[0]), float(ref.split("@")[1]) if "@" in ref else 1.0)
    for ref in os.environ.get(
        "BENCH_FAUST_SCORERS", "output_word_count@1.0,has_retriever_span@1.0,latency_under@1.0"
    ).split(",")
]

app = faust.App(
    os.environ.get("BENCH_FAUST_APP_ID", "tracewatch-bench-faust"),
    broker=f"kafka://{BOOTSTRAP}",
    value_serializer="raw",
    key_serializer="raw",
    web_enabled=False,
    datadir=os.environ.get("BENCH_FAUST_DATADIR", "/tmp/tracewatch-bench-faust"),
    topic_partitions=PARTITIONS,
    topic_disable_leader=True,
    consumer_auto_offset_reset="earliest",
    broker_max_poll_records=TAKE,
    stream_buffer_maxsize=4 * TAKE,
)
traces = app.topic(TOPIC, key_type=bytes, value_type=bytes, partitions=PARTITIONS)


@app.agent(traces)
async def score(stream):  # type: ignore[no-untyped-def]
    client = aioredis.Redis.from_url(REDIS_URL)
    trace_key = f"{PREFIX}t:"
    cov_key = f"{PREFIX}cov:"
    try:
        async for values in stream.take(TAKE, within=0.1):
            pipe = client.pipeline(transaction=False)
            for value in values:
                try:
                    trace = decode_trace(value)
                except DecodeError:
                    pipe.hincrby(f"{PREFIX}invalid", "count", 1)
                    continue
                tid = trace.info.trace_id
                exp = trace.info.experiment_id
                u = sample_u(tid)
                for scorer, rate in SCORERS:
                    if u >= rate:
                        continue
                    res = scorer.run(trace)
                    pair = assessments_for(tid, exp, scorer.name, feedbacks=res.feedbacks,
                                           skip_reason=res.skip_reason, duration_s=res.duration_s)
                    first = pair[0]
                    pipe.hset(trace_key + tid, "a:" + scorer.name, first.to_json())
                    pipe.hincrby(cov_key + scorer.name, first.state, 1)
            await pipe.execute()
    finally:
        await client.aclose()


if __name__ == "__main__":
    app.main()
