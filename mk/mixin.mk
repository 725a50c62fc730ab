# Monitoring mixin (docs/alerts.md): Prometheus config and rules, Alertmanager, Grafana.
PROMTOOL ?= promtool
AMTOOL   ?= .state/bin/amtool

.PHONY: rules-test dashboards test-mixin monitoring-reload

rules-test: ## promtool check config/rules + test rules, amtool check-config (mixin)
	$(PROMTOOL) check config infra/prometheus/prometheus.yml
	$(PROMTOOL) check rules infra/prometheus/rules/*.yml
	cd infra/prometheus/tests && $(PROMTOOL) test rules *.yml
	@test -x $(AMTOOL) || { echo "make rules-test: $(AMTOOL) missing: run make install" >&2; exit 1; }
	$(AMTOOL) check-config infra/alertmanager/alertmanager.yml

dashboards: ## regenerate infra/grafana/dashboards/*.json from infra/grafana/dashboards.py
	$(PY) infra/grafana/dashboards.py

test-mixin: up-core ## the mixin's tests: rules/config checks, dashboards JSON, live panel queries, alert e2e
	$(VENV)/bin/pytest tests/test_mixin*.py --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS)

monitoring-reload: rules-test ## after editing rules/prometheus.yml/alertmanager.yml: check, then reload the running dev Prometheus and Alertmanager
	curl -fsS -X POST http://127.0.0.1:19090/-/reload
	@$(STACK) start alertmanager
