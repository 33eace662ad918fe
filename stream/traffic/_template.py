"""The core of every generated trace: a fixture trace (`Template`) rendered under a new id and time.

Two ways to make a trace from a template, both from one place:

- `Template.with_id`: byte substitution of the id (and `request_time`), ~100x cheaper than
  building a trace, for steady replay and tests that need many distinct traces;
- `Template.render`: a rebuilt trace with a new start and duration, experiment, inputs,
  outputs (with their previews), tags and metadata, for the benchmark corpus and the demo.

Either way every occurrence of the old id is replaced (info, span attributes, artifact
location) and, for `tr-` + 32 hex ids, the spans' OpenTelemetry trace id (base64) too.
"""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from scorers import DecodeError, iter_traces, trace_from_dict

__all__ = ["Template", "Templates", "load_templates", "new_trace_id", "rfc3339_ms"]


def rfc3339_ms(epoch_ms: int) -> str:
    """`2026-11-26T20:49:52.975Z`: MLflow's `request_time` form (always 24 characters)."""
    dt = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def new_trace_id(rng: random.Random, prefix: str = "") -> str:
    """`tr-` + 32 hex digits from `rng` (one `getrandbits(128)` call); `prefix` replaces the first digits."""
    return f"tr-{prefix}{rng.getrandbits(128):032x}"[: 3 + 32]


def _span_trace_id(hex_id: str) -> bytes | None:
    """The spans' OpenTelemetry trace id: the 16 id bytes, base64 (as MLflow writes it)."""
    try:
        raw = bytes.fromhex(hex_id)
    except ValueError:
        return None
    return base64.b64encode(raw) if len(raw) == 16 else None


def _root_index(spans: list[dict[str, Any]]) -> int:
    for i, s in enumerate(spans):
        if not s.get("parent_span_id"):
            return i
    return 0


def _json_preview(encoded: str, limit: int) -> str:
    return encoded[:limit] + ("..." if len(encoded) > limit else "")


