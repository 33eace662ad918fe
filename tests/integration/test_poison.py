"""Poison messages through one real worker (issue 11): generated, not listed.

Hypothesis builds structure-aware poison: a real MLflow fixture trace (or a feedback event)
with one field replaced by an extreme value (integers past 64 bits, negative and boundary
times, floats, NaN-like and digit strings, wrong types, ids at and past the length limits,
separators `\\x1e \\x1f % :`, odd Unicode, lone surrogates as raw bytes or escapes), plus
random bytes, empty values and tombstones, non-UTF-8 keys, traces around the decoder's
`max_trace_bytes` and one incompressible message just under the broker's
`message.max.bytes`. They are interleaved with good traces (unique ids, some in experiments
whose ids hold separators) and good votes on them, and sent to a real Kafka; one worker
subprocess serves the whole module on a real Redis.

What must hold, for every generated batch:

- the worker never exits (its process is polled all along);
- every message the decoder refuses (`decode_trace`, `FeedbackEvent.from_json`: the oracle,
  run in this process) is in the DLQ exactly once, found by its source topic, partition and
  offset, with a non-empty `tw-reason` and its original key and value (or a marked, hashed
  prefix when the original is too large for the DLQ); a message the generator knows is bad
  (a time past the limits, an id past its length, random bytes...) must be refused;
- every accepted trace is scored exactly once per scorer: coverage in Redis grows by exactly
  the number of accepted traces per experiment, and each trace has both assessments;
- the feedback join is exact: votes and agreement cells grow by a recomputation from the
  accepted events (last thumb per trace, name and user; a repeated event id counts once;
  a value that is not a thumb moves nothing).

"Everything processed" is observed, not waited for with a sleep: the group's committed
offsets reach the end of both topics, and the worker commits only after every result and
dead letter is durable.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from scorers import DecodeError, decode_trace
from sinks import RedisSink
from stream import Settings
from stream._events import FeedbackEvent, thumb_of
from stream._kafka import create_topics
from tests.conftest import FIXTURES, TEST_REDIS_URL, _delete_prefix, _delete_topics

pytestmark = pytest.mark.integration

# The limits the strategies aim at. Written out rather than imported so this file also runs
# against code from before the limits existed (to show that it fails there).
MAX_ID = 256  # scorers._limits.MAX_ID_CHARS
MAX_NAME = 128  # scorers._limits.MAX_NAME_CHARS
MAX_TIME_MS = 2**53 - 1  # scorers._limits.MAX_TIME_MS
MAX_TRACE_BYTES = Settings().max_trace_bytes  # the decoder's default limit (1 MiB)
BROKER_MAX = 4_194_200  # just under deploy/local/stack.py's message.max.bytes=4194304 once framed
SCORERS = ("output_word_count", "no_error")  # every trace sampled (rate 1.0); no_error is pass/fail
USERS = ("alice", "bob", "carol")
PARTITIONS = 4
TEMPLATES = [orjson.loads(p.read_bytes()) for p in sorted(FIXTURES.glob("mlflow_trace_*.json"))]


# -- values JSON (or orjson) cannot hold, written verbatim --------------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON fragment put into the message as is: ints past 64 bits, `1e400`, escapes, bad UTF-8."""

    data: bytes


@dataclass(frozen=True)
class Long:
    """A string of `n` characters `ch` (the id's unique prefix included, so lengths stay exact)."""

    n: int
    ch: str = "x"


def dumps(obj: Any) -> bytes:
    """orjson, with every `Raw` spliced in where it stands."""
    raws: list[bytes] = []

    def sub(o: Any) -> Any:
        if isinstance(o, Raw):
            raws.append(o.data)
            return f"\x00raw{len(raws) - 1}\x00"
        if isinstance(o, Long):
            return o.ch * o.n
        if isinstance(o, dict):
            return {k: sub(v) for k, v in o.items()}
        if isinstance(o, list):
            return [sub(v) for v in o]
        return o

    out = orjson.dumps(sub(obj))
    for i, data in enumerate(raws):
        out = out.replace(b'"\\u0000raw%d\\u0000"' % i, data)
    return out


