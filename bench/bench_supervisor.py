"""Supervisor benchmark: `tradeops supervise` vs supervisord (PyPI), same programs, same run.

    .venv/bin/python bench/bench_supervisor.py [--quick]

Prints, with supervisord as the anchor measured in the same run:
1. crash -> restarted, first restart: 10 programs each crash once after 1.5-2.4 s (past
   startsecs, supervisord's immediate-respawn case); gap = next `start` line - `exit` line.
2. hung detection: a program stops heartbeating (alive) at t=1 s; timeout 2 s.
3. restart storm: a program that crashes 1.1 s after each start, for 20 s.
4. idle CPU of the supervisor process itself with 20 heartbeating programs, over 20 s.
Also a spawn anchor: the same worker started directly (Popen -> its `start` line).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from supervisor_sides import DEMO, Ours, Prog, Supervisord, markers, restart_gaps, starts  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` (schedstat: nanoseconds on a CPU)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def spawn_anchor(tmp: Path, n: int = 10) -> float:
    gaps = []
    for i in range(n):
        m = tmp / f"anchor{i}"
        t0 = time.time()
        p = subprocess.Popen([*DEMO, "--marker", str(m), "--crash-after", "0"])
        p.wait()
        gaps.append(starts(m)[0][1] - t0)
    return statistics.median(gaps)


def crash_restart(tmp: Path, which: str, n: int) -> list[float]:
    progs = [
        Prog(f"c{i}", ["--crash-once", str(tmp / which / f"once{i}"), "--crash-after",
                       f"{1.5 + 0.1 * i:.1f}", "--interval", "0.5"])
        for i in range(n)
    ]
    sup = Ours(tmp / which, progs) if which == "ours" else Supervisord(tmp / which, progs)
    sup.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all(len(starts(sup.marker(p.name))) >= 2 for p in progs):
                break
            time.sleep(0.1)
    finally:
        sup.stop()
    gaps = []
    for p in progs:
        g = restart_gaps(sup.marker(p.name))
        if g:
            gaps.append(g[0])
    return gaps


def hung(tmp: Path, which: str, wait_s: float) -> float | None:
    hb = tmp / which / "hb"
    (tmp / which).mkdir(parents=True, exist_ok=True)
    args = ["--heartbeat-file", str(hb), "--interval", "0.1", "--hang-after", "1"]
    progs = [Prog("hang", args, {"startsecs": 0.2},
                  heartbeat={"source": "file", "path": str(hb), "timeout_s": 2.0})]
    sup = Ours(tmp / which, progs) if which == "ours" else Supervisord(tmp / which, progs)
    sup.start()
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and len(starts(sup.marker("hang"))) < 2:
            time.sleep(0.05)
    finally:
        sup.stop()
    s = starts(sup.marker("hang"))
    if len(s) < 2:
        return None
    return s[1][1] - (s[0][1] + 1.0)  # restarted - last heartbeat


def storm(tmp: Path, which: str, window: float) -> int:
    progs = [Prog("storm", ["--crash-after", "1.1"])]  # ours: default policy
    sup = Ours(tmp / which, progs) if which == "ours" else Supervisord(tmp / which, progs)
    sup.start()
    time.sleep(window)
    sup.stop()
    return len([m for m in markers(sup.marker("storm")) if m[0] == "start"])


def idle_cpu(tmp: Path, which: str, n: int, window: float) -> float:
    progs = []
    for i in range(n):
        hb = tmp / which / f"hb{i}"
        progs.append(Prog(f"w{i}", ["--heartbeat-file", str(hb), "--interval", "1"],
                          heartbeat={"source": "file", "path": str(hb), "timeout_s": 10.0}))
    (tmp / which).mkdir(parents=True, exist_ok=True)
    sup = Ours(tmp / which, progs) if which == "ours" else Supervisord(tmp / which, progs)
    sup.start()
    try:
        time.sleep(4.0)  # all started (startsecs 1) and settled
        pid = sup.proc.pid
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(window)
        c1, t1 = cpu_seconds(pid), time.monotonic()
    finally:
        sup.stop()
    return 100.0 * (c1 - c0) / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller windows (smoke run)")
    a = ap.parse_args()
    n_crash = 5 if a.quick else 10
    window = 8.0 if a.quick else 20.0
    with tempfile.TemporaryDirectory(prefix="bench-sup-") as d:
        tmp = Path(d)
        anchor = spawn_anchor(tmp)
        print(f"spawn anchor (worker started directly, Popen -> start line): {anchor * 1000:.0f} ms")

        ours = crash_restart(tmp, "ours", n_crash)
        theirs = crash_restart(tmp, "supervisord", n_crash)
        mo, mt = statistics.median(ours), statistics.median(theirs)
        print(f"1. crash -> restarted, first restart, median of {len(ours)}/{len(theirs)}: "
              f"ours {mo * 1000:.0f} ms (max {max(ours) * 1000:.0f}), supervisord {mt * 1000:.0f} ms "
              f"(max {max(theirs) * 1000:.0f}); ours/supervisord = {mo / mt:.2f}; target < 500 ms: "
              f"{'met' if mo < 0.5 else 'NOT met'}")

        ho = hung(tmp / "h", "ours", 10)
        ht = hung(tmp / "h", "supervisord", 10)
        ours_h = f"{ho:.2f} s after the last heartbeat" if ho is not None else "NOT detected"
        theirs_h = f"{ht:.2f} s" if ht is not None else "not detected within 10 s"
        print(f"2. hung (alive, no heartbeat; timeout 2 s) -> restarted: ours {ours_h}, "
              f"supervisord {theirs_h}")

        so = storm(tmp / "s", "ours", window)
        st = storm(tmp / "s", "supervisord", window)
        print(f"3. crash 1.1 s after each start, {window:g} s: starts ours {so} (backoff, then FATAL "
              f"after the budget of 5), supervisord {st} (respawns forever)")

        co = idle_cpu(tmp / "i", "ours", 20, window)
        ct = idle_cpu(tmp / "i", "supervisord", 20, window)
        print(f"4. idle CPU of the supervisor process, 20 programs, {window:g} s: ours {co:.2f}% "
              f"of a core (poll 0.2 s, 20 file heartbeats), supervisord {ct:.3f}% "
              f"(1 s loop, no liveness checks); ours/supervisord = {co / ct:.1f}; target < 1%: "
              f"{'met' if co < 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
