#!/usr/bin/env python3
"""Grafana dashboards of tradeops, generated as JSON into infra/grafana/dashboards/.

    python infra/grafana/dashboards.py          # (re)write the JSON files (make dashboards)
    python infra/grafana/dashboards.py --check  # exit 1 when a JSON file differs from this code

Every dashboard has a stable uid (``tradeops-*``), every panel a stable id, the Prometheus
datasource by uid (``tradeops-prometheus``, provisioned by
provisioning/datasources/tradeops.yml) and at least one PromQL target. Queries use only the
metric names the exporters export (docs/exporters.md, docs/operations.md, docs/recon.md)
and the recording rules of infra/prometheus/rules/tradeops-recording.yml;
tests/test_mixin_live.py runs every one of them against a live Prometheus.
"""

# ruff: noqa: E501  (a table of PromQL queries: one query per line reads best)
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "dashboards")
DS = {"type": "prometheus", "uid": "tradeops-prometheus"}

# The upstream components' jobs (dev: the simulator) and ours
TARGET_JOBS = "gateway-oms|oms-lifecycle|risk-drawdown|pairs|supervisor|pushgateway|simulator"
UP_GAUGES = "gateway_oms_exporter_up|oms_up|risk_up|pairs_up|supervisor_up"


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict:
    t = {"datasource": DS, "expr": expr, "refId": ref, "legendFormat": legend or "__auto"}
    if instant:
        t["instant"] = True
        t["range"] = False
    return t


def panel(title: str, targets: list[dict], kind: str = "timeseries", unit: str = "short",
          desc: str = "", w: int = 12, h: int = 8, **field_defaults) -> dict:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    p = {
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, **field_defaults}, "overrides": []},
        "options": {},
        "gridPos": {"w": w, "h": h},
    }
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "table", "placement": "right"},
                        "tooltip": {"mode": "multi"}}
    return p


def dashboard(uid: str, title: str, panels: list[dict], desc: str) -> dict:
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y = 0, y + row_h
            row_h = 0
        p["gridPos"].update(x=x, y=y)
        x += w
        row_h = max(row_h, h)
    return {
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": ["tradeops"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["tradeops"], "title": "tradeops", "asDropdown": True}],
        "panels": panels,
    }


def overview() -> dict:
    return dashboard("tradeops-overview", "tradeops / Trading session overview", [
        panel("Orders emitted per minute, by strategy",
              [target("sum by (strategy) (rate(orders_emitted_total[1m])) * 60", "{{strategy}}")],
              unit="short", desc="Strategy runners' orders (orders_emitted_total)."),
        panel("Risk manager: approved vs rejected per minute",
              [target("sum(rate(risk_orders_approved_total[1m])) * 60", "approved"),
               target("sum by (reason) (rate(risk_orders_rejected_total[1m])) * 60", "rejected: {{reason}}")]),
        panel("Orders sent to the broker and fills per minute",
              [target("sum by (gateway) (rate(gateway_orders_sent_total[1m])) * 60", "sent {{gateway}}"),
               target("sum by (gateway) (rate(gateway_fills_total[1m])) * 60", "fills {{gateway}}")]),
        panel("Broker rejects / orders sent (5m)",
              [target("tradeops:gateway_reject_ratio:rate5m", "{{gateway}}")], unit="percentunit",
              desc="Alert GatewayRejectRateHigh above 10%."),
        panel("HTTP 429 (rate limited) in 5m, by endpoint",
              [target("sum by (gateway, endpoint) (increase(gateway_rate_limited_total[5m]))",
                      "{{gateway}} {{endpoint}}")], desc="Alert GatewayRateLimited above 5."),
        panel("Order ack latency p50 / p99 (gateway)",
              [target("histogram_quantile(0.5, sum by (le) (rate(gateway_order_ack_latency_seconds_bucket[5m])))", "p50"),
               target("histogram_quantile(0.99, sum by (le) (rate(gateway_order_ack_latency_seconds_bucket[5m])))", "p99")],
              unit="s"),
        panel("Consumer lag: oldest unconsumed record",
              [target("tradeops:kafka_consumergroup_lag_seconds:max", "{{consumergroup}} {{topic}}")], unit="s",
              desc="Alerts KafkaConsumerLagHigh (60 s) and KafkaConsumerLagCritical (300 s)."),
        panel("Consumer group status",
              [target("kafka_consumergroup_status == 1", "{{consumergroup}} {{status}}", instant=True)],
              kind="table", desc="Burrow-style status from the gateway-oms exporter."),
        panel("Heartbeat age of critical processes",
              [target("tradeops:heartbeat_age_seconds", "{{process}}"),
               target("tradeops_heartbeat_timeout_seconds", "timeout {{process}}")], unit="s"),
        panel("Critical processes heartbeating",
              [target("tradeops_heartbeat_up", "{{process}}", instant=True)], kind="stat",
              desc="0 = no heartbeat within its timeout (alert HeartbeatMissing)."),
        panel("Scrape targets up",
              [target(f'up{{job=~"{TARGET_JOBS}"}}', "{{job}}", instant=True)], kind="stat", w=24, h=5),
        panel("Dependencies as seen by each component",
              [target(f'{{__name__=~"{UP_GAUGES}"}}', "{{job}} -> {{dependency}}", instant=True)],
              kind="stat", w=24, h=5),
    ], "Orders emitted, approved/rejected, fills, 429s, lag and heartbeats of the trading session.")