# -- strategies ---------------------------------------------------------------------------------

SEPARATORS = ["\x1e", "\x1f", "%", ":", "%3A", "%1F", "\x00", "{", "}", "\n", " "]
ODD = ["\u2028", "\ufeff", "\u200b", "e\u0301", "\U0001f44d", "\U0010ffff", "\uffff", "\x7f", "İ"]
# As bytes (invalid UTF-8) and as escapes (valid JSON text, but no UTF-8 string): lone surrogates.
SURROGATES = [
    Raw(b'"\xed\xa0\x80"'),
    Raw(b'"a\xed\xbf\xbf"'),
    Raw(b'"\\ud800"'),
    Raw(b'"x\\udfff"'),
    Raw(b'"\\udc00\\ud800"'),
]
BOUNDARY_INTS = [
    2**64 - 1,
    2**64 - 2,
    2**63,
    2**63 - 1,
    -(2**63),
    -1,
    0,
    2**53,
    MAX_TIME_MS,
    MAX_TIME_MS + 1,
    2**32,
    -(2**31),
]
HUGE_INTS = [
    Raw(b"18446744073709551616"),
    Raw(b"-18446744073709551617"),
    Raw(b"1" + b"0" * 40),
    Raw(b"1e400"),
    Raw(b"-1e400"),
    Raw(b"NaN"),
    Raw(b"Infinity"),
]
NAN_STRINGS = [
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "1e999",
    "-0",
    "0x10",
    "18446744073709551615",
    "9223372036854775808",
    "9" * 30,
    "-1",
    "١٢٣",
    "",
    " 1",
    "2026-13-45T99:00:00Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+14:00",
]
WRONG_TYPES: list[Any] = [
    None,
    True,
    False,
    [],
    {},
    [1, "a"],
    {"a": {"b": None}},
    1.5,
    -0.0,
    1e308,
    Raw(b"[" * 3000 + b"]" * 3000),
]

short_text = st.lists(st.one_of(st.sampled_from(SEPARATORS + ODD), st.characters(codec="utf-8")), max_size=10).map(
    "".join
)
boundary_ints = st.sampled_from(BOUNDARY_INTS)
any_int = st.one_of(boundary_ints, st.integers(min_value=-(2**63), max_value=2**64 - 1))


def odd_strings(limit: int) -> st.SearchStrategy[Any]:
    """Strings a key or a label must survive or refuse: separators, odd Unicode, lengths near `limit`."""
    return st.one_of(
        st.sampled_from(SEPARATORS + ODD).map(lambda s: s * 3),  # first: the simplest example has one
        short_text,
        st.sampled_from([limit - 1, limit, limit + 1, 10 * limit, 300_000]).flatmap(
            lambda n: st.sampled_from(["x", "\x1f", "é", "%"]).map(lambda ch: Long(n, ch))
        ),
        st.sampled_from(SURROGATES),
    )


# Per kind of field, the values that field's code paths are most likely to get wrong.
TIME_VALUES = st.one_of(
    boundary_ints,
    boundary_ints,
    any_int,
    st.sampled_from(HUGE_INTS),
    boundary_ints.map(str),
    st.sampled_from(NAN_STRINGS),
    st.floats(),
    st.sampled_from(WRONG_TYPES),
)
ID_VALUES = st.one_of(odd_strings(MAX_ID), odd_strings(MAX_ID), any_int, st.sampled_from(WRONG_TYPES + NAN_STRINGS))
NAME_VALUES = st.one_of(odd_strings(MAX_NAME), odd_strings(MAX_NAME), st.sampled_from(WRONG_TYPES), any_int)
ANY_VALUES = st.one_of(ID_VALUES, TIME_VALUES, st.sampled_from(HUGE_INTS))

