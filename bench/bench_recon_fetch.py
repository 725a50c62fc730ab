"""Broker fetch throughput against the local Kite-compatible server at its rate limit.

Starts `tradeops sim broker-api` (its own process) with --rate-limit R (default 3/s, the
Kite historical limit), fetches --symbols symbols' day into a throwaway database with the
recon's client (defaults: [broker].workers threads sharing one token bucket) and prints the
sustained request rate as a ratio of the limit (target >= 0.95), the server's own count of
the most requests in any sliding second (must be <= R) and the 429s it served (must be 0).

    .venv/bin/python bench/bench_recon_fetch.py [--symbols 40] [--rate 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from tradeops import config, db  # noqa: E402
from tradeops.calendar import TradingCalendar  # noqa: E402
from tradeops.recon import broker_client  # noqa: E402

DAY = dt.date(2026, 12, 3)
replace = msgspec.structs.replace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=40)
    ap.add_argument("--rate", type=float, default=3.0)
    ap.add_argument("--config", default=os.environ.get("TRADEOPS_CONFIG", str(REPO / "infra/dev/tradeops.toml")))
    a = ap.parse_args()
    base = config.load(a.config)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    srv = subprocess.Popen(
        [sys.executable, "-m", "tradeops.cli", "--config", a.config, "sim", "broker-api", "--listen",
         f"127.0.0.1:{port}", "--symbols", str(a.symbols), "--rate-limit", str(a.rate)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    name = f"bench_fetch_{uuid.uuid4().hex[:8]}"
    admin = replace(base, postgres=replace(base.postgres, dbname="postgres"))
    with db.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    cfg = replace(base, postgres=replace(base.postgres, dbname=name),
                  broker=replace(base.broker, base_url=url, rate_limit_per_s=a.rate))
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/_stats", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        from tradeops.sim.market import symbols_for

        symbols = symbols_for(a.symbols)
        cal = TradingCalendar.from_config(cfg)
        start, end = cal.day_bounds(DAY)
        with db.connect(cfg, autocommit=True) as conn:
            db.migrate(conn, cfg)
            src = broker_client.KiteSource(cfg)
            broker_client.resolve_tokens(conn, cfg, src, symbols)  # instruments: not rate-limited
            urllib.request.urlopen(urllib.request.Request(url + "/_stats/reset", method="POST", data=b"")).close()
            t0 = time.perf_counter()
            res = broker_client.fetch_into_cache(conn, cfg, src, DAY, symbols, start, end)
            wall = time.perf_counter() - t0
        with urllib.request.urlopen(url + "/_stats", timeout=5) as r:
            st = json.loads(r.read())
        n = st["requests_total"]
        rate = n / wall
        print(f"fetched {len(res.fetched)} symbols ({res.rows} bars), {n} historical requests in {wall:.2f} s "
              f"with {cfg.broker.workers} workers")
        print(f"sustained {rate:.3f} req/s = {rate / a.rate:.3f} of the {a.rate:g} req/s limit (target >= 0.95)")
        print(f"server: max {st['max_requests_in_1s']} requests in any 1 s (limit {a.rate:g}), "
              f"429s served {st['rate_limited_total']}")
    finally:
        srv.terminate()
        srv.wait(10)
        with db.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
