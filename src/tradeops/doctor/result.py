"""A check's result: status, a short finding, advice that says what to do.

Status values are the Nagios plugin states (their value is the plugin exit code). The
run's overall status (:func:`overall`) ranks CRIT > WARN > UNKNOWN > OK: a known problem
is reported before "could not tell".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(enum.IntEnum):
    OK = 0
    WARN = 1
    CRIT = 2
    UNKNOWN = 3


# overall severity rank (not the exit code): CRIT > WARN > UNKNOWN > OK
_RANK = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARN: 2, Status.CRIT: 3}


def worse(a: Status, b: Status) -> Status:
    return a if _RANK[a] >= _RANK[b] else b


def overall(statuses) -> Status:
    out = Status.OK
    for s in statuses:
        out = worse(out, s)
    return out


@dataclass
class Target:
    """What the TUI can act on for a result: read its log, restart it.

    ``kind``: ``unit`` (systemd unit ``name``), ``program`` (a program of the tradeops
    supervisor), ``supervisord`` (a supervisord program), ``file`` (only a log file).
    """

    kind: str
    name: str
    log_file: str = ""

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "log_file": self.log_file}


@dataclass
class Result:
    name: str  # e.g. "kafka.topics", "exporter:gateway-oms"
    status: Status
    finding: str
    advice: str = ""
    family: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    target: Target | None = None
    duration_s: float = 0.0

    def line(self) -> str:
        """One line: ``CRIT  kafka  broker 127.0.0.1:1 not reachable ...: advice``."""
        text = f"{self.status.name:<7} {self.name}: {self.finding}"
        if self.advice and self.status != Status.OK:
            text += f" -> {self.advice}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "status": self.status.name,
            "code": int(self.status),
            "finding": self.finding,
            "advice": self.advice,
            "duration_s": round(self.duration_s, 3),
            "details": self.details,
            "target": self.target.to_json() if self.target else None,
        }


def ok(name: str, finding: str, **kw: Any) -> Result:
    return Result(name, Status.OK, finding, **kw)


def warn(name: str, finding: str, advice: str, **kw: Any) -> Result:
    return Result(name, Status.WARN, finding, advice, **kw)


def crit(name: str, finding: str, advice: str, **kw: Any) -> Result:
    return Result(name, Status.CRIT, finding, advice, **kw)


def unknown(name: str, finding: str, advice: str = "", **kw: Any) -> Result:
    return Result(name, Status.UNKNOWN, finding, advice, **kw)


def one_line(exc: BaseException) -> str:
    """An exception as one line: ``TypeName: first line of its message``."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