EXPERIMENT = ("info", "trace_location", "mlflow_experiment", "experiment_id")
TRACE_FIELDS: dict[tuple[str | int, ...], st.SearchStrategy[Any]] = {
    ("info", "request_time"): TIME_VALUES,
    ("info", "execution_duration_ms"): TIME_VALUES,
    ("data", "spans", 0, "start_time_unix_nano"): TIME_VALUES,
    ("data", "spans", -1, "end_time_unix_nano"): TIME_VALUES,
    ("info", "trace_id"): ID_VALUES,
    EXPERIMENT: ID_VALUES,
    ("info", "trace_metadata", "mlflow.trace.user"): ID_VALUES,
    ("info", "trace_metadata", "mlflow.trace.session"): ID_VALUES,
    ("info", "tags", "mlflow.traceName"): ID_VALUES,
    ("info", "state"): st.one_of(NAME_VALUES, st.sampled_from(["OK", "ERROR", "IN_PROGRESS"])),
    ("info", "trace_location"): ANY_VALUES,
    ("info", "tags"): ANY_VALUES,
    ("info", "trace_metadata"): ANY_VALUES,
    ("info", "assessments"): ANY_VALUES,
    ("info",): ANY_VALUES,
    ("data",): ANY_VALUES,
    ("data", "spans"): ANY_VALUES,
    ("data", "spans", 0): ANY_VALUES,
    ("data", "spans", 0, "span_id"): ID_VALUES,
    ("data", "spans", 0, "attributes"): ANY_VALUES,
    ("data", "spans", 0, "events"): ANY_VALUES,
    ("data", "spans", 0, "attributes", "mlflow.spanOutputs"): ANY_VALUES,
}
TIME_FIELDS = [p for p, s in TRACE_FIELDS.items() if s is TIME_VALUES]
EVENT_FIELDS: dict[tuple[str, ...], st.SearchStrategy[Any]] = {
    ("name",): NAME_VALUES,
    ("trace_id",): ID_VALUES,
    ("source", "source_id"): ID_VALUES,
    ("source", "source_type"): NAME_VALUES,
    ("event_id",): ID_VALUES,
    ("created_ms",): TIME_VALUES,
    ("kind",): st.one_of(NAME_VALUES, st.just("FEEDBACK")),
    ("value",): st.one_of(ANY_VALUES, st.sampled_from(["up", "👎", "yes ", 1, 0, 1.0, 2])),
    ("source",): ANY_VALUES,
    ("metadata",): ANY_VALUES,
    ("rationale",): ANY_VALUES,
}


@dataclass(frozen=True)
class Mutation:
    """Replace one field (path) of a template with `value`; `template` picks the fixture."""

    path: tuple[str | int, ...]
    value: Any
    template: int = 0


@dataclass(frozen=True)
class Whole:
    """A message that is not a mutated trace or event: random bytes, empty, a tombstone, a size."""

    kind: str  # bytes | empty | tombstone | json | size
    data: Any = None


def field_mutation(fields: dict[Any, st.SearchStrategy[Any]], weights: list[Any]) -> st.SearchStrategy[Mutation]:
    paths = st.sampled_from(weights + list(fields))  # the weighted paths are drawn more often
    return paths.flatmap(lambda p: st.builds(Mutation, st.just(p), fields[p], st.integers(0, len(TEMPLATES) - 1)))


def whole_messages(size_deltas: list[int]) -> st.SearchStrategy[Whole]:
    return st.one_of(
        st.builds(Whole, st.just("bytes"), st.binary(max_size=300)),
        st.builds(Whole, st.sampled_from(["empty", "tombstone"])),
        st.builds(
            Whole,
            st.just("json"),
            st.sampled_from(
                [b"[]", b"null", b"1", b'"x"', b"{}", b'{"info": []}', b'{"info": {"trace_id": ""}}', b"\xef\xbb\xbf{}"]
            ),
        ),
        st.builds(Whole, st.just("size"), st.sampled_from(size_deltas)),
    )


