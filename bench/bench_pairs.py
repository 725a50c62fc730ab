"""pairs exporter speed: 500 pairs updated on every bar (no services needed).

Measured in the same run, pinned to one CPU when possible:

1. anchor: a bare, numpy-free Welford update loop (n += 1; d = x - m; m += d / n;
   M2 += d * (x - m)) over as many values as there are bar updates;
2. engine: PairsEngine.update, one vectorised call per minute for all 500 pairs (each
   pair update consumes two bars: leg a and leg b) -> bar updates/s and cost per bar
   update as a ratio to 1.;
3. full path without Kafka: PairsState.on_bar for every bar (alignment, late/duplicate
   checks) plus one flush per minute -> bars/s and ratio to 1.;
4. with --kafka (needs the local stack, `make up-core`): the real exporter loop
   (PairsConsumeLoop: consume, contract decode, on_bar, flush) over a throw-away
   6-partition topic holding every bar of --kafka-minutes minutes for all legs (warm-up
   from a throw-away, empty database), from READY to the last pair update -> bars/s;
   anchor: a bare confluent-kafka consumer + the contract's decoder over the same topic.

Targets (issue 4): >= 200,000 bar updates/s; per-update cost within 3x of the Welford
loop. 1.-3. are timed in CPU time of the running thread (time.thread_time), so that other
work on the machine (2 shared cores) does not count; 4. in wall-clock time. Usage:

    .venv/bin/python bench/bench_pairs.py [--pairs 500] [--minutes 750] [--runs 5] [--kafka]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import numpy as np

from tradeops.config import PairConfig
from tradeops.exporters.pairs import PairsState
from tradeops.exporters.pairs_math import PairsEngine

HEDGES = ["rolling_ols", "rolling_ols", "kalman", "static"]


def series(pairs: int, minutes: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    lb = np.log(rng.uniform(100, 3000, pairs))[:, None] + np.cumsum(
        rng.normal(0, 1e-3, (pairs, minutes)), axis=1)
    la = 0.8 * lb + 1.0 + rng.normal(0, 5e-4, (pairs, minutes))
    return np.exp(la), np.exp(lb)


def welford(values: list[float]) -> float:
    t0 = time.thread_time()
    n, m, m2 = 0, 0.0, 0.0
    for x in values:
        n += 1  # noqa: SIM113 - the anchor is this exact loop
        d = x - m
        m += d / n
        m2 += d * (x - m)
    return time.thread_time() - t0


def bench_engine(a, b, windows, hedges) -> float:
    eng = PairsEngine(windows, hedges, static_beta=[1.0] * len(windows))
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    t0 = time.thread_time()
    for t in range(a.shape[1]):
        eng.update(None, at[t], bt[t])  # every pair, in order: the exporter's fast path
    return time.thread_time() - t0


def bench_full(a, b, pairs_cfg) -> float:
    st = PairsState(pairs_cfg)
    legs = [(p.leg_a, p.leg_b) for p in pairs_cfg]
    al, bl = a.T.tolist(), b.T.tolist()
    t0 = time.thread_time()
    on_bar = st.on_bar
    for t in range(a.shape[1]):
        ts = 1_700_000_000 + 60 * t
        ra, rb = al[t], bl[t]
        for i, (sa, sb) in enumerate(legs):
            on_bar(sa, ts, ra[i])
            on_bar(sb, ts, rb[i])
        st.flush()
    return time.thread_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--minutes", type=int, default=750)
    ap.add_argument("--window", type=int, default=120)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kafka", action="store_true")
    ap.add_argument("--kafka-minutes", type=int, default=200)
    args = ap.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    P, M = args.pairs, args.minutes
    a, b = series(P, M)
    windows = [args.window] * P
    hedges = [HEDGES[i % 4] for i in range(P)]
    cfgs = [PairConfig(name=f"P{i}", leg_a=f"NSE:A{i}", leg_b=f"NSE:B{i}", hedge=hedges[i],
                       window=args.window, beta=1.0) for i in range(P)]
    bar_updates = 2 * P * M
    values = np.random.default_rng(2).normal(size=bar_updates).tolist()
    best = {"welford": 1e9, "engine": 1e9, "full": 1e9}
    ratios: dict[str, list[float]] = {"engine": [], "full": []}
    for _ in range(args.runs):
        # interleaved, so that a load spike from other work hits all three alike
        t = {"welford": welford(values), "engine": bench_engine(a, b, windows, hedges),
             "full": bench_full(a, b, cfgs)}
        for k, v in t.items():
            best[k] = min(best[k], v)
        for k in ratios:
            ratios[k].append(t[k] / t["welford"])
    w_ns = best["welford"] / bar_updates * 1e9
    print(f"pairs={P} minutes={M} window={args.window} bar updates={bar_updates:,} "
          f"(best of {args.runs}; ratio = median over runs of the ratio within a run)")
    print(f"anchor  bare Welford loop        {w_ns:8.1f} ns/value  "
          f"{bar_updates / best['welford']:12,.0f} values/s")
    for k, label in (("engine", "engine (vectorised update)"),
                     ("full", "full path on_bar + flush")):
        ns = best[k] / bar_updates * 1e9
        r = sorted(ratios[k])
        print(f"{k:7s} {label:26s} {ns:8.1f} ns/bar     {bar_updates / best[k]:12,.0f} bar "
              f"updates/s   ratio to anchor {r[len(r) // 2]:5.2f}x (runs {r[0]:.2f}-{r[-1]:.2f})")
    if args.kafka:
        through_kafka(cfgs, a, b, min(args.kafka_minutes, M))


def through_kafka(cfgs: list[PairConfig], a, b, minutes: int) -> None:
    import datetime as dt
    import threading
    import uuid

    import msgspec
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from tradeops import db
    from tradeops.config import load
    from tradeops.exporters.pairs import build
    from tradeops.kafka_admin import client_conf

    rep = msgspec.structs.replace
    base = load("infra/dev/tradeops.toml")
    suffix = uuid.uuid4().hex[:8]
    topic = f"bench.pairs.bars.{suffix}"
    dbname = f"bench_pairs_{suffix}"
    admin = AdminClient(client_conf(base))
    for f in admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)]).values():
        f.result(15)
    with db.connect(rep(base, postgres=rep(base.postgres, dbname="postgres")),
                    autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{dbname}"')
    cfg = rep(base, pairs=cfgs, topics=rep(base.topics, bars_1m=topic),
              postgres=rep(base.postgres, dbname=dbname),
              pairs_exporter=rep(base.pairs_exporter, group_id=f"bench-pairs-{suffix}",
                                 listen="127.0.0.1:0"))
    try:
        with db.connect(cfg) as conn:
            db.migrate(conn, cfg)
        t0 = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(days=1)
        p = Producer(client_conf(cfg, **{"linger.ms": 20, "batch.num.messages": 10000}))
        n = 0
        for t in range(minutes):
            ts = (t0 + dt.timedelta(minutes=t)).isoformat()
            for i, pc in enumerate(cfgs):
                for sym, c in ((pc.leg_a, a[i, t]), (pc.leg_b, b[i, t])):
                    c = float(c)
                    msg = (f'{{"symbol":"{sym}","ts":"{ts}","open":{c},"high":{c},"low":{c},'
                           f'"close":{c},"volume":1}}').encode()
                    while True:
                        try:
                            p.produce(topic, msg, key=sym.encode())
                            break
                        except BufferError:
                            p.poll(0.05)
                    n += 1
        p.flush(60)
        # anchor: bare consume + the contract's decoder over the same topic
        from confluent_kafka import Consumer, TopicPartition

        from tradeops import contracts

        dec = contracts.decoder("bars_1m").decode
        c = Consumer(client_conf(cfg, **{"group.id": f"bench-anchor-{suffix}",
                                         "enable.auto.commit": False}))
        c.assign([TopicPartition(topic, part, 0) for part in range(6)])
        got = 0
        start = time.perf_counter()
        while got < n:
            for m in c.consume(1000, 1.0):
                if m.error() is None:
                    dec(m.value())
                    got += 1
        anchor = time.perf_counter() - start
        c.close()
        print(f"kafka   anchor: bare consume + decode of {n:,} bars: {anchor:.2f} s = "
              f"{n / anchor:,.0f} bars/s")
        app, loop, state = build(cfg, env={})
        th = threading.Thread(target=app.serve, args=(loop,), kwargs={"signals": False},
                              daemon=True)
        th.start()
        while app.state.name != "RUNNING":
            time.sleep(0.01)
        start = time.perf_counter()
        while state.engine.updates.sum() < len(cfgs) * minutes:
            time.sleep(0.005)
        secs = time.perf_counter() - start
        app.stop_event.set()
        th.join(30)
        print(f"kafka   exporter loop, {n:,} bars on 6 partitions: {secs:.2f} s = "
              f"{n / secs:,.0f} bar updates/s (consume + decode + align + engine), "
              f"{secs / anchor:.2f}x the anchor's time")
    finally:
        for f in admin.delete_topics([topic]).values():
            f.result(15)
        with db.connect(rep(base, postgres=rep(base.postgres, dbname="postgres")),
                        autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
