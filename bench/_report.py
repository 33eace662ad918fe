"""The Markdown report: one table of scenarios with ratios, one of targets with PASS/MISS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["TARGETS", "evaluate_targets", "render_markdown"]


def _get(doc: dict[str, Any], *path: str) -> Any:
    cur: Any = doc
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _rate(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "-"
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def _ratio(a: Any, b: Any, fmt: str = "{:.2f}") -> str:
    x, y = _num(a), _num(b)
    if x is None or y is None or y == 0:
        return "-"
    return fmt.format(x / y)


def _ms(x: Any) -> str:
    v = _num(x)
    return "-" if v is None else (f"{v:.0f}" if v >= 10 else f"{v:.1f}")


def _cores(cpu: Any) -> str:
    """`CPU cores: worker 0.95, kafka 0.40, redis 0.20, bench 0.05, others 0.30 (machine 95% busy)`."""
    if not isinstance(cpu, dict) or "machine_busy" not in cpu:
        return ""
    parts = []
    workers = sum(v for k, v in cpu.items() if k.startswith("worker") and k.endswith("_cores"))
    if any(k.startswith("worker") for k in cpu):
        parts.append(f"worker {workers:.2f}")
    for k in ("faust", "api", "kafka", "redis", "bench", "others"):
        if f"{k}_cores" in cpu:
            parts.append(f"{k} {cpu[f'{k}_cores']:.2f}")
    return f"cores: {', '.join(parts)} (machine {cpu['machine_busy']:.0%} busy)"


def _forks(e: dict[str, Any]) -> str:
    n = e.get("redis_forks")
    if not n:
        return ""
    pause = f", main thread paused {_ms(e['redis_fork_ms'])} ms per fork" if e.get("redis_fork_ms") else ""
    return f"Redis forked {n}x during the run (AOF rewrite{pause}; the child takes a core for seconds); "


def _us_per(e: dict[str, Any]) -> str:
    cores, rate = _num(e.get("worker_cores")), _num(e.get("offered_rate"))
    return "-" if not cores or not rate else f"{cores / rate * 1e6:.0f}"


def _status(r: Any) -> str | None:
    """`pending`/`unavailable`/`failed` with the reason, or None when the scenario produced figures."""
    if not isinstance(r, dict):
        return "not run"
    s = r.get("status", "ok")
    if s == "ok":
        return None
    reason = str(r.get("reason", "")).replace("|", "/").replace("\n", " ")
    return f"{s}: {reason[:160]}" if reason else s


# name, how it is measured, check(results) -> (measured text, passed or None when not measurable)
Check = Callable[[dict[str, Any]], tuple[str, bool | None]]


def _t_drain_vs_bound(r: dict[str, Any]) -> tuple[str, bool | None]:
    w, b = _num(_get(r, "worker", "rate")), _num(_get(r, "bound", "rate"))
    if w is None or b is None:
        return "not measured", None
    return f"{w / b:.0%} of bound ({_rate(w)} / {_rate(b)} traces/s)", w / b >= 0.5


def _t_vs_mlflow(r: dict[str, Any]) -> tuple[str, bool | None]:
    w, m = _num(_get(r, "worker", "rate")), _num(_get(r, "peers", "mlflow", "rate"))
    if w is None or m is None:
        return _status(_get(r, "peers", "mlflow")) or "not measured", None
    return f"{w / m:,.0f}x ({_rate(w)} vs {_rate(m)} traces/s)", w / m >= 300


def _t_vs_faust(r: dict[str, Any]) -> tuple[str, bool | None]:
    w, f = _num(_get(r, "worker", "rate")), _num(_get(r, "peers", "faust", "rate"))
    if w is None or f is None:
        return _status(_get(r, "peers", "faust")) or "not measured", None
    return f"{w / f:.2f}x ({_rate(w)} vs {_rate(f)} traces/s)", w / f >= 3


def _t_e2e(r: dict[str, Any]) -> tuple[str, bool | None]:
    e = _get(r, "worker", "e2e") or {}
    p99 = _num(e.get("p99_ms"))
    if p99 is None:
        return "not measured", None
    forks = f", {e['redis_forks']} Redis AOF rewrite(s) during it" if e.get("redis_forks") else ""
    return (f"p99 {_ms(p99)} ms at {_rate(e.get('offered_rate'))}/s offered "
            f"(machine {e.get('machine_busy', 0):.0%} busy{forks})", p99 <= 200)


def _t_judges(r: dict[str, Any]) -> tuple[str, bool | None]:
    j = _get(r, "judges", "steady") or {}
    share = _num(j.get("share_of_bound"))
    peak = _num(j.get("peak_rss_mb"))
    if share is None or peak is None:
        return _status(r.get("judges")) or "not measured", None
    ref = _num(_get(r, "worker", "peak_rss_mb"))
    limit = ref * 1.2 if ref else 400.0
    bounded = peak <= limit
    what = f"code-scorer worker's peak x1.2 = {limit:.0f} MB" if ref else "400 MB"
    return (f"{share:.0%} of {_rate(j.get('bound'))} calls/s; peak RSS {peak:.0f} MB "
            f"({'within' if bounded else 'over'} {what})", share >= 0.9 and bounded)


def _t_storm(r: dict[str, Any]) -> tuple[str, bool | None]:
    s = _get(r, "judges", "storm") or {}
    if "lost" not in s:
        return "not measured", None
    cov = s.get("coverage", {})
    errors = cov.get("error", 0)
    return (f"{s['lost']} lost of {s.get('traces')}; {s.get('http_429')} HTTP 429 retried; "
            f"{errors} pairs ended `error` (429 on all 5 attempts), {cov.get('scored', 0)} scored"), s["lost"] == 0


def _t_rss(r: dict[str, Any]) -> tuple[str, bool | None]:
    m = _get(r, "scale", "memory") or {}
    g = _num(m.get("growth"))
    if g is None:
        return _status(r.get("scale")) or "not measured", None
    return (f"{g:+.1%} ({_ms(m.get('rss_mb_at_mark'))} MB at {m.get('mark_traces', 0):,} -> "
            f"{_ms(m.get('rss_mb_end'))} MB at {m.get('traces', 0):,} traces)", abs(g) <= 0.10)


TARGETS: list[tuple[str, Check]] = [
    ("worker drain >= 50% of bound", _t_drain_vs_bound),
    ("worker drain >= 300x mlflow.genai.evaluate", _t_vs_mlflow),
    ("worker drain >= 3x faust", _t_vs_faust),
    ("e2e p99 <= 200 ms at half the drain rate", _t_e2e),
    ("judges >= 90% of in-flight bound, bounded memory", _t_judges),
    ("429 storm: no loss, backoff visible", _t_storm),
    ("worker RSS flat within 10% (100k -> end)", _t_rss),
]


def evaluate_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for name, check in TARGETS:
        text, ok = check(results)
        rows.append((name, text, "n/a" if ok is None else ("PASS" if ok else "MISS")))
    return rows


def _scenario_rows(r: dict[str, Any]) -> list[list[str]]:
    bound = _get(r, "bound", "rate")
    worker = _get(r, "worker", "rate")
    rows: list[list[str]] = []

    def add(name: str, value: str, unit: str, vs_bound: str, vs_worker: str, note: str) -> None:
        rows.append([name, value, unit, vs_bound, vs_worker, note])

    b = r.get("bound")
    if (s := _status(b)) is None and b:
        add("1 bound: decode + 3 scorers, no IO", _rate(bound), "traces/s", "1.00", _ratio(bound, worker),
            f"worker GC tuning; default GC {_rate(b.get('rate_default_gc'))}/s")
    elif b is not None:
        add("1 bound", "-", "", "", "", s or "")
    e = r.get("evaluate")
    if (s := _status(e)) is None and e:
        add("2 evaluate, in-process (`scorers.evaluate`)", _rate(e.get("rate")), "traces/s",
            _ratio(e.get("rate"), bound), _ratio(e.get("rate"), worker), f"{e.get('traces', 0):,} traces")
        add("2 evaluate, CLI (`tracewatch evaluate FILE`)", _rate(e.get("cli_rate")), "traces/s",
            _ratio(e.get("cli_rate"), bound), _ratio(e.get("cli_rate"), worker),
            f"incl. {e.get('cli_startup_s', 0):.1f} s start-up; {_rate(e.get('cli_rate_excl_startup'))}/s without")
    elif e is not None:
        add("2 evaluate", "-", "", "", "", s or "")
    w = r.get("worker")
    if (s := _status(w)) is None and w:
        add("3 worker drain, 1 process (Kafka -> Redis, metrics on)", _rate(worker), "traces/s",
            _ratio(worker, bound), "1.00",
            f"{w.get('traces', 0):,} prefilled; start-up {w.get('startup_s', 0):.1f} s excluded "
            f"({_rate(w.get('wall_rate'))}/s with it); {w.get('cpu_us_per_trace') or 0:.0f} µs worker CPU/trace; "
            f"peak RSS {_ms(w.get('peak_rss_mb'))} MB; Redis main thread {w.get('redis_busy') or 0:.0%} busy in "
            f"commands, {w.get('redis_script_us_per_trace') or 0:.0f} µs of write script per trace; "
            f"{_forks(w)}"
            f"{_cores(w.get('cpu'))}")
        e2e = w.get("e2e") or {}
        if e2e.get("p99_ms") is not None:
            h = e2e.get("histogram_ms") or {}
            add("3 worker e2e latency p50 / p95 / p99 (publish -> readable in Redis)",
                f"{_ms(e2e.get('p50_ms'))} / {_ms(e2e.get('p95_ms'))} / {_ms(e2e.get('p99_ms'))}", "ms", "", "",
                f"{_rate(e2e.get('offered_rate'))}/s offered for {e2e.get('seconds', 0):.0f} s; "
                f"{e2e.get('samples', 0):,} traces polled; worker histogram p50/p95/p99 "
                f"{_ms(h.get('p50'))}/{_ms(h.get('p95'))}/{_ms(h.get('p99'))} ms; {_us_per(e2e)} µs worker "
                f"CPU/trace; {_forks(e2e)}{_cores(e2e)}")
        low = w.get("e2e_low") or {}
        if low.get("p99_ms") is not None:
            add("3 worker e2e latency at a tenth of the drain rate (the floor)",
                f"{_ms(low.get('p50_ms'))} / {_ms(low.get('p95_ms'))} / {_ms(low.get('p99_ms'))}", "ms", "", "",
                f"{_rate(low.get('offered_rate'))}/s offered for {low.get('seconds', 0):.0f} s; "
                f"{_us_per(low)} µs worker CPU/trace; {_forks(low)}{_cores(low)}")
    elif w is not None:
        add("3 worker", "-", "", "", "", s or "")
    p = r.get("peers") or {}
    if "peers" in r:
        m = p.get("mlflow")
        if (s := _status(m)) is None and m:
            add("4a mlflow.genai.evaluate (same 3 scorers)", _rate(m.get("rate")), "traces/s",
                _ratio(m.get("rate"), bound, "{:.4f}"), _ratio(m.get("rate"), worker, "{:.4f}"),
                f"mlflow {m.get('mlflow_version')}, {m.get('traces')} traces extrapolated, SQLite store, "
                f"peak RSS {_ms(m.get('peak_rss_mb'))} MB; worker is {_ratio(worker, m.get('rate'), '{:,.0f}')}x")
        else:
            add("4a mlflow.genai.evaluate", "-", "", "", "", s or "")
        f = p.get("faust")
        if (s := _status(f)) is None and f:
            add("4b faust-streaming agent (same work, Redis HSET+HINCRBY)", _rate(f.get("rate")), "traces/s",
                _ratio(f.get("rate"), bound), _ratio(f.get("rate"), worker),
                f"faust {f.get('faust_version')}, {f.get('traces', 0):,} prefilled; worker is "
                f"{_ratio(worker, f.get('rate'))}x; {f.get('cpu_us_per_trace') or 0:.0f} µs faust CPU/trace "
                f"(worker: {_ratio(f.get('cpu_us_per_trace'), w.get('cpu_us_per_trace') if w else None)}x less); "
                f"peak RSS {_ms(f.get('peak_rss_mb'))} MB; {_cores(f.get('cpu'))}")
        else:
            add("4b faust-streaming agent", "-", "", "", "", s or "")
    j = r.get("judges")
    if (s := _status(j)) is None and j:
        st, sm = j.get("steady") or {}, j.get("storm") or {}
        add("5 judges: Safety on every trace, judge answers in 200 ms", _rate(st.get("rate")), "calls/s", "", "",
            f"{st.get('share_of_bound', 0):.0%} of {_rate(st.get('bound'))}/s (32 in flight / 0.2 s); "
            f"judge server saw max {_get(st, 'server', 'max_in_flight')} in flight; "
            f"peak RSS {_ms(st.get('peak_rss_mb'))} MB; {_cores(st)}")
        add("5 judges: 429 storm (30% 429, Retry-After 1 s)", _rate(sm.get("rate")), "attempts/s", "", "",
            f"{sm.get('http_429', 0)} x 429 (metrics: {int(_get(sm, 'metrics_judge_requests', '429') or 0)}); "
            f"{sm.get('lost', '?')} lost; coverage {sm.get('coverage', {})}")
    elif j is not None:
        add("5 judges", "-", "", "", "", s or "")
    sc = r.get("scale")
    if (s := _status(sc)) is None and sc:
        one, two = sc.get("one_worker") or {}, sc.get("two_workers") or {}
        add("6 scale: 2 worker processes, 4 partitions", _rate(two.get("rate")), "traces/s",
            _ratio(two.get("rate"), bound), _ratio(two.get("rate"), one.get("rate")),
            f"vs 1 process {_rate(one.get('rate'))}/s: x{_ratio(two.get('rate'), one.get('rate'))}; "
            f"{_cores(two.get('cpu'))}")
        mem = sc.get("memory") or {}
        if mem:
            add("6 memory: worker RSS over a long run", f"{(mem.get('growth') or 0):+.1%}", "growth", "", "",
                f"{mem.get('traces', 0):,} traces at {_rate(mem.get('rate'))}/s (fed while scoring): "
                f"{_ms(mem.get('rss_mb_at_mark'))} MB at {mem.get('mark_traces', 0):,}, "
                f"{_ms(mem.get('rss_mb_end'))} MB at the end, max {_ms(mem.get('rss_mb_max'))} MB")
    elif sc is not None:
        add("6 scale and memory", "-", "", "", "", s or "")
    fb = r.get("feedback")
    if (s := _status(fb)) is None and fb:
        add("7 POST /v1/feedback (wrk, 32 connections)", _rate(fb.get("rate")), "req/s", "", "",
            f"p50 {_ms(fb.get('p50_ms'))} ms, p99 {_ms(fb.get('p99_ms'))} ms; {fb.get('non_2xx', 0)} non-2xx; "
            f"1 API process, per-key rate limit off; {_cores(fb)}")
    elif fb is not None:
        add("7 POST /v1/feedback", "-", "", "", "", s or "")
    ms = r.get("mlflow_sink")
    if (s := _status(ms)) is None and ms:
        add("8 tracewatch sink mlflow: assessments to one MLflow server", _rate(ms.get("rate")), "assessments/s",
            "", "", f"mlflow.log_feedback loop {_rate(ms.get('mlflow_rate'))}/s on the same server and results: "
            f"x{_ratio(ms.get('rate'), ms.get('mlflow_rate'))}; {ms.get('results', 0):,} results, "
            f"{ms.get('max_in_flight')} in flight; SQLite store, 1 server worker")
    elif ms is not None:
        add("8 tracewatch sink mlflow", "-", "", "", "", s or "")
    ot = r.get("otlp")
    if (s := _status(ot)) is None and ot:
        ing, asm, lat = ot.get("ingest") or {}, ot.get("assembler") or {}, ot.get("latency") or {}
        add("9 OTLP ingest, 1 receiver process (protobuf, 512-span batches)", _rate(ing.get("rate")), "spans/s",
            "", "", f"plain decode loop {_rate(ing.get('decode_loop_rate'))} spans/s: "
            f"x{_ratio(ing.get('rate'), ing.get('decode_loop_rate'), '{:.3f}')}; {ing.get('spans', 0):,} spans, "
            "HTTP, Kafka acks=all")
        add("9 OTLP assembler, 1 process (spans topic -> traces)", _rate(asm.get("rate")), "traces/s", "", "",
            f"{asm.get('traces', 0):,} traces of 4 spans, prefilled")
        add("9 OTLP latency p50 / p99 (root span end -> assessments in Redis)",
            f"{_ms(lat.get('p50_ms'))} / {_ms(lat.get('p99_ms'))}", "ms", "", "",
            f"{_rate(lat.get('offered_rate'))}/s offered (half the pipeline's "
            f"{_rate((ot.get('pipeline') or {}).get('rate'))}/s: receiver + assembler + worker) "
            f"for {lat.get('seconds')} s; "
            f"quiet period {_ms(lat.get('quiet_ms'))} ms; {lat.get('measured', 0)} of {lat.get('sampled', 0)} "
            "sampled traces seen")
    elif ot is not None:
        add("9 OTLP", "-", "", "", "", s or "")
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(doc: dict[str, Any]) -> str:
    meta, results = doc["meta"], doc["results"]
    corpus = meta.get("corpus", {})
    head = (
        f"### tracewatch bench ({meta.get('mode')}, {meta.get('started')})\n\n"
        f"`{meta.get('command')}` on code {meta.get('code', '?')}: Python {meta.get('python')}, "
        f"{meta.get('machine')}, runtime "
        f"{meta.get('runtime_s', 0):.0f} s. Corpus: {corpus.get('traces', 0):,} MLflow traces made from the "
        f"fixtures (mean {corpus.get('mean_bytes', 0) / 1024:.1f} KB, max {corpus.get('max_bytes', 0) / 1024:.1f} "
        f"KB); scorers `output_word_count`, `has_retriever_span`, `latency_under` at rate 1.0 everywhere. "
        f"Other work shares the machine, so compare ratios within a run.\n"
    )
    scen = _table(["scenario", "value", "unit", "x bound", "x worker", "notes"], _scenario_rows(results))
    targets = _table(["target", "measured", "result"], [list(t) for t in evaluate_targets(results)])
    return f"{head}\n{scen}\n\n{targets}\n"