def poison_trace() -> st.SearchStrategy[Mutation | Whole]:
    return st.one_of(
        field_mutation(TRACE_FIELDS, TIME_FIELDS * 2),
        field_mutation(TRACE_FIELDS, []),
        whole_messages([-1, 0, 1, 2, 4096]),
    )


def poison_event() -> st.SearchStrategy[Mutation | Whole]:
    return st.one_of(
        field_mutation(EVENT_FIELDS, [("name",), ("name",), ("source", "source_id")]), whole_messages([-1, 1])
    )


# Message keys: usually the trace id, sometimes none, empty, not UTF-8 or long.
keys = st.one_of(
    st.none(),
    st.just(b""),
    st.binary(min_size=1, max_size=40),
    st.just("long-key"),  # 5,000 bytes of 0xff
    st.just("trace-id"),
    st.just("trace-id"),
)
# Experiments of good traces: mostly "1", some holding separators (a vote on them crashed the worker).
good_experiments = st.one_of(
    st.just("1"),
    st.just("1"),
    st.lists(st.sampled_from([*SEPARATORS, *ODD, "a", "1"]), min_size=1, max_size=6).map("".join),
)


# -- turning specs into messages ----------------------------------------------------------------


@dataclass
class Sent:
    key: bytes | None
    value: bytes | None
    label: str
    must_fail: bool = False  # the generator knows it is bad, whatever the decoder says
    partition: int = 0
    offset: int = -1


def _set(doc: Any, path: tuple[str | int, ...], value: Any) -> None:
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def tagged(value: Any, tag: str) -> Any:
    """An id value made unique to this message, its length kept (ids never collide across examples)."""
    if isinstance(value, Long):
        return tag + value.ch * (value.n - len(tag))
    if isinstance(value, str) and value:
        return tag + value
    if isinstance(value, Raw) and value.data.startswith(b'"'):
        return Raw(b'"' + tag.encode() + value.data[1:])
    return value


# Fields the decoder checks strictly: ids and names that become keys, and times.
STRICT_IDS = {
    "trace_id",
    "experiment_id",
    "mlflow.trace.user",
    "mlflow.trace.session",
    "name",
    "source_id",
    "source_type",
    "event_id",
}
STRICT_TIMES = {
    "request_time": MAX_TIME_MS,
    "execution_duration_ms": MAX_TIME_MS,
    "created_ms": MAX_TIME_MS,
    "start_time_unix_nano": 2**63 - 1,
    "end_time_unix_nano": 2**63 - 1,
}
NOT_JSON = {r.data for r in SURROGATES} | {b"1e400", b"-1e400", b"NaN", b"Infinity", b"[" * 3000 + b"]" * 3000}


def _known_bad(path: tuple[Any, ...], value: Any) -> bool:
    """Values the decoder must refuse whatever else it accepts (the issue's breaks among them)."""
    last = path[-1]
    if isinstance(value, Raw):
        # orjson refuses these anywhere; an integer past 64 bits parses as a float: no id, no time
        return value.data in NOT_JSON or ((last in STRICT_IDS or last in STRICT_TIMES) and last != "created_ms")
    if last in STRICT_TIMES and type(value) is int:
        return not 0 <= value <= STRICT_TIMES[last]
    if isinstance(value, Long) and last in STRICT_IDS:
        return value.n > (MAX_NAME if last in ("name", "source_type") else MAX_ID)
    return False


def trace_message(spec: Mutation | Whole, tag: str, key: Any) -> Sent:
    tid = f"tr-{tag}"
    if isinstance(spec, Whole):
        bad = spec.kind != "size" or spec.data > 0
        value = _whole(spec, tid)
        return Sent(
            b"" if key is None and value is None else _key(key, tid), value, f"{spec.kind}:{spec.data!r}"[:120], bad
        )
    doc = copy.deepcopy(TEMPLATES[spec.template])
    doc["info"]["trace_id"] = tid
    value = tagged(spec.value, tid + "~") if spec.path == ("info", "trace_id") else spec.value
    _set(doc, spec.path, value)
    return Sent(
        _key(key, tid),
        dumps(doc),
        f"{'.'.join(map(str, spec.path))}={spec.value!r}"[:160],
        _known_bad(spec.path, spec.value),
    )


