"""The OTLP span assembler: spans topic (OTLP `TracesData` per trace) -> complete MLflow traces.

`_otlp` and `_translate` convert OTLP spans to MLflow span dicts, `_build` derives the trace
JSON, `_state` decides per partition when a trace is done and how far offsets may be
committed (pure, event time), `_runner` is the Kafka loop and `tracewatch assemble` its CLI.
Design notes (completion, commit rule, late spans, incomplete traces) are in `_state`.
"""

from stream.assembler._build import INCOMPLETE_TAG, build_trace
from stream.assembler._metrics import AssemblerMetrics
from stream.assembler._otlp import SpanDecodeError, SpanRecord, decode_traces_data
from stream.assembler._runner import Assembler, AssemblerHandle, AssemblerOptions, limits_from, run_assembler
from stream.assembler._state import AssemblyLimits, DeadLetterOut, Emission, PartitionState

__all__ = [
    "INCOMPLETE_TAG",
    "Assembler",
    "AssemblerHandle",
    "AssemblerMetrics",
    "AssemblerOptions",
    "AssemblyLimits",
    "DeadLetterOut",
    "Emission",
    "PartitionState",
    "SpanDecodeError",
    "SpanRecord",
    "build_trace",
    "decode_traces_data",
    "limits_from",
    "run_assembler",
]