@dataclass(frozen=True, slots=True)
class Template:
    """One fixture trace, parsed and serialized once. Never mutated: renders copy what they change."""

    label: str
    trace: dict[str, Any]
    data: bytes
    ok: bool  # `scorers.Trace.ok`: state OK and no failed span
    trace_id: str
    request_time: str
    duration_ms: int
    experiment: str = field(default="0")

    @classmethod
    def parse(cls, label: str, raw: bytes | Mapping[str, Any]) -> Template:
        """A template from trace JSON (bytes or parsed).

        Raises:
            scorers.DecodeError: not a trace (`reason` says why: `not_json`, `missing_info`, ...).
        """
        if isinstance(raw, bytes | bytearray | memoryview):
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise DecodeError("not_json", f"{label}: {exc}") from None
        else:
            obj = dict(raw)
        ok = trace_from_dict(obj).ok
        info = obj["info"]
        try:
            duration = int(info.get("execution_duration_ms") or 0)
        except (TypeError, ValueError):
            duration = 0
        location = info.get("trace_location") or {}
        experiment = str((location.get("mlflow_experiment") or {}).get("experiment_id") or "0")
        return cls(
            label,
            obj,
            orjson.dumps(obj),
            ok,
            str(info.get("trace_id") or info.get("request_id")),
            str(info.get("request_time") or ""),
            duration,
            experiment,
        )

    @property
    def hex_id(self) -> str:
        return self.trace_id.removeprefix("tr-")

    @property
    def output_text(self) -> str | None:
        """The root span's output when it is a string (the agent's answer), else None."""
        spans = self.trace["data"]["spans"]
        raw = (spans[_root_index(spans)].get("attributes") or {}).get("mlflow.spanOutputs")
        if raw is None:
            return None
        out = orjson.loads(raw)
        return out if isinstance(out, str) else None

    def in_experiment(self, experiment: str) -> Template:
        """This template moved to `experiment` (its `trace_location`)."""
        obj = orjson.loads(self.data)
        location = obj["info"].setdefault("trace_location", {"type": "MLFLOW_EXPERIMENT"})
        location.setdefault("mlflow_experiment", {})["experiment_id"] = experiment
        return replace(self, trace=obj, data=orjson.dumps(obj), experiment=experiment)

    def _swap_id(self, blob: bytes, trace_id: str, *, span_ids: bool = True) -> bytes:
        new_hex = trace_id.removeprefix("tr-")
        blob = blob.replace(self.hex_id.encode(), new_hex.encode())
        if span_ids:
            old_b64, new_b64 = _span_trace_id(self.hex_id), _span_trace_id(new_hex)
            if old_b64 is not None and new_b64 is not None:
                blob = blob.replace(old_b64, new_b64)
        return blob

    def with_id(self, trace_id: str, *, end_ms: int | None = None) -> bytes:
        """This trace under `trace_id` (byte substitution); with `end_ms`, re-stamped to end then."""
        out = self._swap_id(self.data, trace_id)
        if end_ms is not None and self.request_time:
            old = b'"request_time":"' + self.request_time.encode() + b'"'
            new = b'"request_time":"' + rfc3339_ms(end_ms - self.duration_ms).encode() + b'"'
            out = out.replace(old, new, 1)
        return out

    def render(
        self,
        trace_id: str,
        *,
        start_ms: int,
        duration_ms: int,
        experiment: str | None = None,
        client_request_id: str | None = None,
        inputs: Any = None,
        outputs: str | None = None,
        tags: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        without_span_type: str | None = None,
        retime_children: bool = True,
        span_trace_ids: bool = True,
    ) -> bytes:
        """A new trace from this template: id, times, experiment and content as given.

        `inputs`/`outputs` replace the root span's and the previews MLflow derives from them;
        `without_span_type` drops spans of that type (e.g. `RETRIEVER`). Child spans are
        re-timed into the new window unless `retime_children` is False, and the spans' base64
        trace ids follow the new id unless `span_trace_ids` is False (the benchmark corpus
        turns both off, so its bytes stay the same across versions).
        """
        info = dict(self.trace["info"])
        exp = self.experiment if experiment is None else experiment
        info["request_time"] = rfc3339_ms(start_ms)
        info["execution_duration_ms"] = duration_ms
        if experiment is not None:
            info["trace_location"] = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}}
        if client_request_id is not None:
            info["client_request_id"] = client_request_id
        meta = dict(info.get("trace_metadata") or {})
        spans = list(self.trace["data"]["spans"])
        if without_span_type is not None:
            marker = f'"{without_span_type}"'
            spans = [s for s in spans if marker not in str((s.get("attributes") or {}).get("mlflow.spanType"))]
        ri = _root_index(spans)
        root = dict(spans[ri])
        attrs = dict(root.get("attributes") or {})
        if inputs is not None:
            encoded_in = orjson.dumps(inputs).decode()
            attrs["mlflow.spanInputs"] = encoded_in
            meta["mlflow.traceInputs"] = _json_preview(encoded_in, 250)
            info["request_preview"] = encoded_in[:1000]
        if outputs is not None:
            encoded = orjson.dumps(outputs).decode()
            attrs["mlflow.spanOutputs"] = encoded
            meta["mlflow.traceOutputs"] = _json_preview(encoded, 250)
            info["response_preview"] = encoded[:1000]
        meta.update(metadata or {})
        start_ns = start_ms * 1_000_000
        if retime_children and spans:
            t0 = min(s["start_time_unix_nano"] for s in spans)
            t1 = max(s["end_time_unix_nano"] for s in spans)
            scale = duration_ms * 1_000_000 / max(1, t1 - t0)
            for i, s in enumerate(spans):
                span = root if i == ri else dict(s)
                span["start_time_unix_nano"] = start_ns + round((s["start_time_unix_nano"] - t0) * scale)
                span["end_time_unix_nano"] = start_ns + round((s["end_time_unix_nano"] - t0) * scale)
                spans[i] = span
        else:
            root["start_time_unix_nano"] = start_ns
            root["end_time_unix_nano"] = start_ns + duration_ms * 1_000_000
        root["attributes"] = attrs
        spans[ri] = root
        info["trace_metadata"] = meta
        if isinstance(info.get("tags"), dict):
            new_tags = dict(info["tags"])
            new_tags["mlflow.artifactLocation"] = f"mlruns/{exp}/traces/{trace_id}/artifacts"
            new_tags.update(tags or {})
            info["tags"] = new_tags
        blob = orjson.dumps({"info": info, "data": {**self.trace["data"], "spans": spans}})
        return self._swap_id(blob, trace_id, span_ids=span_trace_ids)


@dataclass(slots=True)
class Templates:
    """The traces of a fixtures folder (or JSONL file), split by whether they succeeded."""

    ok: list[Template] = field(default_factory=list)
    failed: list[Template] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files that are not traces (an index of ids, ...)

    def __len__(self) -> int:
        return len(self.ok) + len(self.failed)

    def named(self, stem: str) -> Template:
        """The template of `mlflow_trace_<stem>.json` (e.g. `01_ok_acme`).

        Raises:
            KeyError: no such fixture.
        """
        name = f"mlflow_trace_{stem}.json"
        for t in (*self.ok, *self.failed):
            if Path(t.label).name == name:
                return t
        raise KeyError(f"no fixture {name}")


def load_templates(path: str | os.PathLike[str] | None = None, experiments: list[str] | None = None) -> Templates:
    """The traces under `path` (default: `find_fixtures()`), as templates.

    Files that are not traces (no `info` object) are listed in `Templates.ignored`; other
    invalid traces raise. With `experiments`, every trace is copied into each of them.

    Raises:
        FileNotFoundError: nothing at `path`.
        scorers.DecodeError: a trace that does not decode.
        ValueError: no trace at all.
    """
    from stream.traffic._fixtures import find_fixtures

    root = find_fixtures(path)
    out = Templates()
    for label, data in iter_traces(root):
        try:
            template = Template.parse(label, data)
        except DecodeError as exc:
            if exc.reason in ("missing_info", "not_object"):
                out.ignored.append(label)
                continue
            raise
        bucket = out.ok if template.ok else out.failed
        if experiments:
            bucket.extend(template.in_experiment(e) for e in experiments)
        else:
            bucket.append(template)
    if not len(out):
        raise ValueError(f"no traces under {root}")
    return out