def oms() -> dict:
    return dashboard("tradeops-oms", "tradeops / OMS order lifecycle", [
        panel("Orders by status (non-terminal)", [target("sum by (status) (oms_orders)", "{{status}}")]),
        panel("Stuck orders by status", [target("sum by (status) (oms_orders_stuck)", "{{status}}")],
              desc="Older than [oms_lifecycle].stuck_after_s; alert OmsStuckOrders."),
        panel("Transitions per minute (top 10)",
              [target("topk(10, sum by (from_status, to_status) (rate(oms_order_transitions_total[5m])) * 60)",
                      "{{from_status}} -> {{to_status}}")]),
        panel("Orders completed per minute, by terminal status",
              [target("sum by (status) (rate(oms_orders_completed_total[5m])) * 60", "{{status}}")]),
        panel("Rejects per strategy (15m)",
              [target("sum by (strategy, status) (increase(oms_order_rejects_total[15m]))", "{{strategy}} {{status}}")]),
        panel("Time to ack p50 / p99",
              [target("histogram_quantile(0.5, sum by (le) (rate(oms_time_to_ack_seconds_bucket[5m])))", "p50"),
               target("histogram_quantile(0.99, sum by (le) (rate(oms_time_to_ack_seconds_bucket[5m])))", "p99")],
              unit="s"),
        panel("Time to fill p50 / p99",
              [target("histogram_quantile(0.5, sum by (le) (rate(oms_time_to_fill_seconds_bucket[5m])))", "p50"),
               target("histogram_quantile(0.99, sum by (le) (rate(oms_time_to_fill_seconds_bucket[5m])))", "p99")],
              unit="s"),
        panel("Event anomalies per minute",
              [target("sum(rate(oms_order_invalid_transitions_total[5m])) * 60", "invalid transitions"),
               target("rate(oms_duplicate_events_total[5m]) * 60", "duplicates"),
               target("rate(oms_out_of_order_events_total[5m]) * 60", "out of order"),
               target("rate(oms_seq_gap_events_total[5m]) * 60", "seq gaps")]),
        panel("Order events per second", [target("rate(oms_order_events_total[1m])", "events")]),
        panel("Partitions and book",
              [target("sum by (state) (oms_partitions)", "partitions {{state}}", instant=True),
               target("oms_book_orders", "orders in memory", instant=True)], kind="stat"),
    ], "Order lifecycle from oms.order_events: statuses, transitions, stuck orders, latencies.")


