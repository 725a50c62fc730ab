"""The TUI's Kafka view (the Kafka web UI that cannot be installed here): topics with
partitions and watermarks, consumer groups with lag in messages and seconds and status,
and a peek at a topic's latest messages decoded by the contract.

Lag and status reuse the exporters' code (:mod:`tradeops.exporters.kafka_lag`): one
:class:`LagTracker` kept for the life of the view, fed one observation per refresh, so the
status (OK/WARN/STALL/STOP/REWIND) has the same meaning as the exporter's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from .. import contracts
from ..config import Config
from ..exporters.kafka_lag import (
    IsolatedLagReader,
    LagTracker,
    RecordTimestamps,
    Status,
    lag_seconds,
    partition_lag,
)
from ..kafka_admin import client_conf, topic_names


@dataclass
class TopicRow:
    topic: str
    partitions: int
    low: int  # sum of low watermarks
    high: int  # sum of high watermarks
    contract: str  # contract key ("order_events") or ""


@dataclass
class GroupRow:
    group: str
    members: int
    lag: int
    lag_seconds: float | None
    status: str
    worst: str  # "topic[partition]" with the oldest unconsumed record


class KafkaView:
    def __init__(self, cfg: Config, timeout: float = 3.0, window: int | None = None):
        self.cfg = cfg
        self.timeout = timeout
        self.conf = client_conf(cfg)
        self.admin = AdminClient({**self.conf, "log_level": 2})
        self.tracker = LagTracker(window or cfg.gateway_oms.lag_window)
        self.reader = IsolatedLagReader(self.conf)
        self.stamps: RecordTimestamps | None = None
        self.contract_of = {v: k for k, v in topic_names(cfg).items()}

    def close(self) -> None:
        self.reader.close()
        if self.stamps is not None:
            self.stamps.close()

    def topics(self, include_internal: bool = False) -> list[TopicRow]:
        md = self.admin.list_topics(timeout=self.timeout)
        tps = [TopicPartition(t, p) for t, tm in md.topics.items()
               if include_internal or not t.startswith("__") for p in tm.partitions]
        lows: dict[str, int] = {}
        highs: dict[str, int] = {}
        if tps:
            for spec, acc in ((OffsetSpec.earliest(), lows), (OffsetSpec.latest(), highs)):
                futs = self.admin.list_offsets({tp: spec for tp in tps}, request_timeout=self.timeout)
                for tp, f in futs.items():
                    try:
                        acc[tp.topic] = acc.get(tp.topic, 0) + f.result(timeout=self.timeout).offset
                    except Exception:  # noqa: BLE001 - a partition without a leader: shown as 0
                        acc.setdefault(tp.topic, 0)
        rows = [TopicRow(t, len(tm.partitions), lows.get(t, 0), highs.get(t, 0), self.contract_of.get(t, ""))
                for t, tm in md.topics.items() if include_internal or not t.startswith("__")]
        return sorted(rows, key=lambda r: (r.contract == "", r.topic))

    def groups(self, groups: list[str] | None = None) -> list[GroupRow]:
        if groups is None:
            res = self.admin.list_consumer_groups(request_timeout=self.timeout).result(self.timeout)
            groups = sorted(g.group_id for g in res.valid if not g.group_id.endswith("-lag-reader"))
        if not groups:
            return []
        snaps = self.reader.snapshot(groups, time.monotonic() + self.timeout)
        now = time.time()
        wanted = [(t, p, off) for s in snaps for (t, p), off in s.committed.items()
                  if (partition_lag(s.high[(t, p)], off) or 0) > 0]
        ts: dict = {}
        if wanted:
            if self.stamps is None:
                self.stamps = RecordTimestamps(self.conf)
            ts = self.stamps.get(wanted, time.monotonic() + self.timeout)
            self.stamps.retain(wanted)
        rows = []
        for s in snaps:
            if not s.committed:
                self.tracker.forget(s.group)
                rows.append(GroupRow(s.group, s.members, 0, None, "-", "no committed offsets"))
                continue
            lags = {tp: partition_lag(s.high[tp], off) or 0 for tp, off in s.committed.items()}
            self.tracker.observe(s.group, {tp: (s.committed[tp], n) for tp, n in lags.items()}, now)
            secs = {tp: lag_seconds(n, ts.get((tp[0], tp[1], s.committed[tp])), now)
                    for tp, n in lags.items()}
            worst = max(lags, key=lambda tp: (secs[tp] or 0.0, lags[tp]))
            st = self.tracker.status(s.group, s.active) or Status.OK
            rows.append(GroupRow(s.group, s.members, sum(lags.values()), secs[worst], st.name,
                                 f"{worst[0]}[{worst[1]}]"))
        return rows

    def peek(self, topic: str, n: int = 10) -> list[str]:
        """The latest ``n`` messages over all partitions of ``topic``, newest last, decoded
        by the contract when the topic is a contract topic (a message that breaks the
        contract is shown with the decoder's one-line reason)."""
        md = self.admin.list_topics(topic, timeout=self.timeout)
        tm = md.topics.get(topic)
        if tm is None or tm.error is not None:
            return [f"(topic {topic} not found)"]
        c = Consumer({**self.conf, "group.id": f"{self.conf.get('client.id', 'tradeops')}-doctor-peek",
                      "enable.auto.commit": False, "enable.partition.eof": True,
                      "auto.offset.reset": "earliest", "log_level": 2})
        try:
            assign = []
            for p in tm.partitions:
                low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout)
                if high > low:
                    assign.append(TopicPartition(topic, p, max(low, high - n)))
            if not assign:
                return [f"(topic {topic} is empty)"]
            c.assign(assign)
            msgs = []
            eof = 0
            deadline = time.monotonic() + self.timeout
            while eof < len(assign) and time.monotonic() < deadline:
                for m in c.consume(100, timeout=0.2):
                    if m.error() is not None:
                        eof += 1  # _PARTITION_EOF (or an error): this partition is done
                        continue
                    msgs.append(m)
        finally:
            c.close()
        msgs.sort(key=lambda m: m.timestamp()[1])
        kind = self.contract_of.get(topic, "")
        out = []
        for m in msgs[-n:]:
            head = f"[{m.partition()}]@{m.offset()}"
            if kind:
                try:
                    out.append(f"{head} {contracts.encode(contracts.decode(kind, m.value())).decode()}")
                except contracts.DecodeError as e:
                    out.append(f"{head} INVALID ({e}): {(m.value() or b'')[:200]!r}")
            else:
                out.append(f"{head} {(m.value() or b'')[:300]!r}")
        return out
