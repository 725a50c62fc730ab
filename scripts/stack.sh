#!/usr/bin/env bash
# The local dev/test stack of tradeops: Kafka (KRaft, jars from Maven Central), the project's
# own PostgreSQL cluster, Prometheus and Pushgateway, all on 127.0.0.1, all state in .state/.
#
#   scripts/stack.sh install              run scripts/install.d/[0-9][0-9]-*.sh in order
#   scripts/stack.sh up [--core]          start what is not running, wait until ready, then
#                                         (without --core) run scripts/up.d/[0-9][0-9]-*.sh
#   scripts/stack.sh down                 stop everything started (every .state/run/*.pid)
#   scripts/stack.sh status               one line per service: running/stopped
#   scripts/stack.sh start|stop|restart SERVICE   kafka, postgres, prometheus, pushgateway,
#                                         or NAME of an up.d service (scripts/up.d/NN-NAME.sh)
#
# Ports: Kafka 19092 (controller 19093, JMX exporter metrics 19308), PostgreSQL 15432,
# Prometheus 19090, Pushgateway 19091.
# How it is assembled and what was measured: docs/stack.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/common.sh
. "$REPO/scripts/lib/common.sh"

KAFKA_HOME="$STATE/kafka"
KAFKA_LIB="$KAFKA_HOME/lib"
KAFKA_BOOTSTRAP="127.0.0.1:19092"
KAFKA_TIMEOUT="${KAFKA_TIMEOUT:-90}"
# broker/topic metrics: the Prometheus JMX exporter agent inside the broker's JVM (in place of
# kafka_exporter, which the Go module proxy refuses here); rules: scripts/kafka/jmx-exporter.yml
KAFKA_JMX_PORT=19308
KAFKA_JMX_AGENT="$KAFKA_LIB/agent/jmx_prometheus_javaagent.jar"
PG_DATA="$STATE/pg"
PG_PORT=15432
PG_TIMEOUT="${PG_TIMEOUT:-60}"
PROM_PORT=19090
PUSH_PORT=19091
CORE_SERVICES=(kafka postgres prometheus pushgateway)

# ---------------------------------------------------------------- install

cmd_install() {
  local s
  for s in "$REPO"/scripts/install.d/[0-9][0-9]-*.sh; do
    [[ -e "$s" ]] || continue
    say "install: $(basename "$s")"
    bash "$s" || die "install step $(basename "$s") failed"
  done
}

need_installed() {
  [[ -x "$PY" ]] || die "no $VENV: run 'scripts/stack.sh install' (or make up)"
}

# ---------------------------------------------------------------- kafka

kafka_java() {
  # shellcheck disable=SC2206
  local heap=(${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m})
  JAVA_CMD=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$KAFKA_HOME/config/log4j2.properties"
    -Dkafka.logs.dir="$LOG_DIR" -cp "$KAFKA_LIB/*")
}

kafka_render_config() {
  mkdir -p "$KAFKA_HOME/config" "$KAFKA_HOME/data"
  sed "s#@DATA@#$KAFKA_HOME/data#" "$REPO/scripts/kafka/server.properties.in" \
    >"$KAFKA_HOME/config/server.properties"
  sed "s#@LOGDIR@#$LOG_DIR#g" "$REPO/scripts/kafka/log4j2.properties.in" \
    >"$KAFKA_HOME/config/log4j2.properties"
}

kafka_format() {
  [[ -s "$KAFKA_HOME/data/meta.properties" ]] && return 0
  local cid
  if [[ ! -s "$KAFKA_HOME/cluster_id" ]]; then
    # a 22-char url-safe base64 uuid; Kafka rejects ids starting with '-'
    cid="$("$PY" -c 'import base64,uuid
while True:
    c = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not c.startswith("-"):
        print(c); break')"
    echo "$cid" >"$KAFKA_HOME/cluster_id"
  fi
  cid="$(cat "$KAFKA_HOME/cluster_id")"
  say "kafka: formatting storage (cluster id $cid)"
  kafka_java
  "${JAVA_CMD[@]/-Xms256m/-Xms64m}" kafka.tools.StorageTool format -t "$cid" \
    -c "$KAFKA_HOME/config/server.properties" --ignore-formatted >>"$(log_file kafka)" 2>&1 \
    || { log_tail kafka; die "kafka: storage format failed"; }
}

