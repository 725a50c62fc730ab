#!/usr/bin/env bash
# gateway-oms exporter over the dev stack ([gateway_oms] in $DEV_CONFIG): gateway events,
# heartbeats and consumer-group lag on http://127.0.0.1:9811/metrics (Prometheus job gateway-oms).
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
start_bg exporter-gateway-oms "$TRADEOPS" --config "$DEV_CONFIG" exporter gateway-oms
wait_http http://127.0.0.1:9811/healthz 30 exporter-gateway-oms
