"""supervisor/: the supervisord configs parse with supervisord's own config reader
(supervisor 4.x, a dev dependency) and keep the settings the README promises."""

from __future__ import annotations

import contextlib
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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_supervisord_runs_the_shipped_programs(tmp_path, stack_cfg):
    """The shipped program configs under a real supervisord (only the command's path, the
    config file, the user, the folders and the ports changed for this machine): every
    daemon reaches RUNNING (up for startsecs=10), answers /metrics, and stopping the group
    leaves no process."""
    import json
    import subprocess
    import sys
    import time
    import urllib.request
    import xmlrpc.client

    import msgspec

    import reconlib
    from tradeops.config import ProgramConfig

    replace = msgspec.structs.replace
    sections = {"tradeops-exporter-gateway-oms": "gateway_oms", "tradeops-exporter-oms-lifecycle": "oms_lifecycle",
                "tradeops-exporter-risk-drawdown": "risk", "tradeops-exporter-pairs": "pairs_exporter",
                "tradeops-supervisor": "supervisor"}
    ports = {name: _free_port() for name in sections}
    cfg = stack_cfg
    suffix = cfg.postgres.dbname[-6:]
    for name, section in sections.items():
        sec = getattr(cfg, section)
        cfg = replace(cfg, **{section: replace(sec, listen=f"127.0.0.1:{ports[name]}",
                                               group_id=f"{sec.group_id}-{suffix}")})
    hb_url = f"http://127.0.0.1:{ports['tradeops-exporter-gateway-oms']}/healthz"
    watch_gw = msgspec.convert({"name": "gw", "mode": "watch",
                                "heartbeat": {"source": "http", "url": hb_url, "timeout_s": 30.0}}, ProgramConfig)
    cfg = replace(cfg, supervisor=replace(cfg.supervisor, status_file=str(tmp_path / "supervisor.json"),
                                          programs=[watch_gw]))
    config_path = reconlib.write_config(cfg, tmp_path / "tradeops.toml")
    ctl_port = _free_port()
    tradeops = str(REPO / ".venv" / "bin" / "tradeops")
    (tmp_path / "log").mkdir()
    for f in SUP.glob("*.conf"):
        text = f.read_text()
        text = text.replace("/usr/bin/tradeops --config /etc/tradeops/tradeops.toml", f"{tradeops} --config {config_path}")
        text = text.replace("/var/log/tradeops", str(tmp_path / "log")).replace("user=tradeops\n", "")
        text = text.replace("directory=/var/lib/tradeops", f"directory={tmp_path}")
        text = text.replace("/run/tradeops-supervisord.pid", str(tmp_path / "supervisord.pid"))
        text = text.replace("127.0.0.1:9001", f"127.0.0.1:{ctl_port}")
        (tmp_path / f.name).write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-n", "-c",
                             str(tmp_path / "supervisord-tradeops.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{ctl_port}/RPC2")
    try:
        deadline = time.monotonic() + 60
        states: dict = {}
        while time.monotonic() < deadline:
            try:
                states = {p["name"]: p["statename"] for p in rpc.supervisor.getAllProcessInfo()}
            except OSError:
                states = {}
            if states and all(s == "RUNNING" for s in states.values()):
                break
            time.sleep(0.5)
        logs = {n: (tmp_path / "log" / f"{n}.log").read_text()[-1500:] for n in sections
                if (tmp_path / "log" / f"{n}.log").exists()}
        assert set(states) == set(sections) and all(s == "RUNNING" for s in states.values()), (states, logs)
        for name, port in ports.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert r.status == 200 and b"# TYPE" in r.read(), name
        pids = [p["pid"] for p in rpc.supervisor.getAllProcessInfo()]
        rpc.supervisor.stopProcessGroup("tradeops")
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        print("supervisord:", json.dumps(states))
    finally:
        with contextlib.suppress(OSError):
            rpc.supervisor.shutdown()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