def event_message(spec: Mutation | Whole, tag: str, key: Any, trace_id: str, user: str) -> Sent:
    doc: dict[str, Any] = {
        "kind": "feedback",
        "event_id": uuid.uuid4().hex,
        "trace_id": trace_id,
        "name": "user_satisfaction",
        "value": True,
        "rationale": None,
        "source": {"source_type": "HUMAN", "source_id": user},
        "metadata": {},
        "created_ms": int(time.time() * 1000),
    }
    if isinstance(spec, Whole):
        value = _whole(spec, f"tr-{tag}", event=True)
        k = b"" if key is None and value is None else _key(key, trace_id)  # Kafka needs a key or a value
        return Sent(k, value, f"{spec.kind}:{spec.data!r}"[:120], True)
    value = tagged(spec.value, f"tr-{tag}~") if spec.path == ("trace_id",) else spec.value
    _set(doc, spec.path, value)
    return Sent(
        _key(key, trace_id),
        dumps(doc),
        f"{'.'.join(map(str, spec.path))}={spec.value!r}"[:160],
        _known_bad(spec.path, spec.value),
    )


def _key(key: Any, tid: str) -> bytes | None:
    return tid.encode() if key == "trace-id" else b"\xff" * 5000 if key == "long-key" else key


def _whole(spec: Whole, tid: str, event: bool = False) -> bytes | None:
    if spec.kind == "bytes":
        return bytes(spec.data)
    if spec.kind == "empty":
        return b""
    if spec.kind == "tombstone":
        return None
    if spec.kind == "json":
        return bytes(spec.data)
    if event:  # an event whose name alone is past any limit, at a size a trace would be refused for
        return orjson.dumps(
            {"kind": "feedback", "trace_id": tid, "name": "n" * (MAX_TRACE_BYTES + spec.data), "value": True}
        )
    return padded_trace(tid, MAX_TRACE_BYTES + spec.data)


def padded_trace(tid: str, size: int) -> bytes:
    """A real trace of exactly `size` bytes (padded in a tag), around the decoder's limit."""
    doc = copy.deepcopy(TEMPLATES[0])
    doc["info"]["trace_id"] = tid
    doc["info"]["tags"]["pad"] = ""
    base = len(orjson.dumps(doc))
    doc["info"]["tags"]["pad"] = "x" * (size - base)
    data = orjson.dumps(doc)
    assert len(data) == size
    return data


# -- the oracle ---------------------------------------------------------------------------------


def decode_or_none(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return decode_trace(value, max_bytes=MAX_TRACE_BYTES)
    except DecodeError:
        return None


def event_or_none(value: bytes | None) -> FeedbackEvent | None:
    try:
        return FeedbackEvent.from_json(value or b"")
    except (DecodeError, ValueError):
        return None


# -- the worker and the services ----------------------------------------------------------------


@dataclass
class Env:
    settings: Settings
    proc: subprocess.Popen[bytes]
    log: Path
    big_sent: bool = False
    examples: int = 0
    refused_total: int = 0
    timings: list[float] = field(default_factory=list)

    def assert_alive(self) -> None:
        rc = self.proc.poll()
        if rc is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            pytest.fail(f"the worker exited (rc={rc}); its log ends with:\n{tail}")


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    tag = uuid.uuid4().hex[:10]
    s = Settings(
        redis_url=TEST_REDIS_URL,
        topic_prefix=f"twtest.{tag}.",
        consumer_group=f"twtest-{tag}",
        redis_prefix=f"twtest:{tag}:",
        partitions=PARTITIONS,
        metrics_port=0,
    )
    asyncio.run(create_topics(s))
    log = Path(tempfile.mkstemp(prefix="tw-poison-worker-", suffix=".log")[1])
    environ = {
        **os.environ,
        "TRACEWATCH_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "TRACEWATCH_TOPIC_PREFIX": s.topic_prefix,
        "TRACEWATCH_CONSUMER_GROUP": s.consumer_group,
        "TRACEWATCH_REDIS_PREFIX": s.redis_prefix,
        "TRACEWATCH_REDIS_URL": s.redis_url,
    }
    args = [sys.executable, "-m", "stream", "worker", "--metrics-port", "-1", "--log-level", "WARNING"]
    for name in SCORERS:
        args += ["--scorer", f"{name}@1.0"]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=environ, stdout=out, stderr=subprocess.STDOUT)
    e = Env(s, proc, log)
    try:
        yield e
        e.assert_alive()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _delete_prefix(s.redis_prefix)
        _delete_topics(s)
        log.unlink(missing_ok=True)


