"""Generated trace traffic, one generator for the demo, the traffic replayer, the benchmark and tests.

Every trace is a real MLflow fixture (`Template`) rendered under a fresh id and time
(`_template`); around that core: the benchmark corpus and test streams (`build_corpus`,
`synth_traces`), the demo's phases with an injected regression (`demo_traffic`) and paced
replay with an exact failed share and an optional incident (`TraceFactory`, `replay`).
`find_fixtures` is the one way to locate the fixtures (`../shared/fixtures/mlflow` beside the
repository, or `$TRACEWATCH_SHARED/fixtures/mlflow`).

For tools, not for apps: `from stream import TracePublisher` never imports this package.
"""

from stream.traffic._corpus import Corpus, build_corpus, synth_traces
from stream.traffic._demo import BAD_MARKER, PHASES, DemoTrace, Phase, demo_traffic
from stream.traffic._fixtures import SHARED_ENV, find_fixtures
from stream.traffic._replay import ReplayStats, TraceFactory, incident_schedule, replay
from stream.traffic._template import Template, Templates, load_templates, new_trace_id, rfc3339_ms

__all__ = [
    "BAD_MARKER",
    "PHASES",
    "SHARED_ENV",
    "Corpus",
    "DemoTrace",
    "Phase",
    "ReplayStats",
    "Template",
    "Templates",
    "TraceFactory",
    "build_corpus",
    "demo_traffic",
    "find_fixtures",
    "incident_schedule",
    "load_templates",
    "new_trace_id",
    "replay",
    "rfc3339_ms",
    "synth_traces",
]
