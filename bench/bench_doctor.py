"""Doctor benchmark: wall time of `tradeops doctor --check` as an operator runs it.

    .venv/bin/python bench/bench_doctor.py [--runs N] [--config infra/dev/tradeops.toml]

Every run is a fresh `tradeops --config ... doctor --check --json` process against the
dev stack (`make up`): all of its checks (supervisor, Kafka incl. lag, PostgreSQL incl.
recon, four exporters, Prometheus, Pushgateway, stuck orders, disk). Cases:

1. healthy stack (target: < 1.5 s wall);
2. Kafka down: the same config with Kafka at a dead port and `timeouts = { kafka = 2.0 }`
   (target: < that timeout + 0.5 s = 2.5 s);
Anchor, measured in the same run: `tradeops --version` (interpreter + CLI start), so the
ratio shows what the checks cost over starting the command at all. Medians over N runs.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRADEOPS = [str(REPO / ".venv" / "bin" / "tradeops")]


def wall(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return time.perf_counter() - t0, p


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kafka_down_config(src: Path, out: Path, kafka_timeout: float) -> None:
    """The dev config with absolute paths, Kafka at a dead port and a Kafka timeout."""
    text = src.read_text().replace('"../../', f'"{REPO}/')
    lines = []
    for line in text.splitlines():
        if line.startswith("bootstrap_servers"):
            line = f'bootstrap_servers = "127.0.0.1:{dead_port()}"'
        lines.append(line)
        if line.strip() == "[doctor]":
            lines.append(f"timeouts = {{ kafka = {kafka_timeout} }}")
    out.write_text("\n".join(lines) + "\n")


def series(argv: list[str], runs: int) -> tuple[list[float], dict]:
    times, last = [], {}
    for _ in range(runs):
        t, p = wall(argv)
        if p.returncode not in (0, 1, 2, 3) or not p.stdout.startswith("{"):
            sys.exit(f"bench: {' '.join(argv)} failed (exit {p.returncode}): {p.stderr.strip()[-500:]}")
        times.append(t)
        last = json.loads(p.stdout)
    return times, last


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--config", default=str(REPO / "infra" / "dev" / "tradeops.toml"))
    ap.add_argument("--kafka-timeout", type=float, default=2.0)
    a = ap.parse_args()
    cfg = Path(a.config)

    anchor = [wall([*TRADEOPS, "--version"])[0] for _ in range(a.runs)]
    healthy, doc = series([*TRADEOPS, "--config", str(cfg), "doctor", "--check", "--json"], a.runs)
    with tempfile.TemporaryDirectory() as d:
        down_cfg = Path(d) / "tradeops.toml"
        kafka_down_config(cfg, down_cfg, a.kafka_timeout)
        down, ddoc = series([*TRADEOPS, "--config", str(down_cfg), "doctor", "--check", "--json"], a.runs)

    med = statistics.median
    a_ms = med(anchor)
    print(f"anchor `tradeops --version`: median {a_ms * 1000:.0f} ms")
    c = doc["counts"]
    print(f"healthy stack: {len(doc['results'])} results ({c['OK']} OK, {c['WARN']} WARN, {c['CRIT']} CRIT, "
          f"{c['UNKNOWN']} UNKNOWN): median {med(healthy) * 1000:.0f} ms, max {max(healthy) * 1000:.0f} ms, "
          f"{med(healthy) / a_ms:.1f}x anchor; target < 1500 ms: {'PASS' if med(healthy) < 1.5 else 'FAIL'}")
    slow = sorted(doc["results"], key=lambda r: -r["duration_s"])[:3]
    print("  slowest checks: " + ", ".join(f"{r['family']} {r['duration_s'] * 1000:.0f} ms" for r in slow))
    kafka = [r for r in ddoc["results"] if r["family"] == "kafka"]
    budget = a.kafka_timeout + 0.5
    print(f"Kafka down (dead port, timeout {a.kafka_timeout:.1f}s): {len(kafka)} Kafka results, all "
          f"{'CRIT' if all(r['status'] == 'CRIT' for r in kafka) else 'NOT CRIT'}: median "
          f"{med(down) * 1000:.0f} ms, max {max(down) * 1000:.0f} ms, {med(down) / a_ms:.1f}x anchor; "
          f"target < {budget * 1000:.0f} ms: {'PASS' if max(down) < budget else 'FAIL'}")


if __name__ == "__main__":
    main()
