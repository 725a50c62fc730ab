"""The supervisor under a real systemd (a throwaway one in private namespaces,
tests/systemd_ns.py): as a Type=notify unit with WatchdogSec (READY=1 and WATCHDOG=1 from
its main loop), restarting units it does not own in `systemd` mode (a SIGSTOPped unit by
its heartbeat file, a failed unit by the `systemd` heartbeat source), and a spawned child
whose output goes to the journal under its own identifier, without NOTIFY_SOCKET."""

from __future__ import annotations

import json
import sys
import time
import urllib.request

import pytest

from supervisor_sides import free_port, wait_for
from systemd_ns import SystemdContainer

pytestmark = pytest.mark.systemd

PY = sys.executable  # the host's .venv: the container's root is an overlay of the host's /


@pytest.fixture(scope="module")
def box():
    with SystemdContainer("tradeops-sup") as b:
        yield b


def _units(box, port: int) -> None:
    units = {
        "hb-demo.service": f"[Service]\nExecStart={PY} -m tradeops.supervisor.demo "
                           "--heartbeat-file /run/hb-demo.hb --interval 0.2\n",
        "crashy.service": f"[Service]\nExecStart={PY} -m tradeops.supervisor.demo --crash-after 1.5\n",
        "sup-test.service": (
            "[Service]\nType=notify\nNotifyAccess=main\nWatchdogSec=2\n"
            f"ExecStart={PY} -m tradeops.cli --config /etc/sup-test.toml supervise\n"
        ),
    }
    for name, text in units.items():
        box.path(f"/etc/systemd/system/{name}").write_text(text)
    box.path("/etc/sup-test.toml").write_text(f"""
[supervisor]
listen = "127.0.0.1:{port}"
status_file = "/run/sup/status.json"
probe_interval_s = 0.3

[[supervisor.programs]]
name = "hb-demo"
mode = "systemd"
unit = "hb-demo.service"
startsecs = 0.2
heartbeat = {{ source = "file", path = "/run/hb-demo.hb", timeout_s = 1.5 }}

[[supervisor.programs]]
name = "crashy"
mode = "systemd"
unit = "crashy.service"
startsecs = 0.2
heartbeat = {{ source = "systemd", timeout_s = 10.0 }}

[[supervisor.programs]]
name = "envdump"
command = ["/bin/sh", "-c", "env > /run/envdump; echo hello-from-child; exec sleep 1000"]
startsecs = 0.2
""")
    box.run("systemctl", "daemon-reload")


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
        return json.loads(r.read())


def _prog(port: int, name: str) -> dict:
    return next(p for p in _status(port)["programs"] if p["name"] == name)


def test_supervisor_as_notify_unit_restarts_systemd_units(box):
    port = free_port()
    _units(box, port)
    box.run("systemctl", "start", "hb-demo.service", "crashy.service")
    t0 = time.monotonic()
    # Type=notify: `systemctl start` returns once READY=1 came from the main loop
    box.run("systemctl", "start", "sup-test.service", timeout=60)
    sup_pid = box.show("sup-test.service", "MainPID")["MainPID"]
    assert box.show("sup-test.service", "ActiveState")["ActiveState"] == "active"

    wait_for(lambda: _prog(port, "hb-demo")["state"] == "RUNNING", 15, "hb-demo RUNNING")
    old_pid = box.show("hb-demo.service", "MainPID")["MainPID"]
    box.run("kill", "-STOP", old_pid)  # hung: alive, no heartbeat
    wait_for(lambda: _prog(port, "hb-demo")["restarts"]["hung"] >= 1, 10, "hb-demo restarted as hung")

    def restarted() -> bool:
        s = box.show("hb-demo.service", "ActiveState", "MainPID")
        return s["ActiveState"] == "active" and s["MainPID"] not in (old_pid, "0")

    wait_for(restarted, 10, "hb-demo active with a new main pid")
    wait_for(lambda: _prog(port, "hb-demo")["state"] == "RUNNING", 10, "hb-demo RUNNING again")

    # crashy exits 1 after 1.5 s (no Restart=): the systemd source says failed -> restart
    wait_for(lambda: _prog(port, "crashy")["restarts"]["exit"] >= 1, 15, "crashy restarted")
    assert "failed" in _prog(port, "crashy")["last_exit"]

    # the spawned child: no NOTIFY_SOCKET/WATCHDOG_*, output in the journal as tradeops-envdump
    env = box.path("/run/envdump").read_text()
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_" not in env
    wait_for(lambda: "hello-from-child" in box.run(
        "journalctl", "--no-pager", "-t", "tradeops-envdump", check=False).stdout, 10,
        "the child's line in the journal")

    # WatchdogSec=2: still the same process after well over 2 watchdog periods
    while time.monotonic() - t0 < 6.0:
        time.sleep(0.5)
    shown = box.show("sup-test.service", "ActiveState", "MainPID", "NRestarts")
    assert shown == {"ActiveState": "active", "MainPID": sup_pid, "NRestarts": "0"}, shown

    box.run("systemctl", "stop", "sup-test.service", timeout=60)
    assert box.run("pgrep", "-f", "sleep 1000", check=False).returncode == 1  # no child left
    assert "Watchdog timeout" not in box.journal("sup-test.service")

