"""Supervisor pure logic, no services: state table, backoff and budget, child env,
systemd state mapping, sd_notify, status table and exit codes, metrics exposition,
config errors for [supervisor] programs."""

from __future__ import annotations

import os
import socket
import time

import pytest

from tradeops import config as config_mod
from tradeops.sd_notify import Notifier, WatchdogTimer
from tradeops.supervisor import cli as sup_cli
from tradeops.supervisor import metrics, states
from tradeops.supervisor.heartbeat import FileSource, parse_systemctl_show, reading_from_unit
from tradeops.supervisor.policy import RestartPolicy
from tradeops.supervisor.process import child_env
from tradeops.supervisor.states import ProcessState as S


def test_transition_table_guards_every_edge():
    assert states.check("p", S.STOPPED, S.STARTING) is S.STARTING
    assert states.check("p", S.RUNNING, S.HUNG) is S.HUNG
    assert states.check("p", S.BACKOFF, S.STARTING) is S.STARTING
    for bad in [(S.STOPPED, S.RUNNING), (S.FATAL, S.RUNNING), (S.BACKOFF, S.RUNNING),
                (S.RUNNING, S.STARTING), (S.STOPPED, S.FATAL)]:
        with pytest.raises(states.IllegalTransition, match=f"{bad[0].value} -> {bad[1].value}"):
            states.check("p", *bad)
    # every state is in the table and only FATAL/STOPPED need an operator to leave
    assert set(states.TRANSITIONS) == set(S)
    assert states.TRANSITIONS[S.FATAL] == {S.STARTING, S.STOPPED}


def test_backoff_schedule_first_immediate_then_exponential_capped():
    p = RestartPolicy(initial_s=0.5, factor=2.0, max_s=3.0, budget=100)
    assert p.schedule(6) == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]
    q = RestartPolicy(initial_s=0.5, factor=3.0, max_s=30.0, first_immediate=False)
    assert q.schedule(3) == [0.5, 1.5, 4.5]


def test_streak_resets_after_a_long_run_and_budget_goes_fatal():
    p = RestartPolicy(initial_s=1.0, factor=2.0, max_s=30, budget=3, window_s=10, reset_after_s=60)
    t = 100.0
    delays = []
    for _ in range(3):
        d = p.on_failure(t, run_lasted_s=1.0)
        delays.append(d)
        p.on_restart(t)
        t += 1
    assert delays == [0.0, 1.0, 2.0]
    assert p.on_failure(t, run_lasted_s=1.0) is None  # 4th failure within 10 s: FATAL
    # outside the window the budget is available again; a long run resets the streak
    assert p.on_failure(t + 20, run_lasted_s=61.0) == 0.0
    p.reset()
    assert p.in_window(t) == 0 and p.streak == 0


def test_child_env_strips_systemd_contract():
    base = {"PATH": "/bin", "NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2",
            "LISTEN_FDS": "3", "LISTEN_PID": "4", "HOME": "/root"}
    env = child_env(base, {"APP": "1", "WATCHDOG_USEC": "9"})
    assert env == {"PATH": "/bin", "HOME": "/root", "APP": "1"}


def test_systemd_unit_state_maps_to_heartbeat():
    props = parse_systemctl_show("ActiveState=active\nSubState=running\nNRestarts=2\nMainPID=7\n")
    r = reading_from_unit(props, None, 123.0)
    assert r.last == 123.0 and not r.exited and "NRestarts=2" in r.detail
    r = reading_from_unit({"ActiveState": "failed", "SubState": "failed"}, 100.0, 200.0)
    assert r.exited and r.last == 100.0
    r = reading_from_unit({"ActiveState": "activating"}, 100.0, 200.0)
    assert not r.exited and r.last == 100.0


def test_file_source_reads_mtime(tmp_path):
    f = tmp_path / "hb"
    src = FileSource(str(f))
    r = src.read(time.time())
    assert r.last is None and r.known
    f.touch()
    os.utime(f, (1000.0, 1000.0))
    assert src.read(time.time()).last == 1000.0


