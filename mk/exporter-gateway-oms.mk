# gateway-oms exporter and the exporter framework (issue 3, part 1).
# `make up` starts the exporter through scripts/up.d/50-exporter-gateway-oms.sh;
# `make test` and `make bench` already include the tests and bench below.
.PHONY: test-gateway-oms bench-metrics-render bench-lag-scrape

test-gateway-oms: up-core ## framework + gateway-oms + lag tests (one stops Kafka for ~20 s)
	$(VENV)/bin/pytest tests/test_exporter_framework.py tests/test_kafka_lag.py \
	  tests/test_kafka_lag_integration.py tests/test_kafka_lag_reads.py tests/test_gateway_oms.py \
	  tests/test_exporter_restart.py --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS)

bench-metrics-render: ## /metrics with 10,000 series vs prometheus_client generate_latest
	$(PY) bench/bench_metrics_render.py

bench-lag-scrape: up-core ## gateway-oms lag scrape with changed offsets vs a snapshot-only scrape
	$(PY) bench/bench_lag_scrape.py
