"""Scrape-time collection shared by concurrent scrapes, within a time budget.

:class:`SingleFlight` is the pure mechanism (one call in flight; callers that arrive while
it runs wait for and share its result; nobody waits longer than the budget).
:class:`SingleFlightCollector` wraps a ``collect(deadline) -> [metric families]`` function
as a prometheus_client Collector: it is what :meth:`Exporter.add_scrape_collector` registers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tradeops.exporters")


class SingleFlight:
    """Run ``fn(deadline)`` at most once at a time; concurrent callers share the result.

    The call runs in its own daemon thread so a caller can give up after ``budget_s``
    (returns ``(False, None)``) while the call finishes in the background; a caller that
    arrives while it is still running joins it instead of starting another. ``fn`` gets
    the monotonic deadline and should respect it (pass remaining time to client timeouts).
    """

    def __init__(self, fn: Callable[[float], Any], budget_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.fn = fn
        self.budget_s = budget_s
        self.clock = clock
        self._lock = threading.Lock()
        self._flight: _Flight | None = None
        self.calls = 0  # how many times fn actually ran (tests, debugging)

    def __call__(self) -> tuple[bool, Any]:
        with self._lock:
            flight = self._flight
            if flight is None or flight.done.is_set():
                deadline = self.clock() + self.budget_s
                flight = _Flight()
                self._flight = flight
                self.calls += 1
                t = threading.Thread(target=self._run, args=(flight, deadline),
                                     name="scrape-collect", daemon=True)
                t.start()
        if not flight.done.wait(self.budget_s):
            return False, None
        if flight.error is not None:
            raise flight.error
        return True, flight.result

    def _run(self, flight: _Flight, deadline: float) -> None:
        try:
            flight.result = self.fn(deadline)
        except Exception as e:  # noqa: BLE001 - handed to the waiting callers
            flight.error = e
        finally:
            flight.done.set()


class _Flight:
    __slots__ = ("done", "result", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class SingleFlightCollector:
    """Collector over a scrape-time ``collect(deadline)``; failures never break a scrape.

    On timeout or error the scrape goes on without these families (logged; the function
    itself should lower the relevant ``_up`` gauge). ``on_done(seconds)`` gets the duration
    of each finished collection.
    """

    def __init__(self, name: str, collect: Callable[[float], list], budget_s: float,
                 on_done: Callable[[float], None] | None = None):
        self.name = name
        self._collect = collect
        self._on_done = on_done
        self.flight = SingleFlight(self._timed, budget_s)
        self.timeouts = 0
        self.errors = 0

    def _timed(self, deadline: float) -> list:
        t0 = time.perf_counter()
        try:
            return list(self._collect(deadline))
        finally:
            if self._on_done is not None:
                self._on_done(time.perf_counter() - t0)

    def describe(self):
        return []

    def collect(self):
        try:
            ok, families = self.flight()
        except Exception as e:  # noqa: BLE001 - a scrape must still answer
            self.errors += 1
            log.warning("scrape collection %s failed: %s: %s", self.name, type(e).__name__, e)
            return []
        if not ok:
            self.timeouts += 1
            log.warning("scrape collection %s exceeded its %.1f s budget", self.name,
                        self.flight.budget_s)
            return []
        return families
