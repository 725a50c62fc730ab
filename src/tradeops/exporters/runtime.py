"""Exporter runtime: the app object (registry, health, sdnotify, signals, server, loop state).

Pure pieces are separate so they are unit-testable without sockets or services:
:class:`~tradeops.sd_notify.WatchdogTimer` (when to send WATCHDOG=1; shared with the
supervisor in :mod:`tradeops.sd_notify`), :class:`Health` (the /healthz verdict),
:class:`LoopState` with its guarded transition table. :class:`Exporter` ties them to the
HTTP server (:mod:`.http`) and the work loop (for Kafka: :class:`.consumer.ConsumeLoop`).
"""

from __future__ import annotations

import enum
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..errors import UserError
from ..sd_notify import Notifier, WatchdogTimer
from .render import TextRenderer

log = logging.getLogger("tradeops.exporters")

# `_created` series double the series count and carry no information for us.
disable_created_metrics()


# --------------------------------------------------------------------------- loop state
class LoopState(enum.Enum):
    STARTING = "starting"  # created; connecting / waiting for the first assignment
    RUNNING = "running"  # consuming (READY=1 sent)
    STOPPING = "stopping"  # stop requested: committing offsets, closing clients
    STOPPED = "stopped"


# the only transitions allowed; anything else is a bug and raises
_LOOP_TRANSITIONS: dict[LoopState, frozenset[LoopState]] = {
    LoopState.STARTING: frozenset({LoopState.RUNNING, LoopState.STOPPING}),
    LoopState.RUNNING: frozenset({LoopState.STOPPING}),
    LoopState.STOPPING: frozenset({LoopState.STOPPED}),
    LoopState.STOPPED: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


# -------------------------------------------------------------------------------- health
class Health:
    """The /healthz verdict: the work loop iterated recently AND every dependency is up.

    ``beat()`` is called by the work loop each iteration; ``set_up(dep, bool)`` by whoever
    observes a dependency. Thread-safe enough for one writer thread and many readers
    (plain attribute writes of immutable values).
    """

    def __init__(self, dependencies: Iterable[str], loop_stale_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.loop_stale_s = loop_stale_s
        self._deps: dict[str, bool] = dict.fromkeys(dependencies, False)
        self._last_beat: float | None = None

    @property
    def dependencies(self) -> dict[str, bool]:
        return dict(self._deps)

    def set_up(self, dependency: str, up: bool) -> bool:
        """Record a dependency's state; True when it changed."""
        if dependency not in self._deps:
            raise KeyError(f"unknown dependency {dependency!r}")
        changed = self._deps[dependency] != up
        self._deps[dependency] = up
        return changed

    def is_up(self, dependency: str) -> bool:
        return self._deps[dependency]

    def beat(self) -> None:
        self._last_beat = self.clock()

    def loop_age(self) -> float | None:
        return None if self._last_beat is None else max(0.0, self.clock() - self._last_beat)

    def report(self) -> tuple[bool, dict[str, Any]]:
        age = self.loop_age()
        loop_ok = age is not None and age <= self.loop_stale_s
        deps = self.dependencies
        ok = loop_ok and all(deps.values())
        body = {
            "status": "ok" if ok else "unhealthy",
            "loop": {"age_seconds": None if age is None else round(age, 3), "live": loop_ok},
            "dependencies": deps,
        }
        return ok, body


# ---------------------------------------------------------------------------- exporter
class WorkLoop(Protocol):
    def run(self, app: Exporter) -> None: ...


class Exporter:
    """One exporter process: registry, health, sdnotify, signals, HTTP server.

    ``prefix`` names its own health metrics: ``<prefix>_up{dependency}``,
    ``<prefix>_scrape_duration_seconds``, ``<prefix>_decode_errors_total{topic}`` (the
    latter created by :meth:`decode_errors`).
    """

    def __init__(self, name: str, prefix: str, listen: str, *,
                 dependencies: Iterable[str] = ("kafka",),
                 scrape_budget_s: float = 2.0, loop_stale_s: float = 10.0,
                 env: Mapping[str, str] | None = None):
        self.name = name
        self.prefix = prefix
        self.listen = listen
        self.scrape_budget_s = scrape_budget_s
        self.registry = CollectorRegistry(auto_describe=False)
        self.renderer = TextRenderer()
        self.health = Health(dependencies, loop_stale_s)
        self.notifier = Notifier.from_env(env)
        self.watchdog = WatchdogTimer.from_env(env)
        self.stop_event = threading.Event()
        self.state = LoopState.STARTING
        self.extra_routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {}
        self.landing_links: list[tuple[str, str]] = []
        self._decode_errors: Counter | None = None
        self._scrape_local = threading.local()
        self.last_scrape_collection_s = 0.0
        self.registry.register(_UpCollector(self))
        self._scrape_collectors: list = []
        self._duration = _DurationCollector(self)
        self.registry.register(self._duration)
        self.server = None

    # ---- state
    def transition(self, new: LoopState) -> None:
        if new not in _LOOP_TRANSITIONS[self.state]:
            raise InvalidTransition(f"{self.name}: {self.state.name} -> {new.name} not allowed")
        log.debug("%s: %s -> %s", self.name, self.state.name, new.name)
        self.state = new

    def ready(self, status: str) -> None:
        """Called by the work loop once it consumes: READY=1 and a STATUS line."""
        if self.state is LoopState.STARTING:
            # STARTING -> RUNNING
            self.transition(LoopState.RUNNING)
            self.health.beat()  # the loop is live now: /healthz must not lag READY=1
            self.notifier.notify("READY=1", f"STATUS={status}")
            log.info("%s: ready: %s", self.name, status)

    def status(self, text: str) -> None:
        self.notifier.notify(f"STATUS={text}")

    def tick(self) -> None:
        """Called by the work loop every iteration: liveness for /healthz and WATCHDOG=1."""
        self.health.beat()
        if self.watchdog.due():
            self.notifier.notify("WATCHDOG=1")

    def max_poll_s(self, default: float = 1.0) -> float:
        """How long one blocking call of the loop may last and still feed the watchdog."""
        return self.watchdog.max_iteration_s(default)

    def set_up(self, dependency: str, up: bool, why: str = "") -> None:
        """Record a dependency's state; a change is logged once (with ``why``)."""
        if self.health.set_up(dependency, up):
            detail = f" ({why})" if why else ""
            if up:
                log.info("%s: %s reachable%s", self.name, dependency, detail)
            else:
                log.warning("%s: %s UNREACHABLE%s", self.name, dependency, detail)
            self.status(f"{dependency} {'up' if up else 'down'}")

    # ---- metrics helpers
    def decode_errors(self, topics: Iterable[str]) -> Counter:
        """`<prefix>_decode_errors_total{topic}`, pre-initialised to 0 for ``topics``."""
        if self._decode_errors is None:
            self._decode_errors = Counter(
                f"{self.prefix}_decode_errors", "Messages skipped because they did not decode "
                "or validate against the contract.", ["topic"], registry=self.registry)
        for t in topics:
            self._decode_errors.labels(topic=t)
        return self._decode_errors

    def add_scrape_collector(self, name: str, collect: Callable[[float], list],
                             budget_s: float | None = None):
        """Register state read at scrape time: ``collect(deadline)`` -> metric families.

        Concurrent scrapes share one collection; a scrape waits at most the budget.
        """
        from .collect import SingleFlightCollector

        c = SingleFlightCollector(name, collect, self.scrape_budget_s if budget_s is None else budget_s,
                                  on_done=self._collection_done)
        self.registry.register(c)
        self._scrape_collectors.append(c)
        self._duration_last()
        return c

    def _duration_last(self) -> None:
        """Keep the duration collector last so it measures the whole scrape before it."""
        self.registry.unregister(self._duration)
        self.registry.register(self._duration)

    def _collection_done(self, seconds: float) -> None:
        self.last_scrape_collection_s = seconds

    def scrape_started(self) -> None:
        self._scrape_local.start = time.perf_counter()

    def scrape_elapsed(self) -> float | None:
        start = getattr(self._scrape_local, "start", None)
        return None if start is None else time.perf_counter() - start

    # ---- run
    def install_signal_handlers(self) -> None:
        def handler(signum, frame):  # noqa: ARG001 - signal API
            if not self.stop_event.is_set():
                log.info("%s: %s received, stopping", self.name, signal.Signals(signum).name)
                self.notifier.notify("STOPPING=1", "STATUS=stopping")
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def start_server(self):
        from .http import MetricsServer

        self._duration_last()
        self.server = MetricsServer(self)
        self.server.start()
        log.info("%s: serving /metrics and /healthz on http://%s", self.name, self.server.address)
        return self.server

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def serve(self, loop: WorkLoop, *, signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or ``stop_event``): server up, ``loop.run(self)``."""
        if signals:
            self.install_signal_handlers()
        try:
            self.start_server()
        except OSError as e:
            raise UserError(f"{self.name}: cannot listen on {self.listen}: {e.strerror}") from None
        try:
            loop.run(self)
        finally:
            self.stop_server()
            self.notifier.close()
            log.info("%s: stopped", self.name)


class _UpCollector:
    """One series per dependency::

        # HELP <prefix>_up 1 when the exporter can reach the dependency.
        # TYPE <prefix>_up gauge
        <prefix>_up{dependency="kafka"} 1.0
    """

    def __init__(self, app: Exporter):
        self.app = app

    def collect(self):
        up = GaugeMetricFamily(f"{self.app.prefix}_up",
                               "1 when the exporter can reach the dependency.", labels=["dependency"])
        for dep, ok in self.app.health.dependencies.items():
            up.add_metric([dep], 1.0 if ok else 0.0)
        yield up


class _DurationCollector:
    """Registered last; in an HTTP scrape it reports the time spent so far::

        # HELP <prefix>_scrape_collection_failures_total Scrape-time collections that failed...
        # TYPE <prefix>_scrape_collection_failures_total counter
        <prefix>_scrape_collection_failures_total{collection="kafka-lag",reason="error"} 0.0
        <prefix>_scrape_collection_failures_total{collection="kafka-lag",reason="timeout"} 0.0
        # HELP <prefix>_scrape_duration_seconds Time this scrape took to collect its metrics.
        # TYPE <prefix>_scrape_duration_seconds gauge
        <prefix>_scrape_duration_seconds 0.0123

    Outside an HTTP scrape (tests) it reports the last scrape-time collection's duration.
    """

    def __init__(self, app: Exporter):
        self.app = app

    def collect(self):
        app = self.app
        if app._scrape_collectors:
            fails = CounterMetricFamily(
                f"{app.prefix}_scrape_collection_failures",
                "Scrape-time collections that failed or exceeded the scrape budget (the "
                "scrape went on without their series).", labels=["collection", "reason"])
            for c in app._scrape_collectors:
                fails.add_metric([c.name, "error"], c.errors)
                fails.add_metric([c.name, "timeout"], c.timeouts)
            yield fails
        elapsed = app.scrape_elapsed()
        yield GaugeMetricFamily(
            f"{app.prefix}_scrape_duration_seconds",
            "Time this scrape took to collect its metrics (seconds).",
            value=app.last_scrape_collection_s if elapsed is None else elapsed)
