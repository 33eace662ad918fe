"""The Prometheus sink: the `tracewatch_*` metric families of DESIGN.md, on an injected registry.

`Metrics` owns every family, so nothing registers at import time and each test can use a
fresh `CollectorRegistry()`. The worker calls `record_pairs` only with the pairs
`RedisSink.write` reported as new, so the counters here agree with the Redis aggregates even
when Kafka redelivers.

Label values supplied by users (experiment, scorer and assessment names, feedback names and
values, models, reasons) are bounded: after `max_label_values` distinct values of one label,
new ones collapse into `"other"` and `tracewatch_label_overflow_total{label}` counts each
collapsed observation. Labelled children are cached, so the hot path resolves each
(experiment, scorer) once per process rather than once per observation.

The per-assessment families (`assessments_total`, `assessment_value`) take the assessment
name as their `scorer` label, as the Redis aggregates do: the same thing unless a scorer
returns several named feedbacks.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app, start_http_server
from prometheus_client.samples import Exemplar

from scorers import Assessment
from sinks._keys import pair_state, summable

__all__ = ["Metrics", "MetricsServer", "metrics_asgi_app", "serve_metrics"]

VALUE_BUCKETS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 2.0, 5.0, 10.0, 100.0, 1000.0, 10000.0)
SCORER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JUDGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
END_TO_END_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_EXEMPLAR_MAX_VALUE = 128 - len("trace_id")  # OpenMetrics caps exemplar labels at 128 runes
_OTHER = "other"
_STATES = ("scored", "error", "skipped")
_RESULTS = ("pass", "fail", "error", "value")


class _Bound:
    """Admits the first `limit` distinct values of one label; maps later ones to `"other"`."""

    __slots__ = ("_limit", "_overflow", "_seen")

    def __init__(self, limit: int, overflow: Any) -> None:
        self._limit = limit
        self._overflow = overflow
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        seen = self._seen
        if value in seen:
            return value
        if len(seen) < self._limit:
            seen.add(value)
            return value
        self._overflow.inc()
        return _OTHER


class _PairChildren:
    """The children one (experiment, scorer) pair touches: coverage by state and duration."""

    __slots__ = ("duration", "sampled")

    def __init__(self, sampled: dict[str, Any], duration: Any) -> None:
        self.sampled = sampled
        self.duration = duration


class _NameChildren:
    """The children one (experiment, assessment name) touches: results and the value histogram."""

    __slots__ = ("results", "value")

    def __init__(self, results: dict[str, Any], value: Any) -> None:
        self.results = results
        self.value = value


class _Tally:
    """A batch of observations for one histogram child, applied in one pass.

    Produces exactly what as many `observe()` calls would: the same bucket counts and sum,
    and per bucket the exemplar of the last observation that fell in it.
    """

    __slots__ = ("bounds", "counts", "exemplars", "total")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.exemplars: dict[int, tuple[str, float]] = {}
        self.total = 0.0

    def add(self, value: float, trace_id: str | None) -> None:
        i = bisect_left(self.bounds, value)
        if i == len(self.bounds):  # NaN lands past +Inf; observe() would count it nowhere
            return
        self.counts[i] += 1
        self.total += value
        if trace_id is not None:
            self.exemplars[i] = (trace_id, value)

    def apply(self, hist: Any) -> None:
        hist._sum.inc(self.total)
        buckets = hist._buckets
        for i, n in enumerate(self.counts):
            if n:
                buckets[i].inc(n)
        if self.exemplars:
            now = time.time()
            for i, (tid, value) in self.exemplars.items():
                buckets[i].set_exemplar(Exemplar({"trace_id": tid}, value, now))


def _tally(observed: dict[Any, _Tally], hist: Any) -> _Tally:
    t = observed.get(hist)
    if t is None:
        t = observed[hist] = _Tally(hist._upper_bounds)
    return t


class Metrics:
    """The `tracewatch_*` metric families, registered on one registry.

    Args:
        registry: Where to register; a new private `CollectorRegistry` when None (never the
            process-global default). Register one `Metrics` per registry.
        max_label_values: Distinct values admitted per user-supplied label before `"other"`.

    Example:
        >>> m = Metrics(CollectorRegistry())
        >>> m.record_pairs([p for p, new in zip(pairs, await sink.write(pairs)) if new])
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, max_label_values: int = 200) -> None:
        if max_label_values < 1:
            raise ValueError("max_label_values must be at least 1")
        self.registry = reg = CollectorRegistry() if registry is None else registry

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, labels, namespace="tracewatch", registry=reg)

        def histogram(name: str, doc: str, buckets: Sequence[float], *labels: str) -> Histogram:
            return Histogram(name, doc, labels, namespace="tracewatch", registry=reg, buckets=buckets)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, labels, namespace="tracewatch", registry=reg)

        self._overflow = counter("label_overflow", "Observations whose label collapsed to 'other'.", "label")
        self._bounds: dict[str, _Bound] = {}
        self._max = max_label_values

        self._received = counter("traces_received", "Traces decoded from Kafka or HTTP.", "experiment")
        self._invalid = counter("traces_invalid", "Trace payloads that failed to decode.", "reason")
        self._assessments = counter(
            "assessments", "Scored or errored assessments by outcome.", "experiment", "scorer", "result"
        )
        self._value = histogram(
            "assessment_value",
            "Numeric assessment values, booleans as 0/1; exemplar: the trace id.",
            VALUE_BUCKETS,
            "experiment",
            "scorer",
        )
        self._sampled = counter(
            "sampled", "Sampled (trace, scorer) pairs by final state.", "experiment", "scorer", "state"
        )
        self._scorer_duration = histogram(
            "scorer_duration_seconds", "Time a scorer took on one trace.", SCORER_BUCKETS, "scorer"
        )
        self._judge_requests = counter("judge_requests", "Judge HTTP requests.", "model", "status")
        self._judge_tokens = counter("judge_tokens", "Judge tokens (prompt|completion).", "model", "kind")
        self._judge_duration = histogram(
            "judge_request_duration_seconds", "Latency of one judge request.", JUDGE_BUCKETS, "model"
        )
        self._judge_cost = counter("judge_cost_usd", "Estimated judge spend in US dollars.", "model")
        self._feedback = counter("feedback", "End-user feedback events.", "experiment", "name", "value")
        self._agreement = counter(
            "feedback_agreement",
            "Judge verdicts met by user feedback on the same trace.",
            "experiment",
            "scorer",
            "judge",
            "user",
        )
        self._end_to_end = histogram(
            "end_to_end_seconds", "From the end of a trace to its scored result.", END_TO_END_BUCKETS
        )
        self._lag = gauge("consumer_lag", "Records behind the end of the partition.", "topic", "partition")
        self._dlq = counter("dlq", "Messages dead-lettered.", "reason")
        self._batches = counter("batches", "Batches processed by the worker.")
        self._batch_duration = histogram(
            "batch_duration_seconds", "Time to process one batch, poll to flush.", BATCH_BUCKETS
        )
        self._in_flight = gauge("worker_in_flight", "Pairs being scored right now.")
        self._redis_retries = counter("redis_retries", "Redis batch writes retried after an outage.")
        self._join_malformed = counter(
            "join_malformed", "Feedback join counts reported by Redis that did not parse (logged, not counted)."
        )

        self._pair_cache: dict[tuple[str, str], _PairChildren] = {}
        self._name_cache: dict[tuple[str, str], _NameChildren] = {}
        self._received_cache: dict[str, Any] = {}
        self._end_to_end_observe: Callable[[float], None] = self._end_to_end.observe

    def _bound(self, label: str) -> _Bound:
        b = self._bounds.get(label)
        if b is None:
            b = self._bounds[label] = _Bound(self._max, self._overflow.labels(label))
        return b

    def _pair_children(self, experiment: str, scorer: str) -> _PairChildren:
        key = (experiment, scorer)
        c = self._pair_cache.get(key)
        if c is not None:
            return c
        e, s = self._bound("experiment")(experiment), self._bound("scorer")(scorer)
        c = self._pair_cache.get((e, s))
        if c is None:
            sampled = {st: self._sampled.labels(e, s, st) for st in _STATES}
            c = _PairChildren(sampled, self._scorer_duration.labels(s))
            self._pair_cache[(e, s)] = c
        # Only admitted values are cached under their own key, so the cache stays bounded.
        return c

    def _name_children(self, experiment: str, name: str) -> _NameChildren:
        key = (experiment, name)
        c = self._name_cache.get(key)
        if c is not None:
            return c
        e, n = self._bound("experiment")(experiment), self._bound("scorer")(name)
        c = self._name_cache.get((e, n))
        if c is None:
            results = {r: self._assessments.labels(e, n, r) for r in _RESULTS}
            c = _NameChildren(results, self._value.labels(e, n))
            self._name_cache[(e, n)] = c
        return c

    def record_pairs(self, pairs: Sequence[Sequence[Assessment]], *, now_ms: int | None = None) -> None:
        """Count a batch of newly recorded pairs.

        Per pair: `sampled_total` by its state (the same rule as the Redis coverage). Per pair
        that was not skipped: `scorer_duration_seconds` and `end_to_end_seconds` (when the
        trace end is known) once. Per assessment that was not skipped: `assessments_total` by
        outcome and, for a number, `assessment_value` with the trace id as exemplar.

        Args:
            pairs: Pairs as given to `RedisSink.write`, filtered to those it reported new.
            now_ms: The scoring time for `end_to_end_seconds`; the wall clock by default.
        """
        now = time.time() * 1000 if now_ms is None else now_ms
        # Tally the whole batch in plain dicts, then touch each metric child once: the
        # per-observation cost of prometheus_client (a lock and a bucket scan) is the
        # worker's largest metrics cost otherwise.
        incs: dict[Any, int] = {}
        observed: dict[Any, _Tally] = {}
        e2e = self._end_to_end
        for pair in pairs:
            if not pair:
                continue
            a0 = pair[0]
            exp = a0.experiment_id
            pc = self._pair_children(exp, a0.scorer)
            state, _ = pair_state(pair)
            child = pc.sampled[state]
            incs[child] = incs.get(child, 0) + 1
            if state == "skipped":
                continue
            _tally(observed, pc.duration).add(a0.duration_s, None)
            if a0.trace_end_ms is not None:
                _tally(observed, e2e).add(max(0.0, (now - a0.trace_end_ms) / 1000), None)
            for a in pair:
                if a.state == "skipped":
                    continue
                nc = self._name_children(exp, a.name)
                child = nc.results[a.outcome]
                incs[child] = incs.get(child, 0) + 1
                x = summable(a)
                if x is not None:
                    tid = a.trace_id
                    _tally(observed, nc.value).add(x, tid if len(tid) <= _EXEMPLAR_MAX_VALUE else None)
        for child, n in incs.items():
            child.inc(n)
        for hist, tally in observed.items():
            tally.apply(hist)

    def trace_received(self, experiment: str, n: int = 1) -> None:
        """Count `n` decoded traces of an experiment."""
        c = self._received_cache.get(experiment)
        if c is None:
            e = self._bound("experiment")(experiment)
            c = self._received.labels(e)
            if e == experiment:
                self._received_cache[experiment] = c
        c.inc(n)

    def trace_invalid(self, reason: str) -> None:
        """Count a payload that failed to decode (`reason` as `DecodeError.reason`)."""
        self._invalid.labels(self._bound("reason")(reason)).inc()

    def judge_request(
        self,
        model: str,
        status: str,
        latency_s: float,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost: float = 0.0,
    ) -> None:
        """Count one judge request: status, latency, tokens and spend."""
        m = self._bound("model")(model)
        self._judge_requests.labels(m, self._bound("status")(str(status))).inc()
        self._judge_duration.labels(m).observe(latency_s)
        if prompt_tokens:
            self._judge_tokens.labels(m, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self._judge_tokens.labels(m, "completion").inc(completion_tokens)
        if cost:
            self._judge_cost.labels(m).inc(cost)

    def feedback(self, experiment: str, name: str, value: Any) -> None:
        """Count one end-user feedback event; booleans become `up`/`down`."""
        label = ("up" if value else "down") if isinstance(value, bool) else self._bound("value")(str(value))
        self._feedback.labels(self._bound("experiment")(experiment), self._bound("name")(name), label).inc()

    def agreement(self, experiment: str, scorer: str, judge: str | bool, user: str | bool) -> None:
        """Count a judge verdict (`pass`/`fail`) met by a user vote (`up`/`down`) on one trace.

        Raises:
            ValueError: `judge` or `user` is outside those sets.
        """
        j = ("pass" if judge else "fail") if isinstance(judge, bool) else judge
        u = ("up" if user else "down") if isinstance(user, bool) else user
        if j not in ("pass", "fail") or u not in ("up", "down"):
            raise ValueError(f"judge must be pass|fail and user up|down, got {judge!r}, {user!r}")
        self._agreement.labels(
            self._bound("experiment")(experiment), self._bound("scorer")(scorer), j, u
        ).inc()

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """Set the consumer lag of one partition."""
        self._lag.labels(topic, str(partition)).set(lag)

    def dead_lettered(self, reason: str) -> None:
        """Count a message sent to the DLQ."""
        self._dlq.labels(self._bound("reason")(reason)).inc()

    def batch_done(self, duration_s: float) -> None:
        """Count one processed batch and its duration."""
        self._batches.inc()
        self._batch_duration.observe(duration_s)

    def set_in_flight(self, n: int) -> None:
        """Set the number of pairs being scored."""
        self._in_flight.set(n)

    def redis_retry(self) -> None:
        """Count one retried Redis batch write."""
        self._redis_retries.inc()

    def join_malformed(self, n: int = 1) -> None:
        """Count join counts that did not parse: an alert, since the encoding should rule them out."""
        self._join_malformed.inc(n)


class MetricsServer(NamedTuple):
    """A running `/metrics` HTTP server; unpacks as `(server, thread)`."""

    server: Any
    thread: Any

    @property
    def port(self) -> int:
        """The bound port (useful after asking for port 0)."""
        return int(self.server.server_port)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop serving, close the socket so the port is free again, and join the thread."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout)


def serve_metrics(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9108) -> MetricsServer:
    """Serve `registry` on `http://host:port/metrics` from a daemon thread.

    The server negotiates the format: OpenMetrics (with exemplars) when the scraper asks for
    it in `Accept`, the classic text format otherwise.

    Raises:
        OSError: The port is taken.
    """
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)


def metrics_asgi_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """An ASGI app serving `registry`, to mount at `/metrics` in the API."""
    app: Callable[..., Any] = make_asgi_app(registry=registry)
    return app
