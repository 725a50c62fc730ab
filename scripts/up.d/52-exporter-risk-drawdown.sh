#!/usr/bin/env bash
# risk-drawdown exporter over the dev stack ($DEV_CONFIG) on http://127.0.0.1:9813/metrics
# (Prometheus job risk-drawdown). /healthz is 200 once its state is loaded and Kafka is reachable.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
start_bg exporter-risk-drawdown "$TRADEOPS" --config "$DEV_CONFIG" exporter risk-drawdown
wait_http http://127.0.0.1:9813/healthz 60 exporter-risk-drawdown
