"""`tradeops supervise` against real processes (no Kafka/PostgreSQL needed).

Each test starts the real supervisor as a subprocess with its own config, port and files
(tests/supervisor_sides.py) over the demo worker, and judges it from the outside: the
worker's start/exit marker lines, /status, /metrics, the CLI, and the process table.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor_sides import Ours, Prog, free_port, restart_gaps, starts, wait_for

TRADEOPS = [sys.executable, "-m", "tradeops.cli"]


@pytest.fixture
def sup(tmp_path):
    made: list[Ours] = []

    def make(progs, **kw) -> Ours:
        s = Ours(tmp_path / f"s{len(made)}", progs, **kw)
        made.append(s)
        return s.start()

    yield make
    for s in made:
        if s.proc is not None and s.proc.poll() is None:
            s.stop()


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is ``pgid`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                out.append(int(d.name))
    return out


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_crash_is_restarted_on_the_backoff_schedule(sup):
    s = sup([Prog("crashy", ["--crash-after", "0.2"], {
        "startsecs": 0.1, "backoff_initial_s": 0.3, "backoff_factor": 2.0,
        "restart_budget": 10, "budget_window_s": 60,
    })])
    marker = s.marker("crashy")
    wait_for(lambda: len(starts(marker)) >= 4, 15, "4 starts")
    gaps = restart_gaps(marker)[:3]
    # schedule 0 (first restart immediate), 0.3, 0.6; python start-up is in the gap
    for gap, delay in zip(gaps, [0.0, 0.3, 0.6], strict=True):
        assert delay - 0.02 <= gap <= delay + 0.35, (gaps, delay)
    assert gaps[0] < gaps[1] < gaps[2]
    p = s.program("crashy")
    assert p["restarts"]["exit"] >= 3 and p["restarts"]["hung"] == 0


def test_crash_loop_goes_fatal_after_the_budget_and_stays_down(sup):
    s = sup([Prog("loop", ["--crash-after", "0"], {
        "startsecs": 0.5, "backoff_initial_s": 0.05, "backoff_factor": 1.5,
        "restart_budget": 3, "budget_window_s": 60,
    })])
    p = s.wait_state("loop", "FATAL", 15)
    assert p["restarts"] == {"exit": 3, "hung": 0}
    assert "restart budget spent" in p["detail"]
    n = len(starts(s.marker("loop")))
    assert n == 4  # the first run + 3 restarts
    time.sleep(1.0)
    assert len(starts(s.marker("loop"))) == n, "a FATAL program must stay down"
    m = s.metrics()
    assert m['process_state{program="loop",state="FATAL"}'] == 1.0
    assert m['process_up{program="loop"}'] == 0.0
    assert m['process_restarts_total{program="loop",reason="exit"}'] == 3.0
    assert m['process_restarts_total{program="loop",reason="hung"}'] == 0.0
    # status CLI: exit 2 for FATAL; the operator's restart brings it back to STARTING
    cli = subprocess.run([*TRADEOPS, "--config", str(s.config), "supervise", "status"],
                         capture_output=True, text=True, timeout=30)
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert "FATAL" in cli.stdout and "loop" in cli.stdout
    r = subprocess.run([*TRADEOPS, "--config", str(s.config), "supervise", "restart", "loop"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "FATAL -> STARTING" in r.stdout, r.stdout + r.stderr
    wait_for(lambda: len(starts(s.marker("loop"))) > n, 5, "a start after the operator's restart")
    r = subprocess.run([*TRADEOPS, "--config", str(s.config), "supervise", "restart", "nope"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stderr.strip() == (
        f"tradeops: supervisor 127.0.0.1:{s.port}: no program 'nope'"
    )


def test_heartbeat_stops_hung_detected_within_timeout_plus_1s_and_restarted(sup, tmp_path):
    hb = tmp_path / "hb"
    s = sup([Prog("stuck", ["--heartbeat-file", str(hb), "--interval", "0.1", "--hang-after", "1.0"], {
        "startsecs": 0.2, "stop_grace_s": 1.0,
    }, heartbeat={"source": "file", "path": str(hb), "timeout_s": 1.0})])
    s.wait_state("stuck", "RUNNING", 10)
    marker = s.marker("stuck")
    wait_for(lambda: len(starts(marker)) >= 2, 10, "a restart of the hung program")
    first_pid, second_start = starts(marker)[0][0], starts(marker)[1][1]
    # the last beat of the first run: its mtime is overwritten by the second run, so use
    # the first run's start + hang-after as an upper bound of the last beat
    last_beat = starts(marker)[0][1] + 1.0
    assert second_start - last_beat <= 1.0 + 1.0, second_start - last_beat
    p = s.program("stuck")
    assert p["restarts"]["hung"] >= 1 and p["restarts"]["exit"] == 0
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)
    m = s.metrics()
    assert m['process_restarts_total{program="stuck",reason="hung"}'] >= 1.0
    assert m['process_heartbeat_timestamp_seconds{program="stuck"}'] > time.time() - 60


def test_sigstopped_child_is_hung_killed_and_restarted(sup, tmp_path):
    hb = tmp_path / "hb"
    s = sup([Prog("frozen", ["--heartbeat-file", str(hb), "--interval", "0.1"], {
        "startsecs": 0.2, "stop_grace_s": 2.0,
    }, heartbeat={"source": "file", "path": str(hb), "timeout_s": 1.0})])
    p = s.wait_state("frozen", "RUNNING", 10)
    pid = p["pid"]
    os.kill(pid, signal.SIGSTOP)
    t_stop = time.time()
    wait_for(lambda: len(starts(s.marker("frozen"))) >= 2, 10, "a restart after SIGSTOP")
    t_restart = starts(s.marker("frozen"))[1][1]
    assert t_restart - t_stop <= 1.0 + 1.0, t_restart - t_stop
    # SIGTERM + SIGCONT ended the stopped process without waiting for SIGKILL's grace
    assert group_gone(pid)
    p = s.wait_state("frozen", "RUNNING", 10)
    assert p["restarts"] == {"exit": 0, "hung": 1}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_leaves_no_process_of_any_child_group(sup, sig):
    s = sup([
        Prog("with-grandchild", ["--grandchild", "--interval", "0.2"], {"startsecs": 0.1}),
        Prog("ignores-term", ["--ignore-term", "--interval", "0.2"], {"startsecs": 0.1, "stop_grace_s": 0.5}),
    ])
    s.wait_state("with-grandchild", "RUNNING", 10)
    s.wait_state("ignores-term", "RUNNING", 10)
    pgids = [p["pid"] for p in s.status()["programs"]]
    # the grandchild (`sleep 1000`) is in the first group
    wait_for(lambda: len(group_members(pgids[0])) >= 2, 5, "the grandchild")
    t0 = time.monotonic()
    assert s.stop(sig) == 0
    assert time.monotonic() - t0 < 5
    for pgid in pgids:
        assert group_gone(pgid), group_members(pgid)
    data = json.loads(s.status_file.read_text())
    assert data["stopping"] and all(p["state"] == "STOPPED" for p in data["programs"])
    cli = subprocess.run([*TRADEOPS, "--config", str(s.config), "supervise", "status"],
                         capture_output=True, text=True, timeout=30)
    assert cli.returncode == 3 and "STALE: supervisor has stopped" in cli.stdout


def test_ready_and_watchdog_from_the_loop_and_child_env_stripped(sup, tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(sock_path)
    srv.settimeout(5)
    envfile = tmp_path / "child.env"
    s = Ours(tmp_path / "s", [Prog("envdump", command=[
        "/bin/sh", "-c", f"env > {envfile}; exec sleep 1000"], options={"startsecs": 0.1})],
        env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "400000"})
    # WATCHDOG_PID is unknown before the start: without it the watchdog is ours (systemd
    # sets it only for the main pid)
    s.start()
    try:
        got = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and got.count(b"WATCHDOG=1") < 4:
            got.append(srv.recv(200))
        assert any(m.startswith(b"READY=1") for m in got), got
        assert got.count(b"WATCHDOG=1") >= 4, got  # every 0.2 s (half of WATCHDOG_USEC)
        wait_for(envfile.exists, 5, "the child's env dump")
        wait_for(lambda: envfile.read_text().endswith("\n"), 5, "a complete env dump")
        env = envfile.read_text()
        assert "NOTIFY_SOCKET" not in env and "WATCHDOG_" not in env
        assert "PATH=" in env
    finally:
        s.stop()
        srv.close()


def test_unrunnable_command_is_a_failure_not_a_crash_of_the_supervisor(sup):
    s = sup([Prog("missing", command=["/nonexistent/bin/x"], options={
        "backoff_initial_s": 0.05, "restart_budget": 2, "budget_window_s": 60})])
    p = s.wait_state("missing", "FATAL", 10)
    assert "cannot run '/nonexistent/bin/x'" in p["last_exit"]
    assert s.proc.poll() is None


def test_no_programs_is_a_one_line_error(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[supervisor]\nstatus_file = "{tmp_path}/s.json"\n')
    r = subprocess.run([*TRADEOPS, "--config", str(cfg), "supervise"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip() == f"tradeops: {Path(cfg)}: [supervisor].programs: no program configured"


def test_http_health_source_hung_server_is_restarted(sup):
    port = free_port()
    s = sup([Prog("web", command=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                  options={"startsecs": 0.2, "stop_grace_s": 1.0},
                  heartbeat={"source": "http", "url": f"http://127.0.0.1:{port}/", "timeout_s": 1.5})],
            probe_interval_s=0.2)
    p = s.wait_state("web", "RUNNING", 10)
    assert p["heartbeat_detail"] == "HTTP 200"
    os.kill(p["pid"], signal.SIGSTOP)  # the port stays open, nothing answers
    p = wait_for(lambda: (q := s.program("web"))["restarts"]["hung"] == 1 and q["state"] == "RUNNING" and q,
                 10, "web restarted and answering again")
    assert p["restarts"]["exit"] == 0


def test_operator_restart_of_a_running_program_is_not_counted_as_a_failure(sup, tmp_path):
    hb = tmp_path / "hb"
    s = sup([
        Prog("svc", ["--interval", "0.2"], {"startsecs": 0.1}),
        Prog("seen", options={"mode": "watch"}, heartbeat={"source": "file", "path": str(hb)}),
    ])
    pid = s.wait_state("svc", "RUNNING", 10)["pid"]
    r = subprocess.run([*TRADEOPS, "--config", str(s.config), "supervise", "restart", "svc"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and f"stopping pid {pid}" in r.stdout, r.stdout + r.stderr
    p = wait_for(lambda: (q := s.program("svc"))["state"] == "RUNNING" and q["pid"] != pid and q,
                 10, "svc running again with a new pid")
    assert p["restarts"] == {"exit": 0, "hung": 0}
    assert len(starts(s.marker("svc"))) == 2
    assert group_gone(pid)
    r = subprocess.run([*TRADEOPS, "--config", str(s.config), "supervise", "restart", "seen"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "seen: mode watch: the supervisor does not act on it" in r.stderr


def test_listen_address_in_use_is_a_one_line_error_and_starts_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        marker = tmp_path / "m"
        cfg = tmp_path / "t.toml"
        cfg.write_text(f'[supervisor]\nlisten = "127.0.0.1:{port}"\nstatus_file = "{tmp_path}/s.json"\n'
                       f'[[supervisor.programs]]\nname = "a"\n'
                       f'command = ["{sys.executable}", "-m", "tradeops.supervisor.demo", "--marker", "{marker}"]\n')
        r = subprocess.run([*TRADEOPS, "--config", str(cfg), "supervise"], capture_output=True,
                           text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"tradeops: [supervisor].listen 127.0.0.1:{port}: cannot listen: Address already in use"
    )
    assert not marker.exists()
