#!/usr/bin/env bash
# The simulated trading stack in live mode (orders, gateway events, heartbeats, positions,
# bars to Kafka; in-session bars to bars_1m; consumer groups oms-core and gateway-zerodha).
# Upstream metrics and controls on 127.0.0.1:9816 ([sim].metrics_listen).
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
start_bg sim "$TRADEOPS" --config "$DEV_CONFIG" sim run --mode live
wait_http http://127.0.0.1:9816/healthz 60 sim
