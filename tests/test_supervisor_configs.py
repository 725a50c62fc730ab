"""supervisor/: the supervisord configs parse with supervisord's own config reader
(supervisor 4.x, a dev dependency) and keep the settings the README promises."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from supervisor import options  # supervisor 4.x: a [dev] dependency

REPO = Path(__file__).resolve().parents[1]
SUP = REPO / "supervisor"
UNITS = REPO / "systemd"


@pytest.fixture
def parsed(tmp_path):
    """supervisord-tradeops.conf as supervisord reads it; log folder and user rewritten to
    this machine (the shipped values are /var/log/tradeops and user tradeops)."""
    user = pwd.getpwuid(os.getuid()).pw_name
    for f in SUP.glob("*.conf"):
        text = f.read_text().replace("/var/log/tradeops", str(tmp_path / "log"))
        text = text.replace("/run/tradeops-supervisord.pid", str(tmp_path / "supervisord.pid"))
        text = text.replace("user=tradeops", f"user={user}")
        (tmp_path / f.name).write_text(text)
    (tmp_path / "log").mkdir()
    opts = options.ServerOptions()
    opts.realize(args=["-c", str(tmp_path / "supervisord-tradeops.conf")])
    return opts


def test_every_daemon_has_a_program_in_the_group(parsed):
    groups = {g.name: g for g in parsed.process_group_configs}
    assert set(groups) == {"tradeops"}
    programs = {p.name: p for p in groups["tradeops"].process_configs}
    daemons = {p.stem for p in UNITS.glob("tradeops-exporter-*.service")} | {"tradeops-supervisor"}
    assert set(programs) == daemons


def test_program_settings(parsed):
    (group,) = parsed.process_group_configs
    for p in group.process_configs:
        assert p.command.startswith("/usr/bin/tradeops --config /etc/tradeops/tradeops.toml "), p.command
        assert p.startsecs == 10 and p.startretries == 10
        assert p.stopasgroup and p.killasgroup and p.stopwaitsecs == 20
        assert p.stdout_logfile_maxbytes == 50 * 1024 * 1024 and p.stdout_logfile_backups == 10
        assert p.redirect_stderr
    # the same command line as the systemd unit
    for p in group.process_configs:
        unit = (UNITS / f"{p.name}.service").read_text()
        args = p.command.split("tradeops.toml ", 1)[1]
        assert f"ExecStart=/usr/bin/tradeops {args}\n" in unit


def test_control_server_listens_on_localhost_only(parsed):
    (server,) = parsed.server_configs
    assert server["family"] == 2 and server["host"] == "127.0.0.1"  # AF_INET, loopback


def test_readme_names_what_supervisord_cannot_do():
    text = (SUP / "README.md").read_text()
    for topic in ("No liveness check", "No readiness", "No backoff once RUNNING", "No sandbox", "No timers"):
        assert topic in text
