#!/usr/bin/env bash
# Debian packages of the local stack. Idempotent: `apt-get update` and `apt-get install`
# run only when a package is missing. Installing Debian's prometheus packages must not start
# their system services (we run our own instances on our own ports): a temporary
# policy-rc.d that answers 101 ("action forbidden") is in place during the install, and any
# system instance found running afterwards is stopped.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
. "$REPO/scripts/lib/common.sh"

PKGS=(
  postgresql                 # server 15 (+ client): our own cluster in .state/pg
  prometheus                 # prometheus + promtool
  prometheus-pushgateway
  default-jre-headless       # Kafka broker (Java 17)
  maven                      # fetches the broker jars from Maven Central
  python3-venv               # fallback interpreter for .venv when python3.11 is not on PATH
  curl iproute2 procps util-linux   # wait_http, ss, pgrep, setsid/setpriv
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
# the machine image may bring java/mvn outside Debian's packages: accept those
if [[ " ${missing[*]} " == *" default-jre-headless "* ]] && command -v java >/dev/null \
    && java -version 2>&1 | grep -Eq 'version "(1[7-9]|2[0-9])'; then
  missing=("${missing[@]/default-jre-headless}")
fi
if [[ " ${missing[*]} " == *" maven "* ]] && command -v mvn >/dev/null; then
  missing=("${missing[@]/maven}")
fi
read -r -a missing <<<"${missing[*]}"   # drop the blanks left above

if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "apt: missing packages ${missing[*]} and not root: install them"
  say "apt: installing ${missing[*]}"
  policy=/usr/sbin/policy-rc.d
  had_policy=0
  if [[ -e $policy ]]; then had_policy=1; cp -p $policy "$STATE/policy-rc.d.saved"; fi
  printf '#!/bin/sh\n# tradeops install: start no services during apt-get install\nexit 101\n' >$policy
  chmod 755 $policy
  restore_policy() {
    if ((had_policy)); then mv -f "$STATE/policy-rc.d.saved" $policy; else rm -f $policy; fi
  }
  trap restore_policy EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if ! apt-get install "${apt_opts[@]}" --no-install-recommends "${missing[@]}" >>"$LOG_DIR/apt.log" 2>&1; then
    say "apt: install failed with the current package lists: apt-get update"
    apt-get update -q >>"$LOG_DIR/apt.log" 2>&1 || { tail -n 20 "$LOG_DIR/apt.log" >&2; die "apt-get update failed"; }
    apt-get install "${apt_opts[@]}" --no-install-recommends "${missing[@]}" >>"$LOG_DIR/apt.log" 2>&1 \
      || { tail -n 20 "$LOG_DIR/apt.log" >&2; die "apt-get install ${missing[*]} failed (log $LOG_DIR/apt.log)"; }
  fi
fi

# No system prometheus / pushgateway / postgresql service may run: ours use their own ports,
# but a system prometheus on 9090 would scrape and confuse. Stop them by their own init
# scripts (never by name-matching kill), and only if they run.
for svc in prometheus prometheus-pushgateway prometheus-node-exporter; do
  if [[ -x /etc/init.d/$svc ]] && /etc/init.d/$svc status >/dev/null 2>&1; then
    say "apt: stopping system service $svc (the stack runs its own instance)"
    /etc/init.d/$svc stop >/dev/null 2>&1 || true
  fi
done
for port in 9090 9091; do
  pid="$(port_owner $port)"
  if [[ -n "$pid" ]] && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == /usr/bin/prometheus* ]]; then
    say "apt: stopping system $(readlink "/proc/$pid/exe") on :$port (pid $pid)"
    kill "$pid" 2>/dev/null || true
  fi
done
exit 0
