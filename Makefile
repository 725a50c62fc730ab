# tradeops: front door. `make up` / `make test` are the two set-up commands (README.md).
# Other parts add their own targets in mk/<part>.mk (included below), install steps in
# scripts/install.d/NN-name.sh and things `make up` starts in scripts/up.d/NN-name.sh.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
STACK   := scripts/stack.sh
# per-test timeout (pytest-timeout), seconds; extra pytest args: make test PYTEST_ARGS="-k recon"
PYTEST_TIMEOUT ?= 300
PYTEST_ARGS    ?=

.PHONY: help install up up-core down status test lint bench ci-local lock clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

install: ## run scripts/install.d/* (apt packages, .venv, Kafka jars, ...); idempotent
	@$(STACK) install

up: install ## install what is missing, start the whole dev stack incl. scripts/up.d/*
	@$(STACK) up

up-core: install ## start only Kafka, PostgreSQL, Prometheus, Pushgateway (what tests need)
	@$(STACK) up --core

down: ## stop everything the stack started (by pid), leave no process
	@$(STACK) down

status: ## one line per service: running/stopped
	@$(STACK) status

restart-%: ## restart one service: make restart-kafka, make restart-postgres
	@$(STACK) restart $*

lint: ## ruff over src tests bench
	$(VENV)/bin/ruff check $(wildcard src tests bench)

# pytest exit 5 = no test collected: that is a failure here, never a green run.
test: up-core lint ## install, start the core stack, ruff, then pytest over tests/
	@set +e; $(VENV)/bin/pytest tests --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

bench: up-core ## run every bench/bench_*.py (each prints ratios against its own anchor)
	@set -e; shopt -s nullglob; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done

ci-local: ## .ci/run on a fresh clone of HEAD in a private network namespace (stack keeps running)
	@scripts/lib/ci_local.sh

lock: ## regenerate requirements.lock + requirements-dev.lock from the current .venv
	$(PY) scripts/lib/lock.py

clean: down ## stop the stack and delete its state (.state/: data, logs, secrets, jars)
	@if [ -L .state/pg ]; then rm -rf "$$(readlink -f .state/pg)"; fi
	rm -rf .state .pytest_cache .ruff_cache

-include mk/*.mk
