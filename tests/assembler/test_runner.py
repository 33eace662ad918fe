"""The assembler loop with fake clients: produce, await acks, then commit; failures commit nothing."""

from __future__ import annotations

import asyncio
from collections import namedtuple

import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream._config import Settings
from stream._exceptions import KafkaUnavailableError
from stream._kafka import KafkaError, TopicPartition
from stream.assembler import Assembler, AssemblerMetrics, AssemblerOptions
from tests.assembler.spans import span, traces_data

Msg = namedtuple("Msg", "offset timestamp key value headers")
SETTINGS = Settings(topic_prefix="tw.", assembler_quiet_interval=1.0)
TP = TopicPartition("tw.spans", 0)
T, ROOT, A = "ab" * 16, "01" * 8, "02" * 8


class FakeConsumer:
    def __init__(self, batches, assembler_ref):
        self.batches = list(batches)
        self.commits: list[dict] = []
        self.ref = assembler_ref

    def assignment(self):
        return {TP}

    def highwater(self, tp):
        return None

    async def getmany(self, timeout_ms, max_records):
        if not self.batches:
            self.ref[0].stop()
            return {}
        return self.batches.pop(0)

    async def commit(self, offsets):
        self.commits.append(dict(offsets))


class FakeProducer:
    def __init__(self, fail=False):
        self.sent: list[tuple] = []
        self.fail = fail

    async def send(self, topic, value, key=None, headers=None):
        fut = asyncio.get_running_loop().create_future()
        if self.fail:
            fut.set_exception(KafkaError("broker down"))
        else:
            self.sent.append((topic, key, value, headers))
            fut.set_result(None)
        return fut


def make(batches, *, now, fail=False):
    ref: list = [None]
    consumer, producer = FakeConsumer(batches, ref), FakeProducer(fail)
    reg = CollectorRegistry()
    asm = Assembler(
        SETTINGS,
        consumer,
        producer,
        AssemblerMetrics(reg),
        options=AssemblerOptions(commit_interval=0, clock_skew_interval=0),
        clock=lambda: now[0],
    )
    ref[0] = asm
    return asm, consumer, producer, reg


def m(offset, ts, *spans, value=None):
    return Msg(
        offset,
        ts,
        T.encode(),
        value if value is not None else traces_data(list(spans)),
        [("tw-experiment", b"3"), ("tw-received-ms", b"123")],
    )


async def test_emits_after_quiet_and_commits_behind_the_open_trace() -> None:
    now = [1.0]
    batches = [
        {TP: [m(0, 1000, span(T, A, ROOT, "child", 2, 3))]},
        {TP: [m(1, 1100, span(T, ROOT, None, "root", 1, 6))]},
        {},
    ]
    asm, consumer, producer, reg = make(batches, now=now)
    await asm.run()
    assert producer.sent == [] and consumer.commits == [{TP: 0}]  # open trace holds offset 0
    now[0] = 2.2  # caught up (highwater unknown): the wall clock moves event time past 1100 + 1000
    consumer.batches = [{}]
    asm.stopping.clear()
    await asm.run()
    ((topic, key, value, _headers),) = producer.sent
    assert topic == "tw.traces" and key == f"tr-{T}".encode()
    doc = orjson.loads(value)
    assert doc["info"]["trace_location"]["mlflow_experiment"]["experiment_id"] == "3"
    assert b"123" not in value  # the receive time never reaches the content
    assert consumer.commits[-1] == {TP: 2}
    assert reg.get_sample_value("tracewatch_assembler_traces_emitted_total", {"state": "complete"}) == 1
    assert reg.get_sample_value("tracewatch_assembler_spans_received_total") == 2
    assert reg.get_sample_value("tracewatch_assembler_open_traces") == 0


async def test_failed_produce_commits_nothing() -> None:
    now = [10.0]
    batches = [{TP: [m(0, 1000, span(T, ROOT, None, "root", 1, 6))]}]
    asm, consumer, _, _ = make(batches, now=now, fail=True)
    with pytest.raises(KafkaUnavailableError):
        await asm.run()
    assert consumer.commits == []


async def test_bad_message_is_dead_lettered_and_passed() -> None:
    now = [0.0]
    batches = [{TP: [m(0, 1000, value=b"\xff\xfe garbage")]}]
    asm, consumer, producer, reg = make(batches, now=now)
    await asm.run()
    ((topic, _key, value, headers),) = producer.sent
    assert topic == "tw.dlq" and value == b"\xff\xfe garbage" and dict(headers)["tw-reason"] == b"not_protobuf"
    assert consumer.commits == [{TP: 1}]
    assert reg.get_sample_value("tracewatch_assembler_dead_letters_total", {"reason": "not_protobuf"}) == 1
