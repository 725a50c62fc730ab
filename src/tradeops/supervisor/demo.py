"""A small worker for tests, benchmarks and the dev stack: it heartbeats, and can misbehave.

``python -m tradeops.supervisor.demo`` (stdlib only, so it starts fast) or
``tradeops supervise demo-worker``. It touches ``--heartbeat-file`` every ``--interval``
seconds and, on request, crashes (``--crash-after``), hangs while staying alive
(``--hang-after``: stops heartbeating), starts a grandchild in its process group
(``--grandchild``), ignores SIGTERM (``--ignore-term``), and records ``start``/``exit``
lines with times in ``--marker`` so a test can measure what the supervisor did.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def _mark(path: str | None, what: str) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{what} {os.getpid()} {time.time():.6f}\n")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo-worker", description=__doc__.splitlines()[0])
    p.add_argument("--heartbeat-file", default=None)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--crash-after", type=float, default=None, help="exit after S seconds")
    p.add_argument("--exit-code", type=int, default=1)
    p.add_argument("--crash-once", default=None, metavar="FILE",
                   help="crash only when FILE does not exist yet (creates it)")
    p.add_argument("--hang-after", type=float, default=None, help="stop heartbeating after S s")
    p.add_argument("--grandchild", action="store_true", help="start a `sleep` in our group")
    p.add_argument("--ignore-term", action="store_true")
    p.add_argument("--marker", default=None, help="append start/exit lines with times")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if a.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _mark(a.marker, "start")
    if a.grandchild:
        subprocess.Popen(["sleep", "1000"])  # noqa: S603,S607 - same process group
    crash_after = a.crash_after
    if a.crash_once is not None:
        if os.path.exists(a.crash_once):
            crash_after = None
        else:
            open(a.crash_once, "w").close()  # noqa: SIM115
    t0 = time.monotonic()
    while True:
        elapsed = time.monotonic() - t0
        if crash_after is not None and elapsed >= crash_after:
            _mark(a.marker, "exit")
            return a.exit_code
        if a.heartbeat_file and (a.hang_after is None or elapsed < a.hang_after):
            with open(a.heartbeat_file, "a"):
                os.utime(a.heartbeat_file)
        step = a.interval
        if crash_after is not None:
            step = min(step, max(crash_after - elapsed, 0.0))
        time.sleep(step)


if __name__ == "__main__":
    sys.exit(main())
