"""Reading from Redis: a trace's results, per-minute aggregates and coverage, the index sets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from sinks._keys import SEP, RedisKeys, decode
from sinks._redis_client import converted, text

__all__ = ["Aggregate", "RedisReader"]

_MAX_RANGE_MINUTES = 31 * 1440


@dataclass(slots=True, frozen=True)
class Aggregate:
    """Counts of one assessment name in one experiment, summed over a range of minutes.

    `count` is every scored or errored assessment; `passed`, `failed` and `errors` split it by
    outcome; `values` counts numeric non-boolean results. `sum` adds every number, booleans as
    1/0, so `mean` of a pass/fail scorer is its pass rate. String results that are neither
    pass nor fail count only in `count`.
    """

    count: int = 0
    sum: float = 0.0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    values: int = 0

    @property
    def pass_rate(self) -> float | None:
        """Share of pass among pass and fail results; None when there were none."""
        n = self.passed + self.failed
        return self.passed / n if n else None

    @property
    def mean(self) -> float | None:
        """Mean of the numeric results (booleans as 1/0); None when there were none."""
        n = self.passed + self.failed + self.values
        return self.sum / n if n else None

    @property
    def error_rate(self) -> float | None:
        """Share of errors among all counted results; None when nothing was counted."""
        return self.errors / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the summary API, with the Redis field names."""
        return {
            "count": self.count,
            "sum": self.sum,
            "pass": self.passed,
            "fail": self.failed,
            "error": self.errors,
            "value": self.values,
            "pass_rate": self.pass_rate,
            "mean": self.mean,
            "error_rate": self.error_rate,
        }


