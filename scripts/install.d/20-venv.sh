#!/usr/bin/env bash
# The project's virtualenv .venv: python3.11 from PATH, editable install with the dev extras,
# constrained to the exact pins of requirements.lock (runtime) and requirements-dev.lock
# (tests, lint, bench). Re-runs pip only when setup.cfg, pyproject.toml or a lock file
# changed since the last successful install (stamp file). `make lock` regenerates the locks.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
. "$REPO/scripts/lib/common.sh"

# the first interpreter that runs, is >= 3.11 and has venv: $PYTHON, python3.11 on PATH
# (pyenv's shim here), python3, then Debian's own (python3-venv is in 10-apt.sh)
PY_FOUND=""
for cand in "${PYTHON:-}" "$(command -v python3.11 || true)" "$(command -v python3 || true)" \
    /usr/bin/python3.11 /usr/bin/python3; do
  [[ -n "$cand" && -x "$cand" ]] || continue
  if "$cand" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY_FOUND="$cand"; break
  fi
done
[[ -n "$PY_FOUND" ]] || die "venv: no Python >= 3.11 with the venv module (PATH: $PATH)"
PYTHON="$PY_FOUND"

if [[ ! -x "$VENV/bin/python" ]]; then
  say "venv: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.tradeops-install-stamp"
want="$(cat "$REPO/setup.cfg" "$REPO/pyproject.toml" "$REPO/requirements.lock" "$REPO/requirements-dev.lock" | sha256sum | cut -c1-64)"
if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]] && [[ -x "$VENV/bin/tradeops" ]]; then
  exit 0
fi
say "venv: pip install -c requirements.lock -c requirements-dev.lock -e .[dev]"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  -c "$REPO/requirements.lock" -c "$REPO/requirements-dev.lock" -e "$REPO[dev]" >>"$LOG_DIR/pip.log" 2>&1 \
  || { tail -n 20 "$LOG_DIR/pip.log" >&2; die "venv: pip install failed (log $LOG_DIR/pip.log)"; }
echo "$want" >"$stamp"
