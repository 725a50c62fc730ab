#!/usr/bin/env bash
# Build the Debian package from the current tree: copy the tracked (and new, not ignored)
# files to a scratch folder, `dpkg-buildpackage -us -uc -b` there, move the .deb to
# OUT_DIR (default dist/deb) and run lintian (errors and warnings fail; debian/
# tradeops.lintian-overrides holds the justified overrides).
# Skips the build when OUT_DIR/.stamp matches the inputs' checksum (the tests call this
# once per session; a second call is instant). Prints the .deb path on its last line.
#   scripts/build-deb.sh [--lint-only] [--force] [OUT_DIR]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
lint_only=0 force=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --lint-only) lint_only=1; shift ;;
    --force) force=1; shift ;;
    *) break ;;
  esac
done
OUT="$(mkdir -p "${1:-dist/deb}" && cd "${1:-dist/deb}" && pwd)"
say() { printf '[build-deb %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'build-deb: %s\n' "$*" >&2; exit 1; }

for tool in dpkg-buildpackage dh lintian; do
  command -v "$tool" >/dev/null || die "$tool missing: run scripts/install.d/50-debian-build.sh (make install)"
done
version="$(dpkg-parsechangelog -l debian/changelog -S Version)"
deb="$OUT/tradeops_${version}_amd64.deb"

run_lintian() {
  say "lintian $deb"
  lintian --fail-on error,warning --tag-display-limit 0 "$deb" >&2 \
    || die "lintian found errors or warnings in $deb"
}

if ((lint_only)); then
  [[ -f $deb ]] || die "$deb not built yet: make deb"
  run_lintian; echo "$deb"; exit 0
fi

# only what goes into the package (tests, bench and other docs do not trigger a rebuild)
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- \
  src setup.cfg pyproject.toml README.md requirements.lock debian systemd supervisor \
  packaging docs/deploy.md infra/prometheus/prometheus.yml infra/prometheus/rules \
  infra/alertmanager/alertmanager.yml infra/alertmanager/render.py infra/alertmanager/templates \
  infra/grafana/provisioning infra/grafana/dashboards | sort)
sum="$( { printf '%s\n' "${files[@]}"; for f in "${files[@]}"; do [[ -f $f ]] && cat "$f"; done; } | sha256sum | cut -c1-64)"
if ((!force)) && [[ -f $deb && -f $OUT/.stamp && "$(cat "$OUT/.stamp")" == "$sum" ]]; then
  say "up to date: $deb"; echo "$deb"; exit 0
fi

work="$(mktemp -d /tmp/tradeops-deb.XXXXXX)"
trap 'rm -rf "$work"' EXIT
src="$work/tradeops-$version"
mkdir -p "$src"
for f in "${files[@]}"; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done \
  | tar -C "$REPO" --null -T - -cf - | tar -C "$src" -xf -
say "dpkg-buildpackage in $src (log $OUT/build.log)"
start=$SECONDS
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$OUT/build.log" 2>&1; then
  tail -n 30 "$OUT/build.log" >&2
  die "dpkg-buildpackage failed (log $OUT/build.log)"
fi
rm -f "$OUT"/tradeops_*.deb
mv "$work"/tradeops_"${version}"_amd64.deb "$OUT/"
say "built $deb in $((SECONDS - start))s ($(du -h "$deb" | cut -f1))"
run_lintian
echo "$sum" >"$OUT/.stamp"
echo "$deb"
