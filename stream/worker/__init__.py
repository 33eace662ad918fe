"""The worker: consume traces and feedback, sample, score, write results durably, commit in order.

One loop (`Worker`) over aiokafka batches; `Checkpoint` tracks which offsets are finished,
`Outbox` makes a finished prefix durable (Kafka, then Redis, then Prometheus) before the
commit; `Scoring` is the one scoring path of the loop and of expectation re-runs;
`run_worker` wires the real clients.
"""

from stream.worker._checkpoint import Checkpoint, DeadLetter, Entry
from stream.worker._loop import Worker, WorkerOptions
from stream.worker._outbox import Outbox
from stream.worker._runtime import WorkerHandle, bind_judges, run_worker
from stream.worker._sampling import sample_u, sampled
from stream.worker._scoring import Scoring

__all__ = [
    "Checkpoint",
    "DeadLetter",
    "Entry",
    "Outbox",
    "Scoring",
    "Worker",
    "WorkerHandle",
    "WorkerOptions",
    "bind_judges",
    "run_worker",
    "sample_u",
    "sampled",
]
