"""gateway-oms lag scrape: one :class:`LagCollector` call against the local broker.

Three consumer groups on a fresh 6-partition topic (600 timestamped records per partition).
Anchor (same run): scrapes while every group is caught up, so the collection is the
child's AdminClient snapshot only (committed offsets, high watermarks, membership).
Ours: before every scrape each group commits new offsets behind the high watermark, so
every scrape must read the record at each of the 18 new committed offsets for
``kafka_consumergroup_lag_seconds`` (cache misses: the live-trading case). Legacy: the
same with the reader's librdkafka settings before EXP-TUNE (``fetch.queue.backoff.ms``
1000, ``fetch.wait.max.ms`` 500). The bench checks each scrape's lag seconds are exact.

    .venv/bin/python bench/bench_lag_scrape.py [--rounds 20] [--config infra/dev/tradeops.toml]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tradeops import config
from tradeops.exporters.kafka_lag import IsolatedLagReader, LagCollector, LagTracker, RecordTimestamps
from tradeops.kafka_admin import client_conf

PARTITIONS, RECORDS, GROUPS = 6, 600, 3
LEGACY = {"fetch.queue.backoff.ms": 1000, "fetch.wait.max.ms": 500}


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return f"median {statistics.median(xs) * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  max {xs[-1] * 1000:7.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--config", default="infra/dev/tradeops.toml")
    args = ap.parse_args()
    cfg = config.load(args.config)
    conf = client_conf(cfg)
    admin = AdminClient(conf)
    topic = f"bench.lag.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(15)
    groups = [f"bench-lag-{i}-{uuid.uuid4().hex[:6]}" for i in range(GROUPS)]
    committers = {g: Consumer(client_conf(cfg, **{"group.id": g})) for g in groups}
    base = time.time() - 3600.0
    prod = Producer(client_conf(cfg, **{"linger.ms": 5}))
    for p in range(PARTITIONS):
        for i in range(RECORDS):
            prod.produce(topic, b"x", partition=p, timestamp=int((base + i) * 1000))
    assert prod.flush(30) == 0
    step = [0]

    def commit(offset_of) -> None:
        for gi, g in enumerate(groups):
            committers[g].commit(offsets=[TopicPartition(topic, p, offset_of(gi, p))
                                          for p in range(PARTITIONS)], asynchronous=False)

    def run(mode: str, overrides: dict | None) -> list[float]:
        stamps = RecordTimestamps(conf, overrides)
        reader = IsolatedLagReader(conf)
        lag = LagCollector(groups, reader, stamps, LagTracker(10))
        took = []
        try:
            if mode != "anchor":
                commit(lambda gi, p: gi + 1)  # the warm-up reads a record of the topic too
            lag(time.monotonic() + 10)  # spawn the child, connect, first read (not measured)
            for _ in range(args.rounds):
                if mode == "anchor":
                    commit(lambda gi, p: RECORDS)
                else:
                    step[0] += 1
                    commit(lambda gi, p: (step[0] * 7 + gi * 3 + p) % (RECORDS - 1))
                wall0 = time.time()
                t0 = time.perf_counter()
                fams = lag(time.monotonic() + 10)
                took.append(time.perf_counter() - t0)
                now = time.time()
                if mode != "anchor":
                    secs = [s for f in fams for s in f.samples
                            if s.name == "kafka_consumergroup_lag_seconds"]
                    assert len(secs) == GROUPS * PARTITIONS, len(secs)
                    for s in secs:
                        off = (step[0] * 7 + groups.index(s.labels["consumergroup"]) * 3
                               + int(s.labels["partition"])) % (RECORDS - 1)
                        # the age of exactly the record at the committed offset (records
                        # are 1 s apart), taken at some moment during the scrape
                        age = s.value + base + off
                        assert wall0 - 0.5 <= age <= now + 0.5, (mode, s.labels, s.value)
        finally:
            stamps.close()
            reader.close()
        return took

    try:
        anchor = run("anchor", None)
        ours = run("ours", None)
        legacy = run("legacy", LEGACY)
    finally:
        for c in committers.values():
            c.close()
        admin.delete_topics([topic], operation_timeout=10)
        for f in admin.delete_consumer_groups(groups, request_timeout=10).values():
            with contextlib.suppress(Exception):  # best-effort cleanup
                f.result(15)
    a = statistics.median(anchor)
    print(f"{args.rounds} scrapes each, {GROUPS} groups x {PARTITIONS} partitions")
    print(f"anchor (caught up, snapshot only): {stats(anchor)}")
    print(f"ours   (18 new offsets per scrape): {stats(ours)}  median/anchor {statistics.median(ours) / a:.2f}x")
    print(f"legacy (pre EXP-TUNE settings)    : {stats(legacy)}  median/anchor {statistics.median(legacy) / a:.2f}x")


if __name__ == "__main__":
    main()
