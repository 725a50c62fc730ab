"""Print results: one line per check (text) or a JSON document; Nagios exit codes.

Text::

    CRIT    kafka: no metadata from 127.0.0.1:1 within 2.0s: ... -> Kafka at ... is down ...
    OK      postgres: connected to 127.0.0.1:15432/tradeops (server 15.4) in 12 ms
    doctor: CRIT (2 CRIT, 0 WARN, 0 UNKNOWN, 11 OK) in 2.1s

JSON (``--json``): ``{"status", "code", "duration_s", "counts", "results": [...]}`` with
each result's ``name, family, status, code, finding, advice, duration_s, details, target``.
Exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (overall: CRIT > WARN > UNKNOWN > OK).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .result import Result, Status, overall

_COLOURS = {Status.OK: "green", Status.WARN: "yellow", Status.CRIT: "red", Status.UNKNOWN: "magenta"}


def counts(results: Sequence[Result]) -> dict[str, int]:
    c = {s.name: 0 for s in Status}
    for r in results:
        c[r.status.name] += 1
    return c


def summary(results: Sequence[Result], duration_s: float) -> str:
    st = overall(r.status for r in results)
    c = counts(results)
    return (f"doctor: {st.name} ({c['CRIT']} CRIT, {c['WARN']} WARN, {c['UNKNOWN']} UNKNOWN, "
            f"{c['OK']} OK) in {duration_s:.1f}s")


def text(results: Sequence[Result], duration_s: float, colour: bool = False) -> str:
    lines = []
    for r in results:
        line = r.line()
        if colour:
            import click

            head = click.style(f"{r.status.name:<7}", fg=_COLOURS[r.status], bold=r.status != Status.OK)
            line = head + line[7:]
        lines.append(line)
    lines.append(summary(results, duration_s))
    return "\n".join(lines)


def to_json(results: Sequence[Result], duration_s: float) -> str:
    st = overall(r.status for r in results)
    doc = {"status": st.name, "code": int(st), "duration_s": round(duration_s, 3),
           "counts": counts(results), "results": [r.to_json() for r in results]}
    return json.dumps(doc, indent=1, default=str)
