"""Peer: `mlflow.genai.evaluate` on a trace sample, run inside the MLflow venv (`tests/mlflow_venv.py`).

    $(python3 tests/mlflow_venv.py) bench/mlflow_run.py TRACES.jsonl WORKDIR [--limiter-off]

Imports only mlflow and the standard library (the venv has no tracewatch). The three
scorers are the bench's three code scorers written with `mlflow.genai.scorers.scorer`.
Prints one JSON line: traces, seconds spent in `evaluate` (setup excluded), traces/s,
peak RSS, mlflow version.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings


def _peak_rss_mb() -> float:
    """`VmHWM` of this process. Not `ru_maxrss`: Linux carries that across `execve`, so it
    would report the (much larger) bench process that forked this one."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    path, workdir = sys.argv[1], sys.argv[2]
    limiter_off = "--limiter-off" in sys.argv[3:]
    if limiter_off:
        os.environ["MLFLOW_GENAI_EVAL_PREDICT_RATE_LIMIT"] = "0"
        os.environ["MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT"] = "0"
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/mlflow.db")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    # With SQLAlchemy's default pool (5 + 10 overflow) evaluate's 10 worker threads linking
    # traces to the run exhaust it and every call times out after 30 s (seen with 3.17).
    os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "20")
    os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "20")
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)

    t_import = time.perf_counter()
    import mlflow
    from mlflow.entities import SpanType, Trace
    from mlflow.genai.scorers import scorer

    @scorer
    def output_word_count(outputs) -> int:  # type: ignore[no-untyped-def]
        text = outputs if isinstance(outputs, str) else ("" if outputs is None else json.dumps(outputs))
        return len(text.split())

    @scorer
    def has_retriever_span(trace) -> bool:  # type: ignore[no-untyped-def]
        return bool(trace.search_spans(span_type=SpanType.RETRIEVER))

    @scorer
    def latency_under(trace) -> bool:  # type: ignore[no-untyped-def]
        return (trace.info.execution_duration or 0) <= 2000

    with open(path, encoding="utf-8") as fh:
        traces = [Trace.from_json(line) for line in fh if line.strip()]
    mlflow.set_experiment("tracewatch-bench")
    import_s = time.perf_counter() - t_import

    t0 = time.perf_counter()
    result = mlflow.genai.evaluate(
        data=[{"trace": t} for t in traces],
        scorers=[output_word_count, has_retriever_span, latency_under],
    )
    dt = time.perf_counter() - t0
    metrics = {k: v for k, v in (getattr(result, "metrics", None) or {}).items() if isinstance(v, (int, float))}
    print(
        json.dumps(
            {
                "traces": len(traces),
                "seconds": dt,
                "traces_per_s": len(traces) / dt if dt > 0 else 0.0,
                "setup_s": import_s,
                "peak_rss_mb": _peak_rss_mb(),
                "mlflow_version": mlflow.__version__,
                "limiter_off": limiter_off,
                "metrics": metrics,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