def risk() -> dict:
    return dashboard("tradeops-risk", "tradeops / Risk: drawdown and exposure", [
        panel("Drawdown / configured limit, per bucket",
              [target("tradeops:risk_drawdown_limit_ratio", "{{bucket_type}} {{bucket}}")], unit="percentunit",
              desc="1 = at [risk].drawdown_limits (alert RiskDrawdownLimitBreached; 0.8: RiskDrawdownNearLimit)."),
        panel("Drawdown per strategy (INR)",
              [target('risk_drawdown_amount{bucket_type="strategy"}', "{{bucket}}"),
               target('risk_drawdown_limit_amount{bucket_type="strategy"}', "limit")], unit="currencyINR"),
        panel("Total equity and its session peak (INR)",
              [target('risk_equity_amount{bucket_type="total"}', "equity"),
               target('risk_peak_equity_amount{bucket_type="total"}', "peak"),
               target('risk_max_drawdown_amount{bucket_type="total"}', "max drawdown")], unit="currencyINR"),
        panel("Gross exposure per sector (INR)",
              [target('risk_exposure_gross_amount{bucket_type="sector"}', "{{bucket}}")], unit="currencyINR"),
        panel("Net exposure per strategy (INR)",
              [target('risk_exposure_net_amount{bucket_type="strategy"}', "{{bucket}}")], unit="currencyINR"),
        panel("Exposure per underlying (INR)",
              [target('risk_exposure_gross_amount{bucket_type="underlying"}', "gross {{bucket}}", instant=True),
               target('risk_exposure_net_amount{bucket_type="underlying"}', "net {{bucket}}", instant=True)],
              kind="table", unit="currencyINR"),
        panel("Positions held and state writes",
              [target("risk_positions", "positions"),
               target("time() - risk_state_last_flush_timestamp_seconds", "seconds since last state write")]),
    ], "Drawdown against the configured limits and exposure per bucket (strategy, sector, underlying, total).")


def pairs() -> dict:
    return dashboard("tradeops-pairs", "tradeops / Pairs: spread and z-score", [
        panel("Spread z-score with its band",
              [target("pairs_spread_zscore", "{{pair}}"),
               target("pairs_zscore_band", "+band {{pair}}"),
               target("-pairs_zscore_band", "-band {{pair}}")], w=24, h=9,
              desc="Alert PairsZscoreBeyondBand when |z| > band for 1m."),
        panel("Spread (log units)", [target("pairs_spread", "{{pair}}")]),
        panel("Hedge ratio (beta)", [target("pairs_hedge_ratio", "{{pair}}")]),
        panel("Half-life of the spread", [target("pairs_half_life_seconds", "{{pair}}")], unit="s",
              desc="Only while the spread is mean-reverting (AR(1) 0 < phi < 1)."),
        panel("Seconds since the last pair update",
              [target("time() - pairs_last_update_timestamp_seconds", "{{pair}}")], unit="s"),
        panel("Stale legs", [target("pairs_leg_stale", "{{pair}} {{leg}}", instant=True)], kind="stat"),
        panel("Bars by outcome per minute",
              [target("rate(pairs_bars_accepted_total[5m]) * 60", "accepted"),
               target("rate(pairs_bars_duplicate_total[5m]) * 60", "duplicate"),
               target("rate(pairs_bars_late_total[5m]) * 60", "late")]),
    ], "Spreads, z-scores against their bands, hedge ratios and half-lives of the configured pairs.")


def recon() -> dict:
    job = 'job="tradeops_recon"'
    heal = 'job="tradeops_recon_autoheal"'
    return dashboard("tradeops-recon", "tradeops / Recon history", [
        panel("Hours since the last successful recon",
              [target(f"(time() - tradeops_recon_last_success_timestamp_seconds{{{job}}}) / 3600", "hours",
                      instant=True)], kind="stat", unit="h", desc="Alert ReconNotRun after close + 1h."),
        panel("Last exit code (0 clean, 1 discrepancies, 2 error)",
              [target(f"tradeops_recon_last_exit_code{{{job}}}", "recon", instant=True),
               target(f"tradeops_recon_autoheal_last_exit_code{{{heal}}}", "autoheal", instant=True)], kind="stat"),
        panel("Open discrepancies", [target("tradeops:recon_open_discrepancies", "open")],
              desc="After the last autoheal if it ran after the last recon (alert ReconOpenDiscrepancies)."),
        panel("Discrepancies found, by kind",
              [target(f"tradeops_recon_discrepancies{{{job}}}", "{{kind}}")]),
        panel("Bars compared", [target(f"tradeops_recon_rows_compared{{{job}}}", "{{side}}")]),
        panel("Stage durations", [target(f"tradeops_recon_stage_duration_seconds{{{job}}}", "{{stage}}")],
              unit="s"),
        panel("Autoheal rows by outcome",
              [target(f"tradeops_recon_autoheal_rows{{{heal}}}", "{{outcome}}")], w=24),
    ], "After-close reconciliation and autoheal, from the Pushgateway (jobs tradeops_recon, tradeops_recon_autoheal).")


