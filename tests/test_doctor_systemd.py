"""The doctor's systemd check, journal reading and unit restart under a real systemd (a
throwaway one booted in private namespaces, tests/systemd_ns.py; the host's .venv is
visible in it because its root is an overlay of the host's /)."""

from __future__ import annotations

import json
import sys

import pytest

from systemd_ns import SystemdContainer
from tradeops.doctor.logs import journal_line

pytestmark = pytest.mark.systemd

PY = sys.executable
UNITS = {
    "dr-ok.service": "[Service]\nExecStart=/bin/sh -c 'echo doctor-ok-started; exec sleep 1000'\n",
    "dr-fail.service": "[Service]\nExecStart=/bin/sh -c 'echo doctor-fail-dying; exit 3'\n",
    "dr-once.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
}
CONFIG = """
[doctor]
prometheus_url = ""
pushgateway_url = ""
units = ["dr-ok.service", "dr-fail.service", "dr-once.service", "dr-missing.service"]
"""


@pytest.fixture(scope="module")
def box():
    with SystemdContainer("tradeops-doctor") as b:
        for name, text in UNITS.items():
            b.path(f"/etc/systemd/system/{name}").write_text(text)
        b.path("/etc/doctor-test.toml").write_text(CONFIG)
        b.run("systemctl", "daemon-reload")
        b.run("systemctl", "start", "dr-ok.service", "dr-once.service")
        b.run("systemctl", "start", "dr-fail.service", check=False)
        yield b


def test_units_journal_and_restart(box):
    r = box.run(PY, "-m", "tradeops.cli", "--config", "/etc/doctor-test.toml", "doctor", "--check",
                "--json", "--only", "systemd", check=False)
    assert r.returncode == 2, r.stderr
    res = {x["name"]: x for x in json.loads(r.stdout)["results"]}
    assert set(res) == {"unit:dr-ok.service", "unit:dr-fail.service", "unit:dr-once.service",
                        "unit:dr-missing.service"}  # own tradeops units: not enabled here
    ok = res["unit:dr-ok.service"]
    assert ok["status"] == "OK" and ok["finding"].startswith("active/running for ")
    assert ok["target"] == {"kind": "unit", "name": "dr-ok.service", "log_file": ""}
    fail = res["unit:dr-fail.service"]
    assert fail["status"] == "CRIT" and fail["finding"].startswith("failed/failed")
    assert "(result exit-code)" in fail["finding"]
    assert "`journalctl -u dr-fail.service -n 100`" in fail["advice"]
    assert res["unit:dr-once.service"]["status"] == "OK"
    assert res["unit:dr-once.service"]["finding"].endswith("(last run succeeded)")
    assert res["unit:dr-missing.service"]["status"] == "CRIT"
    # the log pane's journal format, from this systemd's real journal
    j = box.run("journalctl", "-u", "dr-fail.service", "-o", "json", "--no-pager")
    lines = [journal_line(json.loads(x)) for x in j.stdout.splitlines()]
    assert any(x.endswith("doctor-fail-dying") for x in lines), lines
    # restart as an unprivileged user: the action says it needs privileges
    probe = ("from tradeops.doctor.actions import restart_unit; "
             "print(restart_unit('dr-ok.service')[1])")
    r = box.run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PY, "-c", probe, check=False)
    assert r.stdout.strip() == ("restarting dr-ok.service needs privileges (you are not root and no polkit "
                                "rule allows it): run `sudo systemctl restart dr-ok.service`"), r
    before = box.show("dr-ok.service", "MainPID")["MainPID"]
    r = box.run(PY, "-c", probe.replace("[1]", ""), check=False)
    assert r.stdout.strip() == "(True, 'dr-ok.service restarted')", r
    assert box.show("dr-ok.service", "MainPID")["MainPID"] != before
