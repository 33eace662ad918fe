"""`python -m stream` is the `tracewatch` command."""

from stream.cli._app import main

main()
