# Debian package (issue 7): `make deb` builds dist/deb/tradeops_<version>_amd64.deb with
# dpkg-buildpackage in a copy of the tracked tree (the work tree stays clean), then runs
# lintian on it (fails on errors and warnings; justified overrides in debian/).
# Build dependencies come from scripts/install.d/50-debian-build.sh (`make install`).
DEB_DIR ?= dist/deb

.PHONY: deb deb-lint test-systemd

deb: ## build the .deb into dist/deb/ (dpkg-buildpackage -us -uc -b) and lintian it
	@scripts/build-deb.sh "$(DEB_DIR)"

deb-lint: ## lintian on the .deb already in dist/deb/
	@scripts/build-deb.sh --lint-only "$(DEB_DIR)"

test-systemd: up-core ## the systemd unit tests and the end-to-end test in a throwaway systemd
	$(VENV)/bin/pytest tests/test_systemd_units.py tests/test_systemd_e2e.py --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS)
