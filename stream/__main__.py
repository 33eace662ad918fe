"""`python -m stream` is the `tracewatch` command."""

from stream.cli import main

main()
