"""Kafka heartbeat source: real Kafka for `ops.heartbeats` (kafka_cfg: unique topics), and
a Kafka that is away (a closed port) to show that it makes heartbeats *unknown*: nothing
is restarted because Kafka is down."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer

from supervisor_sides import Ours, Prog, starts, wait_for
from tradeops.contracts import Heartbeat, encode
from tradeops.kafka_admin import client_conf


def _beat(producer: Producer, topic: str, process: str) -> None:
    hb = Heartbeat(ts=dt.datetime.now(dt.UTC), process=process, host="t", pid=1)
    producer.produce(topic, key=process.encode(), value=encode(hb))
    producer.poll(0)


@pytest.mark.integration
def test_watch_mode_follows_kafka_heartbeats(kafka_cfg, tmp_path):
    topic = kafka_cfg.topics.heartbeats
    extra = f'[kafka]\nbootstrap_servers = "{kafka_cfg.kafka.bootstrap_servers}"\n' \
            f'[topics]\nheartbeats = "{topic}"\n'
    s = Ours(tmp_path, [Prog("oms-core", options={"mode": "watch"},
                             heartbeat={"source": "kafka", "timeout_s": 1.5})], extra_toml=extra).start()
    producer = Producer(client_conf(kafka_cfg))
    try:
        wait_for(lambda: s.status()["dependencies"].get("kafka"), 15, "kafka up in the supervisor")

        def beat_until(state: str, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while s.program("oms-core")["state"] != state:
                assert time.monotonic() < deadline, f"not {state}: {s.program('oms-core')}"
                _beat(producer, topic, "oms-core")
                _beat(producer, topic, "someone-else")
                time.sleep(0.2)

        beat_until("RUNNING", 10)
        producer.produce(topic, key=b"oms-core", value=b'{"process": "oms-core"}')  # no ts
        producer.flush(5)
        t_last = time.time()
        p = s.wait_state("oms-core", "HUNG", 1.5 + 1.0 + 1.0)
        assert time.time() - t_last <= 1.5 + 1.0 + 0.3
        assert p["restarts"] == {"exit": 0, "hung": 0}  # watch mode never acts
        beat_until("RUNNING", 5)  # HUNG -> RUNNING when heartbeats resume
        m = s.metrics()
        assert m['supervisor_up{dependency="kafka"}'] == 1.0
        assert m['supervisor_invalid_heartbeats_total{source="kafka"}'] == 1.0
        assert m['process_up{program="oms-core"}'] == 1.0
        assert m['process_heartbeat_timestamp_seconds{program="oms-core"}'] > time.time() - 5
    finally:
        producer.flush(5)
        s.stop()


def test_kafka_away_makes_heartbeats_unknown_and_restarts_nothing(tmp_path):
    # a closed port: Kafka is "down" for this supervisor (the shared Kafka is not touched)
    extra = '[kafka]\nbootstrap_servers = "127.0.0.1:1"\nrequest_timeout_s = 1.0\n'
    s = Ours(tmp_path, [Prog("worker", ["--interval", "0.5"], {"startsecs": 0.1},
                             heartbeat={"source": "kafka", "timeout_s": 1.0})], extra_toml=extra).start()
    try:
        time.sleep(4.0)  # four heartbeat timeouts
        p = s.program("worker")
        assert p["restarts"] == {"exit": 0, "hung": 0}
        assert p["state"] == "STARTING" and not p["heartbeat_known"]
        assert len(starts(s.marker("worker"))) == 1
        m = s.metrics()
        assert m['supervisor_up{dependency="kafka"}'] == 0.0
        out = subprocess.run([sys.executable, "-m", "tradeops.cli", "--config", str(s.config),
                              "supervise", "status"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 1
        assert "kafka unknown" in out.stdout and "kafka DOWN" in out.stdout
    finally:
        assert s.stop() == 0
