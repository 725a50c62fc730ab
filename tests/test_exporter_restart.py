"""A hung exporter killed by systemd's watchdog (SIGSTOP, then SIGKILL: it never leaves its
consumer group) is replaced quickly: the restarted process gets every partition and sends
READY=1 after about ``[kafka].consumer_session_timeout_s`` (10 s), not after librdkafka's
45 s default session (which made it ~54 s). Real broker, real ``tradeops exporter`` processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from msgspec.structs import replace

from tradeops.exporters.consumer import ConsumeLoop
from tradeops.kafka_admin import client_conf

# generous for a loaded 2-core box (measured ~9-12 s, docs/benchmarks.md); the defect
# was 54 s and any session of librdkafka's default (45 s) fails it
READY_BOUND_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, cfg, group: str, session_s: float | None) -> Path:
    t = cfg.topics
    session = "" if session_s is None else f"consumer_session_timeout_s = {session_s}"
    path.write_text(f"""
[kafka]
bootstrap_servers = "{cfg.kafka.bootstrap_servers}"
{session}
[topics]
gateway_events = "{t.gateway_events}"
heartbeats = "{t.heartbeats}"
partitions = {t.partitions}
[gateway_oms]
listen = "127.0.0.1:{free_port()}"
group_id = "{group}"
""")
    return path


class Instance:
    """One `tradeops exporter gateway-oms` process with its own NOTIFY_SOCKET."""

    def __init__(self, conf: Path, sock_path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(sock_path))
        self.sock.settimeout(0.2)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env["NOTIFY_SOCKET"] = str(sock_path)
        self.proc = subprocess.Popen([sys.executable, "-m", "tradeops.cli", "--config", str(conf),
                                      "exporter", "gateway-oms"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            with contextlib.suppress(TimeoutError):
                if "READY=1" in self.sock.recv(4096).decode().split("\n"):
                    return True
        return False

    def close(self) -> None:
        if self.proc.poll() is None:
            # a SIGSTOPped process still dies of SIGKILL
            self.proc.kill()
        self.proc.wait(10)
        self.sock.close()


def assignment(admin: AdminClient, group: str) -> tuple[int, set[tuple[str, int]]]:
    d = admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)
    tps = {(tp.topic, tp.partition) for m in d.members for tp in m.assignment.topic_partitions}
    return len(d.members), tps


@pytest.mark.integration
def test_restart_after_watchdog_kill_is_ready_within_the_session(kafka_cfg, kafka_ready, tmp_path):
    cfg = kafka_cfg
    group = f"t-restart-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path / "a.toml", cfg, group, None)  # the default session
    old = Instance(conf, tmp_path / "notify-a")
    new = None
    try:
        assert old.wait_ready(60), "first instance never became READY"
        # hung, then killed by the watchdog: no LeaveGroup reaches the broker
        old.proc.send_signal(signal.SIGSTOP)
        time.sleep(1.0)
        old.proc.kill()
        old.proc.wait(10)
        t0 = time.monotonic()
        new = Instance(write_config(tmp_path / "b.toml", cfg, group, None), tmp_path / "notify-b")
        assert new.wait_ready(READY_BOUND_S), f"restart not READY within {READY_BOUND_S} s"
        took = time.monotonic() - t0
        members, tps = assignment(kafka_ready, group)
        want = {(t, p) for t in (cfg.topics.gateway_events, cfg.topics.heartbeats)
                for p in range(cfg.topics.partitions)}
        # READY means the new member holds every partition; the dead one is gone
        assert (members, tps) == (1, want)
        print(f"restart READY after {took:.1f} s")  # for docs/benchmarks.md (pytest -s)
    finally:
        old.close()
        if new is not None:
            new.close()


def test_session_timeout_reaches_the_consumer_config(base_cfg):
    cfg = replace(base_cfg, kafka=replace(base_cfg.kafka, consumer_session_timeout_s=7.5))
    loop = ConsumeLoop(cfg, group_id="g", topics={"t": "heartbeats"}, handler=lambda *a: None)
    assert loop.conf["session.timeout.ms"] == 7500
    assert loop.conf["heartbeat.interval.ms"] == 2500
    assert client_conf(cfg).get("session.timeout.ms") is None  # producers/admins untouched


def test_bad_session_timeout_is_a_one_line_config_error(tmp_path):
    conf = tmp_path / "tradeops.toml"
    conf.write_text("[kafka]\nconsumer_session_timeout_s = 0.5\n")
    res = subprocess.run([sys.executable, "-m", "tradeops.cli", "--config", str(conf),
                          "exporter", "gateway-oms"], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "[kafka].consumer_session_timeout_s" in lines[0], res.stderr
