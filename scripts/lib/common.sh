# shellcheck shell=bash
# Shared helpers for scripts/stack.sh, scripts/install.d/*.sh and scripts/up.d/*.sh.
# Source it:  . "$(dirname "$0")/../lib/common.sh"   (or from stack.sh: . "$REPO/scripts/lib/common.sh")
#
# Conventions (see scripts/up.d/README):
#   - every process we start runs in its own session (setsid): its pid is also its process
#     group id, so stop_bg can end it together with its children;
#   - pid file .state/run/NAME.pid, log .state/log/NAME.log;
#   - every wait has a bounded timeout and fails with a clear message plus the log tail.

REPO="${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
STATE="${STATE:-$REPO/.state}"
RUN_DIR="$STATE/run"
LOG_DIR="$STATE/log"
SECRETS_DIR="$STATE/secrets"
VENV="${VENV:-$REPO/.venv}"
PY="$VENV/bin/python"
TRADEOPS="$VENV/bin/tradeops"
DEV_CONFIG="${DEV_CONFIG:-$REPO/infra/dev/tradeops.toml}"
export REPO STATE RUN_DIR LOG_DIR SECRETS_DIR VENV PY TRADEOPS DEV_CONFIG

mkdir -p "$RUN_DIR" "$LOG_DIR"
chmod 755 "$STATE" "$RUN_DIR" "$LOG_DIR" 2>/dev/null || true