start_kafka() {
  if is_running kafka; then
    say "kafka already running (pid $(pid_of kafka))"
  else
    [[ -n "$(ls "$KAFKA_LIB"/kafka_2.13-*.jar 2>/dev/null)" ]] \
      || die "kafka: no broker jars in $KAFKA_LIB: run 'scripts/stack.sh install'"
    [[ -s "$KAFKA_JMX_AGENT" ]] \
      || die "kafka: no JMX exporter agent at $KAFKA_JMX_AGENT: run 'scripts/stack.sh install'"
    if adopt kafka 19092 "$KAFKA_HOME/config/server.properties"; then
      :
    elif port_open 127.0.0.1 19092 || port_open 127.0.0.1 19093; then
      die "kafka: port 19092/19093 is taken by pid $(port_owner 19092)$(port_owner 19093), not by this stack"
    elif port_open 127.0.0.1 "$KAFKA_JMX_PORT"; then
      # the agent binds in premain: a taken port would abort the JVM with a Java stack trace
      die "kafka: JMX exporter port $KAFKA_JMX_PORT is taken by pid $(port_owner "$KAFKA_JMX_PORT"), not by this stack"
    else
      kafka_render_config
      kafka_format
      kafka_java
      # the agent only on the broker (not the storage tool): 127.0.0.1 only
      start_bg kafka "${JAVA_CMD[@]}" \
        "-javaagent:$KAFKA_JMX_AGENT=127.0.0.1:$KAFKA_JMX_PORT:$REPO/scripts/kafka/jmx-exporter.yml" \
        kafka.Kafka "$KAFKA_HOME/config/server.properties"
    fi
  fi
  local t0=$SECONDS
  "$PY" "$REPO/scripts/kafka/wait_ready.py" "$KAFKA_BOOTSTRAP" "$KAFKA_TIMEOUT" "$(pid_of kafka)" \
    || { log_tail kafka 40; tail -n 20 "$LOG_DIR/kafka-server.log" >&2 2>/dev/null || true
         die "kafka: not ready within ${KAFKA_TIMEOUT}s (logs: $LOG_DIR/kafka.log, kafka-server.log)"; }
  say "kafka ready on $KAFKA_BOOTSTRAP ($((SECONDS - t0))s)"
}

stop_kafka() {
  # SIGTERM = controlled shutdown; a single node needs a few seconds
  is_running kafka || { stop_bg kafka; return 0; }   # not ours to wait for: only clear the pid file
  stop_bg kafka 45 TERM
  wait_port_free 127.0.0.1 19092 20
  wait_port_free 127.0.0.1 19093 20
}

ensure_topics() {
  "$TRADEOPS" --config "$DEV_CONFIG" kafka ensure-topics >>"$(log_file stack)" 2>&1 \
    || { tail -n 5 "$(log_file stack)" >&2; die "kafka: tradeops kafka ensure-topics failed"; }
  say "kafka: topics ensured"
}

# ---------------------------------------------------------------- postgres

pg_bin() {
  local d
  for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
    [[ -x "$d/postgres" ]] && { echo "$d"; return 0; }
  done
  die "postgres: no server binaries under /usr/lib/postgresql: run 'scripts/stack.sh install'"
}

