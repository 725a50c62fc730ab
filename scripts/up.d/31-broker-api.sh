#!/usr/bin/env bash
# The Kite-compatible broker server over the simulator's broker-side bars
# (127.0.0.1:9817, [sim].broker_api_listen; auth from .state/secrets/kite_*).
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
start_bg broker-api "$TRADEOPS" --config "$DEV_CONFIG" sim broker-api
wait_http http://127.0.0.1:9817/_stats 30 broker-api
