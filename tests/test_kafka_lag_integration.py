"""Kafka lag against the real broker: a group that stops committing shows growing lag in
messages and seconds and turns STOP (no members) or STALL (member alive, offset stuck);
catching up returns to OK; a deleted group's series disappear; the record at a committed
offset is read once and cached."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tradeops.exporters.kafka_lag import (
    IsolatedLagReader,
    LagCollector,
    LagTracker,
    LagWorkerError,
    RecordTimestamps,
)
from tradeops.kafka_admin import client_conf


def sample(families, name, labels):
    for fam in families:
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def series_of(families, group):
    return [(s.name, s.labels) for f in families for s in f.samples
            if s.labels.get("consumergroup") == group]


def status(families, group):
    on = [s.labels["status"] for f in families for s in f.samples
          if s.name == "kafka_consumergroup_status" and s.labels["consumergroup"] == group
          and s.value == 1]
    return on[0] if len(on) == 1 else on


def test_lag_messages_seconds_status_and_deleted_group(kafka_cfg, kafka_ready):
    cfg = kafka_cfg
    topic = cfg.topics.order_events
    base = time.time() - 600.0
    prod = Producer(client_conf(cfg))

    def produce(start, n):
        for i in range(start, start + n):
            prod.produce(topic, b"x", partition=0, timestamp=int((base + i) * 1000))
        assert prod.flush(10) == 0

    produce(0, 10)
    g_stop, g_stall, g_never = (f"t-lag-{k}-{uuid.uuid4().hex[:6]}" for k in ("stop", "stall", "never"))
    # g_stop commits offset 4 on partition 0 and leaves: no members
    c = Consumer(client_conf(cfg, **{"group.id": g_stop}))
    c.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    c.close()
    # g_stall: a live member that committed 4 and then does not move
    stall = Consumer(client_conf(cfg, **{"group.id": g_stall, "enable.auto.commit": False,
                                         "auto.offset.reset": "earliest"}))
    stall.subscribe([topic])
    end = time.monotonic() + 30
    while not stall.assignment() and time.monotonic() < end:
        stall.poll(0.2)
    assert stall.assignment(), "stall consumer got no assignment"
    stall.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)

    conf = client_conf(cfg)
    clock = [time.time()]
    stamps = RecordTimestamps(conf)
    reader = IsolatedLagReader(conf)
    lag = LagCollector([g_stop, g_stall, g_never], reader, stamps,
                       LagTracker(size=3, min_interval_s=0), wall_clock=lambda: clock[0])
    try:
        def scrape():
            return lag(time.monotonic() + 10)

        f1 = scrape()
        p0 = {"consumergroup": g_stop, "topic": topic, "partition": "0"}
        assert sample(f1, "kafka_consumergroup_lag", p0) == 6
        assert sample(f1, "kafka_consumergroup_lag_sum", {"consumergroup": g_stop, "topic": topic}) == 6
        assert sample(f1, "kafka_consumergroup_current_offset", p0) == 4
        # exactly the age of record 4 (its timestamp), not an interpolation
        assert sample(f1, "kafka_consumergroup_lag_seconds", p0) == pytest.approx(clock[0] - (base + 4), abs=1e-3)
        # partitions without a commit have no series
        assert sample(f1, "kafka_consumergroup_lag", {**p0, "partition": "1"}) is None
        assert series_of(f1, g_never) == []
        assert sample(f1, "kafka_consumergroup_members", {"consumergroup": g_stall}) == 1
        assert sample(f1, "kafka_consumergroup_members", {"consumergroup": g_stop}) == 0
        assert status(f1, g_stop) == "OK"  # window not full yet

        produce(10, 5)
        clock[0] += 15
        f2 = scrape()
        assert sample(f2, "kafka_consumergroup_lag", p0) == 11
        assert sample(f2, "kafka_consumergroup_lag_seconds", p0) == pytest.approx(clock[0] - (base + 4), abs=1e-3)
        produce(15, 5)
        clock[0] += 15
        f3 = scrape()
        assert sample(f3, "kafka_consumergroup_lag", p0) == 16
        assert status(f3, g_stop) == "STOP"
        assert status(f3, g_stall) == "STALL"
        assert stamps.reads == 1  # record 4 read once, then cached (shared by both groups)

        # g_stall catches up: lag 0 -> OK; g_stop is deleted -> its series vanish
        stall.commit(offsets=[TopicPartition(topic, 0, 20)], asynchronous=False)
        admin = AdminClient(conf)
        admin.delete_consumer_groups([g_stop], request_timeout=10)[g_stop].result(15)
        clock[0] += 15
        f4 = scrape()
        st = {"consumergroup": g_stall, "topic": topic, "partition": "0"}
        assert sample(f4, "kafka_consumergroup_lag", st) == 0
        assert sample(f4, "kafka_consumergroup_lag_seconds", st) == 0
        assert status(f4, g_stall) == "OK"
        assert series_of(f4, g_stop) == []
        assert g_stop not in lag.tracker.groups()
        # a rewind (offset reset backwards) of the live group while it lags
        stall.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
        clock[0] += 15
        f5 = scrape()
        assert sample(f5, "kafka_consumergroup_lag", st) == 10
        assert sample(f5, "kafka_consumergroup_lag_seconds", st) == pytest.approx(clock[0] - (base + 10), abs=1e-3)
        stall.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)
        clock[0] += 15
        f6 = scrape()
        assert status(f6, g_stall) == "OK"  # the lag-0 observation is still in the window
        clock[0] += 15
        f7 = scrape()
        assert sample(f7, "kafka_consumergroup_lag", st) == 15
        assert status(f7, g_stall) == "REWIND"
        # the child holding the admin client dies (as on librdkafka's abort): the next
        # scrape starts a new child and carries on
        reader.proc.kill()
        reader.proc.wait(5)
        clock[0] += 15
        f8 = scrape()
        assert sample(f8, "kafka_consumergroup_lag", st) == 15 and reader.spawned == 2
        # a child that does not answer within the budget is killed; the scrape fails alone
        with pytest.raises(LagWorkerError, match="within the scrape budget"):
            lag(time.monotonic() + 0.001)
        assert reader.proc is None
        f9 = scrape()
        assert sample(f9, "kafka_consumergroup_lag", st) == 15 and reader.spawned == 3
    finally:
        stall.close()
        stamps.close()
        reader.close()
