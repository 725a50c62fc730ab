"""Kafka JMX exporter agent benchmark: what the agent costs the broker's start and a scrape.

    .venv/bin/python bench/bench_kafka_jmx.py [--runs N]

1. Broker start: a throwaway single-node KRaft broker (the dev stack's jars from
   .state/kafka/lib and scripts/kafka/server.properties.in, on free ports, data in a temp
   dir; never the `make up` broker) is formatted and started N times without and N times
   with `-javaagent:...jmx_prometheus_javaagent.jar=127.0.0.1:PORT:scripts/kafka/jmx-exporter.yml`,
   alternating; time from exec to an AdminClient seeing the broker (scripts/kafka/wait_ready.py,
   the same readiness `scripts/stack.sh` waits for). Anchor: the start WITHOUT the agent,
   measured in the same run; the ratio is with/without (medians).
2. Scrape: GET /metrics of the agent on the dev broker (127.0.0.1:19308, which holds every
   test topic of the shared stack) N times; anchor: GET /metrics of the dev Prometheus
   (127.0.0.1:19090/metrics), a local /metrics endpoint of the same stack.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / ".state" / "kafka" / "lib"
AGENT = LIB / "agent" / "jmx_prometheus_javaagent.jar"
PY = str(REPO / ".venv" / "bin" / "python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_once(tmp: Path, with_agent: bool) -> float:
    data = tmp / "data"
    subprocess.run(["rm", "-rf", str(data)], check=True)
    data.mkdir()
    port, ctl, mport = free_port(), free_port(), free_port()
    props = (REPO / "scripts" / "kafka" / "server.properties.in").read_text()
    props = props.replace("@DATA@", str(data)).replace("19092", str(port)).replace("19093", str(ctl))
    (tmp / "server.properties").write_text(props)
    (tmp / "log4j2.properties").write_text(
        (REPO / "scripts" / "kafka" / "log4j2.properties.in").read_text().replace("@LOGDIR@", str(tmp)))
    java = ["java", "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={tmp / 'log4j2.properties'}", f"-Dkafka.logs.dir={tmp}",
            "-cp", f"{LIB}/*"]
    subprocess.run([*java, "kafka.tools.StorageTool", "format", "-t", "AAAAAAAAAAAAAAAAAAAAAA",
                    "-c", str(tmp / "server.properties")], check=True, capture_output=True)
    agent = [f"-javaagent:{AGENT}=127.0.0.1:{mport}:{REPO / 'scripts/kafka/jmx-exporter.yml'}"] if with_agent else []
    t0 = time.perf_counter()
    proc = subprocess.Popen([*java, *agent, "kafka.Kafka", str(tmp / "server.properties")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        subprocess.run([PY, str(REPO / "scripts" / "kafka" / "wait_ready.py"), f"127.0.0.1:{port}", "90",
                        str(proc.pid)], check=True, capture_output=True)
        took = time.perf_counter() - t0
        if with_agent:
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
                assert b"kafka_server_broker_state 3.0" in r.read(), "agent did not export the broker state"
        return took
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def get(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as r:
        r.read()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if not AGENT.exists():
        print(f"bench_kafka_jmx: {AGENT} missing: run scripts/stack.sh install", file=sys.stderr)
        return 2
    without, with_ = [], []
    with tempfile.TemporaryDirectory(prefix="bench-jmx-") as d:
        for _ in range(a.runs):
            without.append(start_once(Path(d), False))
            with_.append(start_once(Path(d), True))
    mw, ma = statistics.median(without), statistics.median(with_)
    print(f"broker start to ready, without agent (anchor): median {mw:.2f} s  runs {[round(x, 2) for x in without]}")
    print(f"broker start to ready, with JMX agent:         median {ma:.2f} s  runs {[round(x, 2) for x in with_]}")
    print(f"ratio with/without: {ma / mw:.2f}")
    scr = [get("http://127.0.0.1:19308/metrics") for _ in range(max(a.runs, 5) * 4)]
    anc = [get("http://127.0.0.1:19090/metrics") for _ in range(max(a.runs, 5) * 4)]
    with urllib.request.urlopen("http://127.0.0.1:19308/metrics", timeout=10) as r:
        n = sum(1 for ln in r.read().decode().splitlines() if ln.startswith("kafka_"))
    print(f"dev broker /metrics ({n} kafka_* series): median {statistics.median(scr) * 1000:.1f} ms; "
          f"anchor Prometheus /metrics {statistics.median(anc) * 1000:.1f} ms; "
          f"ratio {statistics.median(scr) / statistics.median(anc):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
