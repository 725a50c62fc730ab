"""The real `tradeops exporter oms-lifecycle` process: READY=1 on its NOTIFY_SOCKET only
after today's book is rebuilt, a clean SIGTERM, and one-line config errors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from test_oms_lifecycle import random_day, unique_group
from tradeops.kafka_admin import client_conf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, cfg, port: int, extra: str = "") -> Path:
    t = cfg.topics
    path.write_text(f"""
[kafka]
bootstrap_servers = "{cfg.kafka.bootstrap_servers}"
[topics]
order_events = "{t.order_events}"
partitions = {t.partitions}
[oms_lifecycle]
listen = "127.0.0.1:{port}"
group_id = "{cfg.oms_lifecycle.group_id}"
strategies = ["momentum", "meanrev", "pairs", "breakout"]
{extra}
""")
    return path


def env_with(notify: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    if notify:
        env["NOTIFY_SOCKET"] = notify
    return env


@pytest.mark.integration
def test_ready_only_after_rebuild_and_clean_sigterm(kafka_cfg, tmp_path):
    cfg = unique_group(kafka_cfg)
    events = random_day(3000, 21)  # ~12k events
    p = Producer(client_conf(cfg, **{"linger.ms": 20}))
    for e in events:
        p.produce(cfg.topics.order_events, json.dumps(e).encode(), key=e["order_id"].encode())
        p.poll(0)
    assert p.flush(30) == 0
    port = free_port()
    conf = write_config(tmp_path / "tradeops.toml", cfg, port)
    sock_path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.5)
    proc = subprocess.Popen([sys.executable, "-m", "tradeops.cli", "--config", str(conf),
                             "exporter", "oms-lifecycle"], env=env_with(sock_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        notes: list[str] = []
        end = time.monotonic() + 60
        while "READY=1" not in notes and time.monotonic() < end and proc.poll() is None:
            with contextlib.suppress(TimeoutError):
                notes.extend(sock.recv(4096).decode().split("\n"))
        assert "READY=1" in notes, notes
        # at READY the whole of today is in the book already
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert f"oms_order_events_total {float(len(events))}" in text
        assert 'oms_partitions{state="rebuilding"} 0.0' in text
        assert any(n.startswith("STATUS=") for n in notes)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    out = proc.stdout.read().decode()
    assert rc == 0, out
    assert took < 5.0, f"shutdown took {took:.1f} s"
    assert "Traceback" not in out
    assert "now live" in out and "ready: consuming" in out


def test_bad_stuck_threshold_is_one_line(tmp_path, base_cfg):
    conf = write_config(tmp_path / "bad.toml", base_cfg, free_port(),
                        'stuck_after_s = { FILLED = 3.0 }')
    res = subprocess.run([sys.executable, "-m", "tradeops.cli", "--config", str(conf),
                          "exporter", "oms-lifecycle"], env=env_with(None),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip() == ("tradeops: bad.toml: [oms_lifecycle].stuck_after_s: "
                                  "'FILLED' is not a non-terminal status")

