"""Side by side with supervisord (PyPI `supervisor`, installed by the dev extras) on the
same real programs, at the same time. Qualitative facts only (timings are in
bench/bench_supervisor.py and docs/benchmarks.md):

- a program that hangs (stays alive, stops heartbeating) is restarted by ours, never by
  supervisord (it has no liveness check);
- a program that crashes a little after `startsecs` is respawned by supervisord again and again,
  forever (a restart storm); ours backs off and goes FATAL after its budget, and stays down.
"""

from __future__ import annotations

import time

from supervisor_sides import Ours, Prog, Supervisord, starts, wait_for


def test_hung_detected_and_no_storm_where_supervisord_storms(tmp_path):
    hb_ours, hb_theirs = tmp_path / "hb-ours", tmp_path / "hb-theirs"
    storm = ["--crash-after", "1.1"]
    ours = Ours(tmp_path / "ours", [
        Prog("storm", storm, {"startsecs": 1.0, "backoff_initial_s": 0.3, "restart_budget": 3,
                              "budget_window_s": 60}),
        Prog("hang", ["--heartbeat-file", str(hb_ours), "--interval", "0.1", "--hang-after", "1"],
             {"startsecs": 0.2}, heartbeat={"source": "file", "path": str(hb_ours), "timeout_s": 1.0}),
    ])
    theirs = Supervisord(tmp_path / "theirs", [
        Prog("storm", storm),
        Prog("hang", ["--heartbeat-file", str(hb_theirs), "--interval", "0.1", "--hang-after", "1"]),
    ])
    theirs.start()
    ours.start()
    try:
        wait_for(lambda: ours.program("storm")["state"] == "FATAL", 15, "ours: storm FATAL")
        fatal_at = time.time()
        time.sleep(3.0)
        # ours: first run + 3 restarts, then nothing more
        ours_storm = starts(ours.marker("storm"))
        assert len(ours_storm) == 4 and ours_storm[-1][1] < fatal_at
        # supervisord: still respawning after ours gave up (it has no budget once RUNNING)
        theirs_storm = starts(theirs.marker("storm"))
        assert len(theirs_storm) >= 3, theirs_storm
        assert theirs_storm[-1][1] > fatal_at, "supervisord should still be respawning"
        # hung: ours restarted it (reason hung); supervisord never restarted it
        assert ours.program("hang")["restarts"]["hung"] >= 1
        assert len(starts(ours.marker("hang"))) >= 2
        assert len(starts(theirs.marker("hang"))) == 1
        assert time.time() - hb_theirs.stat().st_mtime > 3.0  # hung for seconds, unnoticed
    finally:
        ours.stop()
        theirs.stop()
