"""Record timestamps at committed offsets against the real broker (EXP-TUNE): two groups
lagging on the same partition at different offsets both get their exact
``kafka_consumergroup_lag_seconds`` in the same scrape, and a run of scrapes whose offsets
all changed reads each new record once and exactly (the reader that re-assigns per scrape
used to wait librdkafka's 1 s fetch.queue.backoff.ms per read: docs/benchmarks.md)."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tradeops.exporters.kafka_lag import IsolatedLagReader, LagCollector, LagTracker, RecordTimestamps
from tradeops.kafka_admin import client_conf


@pytest.mark.integration
def test_groups_sharing_a_partition_get_exact_ages_every_scrape(kafka_cfg, kafka_ready):
    cfg = kafka_cfg
    topic = cfg.topics.order_events
    base = time.time() - 1000.0
    prod = Producer(client_conf(cfg))
    for p in (0, 1):
        for i in range(100):
            prod.produce(topic, b"x", partition=p, timestamp=int((base + i) * 1000))
    assert prod.flush(10) == 0
    groups = [f"t-reads-{k}-{uuid.uuid4().hex[:6]}" for k in range(3)]
    committers = [Consumer(client_conf(cfg, **{"group.id": g})) for g in groups]
    conf = client_conf(cfg)
    clock = [time.time()]
    stamps = RecordTimestamps(conf)
    reader = IsolatedLagReader(conf)
    lag = LagCollector(groups, reader, stamps, LagTracker(5), wall_clock=lambda: clock[0])
    try:
        for step in range(4):
            offsets = {}
            for gi, c in enumerate(committers):
                for p in (0, 1):
                    offsets[(groups[gi], p)] = 10 * step + 3 * gi + p
                c.commit(offsets=[TopicPartition(topic, p, offsets[(groups[gi], p)]) for p in (0, 1)],
                         asynchronous=False)
            reads_before = stamps.reads
            clock[0] = time.time()
            fams = lag(time.monotonic() + 20)
            ages = {(s.labels["consumergroup"], int(s.labels["partition"])): s.value
                    for f in fams for s in f.samples if s.name == "kafka_consumergroup_lag_seconds"}
            # every group on every partition, each the age of exactly its own record
            assert ages == pytest.approx({k: clock[0] - (base + o) for k, o in offsets.items()},
                                         abs=1e-3), step
            assert stamps.reads - reads_before == len(offsets)  # all offsets new: read once each
        # nothing changed: the next scrape reads nothing
        reads_before = stamps.reads
        lag(time.monotonic() + 20)
        assert stamps.reads == reads_before
    finally:
        for c in committers:
            c.close()
        stamps.close()
        reader.close()
