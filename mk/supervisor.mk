# Heartbeat supervisor (issue 6): `tradeops supervise`. `make up` starts it through
# scripts/up.d/60-supervisor.sh over the programs in [supervisor] of infra/dev/tradeops.toml.
.PHONY: supervise-status test-supervisor bench-supervisor

supervise-status: ## the dev supervisor's table (exit 0 ok, 1 degraded, 2 FATAL, 3 unknown)
	@$(VENV)/bin/tradeops --config infra/dev/tradeops.toml supervise status

test-supervisor: up-core ## the supervisor's tests (real processes; Kafka for its heartbeat source)
	$(VENV)/bin/pytest tests/test_supervisor_unit.py tests/test_supervisor_process.py \
	  tests/test_supervisor_kafka.py tests/test_supervisor_vs_supervisord.py \
	  --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS)

bench-supervisor: ## crash->restart, hung detection, storm and idle CPU vs supervisord
	$(PY) bench/bench_supervisor.py
