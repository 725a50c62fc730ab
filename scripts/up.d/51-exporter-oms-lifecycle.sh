#!/usr/bin/env bash
# oms-lifecycle exporter over the dev stack ([oms_lifecycle] in $DEV_CONFIG): order
# transitions, stuck orders and latencies from oms.order_events on
# http://127.0.0.1:9812/metrics (Prometheus job oms-lifecycle); stuck orders on /orders/stuck.
# It rebuilds today's book from the topic before it reports ready, so allow for the replay.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
start_bg exporter-oms-lifecycle "$TRADEOPS" --config "$DEV_CONFIG" exporter oms-lifecycle
wait_http http://127.0.0.1:9812/healthz 60 exporter-oms-lifecycle
