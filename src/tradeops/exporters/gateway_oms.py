"""gateway-oms exporter: gateway events, process heartbeats and Kafka consumer-group lag.

``tradeops exporter gateway-oms`` (default 127.0.0.1:9811). Consumes `gateway.events` and
`ops.heartbeats` (group ``[gateway_oms].group_id``, at-least-once) and reads the lag of
``[gateway_oms].lag_groups`` at scrape time. Every metric is listed in docs/exporters.md.

Label bounds: ``gateway`` keeps the names in ``[gateway_oms].gateways`` (or the first 10
seen when that list is empty) and folds the rest into ``other``; ``endpoint`` is the longest
configured endpoint prefix of the event's path (``/orders/regular/230615000123`` ->
``/orders/regular``), else ``other``; at most 200 heartbeat process names are tracked.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from ..config import Config, GatewayOmsConfig
from ..contracts import GatewayEvent, Heartbeat
from ..kafka_admin import client_conf
from .consumer import ConsumeLoop
from .kafka_lag import IsolatedLagReader, LagCollector, LagTracker, RecordTimestamps
from .runtime import Exporter

log = logging.getLogger("tradeops.exporters.gateway_oms")

PREFIX = "gateway_oms_exporter"
OTHER = "other"
MAX_AUTO_GATEWAYS = 10
MAX_PROCESSES = 200
MAX_PENDING_ACKS = 100_000
HEARTBEAT_LOOKBACK_S = 60.0
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class LabelBounds:
    """Maps free-form gateway names and endpoint paths onto a bounded label set."""

    def __init__(self, gateways: Sequence[str], endpoints: Sequence[str],
                 max_auto: int = MAX_AUTO_GATEWAYS):
        self.fixed = bool(gateways)
        self.gateways: list[str] = list(dict.fromkeys(gateways))
        self.max_auto = max_auto
        norm = [e.rstrip("/") or "/" for e in endpoints]
        # longest first so "/orders/regular" wins over "/orders"
        self.endpoints = sorted(dict.fromkeys(norm), key=len, reverse=True)

    def gateway(self, name: str) -> str:
        if name in self.gateways:
            return name
        if not self.fixed and len(self.gateways) < self.max_auto and name != OTHER:
            self.gateways.append(name)
            return name
        return OTHER

    def endpoint(self, path: str) -> str:
        p = path.split("?", 1)[0].rstrip("/")
        for e in self.endpoints:
            if p == e or p.startswith(e + "/"):
                return e
        return OTHER

    def endpoint_labels(self) -> list[str]:
        return sorted(self.endpoints) + [OTHER]


class GatewayOmsState:
    """Everything the consume loop learns; metrics on ``registry`` plus heartbeat times.

    ``handle`` runs in the loop thread; :class:`HeartbeatCollector` reads ``heartbeats``
    (a dict whose values are replaced atomically) from scrape threads.
    """

    def __init__(self, registry: CollectorRegistry, sec: GatewayOmsConfig):
        self.bounds = LabelBounds(sec.gateways, sec.endpoints)
        self.critical = dict(sec.critical_processes)
        r = registry
        self.orders_sent = Counter("gateway_orders_sent", "Orders sent to the broker.",
                                   ["gateway"], registry=r)
        self.fills = Counter("gateway_fills", "Fills reported by the broker.", ["gateway"], registry=r)
        self.rate_limited = Counter("gateway_rate_limited", "Requests refused by the broker's "
                                    "rate limit (HTTP 429).", ["gateway", "endpoint"], registry=r)
        self.rejects = Counter("gateway_rejects", "Orders rejected by the broker.", ["gateway"],
                               registry=r)
        self.errors = Counter("gateway_errors", "Gateway errors (broker API or internal).",
                              ["gateway"], registry=r)
        self.reconnects = Counter("gateway_reconnects", "Reconnects of the gateway to the broker.",
                                  ["gateway"], registry=r)
        self.ack_latency = Histogram("gateway_order_ack_latency_seconds", "Time from sending an "
                                     "order to the broker's acknowledgement.", ["gateway"],
                                     buckets=ACK_BUCKETS, registry=r)
        self.acks_unmatched = Counter(f"{PREFIX}_acks_without_latency", "order_ack events with "
                                      "no latency_ms and no earlier order_sent of the order "
                                      "(not observed in the histogram).", ["gateway"], registry=r)
        self.last_event: dict[str, float] = {}
        self.heartbeats: dict[str, float] = {}
        self.heartbeats_dropped = Counter(f"{PREFIX}_heartbeats_dropped", "Heartbeats of "
                                          f"processes beyond the first {MAX_PROCESSES} names.",
                                          registry=r)
        self._sent: OrderedDict[tuple[str, str], float] = OrderedDict()
        # label children cached per gateway: .labels() per event costs more than the event
        self._kids: dict[str, dict[str, Any]] = {}
        self._rate_limited: dict[tuple[str, str], Any] = {}
        for g in self.bounds.gateways:
            self._init_gateway(g)

    def _init_gateway(self, g: str) -> dict[str, Any]:
        """Pre-initialise every series of a gateway label to 0; returns its children."""
        kids = {
            "order_sent": self.orders_sent.labels(gateway=g),
            "fill": self.fills.labels(gateway=g),
            "reject": self.rejects.labels(gateway=g),
            "error": self.errors.labels(gateway=g),
            "reconnect": self.reconnects.labels(gateway=g),
            "ack": self.ack_latency.labels(gateway=g),
            "unmatched": self.acks_unmatched.labels(gateway=g),
        }
        for e in self.bounds.endpoint_labels():
            self._rate_limited[(g, e)] = self.rate_limited.labels(gateway=g, endpoint=e)
        self._kids[g] = kids
        return kids

    def handle(self, kind: str, event: Any, msg: Any = None) -> None:
        if kind == "gateway_events":
            self.gateway_event(event)
        elif kind == "heartbeats":
            self.heartbeat(event)

    def gateway_event(self, e: GatewayEvent) -> None:
        g = self.bounds.gateway(e.gateway)
        kids = self._kids.get(g) or self._init_gateway(g)
        kind = e.event
        ts = e.ts.timestamp()
        if kind == "order_sent":
            kids["order_sent"].inc()
            if e.order_id:
                sent = self._sent
                sent[(g, e.order_id)] = ts
                if len(sent) > MAX_PENDING_ACKS:
                    sent.popitem(last=False)
        elif kind == "order_ack":
            sent_ts = self._sent.pop((g, e.order_id), None) if e.order_id else None
            if e.latency_ms is not None:
                kids["ack"].observe(e.latency_ms / 1000.0)
            elif sent_ts is not None:
                kids["ack"].observe(max(0.0, ts - sent_ts))
            else:
                kids["unmatched"].inc()
        elif kind == "rate_limited":
            self._rate_limited[(g, self.bounds.endpoint(e.endpoint))].inc()
        else:  # fill, reject, error, reconnect (the contract allows nothing else)
            kids[kind].inc()
        if ts > self.last_event.get(g, 0.0):
            self.last_event[g] = ts

    def heartbeat(self, hb: Heartbeat) -> None:
        ts = hb.ts.timestamp()
        prev = self.heartbeats.get(hb.process)
        if prev is None and len(self.heartbeats) >= MAX_PROCESSES and hb.process not in self.critical:
            self.heartbeats_dropped.inc()
            return
        if prev is None or ts > prev:
            self.heartbeats[hb.process] = ts


class StateCollector:
    """Times read at scrape time (up depends on "now"). Exposition::

        # TYPE gateway_last_event_timestamp_seconds gauge
        gateway_last_event_timestamp_seconds{gateway="zerodha"} 1.7649e+09
        # TYPE tradeops_heartbeat_timestamp_seconds gauge
        tradeops_heartbeat_timestamp_seconds{process="oms-core"} 1.7649e+09
        # TYPE tradeops_heartbeat_up gauge
        tradeops_heartbeat_up{process="oms-core"} 1.0
        # TYPE tradeops_heartbeat_timeout_seconds gauge
        tradeops_heartbeat_timeout_seconds{process="oms-core"} 10.0

    ``tradeops_heartbeat_up`` exists for every configured critical process (0 until its
    first heartbeat); the timestamp only once a heartbeat was seen.
    """

    def __init__(self, state: GatewayOmsState, critical: Mapping[str, float], clock=time.time):
        self.state = state
        self.critical = dict(critical)
        self.clock = clock

    def describe(self):
        return []

    def collect(self):
        now = self.clock()
        last = GaugeMetricFamily("gateway_last_event_timestamp_seconds", "Time of the gateway's "
                                 "last event (event time).", labels=["gateway"])
        for g, ts in sorted(dict(self.state.last_event).items()):  # a copy: the loop writes
            last.add_metric([g], ts)
        hb = GaugeMetricFamily("tradeops_heartbeat_timestamp_seconds", "Time of the process's "
                               "last heartbeat (heartbeat time).", labels=["process"])
        beats = dict(self.state.heartbeats)
        for p, ts in sorted(beats.items()):
            hb.add_metric([p], ts)
        up = GaugeMetricFamily("tradeops_heartbeat_up", "1 when the critical process's last "
                               "heartbeat is younger than its timeout.", labels=["process"])
        timeout = GaugeMetricFamily("tradeops_heartbeat_timeout_seconds", "Configured heartbeat "
                                    "timeout of the critical process.", labels=["process"])
        for p, limit in sorted(self.critical.items()):
            ts = beats.get(p)
            up.add_metric([p], 1.0 if ts is not None and now - ts <= limit else 0.0)
            timeout.add_metric([p], limit)
        return [last, hb, up, timeout]


def build(cfg: Config, *, listen: str | None = None, auto_offset_reset: str = "latest",
          env: Mapping[str, str] | None = None, **loop_kw) -> tuple[Exporter, ConsumeLoop, dict]:
    """The exporter, its consume loop and its parts (tests call this; ``run`` serves it)."""
    sec = cfg.gateway_oms
    app = Exporter("gateway-oms", PREFIX, listen or sec.listen, dependencies=["kafka"],
                   scrape_budget_s=sec.scrape_budget_s, env=env)
    state = GatewayOmsState(app.registry, sec)
    app.registry.register(StateCollector(state, sec.critical_processes))
    parts: dict[str, Any] = {"state": state}
    if sec.lag_groups:
        conf = client_conf(cfg)
        parts["timestamps"] = RecordTimestamps(conf)
        parts["reader"] = IsolatedLagReader(conf)
        parts["lag"] = LagCollector(sec.lag_groups, parts["reader"], parts["timestamps"],
                                    LagTracker(sec.lag_window, sec.lag_min_interval_s))
        parts["lag_scrape"] = app.add_scrape_collector("kafka-lag", parts["lag"])
    lookback_s = max([*sec.critical_processes.values(), HEARTBEAT_LOOKBACK_S])
    loop = ConsumeLoop(cfg, group_id=sec.group_id,
                       topics={cfg.topics.gateway_events: "gateway_events",
                               cfg.topics.heartbeats: "heartbeats"},
                       handler=state.handle, auto_offset_reset=auto_offset_reset,
                       on_assign=lambda consumer, tps: rewind_heartbeats(
                           consumer, tps, cfg.topics.heartbeats, lookback_s),
                       **loop_kw)
    return app, loop, parts


def rewind_heartbeats(consumer, partitions, topic: str, lookback_s: float,
                      now: float | None = None) -> None:
    """On assignment, start the heartbeat partitions ``lookback_s`` back in time.

    The latest heartbeats live only in memory: without this, an exporter restart would
    show every critical process down until its next heartbeat. Re-reading heartbeats is
    harmless (the latest time per process wins); gateway events are never re-read, so
    counters are not doubled. Falls back to the committed offsets if the lookup fails.
    """
    hb = [tp for tp in partitions if tp.topic == topic]
    if not hb:
        return
    ts_ms = int(((time.time() if now is None else now) - lookback_s) * 1000)
    try:
        # short timeouts: this runs inside the work loop (systemd's watchdog is 10 s)
        found = consumer.offsets_for_times([TopicPartition(topic, tp.partition, ts_ms) for tp in hb],
                                           timeout=2)
        committed = consumer.committed([TopicPartition(topic, tp.partition) for tp in hb], timeout=2)
    except KafkaException as e:
        log.warning("heartbeats: cannot look up offsets %.0f s back (%s); starting at the "
                    "committed offsets", lookback_s, e.args[0].str())
        return
    start = {tp.partition: tp.offset for tp in found if tp.error is None and tp.offset >= 0}
    for tp in committed:
        # never skip forward past what the group has not read yet
        if tp.partition in start and tp.error is None and 0 <= tp.offset < start[tp.partition]:
            start[tp.partition] = tp.offset
    if not start:
        return
    new = [TopicPartition(tp.topic, tp.partition, start[tp.partition])
           if tp.topic == topic and tp.partition in start else tp for tp in partitions]
    consumer.assign(new)
    log.info("heartbeats: re-reading the last %.0f s of %s", lookback_s, topic)


def run(cfg: Config) -> None:
    app, loop, parts = build(cfg)
    try:
        app.serve(loop)
    finally:
        if "timestamps" in parts:
            parts["timestamps"].close()
            parts["reader"].close()