async def send(s: Settings, topic: str, msgs: list[Sent]) -> None:
    """Produce `msgs` in order (feedback on one partition, so the join's order is the send order)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=s.kafka_bootstrap, acks="all", max_request_size=8_000_000, compression_type=None, linger_ms=5
    )
    await producer.start()
    try:
        futs = []
        for i, m in enumerate(msgs):
            part = 0 if topic == s.topics.feedback else i % PARTITIONS
            futs.append(await producer.send(topic, key=m.key, value=m.value, partition=part))
        for m, meta in zip(msgs, await asyncio.gather(*futs), strict=True):
            m.partition, m.offset = meta.partition, meta.offset
    finally:
        await producer.stop()


async def wait_committed(e: Env, topic: str, msgs: list[Sent], timeout: float = 45) -> None:
    """Until the group has committed past every message sent (so their results are durable)."""
    want: dict[TopicPartition, int] = {}
    for m in msgs:
        tp = TopicPartition(topic, m.partition)
        want[tp] = max(want.get(tp, 0), m.offset + 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=e.settings.kafka_bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            e.assert_alive()
            got = await admin.list_consumer_group_offsets(e.settings.consumer_group, partitions=list(want))
            behind = {
                str(tp): (got[tp].offset if tp in got else None, o)
                for tp, o in want.items()
                if tp not in got or got[tp].offset < o
            }
            if not behind:
                return
            assert time.monotonic() < deadline, f"not committed after {timeout}s (committed, wanted): {behind}"
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def read_dlq(s: Settings) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
    """The whole DLQ topic, up to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8_000_000,
        fetch_max_bytes=64_000_000,
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
    try:
        await consumer.topics()  # metadata, for the DLQ's partitions
        parts = [TopicPartition(s.topics.dlq, p) for p in consumer.partitions_for_topic(s.topics.dlq) or {0}]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                out += [(m.key, m.value, dict(m.headers)) for m in msgs]
    finally:
        await consumer.stop()
    return out


def check_dlq(
    e: Env,
    topic: str,
    msgs: list[Sent],
    bad: list[Sent],
    dlq: list[tuple[bytes | None, bytes | None, dict[str, bytes]]],
) -> None:
    """Each refused message dead-lettered once, with a reason and its bytes; nothing else of ours."""
    mine = {(m.partition, m.offset): m for m in msgs}
    found: Counter[tuple[int, int]] = Counter()
    for key, value, h in dlq:
        if h.get("tw-source-topic", b"").decode() != topic:
            continue
        where = (int(h["tw-source-partition"]), int(h["tw-source-offset"]))
        m = mine.get(where)
        if m is None:
            continue
        found[where] += 1
        assert h.get("tw-reason"), f"dead letter without a reason: {m.label}"
        if h.get("tw-truncated") == b"1":
            original = m.value or b""
            assert h["tw-original-size"] == str(len(original)).encode(), m.label
            assert h["tw-original-sha256"] == hashlib.sha256(original).hexdigest().encode(), m.label
            assert original.startswith(value or b""), m.label
            assert (m.key or b"").startswith(key or b""), m.label
        else:
            assert (value or b"") == (m.value or b"") and (key or b"") == (m.key or b""), m.label
    want = {(m.partition, m.offset) for m in bad}
    missing = [mine[w].label for w in want if not found[w]]
    extra = [mine[w].label for w in found if w not in want]
    twice = [mine[w].label for w, n in found.items() if n > 1]
    assert not missing, f"refused but not dead-lettered: {missing}"
    assert not extra, f"dead-lettered but accepted by the decoder: {extra}"
    assert not twice, f"dead-lettered more than once: {twice}"
    known = [m.label for m in msgs if m.must_fail and (m.partition, m.offset) not in want]
    assert not known, f"accepted, but bad by construction: {known}"


