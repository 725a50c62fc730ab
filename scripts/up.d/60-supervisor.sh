#!/usr/bin/env bash
# The heartbeat supervisor over the dev stack's programs ([supervisor] in $DEV_CONFIG):
# /metrics, /status and /healthz on 127.0.0.1:9815; `tradeops supervise status` prints it.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
start_bg supervisor "$TRADEOPS" --config "$DEV_CONFIG" supervise
wait_http http://127.0.0.1:9815/healthz 30 supervisor