say()  { printf '%s\n' "[$(date -u +%H:%M:%S)] $*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }
log_file() { printf '%s/%s.log' "$LOG_DIR" "$1"; }

# pid_of NAME: the pid recorded for NAME, or nothing (always succeeds).
pid_of() {
  local f; f="$(pid_file "$1")"
  if [[ -s "$f" ]]; then tr -dc '0-9' <"$f"; fi
  return 0
}

# is_running NAME: the recorded pid is alive (and not a zombie).
is_running() {
  local pid state
  pid="$(pid_of "$1")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [[ "$state" != "Z" ]]
}

# log_tail NAME [LINES]: print the end of NAME's log to stderr.
log_tail() {
  local f; f="$(log_file "$1")"
  [[ -f "$f" ]] || return 0
  printf -- '--- last %s lines of %s ---\n' "${2:-30}" "$f" >&2
  tail -n "${2:-30}" "$f" >&2
}

# start_bg NAME CMD...: start CMD in the background in its own session, unless NAME is
# already running (then do nothing). stdout+stderr are appended to .state/log/NAME.log.
# Use `exec` semantics in CMD (no wrapper shells) when you can, so the pid is the server.
start_bg() {
  local name="$1"; shift
  if is_running "$name"; then
    say "$name already running (pid $(pid_of "$name"))"
    return 0
  fi
  local log; log="$(log_file "$name")"
  printf '\n===== %s start: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log"
  # 9>&-: never hand the stack lock (stack_lock) down to a long-lived service
  setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
  echo $! >"$(pid_file "$name")"
  say "$name started (pid $!), log $log"
}

# stop_bg NAME [TIMEOUT=30] [SIGNAL=TERM]: signal NAME's process group, wait for it to exit,
# SIGKILL the group after TIMEOUT seconds; remove the pid file. Harmless if not running.
stop_bg() {
  local name="$1" timeout="${2:-30}" sig="${3:-TERM}" pid i
  pid="$(pid_of "$name")"
  if [[ -z "$pid" ]] || ! is_running "$name"; then
    rm -f "$(pid_file "$name")"
    return 0
  fi
  kill -"$sig" -- "-$pid" 2>/dev/null || kill -"$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    is_running "$name" || break
    sleep 0.1
  done
  if is_running "$name"; then
    say "$name did not stop within ${timeout}s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  # leftovers of the group (children that ignored the signal)
  if pgrep -g "$pid" >/dev/null 2>&1; then
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$(pid_file "$name")"
  say "$name stopped"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_port HOST PORT TIMEOUT [NAME]: until HOST:PORT accepts TCP connections. With NAME,
# fail early when that process has exited.
wait_port() {
  local host="$1" port="$2" timeout="$3" name="${4:-}" deadline=$((SECONDS + $3))
  while ! port_open "$host" "$port"; do
    if [[ -n "$name" ]] && ! is_running "$name"; then
      log_tail "$name"; die "$name exited before $host:$port opened"
    fi
    if ((SECONDS >= deadline)); then
      [[ -n "$name" ]] && log_tail "$name"
      die "timed out after ${timeout}s waiting for $host:$port${name:+ ($name)}"
    fi
    sleep 0.2
  done
  [[ -z "$name" ]] || owned_by "$name" "$port"
}

# wait_port_free HOST PORT TIMEOUT: until nothing listens on HOST:PORT.
wait_port_free() {
  local host="$1" port="$2" timeout="$3" deadline=$((SECONDS + $3))
  while port_open "$host" "$port"; do
    ((SECONDS >= deadline)) && die "port $host:$port still in use after ${timeout}s"
    sleep 0.2
  done
}

# port_owner PORT: "pid/command" of whatever listens on PORT (best effort).
port_owner() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o "pid=[0-9]*" | head -1 | cut -d= -f2 || true; }

# adopt NAME PORT PATTERN: when NAME has no live pid file but the process listening on PORT
# has PATTERN in its command line (ours, e.g. its pid file was lost), record its pid.
adopt() {
  local name="$1" port="$2" pattern="$3" pid
  is_running "$name" && return 0
  pid="$(port_owner "$port")"
  [[ -n "$pid" ]] || return 1
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern"; then
    echo "$pid" >"$(pid_file "$name")"
    say "$name: adopted running pid $pid (listening on :$port)"
    return 0
  fi
  return 1
}

# stack_lock: serialise commands that start/stop services (several helpers, tests and
# make targets may call scripts/stack.sh at once). Held until the calling script exits.
stack_lock() {
  exec 9>"$RUN_DIR/stack.lock"
  flock -w "${1:-300}" 9 || die "another scripts/stack.sh held $RUN_DIR/stack.lock for ${1:-300}s"
}

# owned_by NAME PORT: the process listening on PORT is NAME's (its pid, or in its session:
# start_bg makes NAME's pid a session leader). Fails with a clear message otherwise, e.g.
# when another copy of the server already held the port and ours exited on "address in use".
owned_by() {
  local name="$1" port="$2" pid owner sid
  pid="$(pid_of "$name")"
  owner="$(port_owner "$port")"
  [[ -n "$owner" && -n "$pid" ]] || return 0   # unknown: ss could not tell, nothing to check
  [[ "$owner" == "$pid" ]] && return 0
  sid="$(ps -o sid= -p "$owner" 2>/dev/null | tr -d ' ')"
  [[ "$sid" == "$pid" ]] && return 0
  log_tail "$name" 10
  die "$name: port $port answers, but it is held by pid $owner ($(tr '\0' ' ' <"/proc/$owner/cmdline" 2>/dev/null | cut -c1-80)), not by $name (pid $pid)"
}

# wait_http URL TIMEOUT [NAME]: until URL answers 2xx.
wait_http() {
  local url="$1" timeout="$2" name="${3:-}" deadline=$((SECONDS + $2))
  while ! curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if [[ -n "$name" ]] && ! is_running "$name"; then
      log_tail "$name"; die "$name exited before $url answered"
    fi
    if ((SECONDS >= deadline)); then
      [[ -n "$name" ]] && log_tail "$name"
      die "timed out after ${timeout}s waiting for $url${name:+ ($name)}"
    fi
    sleep 0.3
  done
  if [[ -n "$name" ]]; then
    local hostport="${url#*://}"; hostport="${hostport%%/*}"
    owned_by "$name" "${hostport##*:}"
  fi
}

# random_secret FILE: create FILE (0600) with a random token unless it exists.
random_secret() {
  local f="$1"
  mkdir -p "$(dirname "$f")"; chmod 700 "$(dirname "$f")"
  if [[ ! -s "$f" ]]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$f")
  fi
  chmod 600 "$f"
}
