"""The simulator's HTTP server: upstream processes' metrics and the test/alert controls.

Routes (127.0.0.1 by default, ``[sim].metrics_listen``):

- ``GET /metrics``: the upstream metrics dashboards rely on, from the simulator's own
  ``CollectorRegistry`` (a custom collector reads the generator's counts at scrape time);
- ``GET /healthz``: 200 while the simulator loop is live, JSON with its dependencies;
- ``POST /control/heartbeat/<process>/stop`` and ``/start``: silence a process's heartbeats;
- ``POST /control/group/<group>/pause`` and ``/resume``: stop a consumer group committing;
- ``GET /control``: the current state of the controls (JSON);
- ``GET /truth``: the ground truth counted so far (the fast mode's summary shape).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .trading import PROCESSES, RISK_REASONS


class SimState:
    """What the HTTP side reads and controls; the run loop owns and updates it."""

    def __init__(self, strategies: list[str], groups: list[str]):
        self.lock = threading.Lock()
        self.strategies = list(strategies)
        self.generator = None  # trading.Generator, set by the runner
        self.heartbeat_enabled: dict[str, bool] = dict.fromkeys(PROCESSES, True)
        self.group_paused: dict[str, bool] = dict.fromkeys(groups, False)
        self.up: dict[str, bool] = {"kafka": False, "postgres": False}
        self.produced: dict[str, int] = {}
        self.delivery_failures = 0
        self.dropped = 0
        self.bars_written = 0
        self.consumed: dict[str, int] = dict.fromkeys(groups, 0)
        self.decode_errors: dict[str, int] = dict.fromkeys(groups, 0)
        self.loop_beat = time.monotonic()


class UpstreamCollector:
    """Exposition produced at each scrape (pre-initialised for every configured strategy)::

        # TYPE orders_emitted_total counter
        orders_emitted_total{strategy="momentum"} 1143.0
        # TYPE risk_orders_approved_total counter
        risk_orders_approved_total{strategy="momentum"} 1085.0
        # TYPE risk_orders_rejected_total counter
        risk_orders_rejected_total{reason="price_band",strategy="momentum"} 9.0
        # TYPE sim_up gauge
        sim_up{dependency="kafka"} 1.0
        sim_heartbeat_enabled{process="oms-core"} 1.0
        sim_consumer_group_paused{group="oms-core"} 0.0
        sim_messages_produced_total{topic="oms.order_events"} 25114.0
        sim_kafka_delivery_failures_total 0.0
        sim_bars_written_total 112461.0
        sim_consumer_messages_total{group="oms-core"} 13574.0
        sim_consumer_decode_errors_total{group="oms-core"} 0.0
    """

    def __init__(self, state: SimState):
        self.state = state

    def collect(self):
        st = self.state
        emitted = CounterMetricFamily("orders_emitted", "Orders emitted by the strategy runner",
                                      labels=["strategy"])
        approved = CounterMetricFamily("risk_orders_approved",
                                       "Orders approved by the risk manager", labels=["strategy"])
        rejected = CounterMetricFamily("risk_orders_rejected",
                                       "Orders rejected by the risk manager",
                                       labels=["strategy", "reason"])
        with st.lock:
            gen = st.generator
            truth = gen.truth if gen is not None else None
            for s in st.strategies:
                emitted.add_metric([s], truth.emitted[s] if truth else 0)
                approved.add_metric([s], truth.approved[s] if truth else 0)
                for r in RISK_REASONS:
                    rejected.add_metric([s, r], truth.rejected[(s, r)] if truth else 0)
            up = GaugeMetricFamily("sim_up", "1 when the dependency is reachable",
                                   labels=["dependency"])
            for dep, ok in sorted(st.up.items()):
                up.add_metric([dep], 1.0 if ok else 0.0)
            hb = GaugeMetricFamily("sim_heartbeat_enabled",
                                   "1 while the simulated process sends heartbeats",
                                   labels=["process"])
            for p, ok in sorted(st.heartbeat_enabled.items()):
                hb.add_metric([p], 1.0 if ok else 0.0)
            paused = GaugeMetricFamily("sim_consumer_group_paused",
                                       "1 while the simulated consumer group is paused",
                                       labels=["group"])
            for g, p in sorted(st.group_paused.items()):
                paused.add_metric([g], 1.0 if p else 0.0)
            produced = CounterMetricFamily("sim_messages_produced",
                                           "Messages handed to the Kafka producer",
                                           labels=["topic"])
            for t, n in sorted(st.produced.items()):
                produced.add_metric([t], n)
            failures = CounterMetricFamily("sim_kafka_delivery_failures",
                                           "Messages Kafka did not accept (broker away)")
            failures.add_metric([], st.delivery_failures + st.dropped)
            bars = CounterMetricFamily("sim_bars_written",
                                       "Internal bars written to PostgreSQL")
            bars.add_metric([], st.bars_written)
            consumed = CounterMetricFamily("sim_consumer_messages",
                                           "Messages consumed by the simulated consumer groups",
                                           labels=["group"])
            bad = CounterMetricFamily("sim_consumer_decode_errors",
                                      "Consumed messages that broke their contract (skipped)",
                                      labels=["group"])
            for g in sorted(st.consumed):
                consumed.add_metric([g], st.consumed[g])
                bad.add_metric([g], st.decode_errors.get(g, 0))
        yield from (emitted, approved, rejected, up, hb, paused, produced, failures, bars,
                    consumed, bad)


def make_server(host: str, port: int, state: SimState,
                on_change: Callable[[], None] | None = None) -> ThreadingHTTPServer:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UpstreamCollector(state))

    class Handler(BaseHTTPRequestHandler):
        server_version = "tradeops-sim"

        def log_message(self, fmt, *args):  # keep stdout for the run loop's own lines
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj) -> None:
            self._send(code, json.dumps(obj, sort_keys=True).encode() + b"\n")

        def do_GET(self):  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                age = time.monotonic() - state.loop_beat
                ok = age < 10
                with state.lock:
                    body = {"status": "ok" if ok else "stalled", "loop_age_seconds": round(age, 3),
                            "dependencies": dict(state.up)}
                self._json(200 if ok else 503, body)
            elif path == "/truth":
                with state.lock:
                    gen = state.generator
                    body = gen.truth.as_dict() if gen is not None else {}
                self._json(200, body)
            elif path == "/control":
                with state.lock:
                    self._json(200, {"heartbeats": state.heartbeat_enabled,
                                     "groups_paused": state.group_paused})
            elif path == "/":
                self._send(200, b"<html><body><h1>tradeops sim</h1><a href='/metrics'>metrics"
                                b"</a> <a href='/healthz'>healthz</a></body></html>",
                           "text/html; charset=utf-8")
            else:
                self._json(404, {"error": f"no such path {path}"})

        def do_POST(self):  # noqa: N802
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            if len(parts) == 4 and parts[0] == "control":
                _, what, name, action = parts
                with state.lock:
                    if what == "heartbeat" and action in ("stop", "start"):
                        if name not in state.heartbeat_enabled:
                            return self._json(404, {"error": f"unknown process {name!r}",
                                                    "known": sorted(state.heartbeat_enabled)})
                        state.heartbeat_enabled[name] = action == "start"
                        if state.generator is not None:
                            state.generator.heartbeat_enabled[name] = action == "start"
                        result = {"process": name, "heartbeat": action == "start"}
                    elif what == "group" and action in ("pause", "resume"):
                        if name not in state.group_paused:
                            return self._json(404, {"error": f"unknown group {name!r}",
                                                    "known": sorted(state.group_paused)})
                        state.group_paused[name] = action == "pause"
                        result = {"group": name, "paused": action == "pause"}
                    else:
                        return self._json(404, {"error": f"unknown control {self.path}"})
                if on_change:
                    on_change()
                return self._json(200, result)
            return self._json(404, {"error": f"unknown control {self.path}"})

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
