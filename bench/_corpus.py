"""The benchmark corpus: `stream.traffic.build_corpus` (one trace generator for demo, replay, bench, tests).

Every scenario runs on the same `Corpus`; for a seed and time base its bytes are the same as
before the generators were merged, so figures stay comparable across versions.
"""

from __future__ import annotations

from stream.traffic import Corpus, build_corpus, rfc3339_ms

__all__ = ["Corpus", "build_corpus", "rfc3339_ms"]
