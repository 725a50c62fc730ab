"""Prometheus metrics of the supervisor: a fresh registry and collector per scrape.

The collector reads the supervisor's latest status snapshot (the same dict that is
written to the status file and served on ``/status``), so a scrape never touches the
main loop and a program removed from the config simply disappears. Exposition
(one program ``md`` with a file heartbeat, a Kafka source configured)::

    # TYPE process_up gauge
    process_up{program="md"} 1.0
    # TYPE process_restarts_total counter
    process_restarts_total{program="md",reason="exit"} 2.0
    process_restarts_total{program="md",reason="hung"} 1.0
    # TYPE process_heartbeat_timestamp_seconds gauge
    process_heartbeat_timestamp_seconds{program="md"} 1.7649e+09
    # TYPE process_state gauge
    process_state{program="md",state="STOPPED"} 0.0
    process_state{program="md",state="STARTING"} 0.0
    process_state{program="md",state="RUNNING"} 1.0
    process_state{program="md",state="HUNG"} 0.0
    process_state{program="md",state="BACKOFF"} 0.0
    process_state{program="md",state="FATAL"} 0.0
    # TYPE supervisor_up gauge
    supervisor_up{dependency="kafka"} 1.0
    # TYPE supervisor_invalid_heartbeats_total counter
    supervisor_invalid_heartbeats_total{source="kafka"} 0.0
    # TYPE supervisor_loop_duration_seconds gauge
    supervisor_loop_duration_seconds 0.0004

``process_heartbeat_timestamp_seconds`` is present only for programs with a heartbeat
source, and only once a heartbeat was seen. ``supervisor_up{dependency}`` exists for
``kafka`` and ``systemd`` when a program uses them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .states import ProcessState

REASONS = ("exit", "hung")


class SupervisorCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]):
        self.snapshot = snapshot

    def collect(self) -> Iterator:
        snap = self.snapshot()
        up = GaugeMetricFamily(
            "process_up", "1 when the program is RUNNING (alive and heartbeating)", labels=["program"]
        )
        restarts = CounterMetricFamily(
            "process_restarts", "Restarts done by the supervisor, by cause", labels=["program", "reason"]
        )
        beat = GaugeMetricFamily(
            "process_heartbeat_timestamp_seconds",
            "Unix time of the program's latest heartbeat",
            labels=["program"],
        )
        state = GaugeMetricFamily(
            "process_state", "Current state of the program (one-hot)", labels=["program", "state"]
        )
        for p in snap.get("programs", []):
            name = p["name"]
            up.add_metric([name], 1.0 if p["state"] == "RUNNING" else 0.0)
            for reason in REASONS:
                restarts.add_metric([name, reason], float(p["restarts"].get(reason, 0)))
            if p.get("heartbeat_source", "none") != "none" and p.get("last_heartbeat"):
                beat.add_metric([name], float(p["last_heartbeat"]))
            for s in ProcessState:
                state.add_metric([name, s.value], 1.0 if p["state"] == s.value else 0.0)
        yield up
        yield restarts
        yield beat
        yield state
        deps = GaugeMetricFamily(
            "supervisor_up", "1 when the supervisor can read this dependency", labels=["dependency"]
        )
        for dep, ok in sorted(snap.get("dependencies", {}).items()):
            deps.add_metric([dep], 1.0 if ok else 0.0)
        yield deps
        invalid = CounterMetricFamily(
            "supervisor_invalid_heartbeats",
            "Heartbeat messages skipped because they broke the contract",
            labels=["source"],
        )
        if "kafka" in snap.get("dependencies", {}):
            invalid.add_metric(["kafka"], float(snap.get("invalid_heartbeats", 0)))
        yield invalid
        yield GaugeMetricFamily(
            "supervisor_loop_duration_seconds",
            "Duration of the latest main-loop pass",
            value=float(snap.get("loop_duration_s", 0.0)),
        )


def render(snapshot: Callable[[], dict[str, Any]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SupervisorCollector(snapshot))
    return generate_latest(registry)
