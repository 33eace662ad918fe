# tracewatch developer entry points.
#   make up / status / down   local Kafka (KRaft) + Redis on 127.0.0.1, no Docker (deploy/local/stack.py)
#   make bootstrap             install what is missing (deploy/local/bootstrap.sh; `make test` and
#                              `make demo` run it first: a quick no-op when all is there)
#   make lint typecheck        static checks
#   make test-unit             tests that need no running services
#   make test                  bootstrap --test + lint + typecheck + all tests on the local stack (started
#                              and stopped around them unless it was already up)
#   make demo                  bootstrap + `tracewatch demo` (`tracewatch demo --stop` to stop it)

PYTHON ?= python3
STACK  := $(PYTHON) deploy/local/stack.py
PYTEST_ARGS ?=

# Only the package directories that exist (bench/ joins the lint when it appears).
LINT_PATHS := $(or $(wildcard stream scorers sinks tests bench),stream scorers sinks tests)
TYPE_PATHS := $(or $(wildcard stream scorers sinks),stream scorers sinks)

.DEFAULT_GOAL := help
BOOTSTRAP := PYTHON="$(PYTHON)" bash deploy/local/bootstrap.sh -q
.PHONY: help bootstrap up down status lint typecheck test-unit test demo

help:
	@echo "targets: bootstrap up down status lint typecheck test-unit test demo bench"
	@echo "  (stack settings: $(STACK) --help)"

bootstrap:
	@$(BOOTSTRAP) --test

up:
	@$(STACK) up

down:
	@$(STACK) down

status:
	@$(STACK) status

lint:
	$(PYTHON) -m ruff check $(LINT_PATHS)

typecheck:
	$(PYTHON) -m mypy $(TYPE_PATHS)

test-unit:
	$(PYTHON) -m pytest -m 'not integration' $(PYTEST_ARGS)

# Bootstrap first (it installs ruff and mypy too), then the checks. The stack is left as found:
# one already up (`make up`) stays up; otherwise, in one shell, the EXIT trap brings the stack
# `up` started down whatever happens (pytest failing, `up` failing, Ctrl-C), and the recipe
# exits with pytest's (or up's) exit code.
test:
	@$(BOOTSTRAP) --test
	@$(MAKE) --no-print-directory lint typecheck PYTHON="$(PYTHON)"
	@if $(STACK) status >/dev/null 2>&1; then \
	    echo "stack already up: left up"; $(PYTHON) -m pytest $(PYTEST_ARGS); \
	else \
	    trap '$(STACK) down' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; \
	    $(STACK) up && $(PYTHON) -m pytest $(PYTEST_ARGS); \
	fi

# The one-command demo: installs what is missing, then stack + worker + API + traffic (< 5 min).
demo:
	@$(BOOTSTRAP)
	$(PYTHON) -m stream demo

# Benchmarks (bench/README.md): full run < 15 min; `make bench BENCH_ARGS=--quick` for a few minutes.
BENCH_ARGS ?=
.PHONY: bench
bench:
	$(PYTHON) -m bench $(BENCH_ARGS)
