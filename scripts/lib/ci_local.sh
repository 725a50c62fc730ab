#!/usr/bin/env bash
# `make ci-local`: run .ci/run on a fresh clone of the committed HEAD, as CI does, while the
# shared dev stack keeps running. The clone's own stack would need the same ports, so .ci/run
# runs in a private network namespace (its own loopback: 127.0.0.1:19092 etc. are free there).
# The install steps that download (pip, Maven) run first, outside the namespace; inside,
# they find everything in place. Usage: scripts/lib/ci_local.sh [CLONE_DIR]
# Limits: inside the namespace no package registry is reachable, so a test that downloads
# (the .deb build's pip) fails here although it passes in CI.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${1:-/var/tmp/tradeops-ci-local}"
[[ $(id -u) -eq 0 ]] || { echo "ci-local: needs root (unshare -n)" >&2; exit 1; }
if [[ -L "$dir/.state/pg" ]]; then rm -rf "$(readlink -f "$dir/.state/pg")"; fi
rm -rf "$dir"
git clone -q "$REPO" "$dir"
cd "$dir"
echo "== ci-local: $(git log -1 --format='%h %s') in $dir"
start=$SECONDS
bash scripts/stack.sh install
echo "== ci-local: install done in $((SECONDS - start))s; .ci/run in a private network namespace"
set +e
unshare -n bash -c 'ip link set lo up && CI=true exec bash .ci/run' </dev/null
rc=$?
echo "== ci-local: .ci/run exit $rc, $((SECONDS - start))s in all"
exit $rc
