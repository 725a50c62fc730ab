"""Prometheus exporters and the framework they share.

Every exporter is one process: ``tradeops exporter <name>`` (or the console script
``tradeops-exporter-<name>``). The framework gives it, from the config's ``listen``
(127.0.0.1 by default): `/metrics` of its own ``CollectorRegistry`` (no ``_created``
series), `/healthz` (200 only when the work loop iterated recently and every dependency
is up; JSON body naming each), a landing page `/`, sdnotify READY/STATUS/WATCHDOG from
the work loop, clean SIGTERM/SIGINT shutdown (offsets committed), and its own health series
``<prefix>_up{dependency}``, ``<prefix>_scrape_duration_seconds``,
``<prefix>_decode_errors_total{topic}``, ``<prefix>_handler_errors_total{topic}``.

Modules: :mod:`.runtime` (:class:`Exporter`, Health, LoopState; Notifier and WatchdogTimer
come from :mod:`tradeops.sd_notify`, shared with the supervisor),
:mod:`.http` (server), :mod:`.collect` (single-flight scrape-time collection),
:mod:`.consumer` (:class:`ConsumeLoop`, the Kafka work loop), :mod:`.render` (the fast
text exposition and ``FastGaugeFamily``), :mod:`.kafka_lag`.

Usage (a consuming exporter, e.g. ``tradeops/exporters/oms_lifecycle.py``)::

    from prometheus_client import Counter
    from tradeops.exporters import ConsumeLoop, Exporter

    def run(cfg):                                    # cli: tradeops exporter oms-lifecycle
        sec = cfg.oms_lifecycle
        app = Exporter("oms-lifecycle", "oms_lifecycle_exporter", sec.listen,
                       dependencies=["kafka"])
        # state owned by this process: ordinary metrics on app.registry, label sets
        # pre-initialised to 0
        seen = Counter("oms_events", "Order events applied.", ["status"], registry=app.registry)
        # state read elsewhere at scrape time: custom collector, single-flight, in budget;
        # collect(deadline) returns metric families (GaugeMetricFamily, ...; for thousands
        # of series render.FastGaugeFamily, which /metrics renders without per-sample objects)
        app.add_scrape_collector("lag", lambda deadline: [...])
        # extra endpoints: path -> () -> (status, content_type, body)
        app.extra_routes["/orders"] = lambda: (200, "application/json", b"[]")

        def handle(kind, event, msg):                # decoded contract struct + raw message
            seen.labels(status=event.status).inc()

        loop = ConsumeLoop(cfg, group_id=sec.group_id,
                           topics={cfg.topics.order_events: "order_events"},
                           handler=handle,
                           on_assign=lambda consumer, tps: ...,   # rebuild state
                           on_revoke=lambda tps: ...,             # drop state
                           on_tick=lambda now: ...)               # periodic work
        app.serve(loop)                              # blocks until SIGTERM; exit 0

``handle`` runs in the loop thread; collectors run in scrape threads, so state they share
needs a lock or values that are swapped atomically. Tests construct ``Exporter`` with
``listen="127.0.0.1:0"``, run ``app.serve(loop, signals=False)`` in a thread, set
``app.stop_event`` to stop it, and read values with ``app.registry.get_sample_value``.
"""

from .collect import SingleFlight, SingleFlightCollector
from .consumer import ConsumeLoop
from .runtime import Exporter, Health, LoopState, Notifier, WatchdogTimer

__all__ = [
    "ConsumeLoop",
    "Exporter",
    "Health",
    "LoopState",
    "Notifier",
    "SingleFlight",
    "SingleFlightCollector",
    "WatchdogTimer",
]
