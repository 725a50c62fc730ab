#!/usr/bin/env bash
# Alertmanager of the dev stack on 127.0.0.1:19094 (Prometheus sends to it, see
# infra/prometheus/prometheus.yml): infra/alertmanager/alertmanager.yml rendered into
# .state/alertmanager/ with the webhook URL files in .state/secrets/alertmanager/. Those
# files are created pointing at 127.0.0.1:19095, where nothing listens (the notifications
# fail and are logged); put real Slack/Teams webhook URLs in them to receive the alerts.
# Binary built by scripts/install.d/60-monitoring.sh. No clustering (single instance).
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
bin="$STATE/bin/alertmanager"
[[ -x "$bin" ]] || die "alertmanager: $bin missing: run 'scripts/stack.sh install' (scripts/install.d/60-monitoring.sh)"
sec="$SECRETS_DIR/alertmanager"
mkdir -p "$sec" "$STATE/alertmanager/data"
chmod 700 "$sec"
for f in slack_platform slack_trading teams; do
  [[ -s "$sec/${f}_webhook_url" ]] || (umask 077; echo "http://127.0.0.1:19095/$f" >"$sec/${f}_webhook_url")
done
cfg="$STATE/alertmanager/alertmanager.yml"
old="$(cat "$cfg" 2>/dev/null || true)"
"$PY" "$REPO/infra/alertmanager/render.py" "$cfg" --secrets "$sec"
"$STATE/bin/amtool" check-config "$cfg" >/dev/null || die "alertmanager: $cfg is invalid (amtool check-config)"
# already running with an older config: reload it (make up after editing alertmanager.yml)
if is_running alertmanager && [[ "$old" != "$(cat "$cfg")" ]]; then
  curl -fsS -X POST http://127.0.0.1:19094/-/reload >/dev/null || die "alertmanager: reload of $cfg failed (log $(log_file alertmanager))"
  say "alertmanager: config changed, reloaded"
fi
start_bg alertmanager "$bin" --config.file="$cfg" --storage.path="$STATE/alertmanager/data" \
  --web.listen-address=127.0.0.1:19094 --cluster.listen-address= --log.level=info
wait_http http://127.0.0.1:19094/-/ready 30 alertmanager
