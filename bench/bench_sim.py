"""Simulator speed: the synthetic market and a fast-mode day, as ratios to anchors of the
same run.

1. Market: all bars of 300 symbols (true, internal and broker side, 3 x 112,500 bars),
   and of 2,000 symbols. Anchor: a bare pure-Python loop drawing the same number of
   random bars (6 random numbers + a tuple each) - the floor of any pure-Python generator.
2. Fast-mode day, generation only (no I/O): messages per second of `Generator.finish()`.
   Anchor: msgspec-encoding the same messages (the least any producer must do per message).
3. `--e2e`: the whole `run_fast` against the local Kafka and PostgreSQL (throwaway topics
   and database; consumer groups included). Anchor: a bare confluent-kafka producer sending
   the same number of pre-encoded messages, plus a bare COPY of the same bars.

    .venv/bin/python bench/bench_sim.py [--symbols 300] [--e2e]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from tradeops import contracts  # noqa: E402
from tradeops.config import SimConfig  # noqa: E402
from tradeops.sim.market import IST, Market  # noqa: E402
from tradeops.sim.trading import Generator  # noqa: E402

DAY = dt.date(2026, 12, 3)


def _anchor_bars(n: int) -> float:
    rng = random.Random(1)
    r = rng.random
    t = time.perf_counter()
    out = [(i, r(), r(), r(), r(), int(r() * 1e5)) for i in range(n)]
    assert len(out) == n
    return time.perf_counter() - t


def bench_market(n_symbols: int) -> tuple[float, float, int]:
    t = time.perf_counter()
    m = Market(DAY, n_symbols=n_symbols)
    bars = 0
    for s in m.symbols:
        bars += len(m.true_bars(s)) + len(m.internal_bars(s)) + len(m.broker_bars(s))
    el = time.perf_counter() - t
    return el, _anchor_bars(bars), bars


def bench_generate(n_symbols: int):
    market_for = functools.lru_cache(2)(lambda d: Market(d, n_symbols=n_symbols))
    t = time.perf_counter()
    g = Generator(market_for, SimConfig(), dt.datetime(2026, 12, 3, 9, 15, tzinfo=IST))
    out = g.finish()
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    enc = [contracts.encode(m) for _, _, m in out]
    enc_s = time.perf_counter() - t
    return gen_s, enc_s, len(out), out, enc


def bench_e2e(n_symbols: int, out, enc) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    from conftest import DEV_CONFIG, delete_topics, drop_db, make_db, make_topics
    from tradeops import config as config_mod
    from tradeops import db
    from tradeops.kafka_admin import client_conf, topic_names
    from tradeops.sim.runner import run_fast

    base = config_mod.load(str(DEV_CONFIG))
    admin = AdminClient(client_conf(base))
    cfg = make_topics(make_db(base), admin)
    anchor_cfg = make_topics(make_db(base), admin)
    try:
        suffix = "." + cfg.topics.order_events.rsplit(".", 1)[1]
        t = time.perf_counter()
        s = run_fast(cfg, DAY, 42, n_symbols, group_suffix=suffix)
        e2e = time.perf_counter() - t
        # anchor: bare producer with the same messages, then a bare COPY of the bars
        topics = topic_names(anchor_cfg)
        p = Producer(client_conf(anchor_cfg, **{"linger.ms": 20, "compression.type": "lz4",
                                                "queue.buffering.max.messages": 1_000_000,
                                                "enable.idempotence": True}))
        t = time.perf_counter()
        for (kind, key, _), v in zip(out, enc):
            while True:
                try:
                    p.produce(topics[kind], v, key.encode())
                    break
                except BufferError:
                    p.poll(0.1)
        p.flush(120)
        produce_s = time.perf_counter() - t
        rows = [(m.symbol, m.ts, m.open, m.high, m.low, m.close, m.volume)
                for kind, _, m in out if kind == "bars_1m"]
        with db.connect(anchor_cfg) as conn:
            t = time.perf_counter()
            with conn.cursor().copy("COPY bars_1m (symbol, ts, open, high, low, close, volume) "
                                    "FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
            conn.commit()
            copy_s = time.perf_counter() - t
        anchor = produce_s + copy_s
        print(f"e2e fast day, {n_symbols} symbols: {e2e:.2f} s total "
              f"(generate+produce+COPY {s['seconds']['generate_and_produce']:.2f} s, "
              f"groups caught up: {all(g['caught_up'] for g in s['groups'].values())}); "
              f"anchor bare produce {produce_s:.2f} s + bare COPY {copy_s:.2f} s = {anchor:.2f} s; "
              f"ratio {e2e / anchor:.2f}x (generate+produce+COPY: "
              f"{s['seconds']['generate_and_produce'] / anchor:.2f}x)")
    finally:
        for c in (cfg, anchor_cfg):
            delete_topics(c, admin)
            drop_db(c)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=300)
    ap.add_argument("--e2e", action="store_true")
    a = ap.parse_args()
    for n in (a.symbols, 2000):
        el, anchor, bars = bench_market(n)
        print(f"market {n} symbols: {bars} bars (3 sides) in {el:.3f} s; anchor bare loop "
              f"{anchor:.3f} s; ratio {el / anchor:.2f}x")
    gen_s, enc_s, n, out, enc = bench_generate(a.symbols)
    print(f"fast day generation, {a.symbols} symbols: {n} messages in {gen_s:.2f} s "
          f"({n / gen_s:,.0f} msg/s); anchor msgspec encode of the same {enc_s:.2f} s; "
          f"ratio {gen_s / enc_s:.2f}x")
    if a.e2e:
        bench_e2e(a.symbols, out, enc)


if __name__ == "__main__":
    main()
