"""sd_notify(3) for every tradeops daemon: READY/STATUS/STOPPING and watchdog pings.

One implementation shared by the exporters and the supervisor. Written here rather than
with the `sdnotify` package because that one ignores WATCHDOG_USEC/WATCHDOG_PID and
swallows send errors silently. The work loop itself asks :class:`WatchdogTimer` whether a
ping is due (no pinging thread, which would hide a stuck loop).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("tradeops.sd_notify")


class Notifier:
    """sd_notify(3) over the NOTIFY_SOCKET datagram socket; a no-op outside systemd.

    Written here rather than with the `sdnotify` package because that one ignores
    WATCHDOG_USEC/WATCHDOG_PID and swallows errors silently. A send failure is logged once.
    """

    def __init__(self, socket_path: str | None):
        self.path = socket_path or None
        self._sock: socket.socket | None = None
        self._warned = False
        if self.path:
            addr = self.path
            if addr.startswith("@"):  # abstract namespace
                addr = "\0" + addr[1:]
            self._addr = addr
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self._addr)
            return True
        except OSError as e:
            if not self._warned:
                log.warning("sd_notify to %s failed: %s", self.path, e.strerror)
                self._warned = True
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WatchdogTimer:
    """When the work loop must send WATCHDOG=1.

    systemd kills the unit when no ping arrives within WATCHDOG_USEC; we ping at least
    every *half* of it. The loop calls :meth:`due` each iteration; pings are sent when a
    quarter of the timeout has elapsed, so a loop iteration of up to a quarter still keeps
    the gap under half. :meth:`max_iteration_s` tells the loop how long one blocking poll
    may last. Disabled (never due) when WATCHDOG_USEC is absent/invalid or WATCHDOG_PID
    names another process.
    """

    def __init__(self, usec: int | None, clock: Callable[[], float] = time.monotonic):
        self.timeout_s = usec / 1e6 if usec and usec > 0 else None
        self.clock = clock
        self._last: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, pid: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> WatchdogTimer:
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        wpid = env.get("WATCHDOG_PID", "")
        if wpid and wpid.isdigit() and int(wpid) != pid:
            return cls(None, clock)
        usec = env.get("WATCHDOG_USEC", "")
        return cls(int(usec) if usec.isdigit() else None, clock)

    @property
    def enabled(self) -> bool:
        return self.timeout_s is not None

    @property
    def interval_s(self) -> float | None:
        """Time between pings (a quarter of the timeout)."""
        return None if self.timeout_s is None else self.timeout_s / 4

    def max_iteration_s(self, default: float) -> float:
        return default if self.interval_s is None else min(default, self.interval_s)

    def due(self) -> bool:
        """True when a ping is due now; records it as sent."""
        if self.timeout_s is None:
            return False
        now = self.clock()
        if self._last is None or now - self._last >= self.timeout_s / 4:
            self._last = now
            return True
        return False

    def next_due(self) -> float | None:
        """Clock time at which the next ping is due (None when the watchdog is off)."""
        if self.timeout_s is None:
            return None
        return self.clock() if self._last is None else self._last + self.timeout_s / 4
