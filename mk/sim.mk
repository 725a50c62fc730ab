# Simulator and Kite-compatible broker server (issue 2, items 5-6): `tradeops sim`.
# `make up` starts both through scripts/up.d/30-sim.sh and 31-broker-api.sh.
.PHONY: sim-day sim-load-bars test-sim bench-sim

DATE ?= $(shell TZ=Asia/Kolkata date +%F)

sim-day: up-core ## a whole simulated session for DATE in fast mode into the dev stack; prints its ground truth
	$(VENV)/bin/tradeops --config infra/dev/tradeops.toml sim run --mode fast --date $(DATE)

sim-load-bars: up-core ## only the internal bars of DATE into bars_1m (no Kafka), e.g. before `make recon DATE=...`
	$(VENV)/bin/tradeops --config infra/dev/tradeops.toml sim run --mode fast --no-kafka --date $(DATE) >/dev/null
	@echo "bars_1m loaded for $(DATE)"

test-sim: up-core ## the simulator's and broker server's tests (real Kafka and PostgreSQL)
	$(VENV)/bin/pytest tests/test_sim_config.py tests/test_sim_market.py tests/test_sim_trading.py \
	  tests/test_sim_broker_api.py tests/test_sim_integration.py \
	  --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS)

bench-sim: up-core ## market and fast-day speed vs anchors of the same run (docs/benchmarks.md)
	$(PY) bench/bench_sim.py --e2e