def supervisor() -> dict:
    return dashboard("tradeops-supervisor", "tradeops / Supervisor", [
        panel("Program state", [target("process_state == 1", "{{program}} {{state}}", instant=True)],
              kind="table", desc="FATAL: restart budget spent (alert SupervisorProgramFatal)."),
        panel("Programs up (RUNNING)", [target("process_up", "{{program}}", instant=True)], kind="stat"),
        panel("Restarts in the last hour, by reason",
              [target("sum by (program, reason) (increase(process_restarts_total[1h]))", "{{program}} {{reason}}")],
              desc="Alert SupervisorRestartStorm above 3 in 15m."),
        panel("Heartbeat age per program",
              [target("time() - process_heartbeat_timestamp_seconds", "{{program}}")], unit="s"),
        panel("Heartbeat sources readable",
              [target("supervisor_up", "{{dependency}}", instant=True)], kind="stat"),
        panel("Main loop duration", [target("supervisor_loop_duration_seconds", "loop")], unit="s"),
    ], "Programs watched by `tradeops supervise`: states, restarts, heartbeats.")


def kafka() -> dict:
    topics = 'topic!~"__.*"'  # Kafka's internal topics (__consumer_offsets, ...) are not ours
    return dashboard("tradeops-kafka", "tradeops / Kafka broker", [
        panel("Broker state and active controller",
              [target("kafka_server_broker_state", "state {{instance}}", instant=True),
               target("kafka_controller_active_controller_count", "active controller {{instance}}", instant=True)],
              kind="stat", desc="Broker state 3 = RUNNING. Alert KafkaNoActiveController when no broker is the active controller."),
        panel("Under-replicated and offline partitions",
              [target("kafka_server_replicamanager_under_replicated_partitions", "under-replicated {{instance}}"),
               target("kafka_controller_offline_partitions", "offline {{instance}}")],
              desc="Alerts KafkaUnderReplicatedPartitions (5m) and KafkaOfflinePartitions (1m)."),
        panel("Bytes in per second, top 10 topics",
              [target(f"topk(10, sum by (topic) (rate(kafka_server_brokertopicmetrics_bytes_in_total{{{topics}}}[1m])))", "{{topic}}")],
              unit="Bps"),
        panel("Bytes out per second, top 10 topics",
              [target(f"topk(10, sum by (topic) (rate(kafka_server_brokertopicmetrics_bytes_out_total{{{topics}}}[1m])))", "{{topic}}")],
              unit="Bps"),
        panel("Messages in per second, top 10 topics",
              [target(f"topk(10, sum by (topic) (rate(kafka_server_brokertopicmetrics_messages_in_total{{{topics}}}[1m])))", "{{topic}}")]),
        panel("Produce and Fetch requests per second",
              [target("sum by (request) (rate(kafka_network_requests_total[1m]))", "{{request}}")],
              desc="Fetch includes consumers' long polls (fetch.wait.max.ms)."),
        panel("Request total time p50 / p99",
              [target('kafka_network_request_time_seconds{quantile="0.50"}', "p50 {{request}}"),
               target('kafka_network_request_time_seconds{quantile="0.99"}', "p99 {{request}}")],
              unit="s", desc="The broker's own recent-window quantiles; Fetch waits up to fetch.wait.max.ms when there is nothing to read."),
        panel("Log size on disk, top 10 topics",
              [target(f"topk(10, sum by (topic) (kafka_log_size_bytes{{{topics}}}))", "{{topic}}")], unit="bytes"),
        panel("Partitions hosted per broker",
              [target("kafka_server_replicamanager_partitions", "{{instance}}")]),
    ], "Broker and topic metrics from the Prometheus JMX exporter agent in the Kafka broker (job kafka-broker): state, replication, per-topic traffic, requests, log sizes.")


DASHBOARDS = {
    "overview": overview,
    "oms": oms,
    "risk": risk,
    "pairs": pairs,
    "recon": recon,
    "supervisor": supervisor,
    "kafka": kafka,
}


def render() -> dict[str, str]:
    return {f"tradeops-{name}.json": json.dumps(make(), indent=2, sort_keys=True) + "\n"
            for name, make in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        bad = []
        for name, text in files.items():
            path = os.path.join(OUT, name)
            if not os.path.exists(path) or Path(path).read_text(encoding="utf-8") != text:
                bad.append(name)
        if bad:
            print(f"infra/grafana/dashboards: {', '.join(bad)} differ from dashboards.py: run make dashboards",
                  file=sys.stderr)
            return 1
        return 0
    os.makedirs(OUT, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
            f.write(text)
    print(f"wrote {len(files)} dashboards to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