as_postgres() { (cd / && setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"); }

# the data dir as the server sees it (.state/pg may be a link, see pg_init)
pg_data_real() { readlink -f "$PG_DATA"; }

pg_init() {
  [[ -s "$PG_DATA/PG_VERSION" ]] && return 0
  local bin; bin="$(pg_bin)"
  random_secret "$SECRETS_DIR/pg_password"
  # The server runs as the postgres user: every parent of its data dir must be traversable
  # by it. When the checkout lives below a private dir (e.g. /root/...), keep the data in
  # /var/lib/postgresql/tradeops-<hash of the checkout path> and link .state/pg to it.
  local d="$STATE" real="$PG_DATA"
  while [[ "$d" != "/" ]]; do
    if ! as_postgres test -x "$d"; then
      real="/var/lib/postgresql/tradeops-$(printf '%s' "$REPO" | sha256sum | cut -c1-12)"
      say "postgres: $d is not traversable by the postgres user: data in $real (linked from $PG_DATA)"
      break
    fi
    d="$(dirname "$d")"
  done
  rm -rf "$real"
  mkdir -p "$real"
  [[ "$real" != "$PG_DATA" ]] && ln -sfn "$real" "$PG_DATA"
  chown postgres:postgres "$real"
  chmod 700 "$real"
  # initdb reads the superuser password from a file the postgres user can read: a private copy
  local pw; pw="$(mktemp)"; chown postgres "$pw"; chmod 600 "$pw"
  cat "$SECRETS_DIR/pg_password" >"$pw"
  say "postgres: initdb $PG_DATA"
  as_postgres "$bin/initdb" -D "$real" -U tradeops --pwfile="$pw" -A scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >>"$(log_file postgres)" 2>&1 \
    || { rm -f "$pw"; log_tail postgres; rm -rf "$real"; die "postgres: initdb failed"; }
  rm -f "$pw"
}

pg_ready() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -U tradeops; }

start_postgres() {
  pg_init
  if ! is_running postgres; then
    # adopt a postmaster of our data dir whose pid file in .state/run was lost
    local ppid=""
    [[ -s "$PG_DATA/postmaster.pid" ]] && ppid="$(head -1 "$PG_DATA/postmaster.pid")"
    if [[ -n "$ppid" ]] && kill -0 "$ppid" 2>/dev/null \
        && [[ "$(readlink "/proc/$ppid/exe" 2>/dev/null)" == */postgres ]]; then
      echo "$ppid" >"$(pid_file postgres)"
      say "postgres: adopted running postmaster pid $ppid"
    else
      port_open 127.0.0.1 "$PG_PORT" \
        && die "postgres: port $PG_PORT is taken by pid $(port_owner "$PG_PORT"), not by this stack"
      # fsync=off: a dev/test cluster (an OS crash may lose it; a killed server does not,
      # synchronous_commit stays on). No unix socket: TCP on 127.0.0.1 only.
      local data; data="$(pg_data_real)"
      start_bg postgres setpriv --reuid=postgres --regid=postgres --init-groups -- \
        "$(pg_bin)/postgres" -D "$data" \
        -c port="$PG_PORT" -c listen_addresses=127.0.0.1 -c unix_socket_directories= \
        -c max_connections=300 -c fsync=off -c full_page_writes=off \
        -c shared_buffers=128MB -c max_wal_size=256MB -c min_wal_size=64MB \
        -c log_min_messages=warning -c log_line_prefix='%m [%p] %d '
    fi
  else
    say "postgres already running (pid $(pid_of postgres))"
  fi
  local t0=$SECONDS deadline=$((SECONDS + PG_TIMEOUT))
  until pg_ready; do
    if ! is_running postgres; then log_tail postgres; die "postgres: server exited during start"; fi
    if ((SECONDS >= deadline)); then
      log_tail postgres; die "postgres: not accepting connections on 127.0.0.1:$PG_PORT after ${PG_TIMEOUT}s"
    fi
    sleep 0.2
  done
  pg_setup
  say "postgres ready on 127.0.0.1:$PG_PORT ($((SECONDS - t0))s)"
}

# database `tradeops` and its migrations (both idempotent)
pg_setup() {
  "$PY" - "$PG_PORT" "$SECRETS_DIR/pg_password" <<'PY' || die "postgres: creating database tradeops failed"
import sys
import psycopg
port, pwfile = sys.argv[1], sys.argv[2]
pw = open(pwfile).read().strip()
with psycopg.connect(host="127.0.0.1", port=port, user="tradeops", password=pw,
                     dbname="postgres", autocommit=True) as c:
    if not c.execute("SELECT 1 FROM pg_database WHERE datname = 'tradeops'").fetchone():
        c.execute("CREATE DATABASE tradeops")
        print("postgres: created database tradeops", file=sys.stderr)
PY
  "$TRADEOPS" --config "$DEV_CONFIG" db migrate >>"$(log_file stack)" 2>&1 \
    || { tail -n 5 "$(log_file stack)" >&2; die "postgres: tradeops db migrate failed"; }
}

stop_postgres() {
  is_running postgres || { stop_bg postgres; return 0; }
  # SIGINT = fast shutdown (SIGTERM would wait for every client to disconnect)
  stop_bg postgres 30 INT
  wait_port_free 127.0.0.1 "$PG_PORT" 20
}

# ---------------------------------------------------------------- prometheus, pushgateway

start_prometheus() {
  local bin=/usr/bin/prometheus
  [[ -x $bin ]] || die "prometheus: $bin missing: run 'scripts/stack.sh install'"
  if ! is_running prometheus && ! adopt prometheus $PROM_PORT "$STATE/prometheus"; then
    port_open 127.0.0.1 $PROM_PORT && die "prometheus: port $PROM_PORT is taken by pid $(port_owner $PROM_PORT)"
    "$(dirname $bin)/promtool" check config "$REPO/infra/prometheus/prometheus.yml" >/dev/null \
      || die "prometheus: infra/prometheus/prometheus.yml is invalid (promtool check config)"
    mkdir -p "$STATE/prometheus"
    start_bg prometheus "$bin" --config.file="$REPO/infra/prometheus/prometheus.yml" \
      --storage.tsdb.path="$STATE/prometheus" --storage.tsdb.retention.time=7d \
      --web.listen-address=127.0.0.1:$PROM_PORT --web.enable-lifecycle
  elif "$(dirname $bin)/promtool" check config "$REPO/infra/prometheus/prometheus.yml" >/dev/null 2>&1; then
    # already running: apply the current config and rules (a no-op when unchanged)
    curl -fsS -o /dev/null --max-time 10 -X POST "http://127.0.0.1:$PROM_PORT/-/reload" \
      || say "prometheus: reload failed (see $(log_file prometheus))"
  else
    say "prometheus: infra/prometheus/prometheus.yml is invalid (promtool check config): kept the running config"
  fi
  wait_http "http://127.0.0.1:$PROM_PORT/-/ready" 60 prometheus
  say "prometheus ready on http://127.0.0.1:$PROM_PORT"
}

start_pushgateway() {
  local bin=/usr/bin/prometheus-pushgateway
  [[ -x $bin ]] || die "pushgateway: $bin missing: run 'scripts/stack.sh install'"
  if ! is_running pushgateway && ! adopt pushgateway $PUSH_PORT "$STATE/pushgateway"; then
    port_open 127.0.0.1 $PUSH_PORT && die "pushgateway: port $PUSH_PORT is taken by pid $(port_owner $PUSH_PORT)"
    mkdir -p "$STATE/pushgateway"
    start_bg pushgateway "$bin" --web.listen-address=127.0.0.1:$PUSH_PORT \
      --persistence.file="$STATE/pushgateway/metrics.store" --persistence.interval=30s \
      --web.enable-admin-api
  fi
  wait_http "http://127.0.0.1:$PUSH_PORT/-/ready" 30 pushgateway
  say "pushgateway ready on http://127.0.0.1:$PUSH_PORT"
}

stop_prometheus() {
  is_running prometheus || { stop_bg prometheus; return 0; }
  stop_bg prometheus 30 TERM; wait_port_free 127.0.0.1 $PROM_PORT 10
}
stop_pushgateway() {
  is_running pushgateway || { stop_bg pushgateway; return 0; }
  stop_bg pushgateway 15 TERM; wait_port_free 127.0.0.1 $PUSH_PORT 10
}

# ---------------------------------------------------------------- commands

start_service() {
  case "$1" in
    kafka) start_kafka; ensure_topics ;;
    postgres) start_postgres ;;
    prometheus) start_prometheus ;;
    pushgateway) start_pushgateway ;;
    *) local s
       for s in "$REPO"/scripts/up.d/[0-9][0-9]-"$1".sh; do
         [[ -e "$s" ]] && { bash "$s" || die "up.d/$(basename "$s") failed (logs in $LOG_DIR)"; return 0; }
       done
       die "unknown service '$1' (core: ${CORE_SERVICES[*]}; others: a scripts/up.d/NN-$1.sh)" ;;
  esac
}

