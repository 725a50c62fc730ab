"""Kafka broker/topic metrics from the Prometheus JMX exporter agent (kafka_exporter is not
available from the Go module proxy here; docs/alerts.md, docs/stack.md).

- test_jmx_rules_are_bounded_lowercase_and_counters_end_in_total: the rules file
  (scripts/kafka/jmx-exporter.yml) reads only listed MBeans, names are lowercase, counters
  end in `_total`, every rule's name is one the docs/alerts use.
- test_agent_is_on_the_broker_only_and_on_loopback: scripts/stack.sh loads the agent
  bound to 127.0.0.1:19308 into the broker (not the storage tool); the pom fetches it.
- test_dev_broker_serves_the_curated_set (integration, the `make up` broker): the agent on
  127.0.0.1:19308 exposes exactly the curated kafka_* names, broker RUNNING, one active
  controller, and producing N records to a fresh topic shows up as
  kafka_server_brokertopicmetrics_messages_in_total{topic=...} == N and a log size > 0.
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer

from tradeops.kafka_admin import client_conf

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "scripts" / "kafka" / "jmx-exporter.yml"
METRICS_URL = "http://127.0.0.1:19308/metrics"

# the contract: what the dashboards and alerts (infra/) query, documented in docs/alerts.md
CURATED = {
    "kafka_server_broker_state",
    "kafka_server_replicamanager_under_replicated_partitions",
    "kafka_server_replicamanager_partitions",
    "kafka_controller_offline_partitions",
    "kafka_controller_active_controller_count",
    "kafka_server_brokertopicmetrics_bytes_in_total",
    "kafka_server_brokertopicmetrics_bytes_out_total",
    "kafka_server_brokertopicmetrics_messages_in_total",
    "kafka_network_requests_total",
    "kafka_network_request_time_seconds",
    "kafka_log_size_bytes",
}


def rules() -> dict:
    return yaml.safe_load(RULES.read_text())


def test_jmx_rules_are_bounded_lowercase_and_counters_end_in_total():
    doc = rules()
    assert doc["lowercaseOutputName"] is True and doc["lowercaseOutputLabelNames"] is True
    # only listed MBeans are read: no domain-wide wildcard that would export everything
    assert doc["includeObjectNames"], "includeObjectNames must bound what the agent reads"
    for name in doc["includeObjectNames"]:
        domain, props = name.split(":", 1)
        assert domain in {"kafka.server", "kafka.controller", "kafka.network", "kafka.log"}, name
        assert "name=" in props and "*" not in props.split("name=")[1].split(",")[0], name
    names = set()
    for r in doc["rules"]:
        n = r["name"]
        assert n == n.lower() and re.fullmatch(r"[a-z_]+", n), n
        assert (r["type"] == "COUNTER") == n.endswith("_total"), n
        assert r["type"] in {"COUNTER", "GAUGE"} and r.get("help"), n
        names.add(n)
    assert names == CURATED
    # every curated name is documented and used by an alert or a dashboard
    docs = (REPO / "docs" / "alerts.md").read_text()
    infra = "".join(p.read_text() for p in [*(REPO / "infra" / "prometheus" / "rules").glob("*.yml"),
                                           REPO / "infra" / "grafana" / "dashboards.py"])
    for n in CURATED:
        stem = n.replace("_bytes_in_total", "").replace("_bytes_out_total", "").replace("_messages_in_total", "")
        assert stem in docs, f"docs/alerts.md does not name {n}"
        assert n in infra, f"no alert or dashboard uses {n}"


def test_agent_is_on_the_broker_only_and_on_loopback():
    stack = (REPO / "scripts" / "stack.sh").read_text()
    agent_lines = [ln for ln in stack.splitlines() if "-javaagent:" in ln]
    assert len(agent_lines) == 1, agent_lines
    assert "=127.0.0.1:$KAFKA_JMX_PORT:$REPO/scripts/kafka/jmx-exporter.yml" in agent_lines[0]
    assert "KAFKA_JMX_PORT=19308" in stack
    # the storage tool does not get it (kafka_java builds the shared part of the command)
    fn = stack.split("kafka_java() {", 1)[1].split("\n}", 1)[0]
    assert "javaagent" not in fn
    pom = (REPO / "scripts" / "kafka" / "pom.xml").read_text()
    assert "<artifactId>jmx_prometheus_javaagent</artifactId>" in pom
    assert "<jmx.exporter.version>1.0.1</jmx.exporter.version>" in pom


def scrape() -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(METRICS_URL, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        m = re.fullmatch(r"([a-z_:][a-z0-9_:]*)(?:\{(.*)\})? (\S+)", ln)
        assert m, f"unparsable line: {ln!r}"
        labels = tuple(sorted(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


@pytest.mark.integration
def test_dev_broker_serves_the_curated_set(kafka_cfg):
    try:
        first = scrape()
    except OSError as e:
        pytest.fail(f"{METRICS_URL}: {e}: the dev broker runs without the JMX exporter agent "
                    "(scripts/stack.sh restart kafka after scripts/stack.sh install)")
    # loopback only: nothing listens on 19308 on another address (the JVM's dual-stack socket
    # shows 127.0.0.1 as the IPv4-mapped [::ffff:127.0.0.1])
    ss = subprocess.run(["ss", "-Hltn", "sport = :19308"], capture_output=True, text=True).stdout
    local = [ln.split()[3] for ln in ss.splitlines()]
    assert local and set(local) <= {"127.0.0.1:19308", "[::ffff:127.0.0.1]:19308"}, ss

    kafka_names = {n for n, _ in first if n.startswith("kafka_")}
    assert kafka_names <= CURATED, kafka_names - CURATED
    for n in ("kafka_server_broker_state", "kafka_controller_active_controller_count",
              "kafka_server_replicamanager_under_replicated_partitions",
              "kafka_controller_offline_partitions", "kafka_network_requests_total"):
        assert n in kafka_names, n
    assert first[("kafka_server_broker_state", ())] == 3.0  # RUNNING
    assert first[("kafka_controller_active_controller_count", ())] == 1.0
    assert first[("kafka_controller_offline_partitions", ())] == 0.0
    assert first[("jmx_scrape_error", ())] == 0.0

    # produce N records to a fresh topic: per-topic counters and log size follow
    topic, n = kafka_cfg.topics.heartbeats, 25
    p = Producer(client_conf(kafka_cfg))
    for i in range(n):
        p.produce(topic, key=b"k", value=b"x" * 100, partition=i % kafka_cfg.topics.partitions)
    assert p.flush(15) == 0
    key = ("kafka_server_brokertopicmetrics_messages_in_total", (("topic", topic),))
    deadline = time.monotonic() + 20
    now = scrape()
    while now.get(key) != n and time.monotonic() < deadline:
        time.sleep(0.5)
        now = scrape()
    assert now.get(key) == n
    assert now[("kafka_server_brokertopicmetrics_bytes_in_total", (("topic", topic),))] >= n * 100
    sizes = [v for (name, labels), v in now.items()
             if name == "kafka_log_size_bytes" and ("topic", topic) in labels]
    assert len(sizes) == kafka_cfg.topics.partitions and sum(sizes) >= n * 100
    assert now[("kafka_network_requests_total", (("request", "Produce"),))] > \
        first[("kafka_network_requests_total", (("request", "Produce"),))]
