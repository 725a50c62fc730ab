# risk-drawdown and pairs exporters (issue 4). `make test` and `make bench` already include
# the tests and benches below; `make up` starts both exporters (scripts/up.d/52-, 53-).
.PHONY: test-risk-pairs bench-risk bench-pairs risk-metrics pairs-metrics

test-risk-pairs: up-core ## risk/pairs math oracle tests + both exporters on real Kafka/PostgreSQL
	$(VENV)/bin/pytest tests/test_risk_math.py tests/test_risk_drawdown.py tests/test_pairs_math.py \
	  tests/test_pairs_state.py tests/test_pairs_exporter.py --timeout=$(PYTEST_TIMEOUT) -s $(PYTEST_ARGS)

bench-risk: up-core ## risk-drawdown: msgs/s with 200 buckets (in-process and through Kafka), /metrics p99
	$(PY) bench/bench_risk.py --kafka

bench-pairs: up-core ## pairs: 500 pairs, bar updates/s vs a bare Welford loop; through Kafka vs bare consume
	$(PY) bench/bench_pairs.py --kafka

risk-metrics: ## drawdown/exposure series of the dev risk-drawdown exporter (127.0.0.1:9813)
	@curl -fsS http://127.0.0.1:9813/metrics | grep -E '^risk_(drawdown|max_drawdown|equity|exposure)'

pairs-metrics: ## z-scores, hedge ratios and stale legs of the dev pairs exporter (127.0.0.1:9814)
	@curl -fsS http://127.0.0.1:9814/metrics | grep -E '^pairs_(spread_zscore|hedge_ratio|half_life|leg_stale)'