class RedisReader:
    """The read half of `RedisSink`: what the API and the worker read back."""

    _client: aioredis.Redis
    keys: RedisKeys

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        """The stored results of one trace, or None when Redis has nothing (or no longer) for it.

        Returns:
            `{"trace_id", "experiment_id", "assessments": {name: dict},
            "feedback": {name: {user: event dict}}, "expectations": {name: value}}`;
            `experiment_id` is None while only feedback has arrived for the trace.
        """
        with converted("get_trace"):
            raw = await self._client.hgetall(self.keys.trace(trace_id))
        if not raw:
            return None
        assessments: dict[str, Any] = {}
        feedback: dict[str, dict[str, Any]] = {}
        expectations: dict[str, Any] = {}
        experiment: str | None = None
        for k, v in raw.items():
            key = text(k)
            if key.startswith("a:"):
                assessments[decode(key[2:])] = orjson.loads(v)
            elif key.startswith("f:"):
                name, _, user = key[2:].partition(SEP)
                feedback.setdefault(decode(name), {})[decode(user)] = orjson.loads(v)
            elif key.startswith("e:"):
                expectations[decode(key[2:])] = orjson.loads(v).get("value")
            elif key == "exp":
                experiment = decode(text(v))
        return {
            "trace_id": trace_id,
            "experiment_id": experiment,
            "assessments": assessments,
            "feedback": feedback,
            "expectations": expectations,
        }

    async def aggregates(
        self, experiment: str, scorer: str, *, start_minute: int, end_minute: int
    ) -> Aggregate:
        """Sum the per-minute aggregates of one assessment name over `[start_minute, end_minute)`.

        Args:
            experiment: Experiment id.
            scorer: The assessment name: the scorer's name unless it returns several named
                feedbacks, each aggregated under its own name.
            start_minute: First minute (Unix ms // 60000), included.
            end_minute: Last minute, excluded.

        Raises:
            ValueError: The range is reversed or longer than 31 days.
            SinkUnavailableError: Redis is unreachable.
        """
        hashes = await self._minutes("aggregates", start_minute, end_minute, experiment, scorer, agg=True)
        count = passed = failed = errors = values = 0
        total = 0.0
        for h in hashes:
            if not h:
                continue
            f = {text(k): v for k, v in h.items()}
            count += int(f.get("count", 0))
            total += float(f.get("sum", 0))
            passed += int(f.get("pass", 0))
            failed += int(f.get("fail", 0))
            errors += int(f.get("error", 0))
            values += int(f.get("value", 0))
        return Aggregate(count, total, passed, failed, errors, values)

    async def coverage(
        self,
        experiment: str,
        scorer: str,
        *,
        start_minute: int | None = None,
        end_minute: int | None = None,
    ) -> dict[str, int]:
        """Pair states of one scorer: `scored`, `error`, `skipped`, `skipped:{reason}`, `error:{code}`.

        All-time totals by default; with both minutes, the sum over `[start_minute, end_minute)`
        by the minute the traces ended (kept for `aggregate_ttl`).

        Raises:
            ValueError: Only one minute given, or a bad range.
            SinkUnavailableError: Redis is unreachable.
        """
        if start_minute is None and end_minute is None:
            with converted("coverage"):
                hashes = [await self._client.hgetall(self.keys.coverage(experiment, scorer))]
        elif start_minute is None or end_minute is None:
            raise ValueError("give both start_minute and end_minute, or neither")
        else:
            hashes = await self._minutes("coverage", start_minute, end_minute, experiment, scorer, agg=False)
        out: dict[str, int] = {}
        for h in hashes:
            for k, v in h.items():
                key = text(k)
                out[key] = out.get(key, 0) + int(v)
        return out

    async def _minutes(
        self, operation: str, start: int, end: int, experiment: str, name: str, *, agg: bool
    ) -> list[dict[Any, Any]]:
        if end < start or end - start > _MAX_RANGE_MINUTES:
            raise ValueError(f"bad minute range [{start}, {end}): reversed or over 31 days")
        key = self.keys.aggregate if agg else self.keys.coverage_minute
        pipe = self._client.pipeline(transaction=False)
        for minute in range(start, end):
            pipe.hgetall(key(experiment, name, minute))
        with converted(operation):
            result: list[dict[Any, Any]] = await pipe.execute()
        return result

    async def agreement(self, experiment: str, scorer: str) -> dict[str, int]:
        """Current judge-vs-user cells of a scorer: `pass:up`, `pass:down`, `fail:up`, `fail:down`."""
        with converted("agreement"):
            raw = await self._client.hgetall(self.keys.agreement(experiment, scorer))
        return {text(k): int(v) for k, v in raw.items()}

    async def votes(self, experiment: str, name: str) -> dict[str, int]:
        """Current votes of a boolean feedback name: `up` and `down` counts (one per user and trace)."""
        with converted("votes"):
            raw = await self._client.hgetall(self.keys.votes(experiment, name))
        return {text(k): int(v) for k, v in raw.items()}

    async def trace_raw(self, trace_id: str) -> bytes | None:
        """The stored (compressed) wire form of a sampled trace, kept for re-scoring, or None."""
        with converted("trace_raw"):
            data = await self._client.get(self.keys.raw(trace_id))
        return None if data is None else (data.encode() if isinstance(data, str) else bytes(data))

    async def experiments(self) -> set[str]:
        """The experiment ids that have results."""
        with converted("experiments"):
            members = await self._client.smembers(self.keys.experiments)
        return {decode(text(m)) for m in members}

    async def scorers(self, experiment: str) -> set[str]:
        """The scorers that have coverage in an experiment (keys for `coverage`)."""
        with converted("scorers"):
            members = await self._client.smembers(self.keys.scorers(experiment))
        return {decode(text(m)) for m in members}

    async def names(self, experiment: str) -> set[str]:
        """The assessment names that have aggregates in an experiment (keys for `aggregates`)."""
        with converted("names"):
            members = await self._client.smembers(self.keys.names(experiment))
        return {decode(text(m)) for m in members}

    async def ping(self) -> None:
        """Check that Redis answers, for readiness probes.

        Raises:
            SinkUnavailableError: It does not.
        """
        with converted("ping"):
            await self._client.ping()