# -- the test -----------------------------------------------------------------------------------


@settings(
    max_examples=10,  # about 1 s each on 2 cores (the first, with the 4 MiB message, 2 s)
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(data=st.data())
def test_poison_messages_are_dead_lettered_and_good_ones_counted_exactly(env: Env, data: st.DataObject) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    rnd = Random(data.draw(st.integers(0, 2**32 - 1), label="shuffle seed"))  # no draws that vary

    # Traces: good ones (fresh ids, some in odd experiments) among poison.
    good_exps = data.draw(st.lists(good_experiments, min_size=10, max_size=30), label="good experiments")
    good: list[tuple[Sent, str, str]] = []
    for i, exp in enumerate(good_exps):
        tid = f"tr-{tag}-g{i}"
        doc = copy.deepcopy(TEMPLATES[i % len(TEMPLATES)])
        doc["info"]["trace_id"] = tid
        _set(doc, EXPERIMENT, exp)
        good.append((Sent(tid.encode(), orjson.dumps(doc), f"good {tid} exp={exp!r}"), tid, exp))
    specs = data.draw(st.lists(st.tuples(poison_trace(), keys), min_size=20, max_size=50), label="poison traces")
    poison = [trace_message(spec, f"{tag}-p{i}", key) for i, (spec, key) in enumerate(specs)]
    if not env.big_sent:  # one incompressible message just under the broker's limit, for the module
        env.big_sent = True
        poison.append(Sent(b"big-" + tag.encode(), os.urandom(BROKER_MAX), "incompressible, at the broker max", True))
    traces = [g[0] for g in good] + poison
    rnd.shuffle(traces)
    decoded = {id(m): decode_or_none(m.value) for m in traces}
    accepted = [(m, t) for m in traces if (t := decoded[id(m)]) is not None]
    assert all(decoded[id(g[0])] is not None for g in good)
    for m, t in accepted:
        assert t.info.trace_id.startswith(f"tr-{tag}"), m.label  # unique to this example: counted once
    per_exp = Counter(t.info.experiment_id for _, t in accepted)
    verdict = {t.info.trace_id: "pass" if t.status == "OK" else "fail" for _, t in accepted}

    # Feedback: good votes on the good traces (some users change their mind) among poison events.
    votes = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(good) - 1), st.sampled_from(USERS), st.booleans()), min_size=20, max_size=60
        ),
        label="votes",
    )
    events: list[Sent] = []
    for tix, user, up in votes:
        tid = good[tix][1]
        doc = FeedbackEvent("feedback", tid, "user_satisfaction", up, source_id=user).to_json()
        events.append(Sent(tid.encode(), doc, f"vote {tid} {user} {up}"))
    especs = data.draw(
        st.lists(
            st.tuples(poison_event(), keys, st.integers(0, len(good) - 1), st.sampled_from(USERS)),
            min_size=20,
            max_size=50,
        ),
        label="poison events",
    )
    bad_events = [
        event_message(spec, f"{tag}-e{i}", key, good[tix][1], user) for i, (spec, key, tix, user) in enumerate(especs)
    ]
    # Poison goes anywhere, but votes keep their order (the last one of a user counts).
    slots = sorted(rnd.randrange(len(events) + 1) for _ in bad_events)
    for n, (pos, ev) in enumerate(zip(slots, bad_events, strict=True)):
        events.insert(pos + n, ev)

    env.assert_alive()  # after the draws: a replay after the worker died draws the same data

    async def run() -> None:
        s = env.settings
        sink = RedisSink.from_url(s.redis_url, prefix=s.redis_prefix)
        try:
            cov_before = {(x, n): await _total(sink, x, n) for x in per_exp for n in SCORERS}
            await send(s, s.topics.traces, traces)
            env.refused_total += sum(1 for m in traces if decoded[id(m)] is None)  # counted once sent
            await wait_committed(env, s.topics.traces, traces)
            env.assert_alive()
            dlq = await read_dlq(s)
            check_dlq(env, s.topics.traces, traces, [m for m in traces if decoded[id(m)] is None], dlq)
            for (x, n), count in cov_before.items():
                assert await _total(sink, x, n) - count == per_exp[x], f"coverage of {n} in {x!r}"
            for m, t in accepted:
                doc = await sink.get_trace(t.info.trace_id)
                assert doc is not None and set(doc["assessments"]) >= set(SCORERS), m.label

            # The join model: accepted events in order; a repeated event id is a no-op; a non-thumb moves nothing.
            final: dict[tuple[str, str, str], str] = {}
            seen: set[tuple[str, str]] = set()
            refused = []
            for m in events:
                ev = event_or_none(m.value)
                if ev is None:
                    refused.append(m)
                    continue
                if (ev.trace_id, ev.event_id) in seen:
                    continue
                seen.add((ev.trace_id, ev.event_id))
                thumb = thumb_of(ev.value) if ev.kind == "feedback" else None
                if thumb and ev.trace_id in verdict:
                    final[(ev.trace_id, ev.name, ev.source_id)] = thumb
            exp_of = {g[1]: g[2] for g in good}
            want_votes: Counter[tuple[str, str, str]] = Counter()
            want_cells: Counter[tuple[str, str]] = Counter()
            for (tid, name, _user), thumb in final.items():
                want_votes[(exp_of[tid], name, thumb)] += 1
                want_cells[(exp_of[tid], f"{verdict[tid]}:{thumb}")] += 1
            names = {(exp_of[tid], name) for tid, name, _ in final} | {
                (x, "user_satisfaction") for x in exp_of.values()
            }
            votes_before = {k: await sink.votes(*k) for k in names}
            cells_before = {x: await sink.agreement(x, "no_error") for x in set(exp_of.values())}

            await send(s, s.topics.feedback, events)
            env.refused_total += len(refused)
            await wait_committed(env, s.topics.feedback, events)
            env.assert_alive()
            dlq = await read_dlq(s)
            check_dlq(env, s.topics.feedback, events, refused, dlq)
            for (x, name), before in votes_before.items():
                after = await sink.votes(x, name)
                for thumb in ("up", "down"):
                    got = after.get(thumb, 0) - before.get(thumb, 0)
                    assert got == want_votes[(x, name, thumb)], f"votes {name!r}/{thumb} in {x!r}: {got}"
            for x, before in cells_before.items():
                after = await sink.agreement(x, "no_error")
                for cell in ("pass:up", "pass:down", "fail:up", "fail:down"):
                    got = after.get(cell, 0) - before.get(cell, 0)
                    assert got == want_cells[(x, cell)], f"agreement {cell} in {x!r}: {got}"
            assert len(dlq) == env.refused_total, "the DLQ holds the refused messages, and nothing else"
        finally:
            await sink.aclose()

    asyncio.run(run())
    env.assert_alive()
    env.examples += 1
    env.timings.append(time.monotonic() - started)


async def _total(sink: RedisSink, exp: str, scorer: str) -> int:
    c = await sink.coverage(exp, scorer)
    return c.get("scored", 0) + c.get("error", 0) + c.get("skipped", 0)