stop_service() {
  case "$1" in
    kafka) stop_kafka ;;
    postgres) stop_postgres ;;
    prometheus) stop_prometheus ;;
    pushgateway) stop_pushgateway ;;
    *) [[ -e "$(pid_file "$1")" ]] || die "unknown service '$1' (no $(pid_file "$1"))"
       stop_bg "$1" 20 TERM ;;
  esac
}

secrets() {
  random_secret "$SECRETS_DIR/pg_password"
  random_secret "$SECRETS_DIR/kite_api_key"
  random_secret "$SECRETS_DIR/kite_access_token"
}

cmd_up() {
  local core_only=0
  [[ "${1:-}" == "--core" ]] && core_only=1
  need_installed
  secrets
  local t0=$SECONDS
  # Kafka's JVM start and PostgreSQL's start overlap: start both, then wait for both
  start_postgres &
  local pg_job=$!
  start_kafka
  ensure_topics
  wait "$pg_job" || die "postgres failed to start (see above)"
  start_pushgateway
  start_prometheus
  if ((core_only)); then
    say "core stack up in $((SECONDS - t0))s"
    return 0
  fi
  local s
  for s in "$REPO"/scripts/up.d/[0-9][0-9]-*.sh; do
    [[ -e "$s" ]] || continue
    say "up.d: $(basename "$s")"
    bash "$s" || die "up.d/$(basename "$s") failed (logs in $LOG_DIR)"
  done
  say "stack up in $((SECONDS - t0))s"
  cat <<EOF

tradeops dev stack is up (state in $STATE, logs in $LOG_DIR):
  Prometheus   http://127.0.0.1:$PROM_PORT   (targets: /targets)
  Pushgateway  http://127.0.0.1:$PUSH_PORT
  Kafka        $KAFKA_BOOTSTRAP  (broker/topic metrics http://127.0.0.1:$KAFKA_JMX_PORT/metrics)
  PostgreSQL   postgresql://tradeops@127.0.0.1:$PG_PORT/tradeops (password: .state/secrets/pg_password)
  Metrics      gateway-oms :9811  oms-lifecycle :9812  risk-drawdown :9813  pairs :9814
               supervisor :9815  simulator :9816  (http://127.0.0.1:PORT/metrics, when started)
  Next         make status | make doctor | make test | make down
EOF
}

cmd_down() {
  local f name
  # up.d services first (they use the core), newest first; then the core in reverse order
  for f in $(ls -t "$RUN_DIR"/*.pid 2>/dev/null); do
    name="$(basename "$f" .pid)"
    case " ${CORE_SERVICES[*]} " in *" $name "*) continue ;; esac
    stop_bg "$name" 20 TERM
  done
  stop_prometheus
  stop_pushgateway
  stop_kafka &
  local kjob=$!
  stop_postgres
  wait "$kjob"
  local port owner
  for port in 19092 19093 "$PG_PORT" "$PROM_PORT" "$PUSH_PORT"; do
    owner="$(port_owner "$port")"
    [[ -n "$owner" ]] && say "warning: 127.0.0.1:$port is still held by pid $owner ($(tr '\0' ' ' <"/proc/$owner/cmdline" 2>/dev/null | cut -c1-80)), not started by this stack"
  done
  say "stack down"
}

cmd_status() {
  local name f rc=0 seen=" "
  for name in "${CORE_SERVICES[@]}"; do
    seen+="$name "
    if is_running "$name"; then printf '%-24s running (pid %s)\n' "$name" "$(pid_of "$name")"
    else printf '%-24s stopped\n' "$name"; rc=3; fi
  done
  for f in "$RUN_DIR"/*.pid; do
    [[ -e "$f" ]] || continue
    name="$(basename "$f" .pid)"
    [[ "$seen" == *" $name "* ]] && continue
    if is_running "$name"; then printf '%-24s running (pid %s)\n' "$name" "$(pid_of "$name")"
    else printf '%-24s stopped (stale pid file)\n' "$name"; rc=3; fi
  done
  return $rc
}

case "${1:-}" in
  up | down | start | stop | restart) stack_lock ;;
esac
case "${1:-}" in
  install) cmd_install ;;
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  start) [[ $# -eq 2 ]] || die "usage: $0 start SERVICE"; need_installed; secrets; start_service "$2" ;;
  stop) [[ $# -eq 2 ]] || die "usage: $0 stop SERVICE"; stop_service "$2" ;;
  restart) [[ $# -eq 2 ]] || die "usage: $0 restart SERVICE"
    need_installed; stop_service "$2"; start_service "$2" ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
