#!/usr/bin/env bash
# pairs exporter over the dev stack ($DEV_CONFIG) on http://127.0.0.1:9814/metrics
# (Prometheus job pairs). /healthz is 200 once its state is loaded and Kafka is reachable.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
start_bg exporter-pairs "$TRADEOPS" --config "$DEV_CONFIG" exporter pairs
wait_http http://127.0.0.1:9814/healthz 60 exporter-pairs
