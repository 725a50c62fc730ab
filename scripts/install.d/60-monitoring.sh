#!/usr/bin/env bash
# Monitoring mixin tools (docs/alerts.md): a current Alertmanager and amtool, built from the
# Go module proxy into .state/bin. Debian 12's alertmanager (0.25) has no Microsoft Teams
# receiver (msteamsv2_configs needs >= 0.28); Debian's prometheus/promtool come from
# 10-apt.sh. Rerun: instant (version stamp). About 3 minutes on a cold Go module cache.
#
# The module's web UI assets (ui/app/dist) are built by npm in its release process and are
# not in the Go module, so `go install ...@vX` cannot embed them: we build from the module
# source in .state/build with a one-page placeholder UI. The API (what Prometheus, amtool
# and the tests use) is complete.
#
# kafka_exporter (github.com/danielqsj/kafka_exporter) is not built: the Go module proxy
# answers 403 "not available" for every version of that module on this machine's network.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
. "$REPO/scripts/lib/common.sh"

AM_VERSION=v0.35.0
BIN="$STATE/bin"
stamp="$BIN/.alertmanager-version"
if [[ -x "$BIN/alertmanager" && -x "$BIN/amtool" && -f "$stamp" && "$(cat "$stamp")" == "$AM_VERSION" ]]; then
  exit 0
fi

GO="$(command -v go || true)"
[[ -n "$GO" ]] || { [[ -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go; }
[[ -n "$GO" ]] || die "monitoring: no Go toolchain (go) found: needed to build Alertmanager $AM_VERSION"

log="$LOG_DIR/alertmanager-build.log"
say "monitoring: building Alertmanager $AM_VERSION + amtool from the Go module proxy (log $log)"
dir="$(GOFLAGS=-mod=mod "$GO" mod download -json "github.com/prometheus/alertmanager@$AM_VERSION" 2>>"$log" \
  | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" \
  || die "monitoring: go mod download github.com/prometheus/alertmanager@$AM_VERSION failed (log $log)"
src="$STATE/build/alertmanager-$AM_VERSION"
rm -rf "$src"; mkdir -p "$STATE/build"
cp -r "$dir" "$src"; chmod -R u+w "$src"
for ui in elm mantine; do
  mkdir -p "$src/ui/app/dist/$ui"
  echo '<!doctype html><title>Alertmanager</title><p>Web UI not built here (tradeops builds the API only): use amtool or /api/v2.</p>' \
    >"$src/ui/app/dist/$ui/index.html"
done
mkdir -p "$BIN"
ldflags="-X github.com/prometheus/common/version.Version=${AM_VERSION#v} -X github.com/prometheus/common/version.Branch=module-proxy"
(cd "$src" && "$GO" build -trimpath -ldflags "$ldflags" -o "$BIN/alertmanager.new" ./cmd/alertmanager \
   && "$GO" build -trimpath -ldflags "$ldflags" -o "$BIN/amtool.new" ./cmd/amtool) >>"$log" 2>&1 \
  || { tail -n 20 "$log" >&2; die "monitoring: go build of Alertmanager $AM_VERSION failed (log $log)"; }
mv "$BIN/alertmanager.new" "$BIN/alertmanager"
mv "$BIN/amtool.new" "$BIN/amtool"
rm -rf "$src"
echo "$AM_VERSION" >"$stamp"
say "monitoring: $("$BIN/alertmanager" --version 2>&1 | head -1) in $BIN"
