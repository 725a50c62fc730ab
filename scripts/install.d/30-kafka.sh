#!/usr/bin/env bash
# Kafka broker jars (kafka_2.13 + slf4j/log4j2 binding) from Maven Central into
# .state/kafka/lib, via `mvn dependency:copy-dependencies` on scripts/kafka/pom.xml, and the
# Prometheus JMX exporter agent into .state/kafka/lib/agent (`dependency:copy@jmx-agent`).
# Re-runs only when the pom changed (stamp file); an interrupted copy never leaves a half lib.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
. "$REPO/scripts/lib/common.sh"

lib="$STATE/kafka/lib"
pom="$REPO/scripts/kafka/pom.xml"
want="$(sha256sum "$pom" | cut -c1-64)"
if [[ -f "$lib/.stamp" ]] && [[ "$(cat "$lib/.stamp")" == "$want" ]]; then
  exit 0
fi
command -v mvn >/dev/null || die "kafka: mvn not found (scripts/install.d/10-apt.sh installs maven)"
tmp="$STATE/kafka/lib.new"
rm -rf "$tmp"; mkdir -p "$tmp"
say "kafka: fetching broker jars from Maven Central"
mvn -B -q -f "$pom" -Dkafka.lib.dir="$tmp" dependency:copy-dependencies >>"$LOG_DIR/mvn.log" 2>&1 \
  || { tail -n 30 "$LOG_DIR/mvn.log" >&2; die "kafka: mvn dependency:copy-dependencies failed (log $LOG_DIR/mvn.log)"; }
# the Prometheus JMX exporter agent into lib/agent/ (not on the broker's -cp lib/*)
mvn -B -q -f "$pom" -Dkafka.lib.dir="$tmp" dependency:copy@jmx-agent >>"$LOG_DIR/mvn.log" 2>&1 \
  || { tail -n 30 "$LOG_DIR/mvn.log" >&2; die "kafka: mvn dependency:copy@jmx-agent failed (log $LOG_DIR/mvn.log)"; }
[[ -s "$tmp/agent/jmx_prometheus_javaagent.jar" ]] || die "kafka: no JMX exporter agent jar after mvn (log $LOG_DIR/mvn.log)"
ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka: no kafka_2.13 jar after mvn (log $LOG_DIR/mvn.log)"
echo "$want" >"$tmp/.stamp"
# swap in; a running broker keeps its open jars (unlinked files stay readable)
rm -rf "$lib.old"
[[ -d "$lib" ]] && mv "$lib" "$lib.old"
mv "$tmp" "$lib"
rm -rf "$lib.old"
