# Daily reconciliation of broker vs internal 1-minute bars, and autoheal (issue 5,
# docs/recon.md). DATE defaults to the last trading day before today (IST).
.PHONY: recon recon-autoheal recon-show test-recon bench-recon

RECON_CONFIG ?= infra/dev/tradeops.toml
RECON_DATE = $(or $(DATE),$(shell $(VENV)/bin/tradeops --config $(RECON_CONFIG) calendar previous today))

recon: ## reconcile one day: make recon DATE=YYYY-MM-DD [SYMBOLS=NSE:INFY,...] (exit 1 = discrepancies)
	$(VENV)/bin/tradeops --config $(RECON_CONFIG) recon run --date $(RECON_DATE) $(if $(SYMBOLS),--symbols $(SYMBOLS))

recon-autoheal: ## backfill + replay what the broker settles: make recon-autoheal DATE=... [ARGS=--dry-run]
	$(VENV)/bin/tradeops --config $(RECON_CONFIG) recon autoheal --date $(RECON_DATE) $(ARGS)

recon-show: ## discrepancies of a day and their status: make recon-show DATE=...
	$(VENV)/bin/tradeops --config $(RECON_CONFIG) recon show --date $(RECON_DATE)

test-recon: up-core ## the calendar, recon and autoheal tests (real PostgreSQL, Kafka, broker server)
	$(VENV)/bin/pytest tests/test_calendar.py tests/test_recon_units.py tests/test_recon_broker.py \
	  tests/test_recon.py tests/test_autoheal.py --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS)

bench-recon: up-core ## recon compare+write vs floor and datacompy (2,000 symbols); fetch at 3 req/s
	$(PY) bench/bench_recon_compare.py
	$(PY) bench/bench_recon_fetch.py
