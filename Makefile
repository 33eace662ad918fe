# tracewatch developer entry points.
#   make up / status / down   local Kafka (KRaft) + Redis on 127.0.0.1, no Docker (deploy/local/stack.py)
#   make lint typecheck        static checks
#   make test-unit             tests that need no running services
#   make test                  lint + typecheck + stack up + all tests + stack down (always)

PYTHON ?= python3
STACK  := $(PYTHON) deploy/local/stack.py
PYTEST_ARGS ?=

# Only the package directories that exist (bench/ joins the lint when it appears).
LINT_PATHS := $(or $(wildcard stream scorers sinks tests bench),stream scorers sinks tests)
TYPE_PATHS := $(or $(wildcard stream scorers sinks),stream scorers sinks)

.DEFAULT_GOAL := help
.PHONY: help up down status lint typecheck test-unit test demo

help:
	@echo "targets: up down status lint typecheck test-unit test"
	@echo "  (stack settings: $(STACK) --help)"

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

# One shell: the EXIT trap brings the stack down whatever happens (pytest failing,
# `up` failing, Ctrl-C), and the recipe exits with pytest's (or up's) exit code.
test: lint typecheck
	@trap '$(STACK) down' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; \
	$(STACK) up && $(PYTHON) -m pytest $(PYTEST_ARGS)

# The one-command demo: installs the project, then stack + worker + API + traffic (< 5 min).
demo:
	$(PYTHON) -m pip install -q -e . && $(PYTHON) -m stream demo

# Benchmarks (bench/README.md): full run < 15 min; `make bench BENCH_ARGS=--quick` for a few minutes.
BENCH_ARGS ?=
.PHONY: bench
bench:
	$(PYTHON) -m bench $(BENCH_ARGS)
