"""The local stack's scripts and set-up commands, against the real stack on 127.0.0.1.

- `tradeops db migrate` on an empty database applies every migration; a second run is a
  no-op (nothing applied, schema unchanged);
- `tradeops kafka ensure-topics` creates the contract topics; a second run is harmless;
- `scripts/stack.sh status` sees the core services the test session runs on;
- the process helpers of scripts/lib/common.sh (start_bg / is_running / stop_bg /
  wait_port) in a private state dir: idempotent start, group stop incl. children,
  bounded waits with a clear error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from conftest import DEV_CONFIG, REPO, _admin_conn, drop_db
from tradeops import config as config_mod
from tradeops import db
from tradeops.kafka_admin import client_conf, topic_names

pytestmark = pytest.mark.integration

TRADEOPS = [str(Path(sys.executable).parent / "tradeops")]
COMMON = REPO / "scripts" / "lib" / "common.sh"


def dev_config_variant(tmp_path: Path, dbname: str | None = None, topic_suffix: str | None = None) -> Path:
    """A copy of the dev config pointing at another database and/or suffixed topics."""
    text = DEV_CONFIG.read_text()
    text = text.replace("../../.state/", f"{(REPO / '.state').resolve()}/")
    if dbname:
        assert 'dbname = "tradeops"' in text
        text = text.replace('dbname = "tradeops"', f'dbname = "{dbname}"')
    if topic_suffix:
        defaults = topic_names(config_mod.load(str(DEV_CONFIG)))
        lines = ["", "[topics]"] + [f'{k} = "{v}.{topic_suffix}"' for k, v in defaults.items()]
        lines.append("partitions = 2")
        text += "\n".join(lines) + "\n"
    path = tmp_path / "tradeops.toml"
    path.write_text(text)
    return path


def run_cli(cfg_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TRADEOPS, "--config", str(cfg_path), *args],
        capture_output=True, text=True, timeout=120,
    )


def schema_snapshot(cfg) -> list[tuple]:
    with db.connect(cfg) as conn:
        return conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()


def test_db_migrate_twice_is_a_noop(base_cfg, pg_ready, tmp_path):
    name = f"t_{uuid.uuid4().hex[:12]}"
    with _admin_conn(base_cfg) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    cfg_path = dev_config_variant(tmp_path, dbname=name)
    cfg = config_mod.load(str(cfg_path))
    try:
        first = run_cli(cfg_path, "db", "migrate")
        assert first.returncode == 0, first.stderr
        files = sorted(p.name for p in (REPO / "src/tradeops/migrations").glob("[0-9]*.sql"))
        assert first.stdout.strip() == "applied: " + ", ".join(files)
        before = schema_snapshot(cfg)
        assert {"bars_1m", "recon_runs", "risk_peaks"} <= {row[0] for row in before}

        second = run_cli(cfg_path, "db", "migrate")
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == "migrations: up to date"
        assert schema_snapshot(cfg) == before
        with db.connect(cfg) as conn:
            assert db.pending(conn) == []
    finally:
        drop_db(cfg)


def test_kafka_ensure_topics_twice_is_harmless(base_cfg, kafka_ready: AdminClient, tmp_path):
    suffix = f"t{uuid.uuid4().hex[:8]}"
    cfg_path = dev_config_variant(tmp_path, topic_suffix=suffix)
    cfg = config_mod.load(str(cfg_path))
    wanted = sorted(topic_names(cfg).values())
    try:
        first = run_cli(cfg_path, "kafka", "ensure-topics")
        assert first.returncode == 0, first.stderr
        assert sorted(first.stdout.strip().removeprefix("created: ").split(", ")) == wanted

        second = run_cli(cfg_path, "kafka", "ensure-topics")
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == "topics: all present"

        md = AdminClient(client_conf(cfg)).list_topics(timeout=10)
        for t in wanted:
            assert t in md.topics, t
            assert len(md.topics[t].partitions) == 2
    finally:
        futs = kafka_ready.delete_topics(wanted, operation_timeout=10)
        for f in futs.values():
            f.result(15)


def test_stack_status_sees_the_core_services(pg_ready, kafka_ready):
    out = subprocess.run(
        ["bash", str(REPO / "scripts/stack.sh"), "status"], capture_output=True, text=True, timeout=30
    )
    lines = {ln.split()[0]: ln for ln in out.stdout.splitlines() if ln.strip()}
    for svc in ("kafka", "postgres", "prometheus", "pushgateway"):
        assert svc in lines, out.stdout
        assert " running (pid " in lines[svc], lines[svc]


def test_stack_usage_and_unknown_service_fail_clearly():
    out = subprocess.run(["bash", str(REPO / "scripts/stack.sh"), "restart", "nosuch"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "unknown service 'nosuch'" in out.stderr
    out = subprocess.run(["bash", str(REPO / "scripts/stack.sh"), "frobnicate"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "scripts/stack.sh up" in out.stdout


# ---------------------------------------------------------------- common.sh process helpers


def sh(state: Path, script: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {**os.environ, "STATE": str(state), "REPO": str(REPO)}
    return subprocess.run(["bash", "-c", f'set -euo pipefail; . "{COMMON}"; {script}'],
                          capture_output=True, text=True, timeout=timeout, env=env)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_start_bg_is_idempotent_and_stop_bg_ends_the_group(tmp_path):
    state = tmp_path / "state"
    # a parent that starts a child and waits: both must go on stop
    cmd = "start_bg demo bash -c 'sleep 300 & echo kid-pid:$! ; wait'"
    first = sh(state, cmd)
    assert first.returncode == 0, first.stderr
    pid = int((state / "run/demo.pid").read_text())
    log = state / "log/demo.log"
    deadline = time.monotonic() + 10
    while not re.search(r"kid-pid:\d+", log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(re.search(r"kid-pid:(\d+)", log.read_text()).group(1))
    assert alive(pid) and alive(child)

    again = sh(state, cmd)
    assert again.returncode == 0
    assert "already running" in again.stderr
    assert int((state / "run/demo.pid").read_text()) == pid

    assert sh(state, "is_running demo").returncode == 0
    stop = sh(state, "stop_bg demo 5")
    assert stop.returncode == 0, stop.stderr
    deadline = time.monotonic() + 5
    while (alive(pid) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid) and not alive(child)
    assert not (state / "run/demo.pid").exists()
    assert sh(state, "is_running demo").returncode == 1
    assert sh(state, "stop_bg demo").returncode == 0  # stopping a stopped service is harmless


def test_stop_bg_kills_what_ignores_sigterm(tmp_path):
    state = tmp_path / "state"
    assert sh(state, "start_bg stubborn bash -c 'trap \"\" TERM; while :; do sleep 0.1; done'").returncode == 0
    pid = int((state / "run/stubborn.pid").read_text())
    t0 = time.monotonic()
    out = sh(state, "stop_bg stubborn 1")
    assert out.returncode == 0
    assert "SIGKILL" in out.stderr
    assert time.monotonic() - t0 < 10
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_waits_are_bounded_and_say_what_they_waited_for(tmp_path):
    state = tmp_path / "state"
    out = sh(state, "wait_port 127.0.0.1 1 1")
    assert out.returncode == 1
    assert "timed out after 1s waiting for 127.0.0.1:1" in out.stderr
    # a process that dies while we wait is reported at once, with its log tail
    out = sh(state, "start_bg dies bash -c 'echo boom-from-dies; exit 3'; wait_port 127.0.0.1 1 30 dies")
    assert out.returncode == 1
    assert "dies exited before 127.0.0.1:1 opened" in out.stderr
    assert "boom-from-dies" in out.stderr


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wait_http_checks_the_port_is_held_by_the_named_service(tmp_path):
    state = tmp_path / "state"
    port = free_port()
    server = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
              "--directory", str(tmp_path)]
    ok = sh(state, f"start_bg web {' '.join(server)}; wait_http http://127.0.0.1:{port}/ 20 web")
    try:
        assert ok.returncode == 0, ok.stderr
        # a second copy exits on "address in use" while the first one answers the URL:
        # that must fail and name the pid that holds the port, not pass as ready
        dup = sh(state, f"start_bg web2 {' '.join(server)}; sleep 1; "
                        f"wait_http http://127.0.0.1:{port}/ 5 web2")
        assert dup.returncode == 1
        web_pid = (state / "run/web.pid").read_text().strip()
        assert f"held by pid {web_pid}" in dup.stderr, dup.stderr
        assert "not by web2" in dup.stderr
    finally:
        sh(state, "stop_bg web 5; stop_bg web2 5")


def test_adopt_records_our_running_server_and_refuses_a_stranger(tmp_path):
    state = tmp_path / "state"
    port = free_port()
    marker = tmp_path / "served-dir"
    marker.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(marker)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert sh(state, f"wait_port 127.0.0.1 {port} 20").returncode == 0
        stranger = sh(state, f"adopt web {port} /no/such/pattern")
        assert stranger.returncode == 1
        assert not (state / "run/web.pid").exists()
        ours = sh(state, f"adopt web {port} {marker}")
        assert ours.returncode == 0, ours.stderr
        assert int((state / "run/web.pid").read_text()) == proc.pid
        assert f"adopted running pid {proc.pid}" in ours.stderr
    finally:
        proc.terminate()
        proc.wait(10)
