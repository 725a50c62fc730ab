"""risk-drawdown speed: position messages/s with 200 buckets, and /metrics latency.

No Kafka needed: the exporter's real handler path (contract decode + RiskBook.apply under
the collector's lock) is fed pre-encoded messages; the real HTTP server of the exporter
(build(), start_server()) is scraped while a writer thread applies messages at the target
rate (5,000/s), so scrapes contend with updates as in production.

Measured in the same run:
1. anchor: msgspec decode alone of the same messages (the contract's decoder);
2. handler path: decode + apply -> messages/s and ratio to 1.;
3. /metrics over HTTP, 300 scrapes under a 5,000 msg/s writer: p50 / p99 in ms;
4. with --kafka (needs the local stack, `make up-core`): the real exporter loop
   (RiskConsumeLoop: consume, decode, apply, state flushes to a throw-away database)
   over a throw-away 6-partition topic holding the messages, from READY to the last
   message applied -> sustained msgs/s through Kafka.

Targets (issue 4): 5,000 position msgs/s sustained with 200 buckets; /metrics p99 < 50 ms.
Usage:

    .venv/bin/python bench/bench_risk.py [--messages 200000] [--scrapes 300] [--kafka]
"""

from __future__ import annotations

import argparse
import datetime as dt
import threading
import time
import urllib.request

import msgspec
import numpy as np

from tradeops import contracts
from tradeops.config import load
from tradeops.exporters.risk_drawdown import build

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def config():
    cfg = load("infra/dev/tradeops.toml")
    # 50 strategies + 50 sectors + 99 underlyings + total = 200 buckets
    syms = [f"NSE:SYM{i:03d}" for i in range(99)]
    sectors = {s: f"SECTOR{i % 50:02d}" for i, s in enumerate(syms)}
    risk = msgspec.structs.replace(cfg.risk, sectors=sectors, listen="127.0.0.1:0")
    return msgspec.structs.replace(cfg, risk=risk), syms


def messages(n: int, syms: list[str]) -> list[bytes]:
    rng = np.random.default_rng(1)
    t0 = dt.datetime(2026, 12, 3, 9, 20, tzinfo=IST)
    enc = contracts._encoder
    out = []
    for i in range(n):
        avg = float(rng.uniform(100, 3000))
        out.append(enc.encode(contracts.Position(
            ts=t0 + dt.timedelta(milliseconds=i), strategy=f"strat{i % 50:02d}",
            symbol=syms[int(rng.integers(len(syms)))], quantity=int(rng.integers(-500, 500)),
            average_price=avg, last_price=avg * float(rng.uniform(0.97, 1.03)),
            realized_pnl=float(rng.normal(0, 5000)))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--scrapes", type=int, default=300)
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--kafka", action="store_true")
    args = ap.parse_args()
    cfg, syms = config()
    msgs = messages(args.messages, syms)
    dec = contracts.decoder("positions").decode

    # 1. and 2. in CPU time of this thread: other work on the 2 shared cores does not count
    t0 = time.thread_time()
    for m in msgs:
        dec(m)
    anchor = time.thread_time() - t0

    app, loop, book = build(cfg, env={})
    handler = loop._on_position
    t0 = time.thread_time()
    for m in msgs:
        handler("positions", dec(m), None)
    full = time.thread_time() - t0
    print(f"messages={args.messages:,} buckets={len(book.buckets)} positions={len(book.positions)}")
    print(f"anchor  decode only          {args.messages / anchor:12,.0f} msgs/s")
    print(f"handler decode + apply       {args.messages / full:12,.0f} msgs/s   "
          f"ratio to anchor {full / anchor:5.2f}x")

    app.start_server()
    url = f"http://{app.server.address}/metrics"
    stop = threading.Event()
    applied = [0]

    def writer():
        i, start = 0, time.perf_counter()
        while not stop.is_set():
            handler("positions", dec(msgs[i % len(msgs)]), None)
            i += 1
            ahead = i / args.rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
        applied[0] = i / (time.perf_counter() - start)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    lat = []
    try:
        for _ in range(args.scrapes):
            t = time.perf_counter()
            body = urllib.request.urlopen(url, timeout=5).read()
            lat.append((time.perf_counter() - t) * 1000)
            time.sleep(0.01)
    finally:
        stop.set()
        th.join()
        app.stop_server()
    lat.sort()
    p50 = lat[len(lat) // 2]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"/metrics under a {args.rate:,.0f} msg/s writer (achieved {applied[0]:,.0f}/s): "
          f"{len(body):,} bytes, p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(lat)} scrapes")
    if args.kafka:
        through_kafka(cfg, msgs)


def through_kafka(cfg, msgs: list[bytes]) -> None:
    import uuid

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from tradeops import db
    from tradeops.kafka_admin import client_conf

    rep = msgspec.structs.replace
    suffix = uuid.uuid4().hex[:8]
    topic = f"bench.risk.positions.{suffix}"
    dbname = f"bench_risk_{suffix}"
    admin = AdminClient(client_conf(cfg))
    for f in admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)]).values():
        f.result(15)
    with db.connect(rep(cfg, postgres=rep(cfg.postgres, dbname="postgres")), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{dbname}"')
    bcfg = rep(cfg, topics=rep(cfg.topics, positions=topic),
               postgres=rep(cfg.postgres, dbname=dbname),
               risk=rep(cfg.risk, group_id=f"bench-risk-{suffix}"))
    try:
        with db.connect(bcfg) as conn:
            db.migrate(conn, bcfg)
        p = Producer(client_conf(bcfg, **{"linger.ms": 20, "batch.num.messages": 10000}))
        for i, m in enumerate(msgs):
            while True:
                try:
                    p.produce(topic, m, key=f"strat{i % 50:02d}".encode())
                    break
                except BufferError:
                    p.poll(0.05)
        p.flush(60)
        app, loop, book = build(bcfg, env={})
        th = threading.Thread(target=app.serve, args=(loop,), kwargs={"signals": False},
                              daemon=True)
        th.start()
        while app.state.name != "RUNNING":
            time.sleep(0.01)
        t0 = time.perf_counter()
        while book.messages < len(msgs):
            time.sleep(0.005)
        dt_s = time.perf_counter() - t0
        app.stop_event.set()
        th.join(30)
        print(f"kafka   exporter loop, {len(msgs):,} msgs on 6 partitions: {dt_s:.2f} s = "
              f"{len(msgs) / dt_s:,.0f} msgs/s sustained (state flushes included, "
              f"{loop.flush_errors} flush errors)")
    finally:
        for f in admin.delete_topics([topic]).values():
            f.result(15)
        with db.connect(rep(cfg, postgres=rep(cfg.postgres, dbname="postgres")),
                        autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
