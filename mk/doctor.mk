# Doctor (issue 6): `tradeops doctor --check` / the TUI against the dev config.
.PHONY: doctor doctor-json doctor-tui test-doctor bench-doctor

doctor: ## run every doctor check against the dev stack (exit 0 ok, 1 warn, 2 crit, 3 unknown)
	@$(VENV)/bin/tradeops --config infra/dev/tradeops.toml doctor --check

doctor-json: ## the doctor's checks as JSON (automation)
	@$(VENV)/bin/tradeops --config infra/dev/tradeops.toml doctor --check --json

doctor-tui: ## the doctor's Textual TUI over the dev stack (q quits)
	@$(VENV)/bin/tradeops --config infra/dev/tradeops.toml doctor

test-doctor: up-core ## the doctor's tests (unit, real stack, headless TUI with supervisord)
	$(VENV)/bin/pytest tests/test_doctor.py tests/test_doctor_integration.py tests/test_doctor_tui.py \
	  --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS)

bench-doctor: ## doctor --check wall time: healthy and Kafka down, vs `tradeops --version`
	$(PY) bench/bench_doctor.py
