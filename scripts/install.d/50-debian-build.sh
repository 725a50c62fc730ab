#!/usr/bin/env bash
# What `make deb` and the systemd tests need: debhelper (+ the sysusers sequence, part of
# debhelper 13.11), lintian, python3-venv (the package's venv uses Debian's python3),
# util-linux (unshare, nsenter), libcap2-bin (capsh) and systemd itself (booted as PID 1
# of a private namespace by tests/systemd_ns.py). Idempotent: apt runs only when a package
# is missing. Nothing here touches the host's systemd: the package is only ever installed
# inside the throwaway container.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
. "$REPO/scripts/lib/common.sh"

PKGS=(debhelper lintian python3-venv make dpkg-dev util-linux libcap2-bin systemd)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
((${#missing[@]})) || exit 0
[[ $(id -u) -eq 0 ]] || die "debian-build: missing ${missing[*]} and not root: install them"
say "debian-build: apt installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
if ! apt-get install "${apt_opts[@]}" "${missing[@]}" >>"$LOG_DIR/apt.log" 2>&1; then
  apt-get update -q >>"$LOG_DIR/apt.log" 2>&1 || { tail -n 20 "$LOG_DIR/apt.log" >&2; die "apt-get update failed"; }
  apt-get install "${apt_opts[@]}" "${missing[@]}" >>"$LOG_DIR/apt.log" 2>&1 \
    || { tail -n 20 "$LOG_DIR/apt.log" >&2; die "debian-build: apt-get install ${missing[*]} failed (log $LOG_DIR/apt.log)"; }
fi
