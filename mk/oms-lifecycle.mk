# OMS order-lifecycle exporter (issue 3): `tradeops exporter oms-lifecycle`, started by
# `make up` through scripts/up.d/51-exporter-oms-lifecycle.sh on 127.0.0.1:9812.
.PHONY: test-oms-lifecycle bench-oms-lifecycle oms-orders oms-stuck

test-oms-lifecycle: up-core ## the oms-lifecycle tests (book unit tests + real Kafka)
	$(VENV)/bin/pytest tests/test_oms_book.py tests/test_oms_lifecycle.py \
	  tests/test_oms_lifecycle_process.py tests/test_oms_lifecycle_docs.py --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS)

bench-oms-lifecycle: up-core ## oms-lifecycle: events/s vs bare consume+decode, 1M replay, RSS
	$(PY) bench/bench_oms_lifecycle.py

oms-orders: ## non-terminal orders of the dev oms-lifecycle exporter
	@$(VENV)/bin/tradeops --config infra/dev/tradeops.toml oms orders

oms-stuck: ## stuck orders of the dev oms-lifecycle exporter
	@$(VENV)/bin/tradeops --config infra/dev/tradeops.toml oms orders --stuck