def test_notifier_sends_ready_and_watchdog_within_half_interval(tmp_path):
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(1)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    now = [10.0]
    n, w = Notifier.from_env(env), WatchdogTimer.from_env(env, clock=lambda: now[0])
    assert w.interval_s is not None and w.interval_s <= 1.0  # at least every half of WATCHDOG_USEC
    n.notify("READY=1")
    assert srv.recv(100) == b"READY=1"
    assert w.next_due() == 10.0 and w.due()
    n.notify("WATCHDOG=1")
    assert srv.recv(100) == b"WATCHDOG=1"
    now[0] = 10.4
    assert not w.due()  # not due again yet: nothing to send
    assert w.next_due() == 10.5
    now[0] = 10.5
    assert w.due()
    # WATCHDOG_PID of another process: the watchdog is not ours
    assert not WatchdogTimer.from_env({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).enabled


def _snap(**states_by_name):
    now = time.time()
    return {
        "supervisor_pid": os.getpid(), "updated": now, "stopping": False,
        "dependencies": {"kafka": False},
        "invalid_heartbeats": 2,
        "programs": [
            {"name": n, "mode": "spawn", "state": st, "since": now - 5, "pid": 42,
             "heartbeat_source": "kafka", "heartbeat_known": False, "last_heartbeat": now - 3,
             "heartbeat_detail": "kafka 127.0.0.1:1: down", "restarts": {"exit": 2, "hung": 1},
             "next_start_in_s": None, "detail": "x"}
            for n, st in states_by_name.items()
        ],
    }


def test_status_exit_codes_and_table():
    assert sup_cli.status_exit_code(_snap(a="RUNNING", b="RUNNING")) == 0
    assert sup_cli.status_exit_code(_snap(a="RUNNING", b="BACKOFF")) == 1
    assert sup_cli.status_exit_code(_snap(a="HUNG", b="FATAL")) == 2
    table = sup_cli.render_table(_snap(oms="RUNNING"))
    assert "oms" in table and "kafka unknown" in table and "2/1" in table
    assert "kafka DOWN" in table


def test_stale_status_file_is_reported():
    snap = _snap(a="RUNNING")
    assert sup_cli.stale_reason(snap, "/run/x.json") == ""
    assert sup_cli.stale_reason(snap, "http://x/status") == ""
    assert "not updated" in sup_cli.stale_reason(snap, "/run/x.json", now=time.time() + 60)
    snap["supervisor_pid"] = 2**22 + 12345  # beyond pid_max: never running
    assert "not running" in sup_cli.stale_reason(snap, "/run/x.json")


def test_metrics_exposition_from_snapshot():
    text = metrics.render(lambda: _snap(md="FATAL")).decode()
    assert 'process_up{program="md"} 0.0' in text
    assert 'process_restarts_total{program="md",reason="exit"} 2.0' in text
    assert 'process_restarts_total{program="md",reason="hung"} 1.0' in text
    assert 'process_state{program="md",state="FATAL"} 1.0' in text
    assert 'process_state{program="md",state="RUNNING"} 0.0' in text
    assert sum(f'state="{s.value}"' in text for s in S) == len(S)
    assert 'supervisor_up{dependency="kafka"} 0.0' in text
    assert 'supervisor_invalid_heartbeats_total{source="kafka"} 2.0' in text
    assert "process_heartbeat_timestamp_seconds{program=\"md\"}" in text


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('name = "a"\nmode = "watch"',
         '[supervisor].programs[0].heartbeat.source: required when mode = "watch"'),
        ('name = "a"\ncommand = ["x"]\nheartbeat = { source = "file" }',
         '[supervisor].programs[0].heartbeat.path: required when heartbeat.source = "file"'),
        ('name = "a"\ncommand = ["x"]\nbackoff_factor = 0.5',
         "[supervisor].programs[0].backoff_factor: expected a number >= 1, got 0.5"),
        ('name = "a"\ncommand = ["x"]\nrestart_budget = 0',
         "[supervisor].programs[0].restart_budget: expected an integer >= 1, got 0"),
        ('name = "a"\ncommand = ["x"]\nheartbeat = { source = "http", url = "localhost:1" }',
         '[supervisor].programs[0].heartbeat.url: expected an http(s):// URL, got "localhost:1"'),
        ('name = "a"\nmode = "forever"',
         "[supervisor].programs[0].mode: invalid value"),
    ],
)
def test_program_config_errors_are_one_line(body, error):
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.loads(f"[[supervisor.programs]]\n{body}\n", name="t.toml")
    msg = str(e.value)
    assert msg.startswith(f"t.toml: {error}"), msg
    assert "\n" not in msg


class _ScriptedSource:
    """The heartbeat-source interface fed with chosen readings: this tests the supervisor's
    judgement of readings (pure logic); the real sources are exercised in the
    process/Kafka/systemd tests."""

    kind = "kafka"

    def __init__(self):
        self.reading = None

    def read(self, now):
        return self.reading


def test_kafka_unknown_is_never_hung_and_recovery_gets_a_full_timeout():
    from tradeops.supervisor.heartbeat import Reading
    from tradeops.supervisor.supervisor import Supervisor

    cfg = config_mod.loads(
        '[supervisor]\nstatus_file = ""\n[[supervisor.programs]]\nname = "oms"\nmode = "watch"\n'
        'heartbeat = { source = "kafka", timeout_s = 10.0 }\n', name="t.toml")
    sup = Supervisor(cfg, http=False)
    p = sup.programs["oms"]
    src = _ScriptedSource()
    p.source = src
    t = time.time()
    sup.started = t - 100
    sup._start(p, 0.0, adopt=True)
    src.reading = Reading(last=t - 1)
    sup.step(p, 1.0, t)
    assert p.state is S.RUNNING
    # Kafka away for a minute: unknown, so no verdict at all
    src.reading = Reading(last=t - 1, known=False, detail="kafka down")
    sup.step(p, 61.0, t + 60)
    assert p.state is S.RUNNING
    # Kafka back at t+60 (floor): the last beat is 60 s old but the age counts from t+60
    src.reading = Reading(last=t - 1, floor=t + 60)
    sup.step(p, 65.0, t + 65)
    assert p.state is S.RUNNING
    sup.step(p, 71.0, t + 71)  # a full timeout after Kafka came back, still nothing: hung
    assert p.state is S.HUNG
