"""`tracewatch`: the command line (commands, demo, judge test server).

Heavy imports happen inside commands so `tracewatch --help` stays instant.
"""

from stream.cli._app import app, main

__all__ = [
    "app",
    "main",
]
