"""Kafka consumer-group lag: in messages, in seconds (exact), and a Burrow-style status.

Pure logic (unit-tested without a broker): :func:`partition_lag`, :func:`lag_seconds`,
:func:`evaluate` (the status rules over a window of observations) and :class:`LagTracker`
(windows per group/partition, dropping what disappeared). Client calls live in
:class:`LagReader` (AdminClient for committed offsets, high watermarks, group state) and
:class:`RecordTimestamps` (reads the record AT a committed offset, cached per offset).
:class:`LagCollector` joins them into metric families for a scrape.

Status rules (Burrow's evaluator, adapted to offsets observed at scrape time), per partition
over the last ``window`` observations, checked in this order:

1. OK      lag was 0 in at least one observation (an idle, caught-up group is never STOP);
2. REWIND  the committed offset went backwards between two observations;
3. STOP    (full window) the committed offset never changed and the group has no active
           members: nobody is committing;
4. STALL   (full window) the committed offset never changed but the group has members:
           a consumer is alive and stuck;
5. WARN    (full window) offsets move but the lag never decreased;
6. OK      otherwise (also while the window is not yet full).

A group's status is its worst partition's: OK < WARN < STALL < STOP < REWIND.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import select
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client.core import GaugeMetricFamily

from .render import FastGaugeFamily

log = logging.getLogger("tradeops.exporters.kafka_lag")


class Status(enum.IntEnum):
    """Severity order; the numeric value is not exported (the status label is)."""

    OK = 0
    WARN = 1
    STALL = 2
    STOP = 3
    REWIND = 4


STATUSES = [s.name for s in Status]


# ------------------------------------------------------------------------- pure logic
def partition_lag(high: int, committed: int | None) -> int | None:
    """High watermark minus committed, clamped at 0; None when nothing is committed."""
    if committed is None or committed < 0:
        return None
    return max(0, high - committed)


def lag_seconds(lag: int, record_ts: float | None, now: float) -> float | None:
    """Age of the record at the committed offset (the oldest one not yet consumed).

    0 when caught up; None when the lag is positive but the record's time is unknown.
    """
    if lag <= 0:
        return 0.0
    if record_ts is None:
        return None
    return max(0.0, now - record_ts)


@dataclass(frozen=True, slots=True)
class Observation:
    t: float  # wall-clock seconds of the observation
    committed: int
    lag: int


def evaluate(window: Sequence[Observation], size: int, active: bool) -> Status:
    """Status of one partition from its recent observations (oldest first); see module doc."""
    if not window:
        return Status.OK
    if any(o.lag == 0 for o in window):
        return Status.OK
    pairs = list(zip(window, window[1:], strict=False))
    if any(b.committed < a.committed for a, b in pairs):
        return Status.REWIND
    if len(window) < size:
        return Status.OK
    if all(b.committed == a.committed for a, b in pairs):
        return Status.STALL if active else Status.STOP
    if all(b.lag >= a.lag for a, b in pairs):
        return Status.WARN
    return Status.OK


TP = tuple[str, int]
TPO = tuple[str, int, int]


class LagTracker:
    """Windows of observations per (group, topic, partition).

    ``observe`` adds an observation for every partition in the snapshot unless the last
    one is younger than ``min_interval_s`` (concurrent/rapid scrapes do not shrink the
    time the window covers); partitions and groups that vanished are forgotten.
    """

    def __init__(self, size: int, min_interval_s: float = 0.0):
        self.size = size
        self.min_interval_s = min_interval_s
        self._windows: dict[str, dict[TP, deque[Observation]]] = {}
        self._last_t: dict[str, float] = {}

    def observe(self, group: str, snapshot: Mapping[TP, tuple[int, int]], now: float) -> None:
        """``snapshot``: (topic, partition) -> (committed, lag) for committed partitions."""
        windows = self._windows.setdefault(group, {})
        for tp in [tp for tp in windows if tp not in snapshot]:
            del windows[tp]
        last = self._last_t.get(group)
        if last is not None and now - last < self.min_interval_s:
            return
        self._last_t[group] = now
        for tp, (committed, lag) in snapshot.items():
            w = windows.get(tp)
            if w is None:
                w = windows[tp] = deque(maxlen=self.size)
            w.append(Observation(now, committed, lag))

    def forget(self, group: str) -> None:
        self._windows.pop(group, None)
        self._last_t.pop(group, None)

    def groups(self) -> list[str]:
        return list(self._windows)

    def partition_status(self, group: str, active: bool) -> dict[TP, Status]:
        return {tp: evaluate(list(w), self.size, active)
                for tp, w in self._windows.get(group, {}).items()}

    def status(self, group: str, active: bool) -> Status | None:
        """Worst partition status; None for a group without committed partitions."""
        st = self.partition_status(group, active)
        return max(st.values()) if st else None


# ------------------------------------------------------------------------ client side
@dataclass
class GroupSnapshot:
    group: str
    committed: dict[TP, int]  # only partitions with a commit
    high: dict[TP, int]
    active: bool
    members: int


class LagReader:
    """Committed offsets, high watermarks and membership of groups through one AdminClient."""

    def __init__(self, conf: Mapping):
        # librdkafka's per-attempt connect failures (level 3) flood stdout during an
        # outage; failures surface as exceptions here instead
        self.admin = AdminClient({"log_level": 2, **conf})

    def snapshot(self, groups: Sequence[str], deadline: float) -> list[GroupSnapshot]:
        """Raises KafkaException (or TimeoutError) when the broker does not answer in time."""

        def left() -> float:
            return max(0.05, deadline - time.monotonic())

        offs = {g: self.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(g)], request_timeout=left())[g] for g in groups}
        desc = self.admin.describe_consumer_groups(list(groups), request_timeout=left()) if groups else {}
        committed: dict[str, dict[TP, int]] = {}
        for g, fut in offs.items():
            res = fut.result(timeout=left())
            committed[g] = {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions
                            if tp.error is None and tp.offset >= 0}
        tps = {tp for c in committed.values() for tp in c}
        high: dict[TP, int] = {}
        if tps:
            futs = self.admin.list_offsets({TopicPartition(t, p): OffsetSpec.latest() for t, p in tps},
                                           request_timeout=left())
            for tp, fut in futs.items():
                try:
                    high[(tp.topic, tp.partition)] = fut.result(timeout=left()).offset
                except KafkaException as e:
                    err = e.args[0]
                    if err.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise
                    # the topic was deleted: the partition drops out of the snapshot
        out = []
        for g in groups:
            active, members = False, 0
            fut = desc.get(g)
            if fut is not None:
                try:
                    d = fut.result(timeout=left())
                    members = len(d.members)
                    active = members > 0 and d.state not in (ConsumerGroupState.EMPTY,
                                                              ConsumerGroupState.DEAD)
                except KafkaException as e:
                    if e.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
                        raise
            c = {tp: o for tp, o in committed[g].items() if tp in high}
            out.append(GroupSnapshot(g, c, {tp: high[tp] for tp in c}, active, members))
        return out


def snapshots_to_wire(snaps: Sequence[GroupSnapshot]) -> list[dict]:
    return [{"group": s.group, "active": s.active, "members": s.members,
             "partitions": [[t, p, off, s.high[(t, p)]] for (t, p), off in s.committed.items()]}
            for s in snaps]


def snapshots_from_wire(data: list[dict]) -> list[GroupSnapshot]:
    out = []
    for d in data:
        parts = d["partitions"]
        out.append(GroupSnapshot(d["group"], {(t, p): off for t, p, off, _ in parts},
                                 {(t, p): high for t, p, _, high in parts}, d["active"], d["members"]))
    return out


class LagWorkerError(RuntimeError):
    pass


class IsolatedLagReader:
    """:class:`LagReader` in a child process (``python -m tradeops.exporters.kafka_lag``).

    Why: librdkafka aborts the whole process (``rd_kafka_enq_once_del_source_return:
    Assertion `eonce->refcnt > 0' failed``) when the connection to the group coordinator
    drops during ListConsumerGroupOffsets/DescribeConsumerGroups (librdkafka #4605, #3663;
    fix proposed in PR #5397, unreleased). Seen here when the broker stops mid-scrape. In a
    child, such an abort costs one scrape's lag series; the exporter lives on and the next
    scrape starts a fresh child. The client config (it may hold the SASL password) goes
    over the child's stdin, never argv; requests and answers are JSON lines.
    """

    def __init__(self, conf: Mapping):
        self.conf = dict(conf)
        self.proc: subprocess.Popen | None = None
        self.spawned = 0
        self._seq = 0

    def _spawn(self) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_"))}
        proc = subprocess.Popen([sys.executable, "-m", "tradeops.exporters.kafka_lag"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                close_fds=True)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(self.conf).encode() + b"\n")
        proc.stdin.flush()
        self.spawned += 1
        return proc

    def snapshot(self, groups: Sequence[str], deadline: float) -> list[GroupSnapshot]:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                log.warning("lag worker exited with status %s; starting a new one", self.proc.returncode)
            self.proc = self._spawn()
        proc = self.proc
        self._seq += 1
        req = {"id": self._seq, "groups": list(groups),
               "timeout": max(0.05, deadline - time.monotonic())}
        try:
            proc.stdin.write(json.dumps(req).encode() + b"\n")
            proc.stdin.flush()
            line = self._readline(proc, deadline)
        except (OSError, LagWorkerError):
            self.close()
            raise
        resp = json.loads(line)
        if resp.get("id") != self._seq:
            self.close()
            raise LagWorkerError("lag worker answered out of turn")
        if "error" in resp:
            raise LagWorkerError(resp["error"])
        return snapshots_from_wire(resp["snapshots"])

    @staticmethod
    def _readline(proc: subprocess.Popen, deadline: float) -> bytes:
        fd = proc.stdout.fileno()
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise LagWorkerError("lag worker did not answer within the scrape budget")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise LagWorkerError(f"lag worker died (status {proc.wait(1)})")
            buf += chunk
        return buf

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(5)
            for f in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(OSError):
                    f.close()
            self.proc = None


def worker_main() -> None:
    """Child side of :class:`IsolatedLagReader`: conf line, then request/answer lines."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    first = stdin.readline()
    if not first:
        return
    reader = LagReader(json.loads(first))
    for line in stdin:
        req = json.loads(line)
        deadline = time.monotonic() + float(req["timeout"])
        try:
            resp = {"id": req["id"], "snapshots": snapshots_to_wire(reader.snapshot(req["groups"], deadline))}
        except KafkaException as e:
            resp = {"id": req["id"], "error": e.args[0].str()}
        except Exception as e:  # noqa: BLE001 - reported to the parent, which logs it
            resp = {"id": req["id"], "error": f"{type(e).__name__}: {e}"}
        stdout.write(json.dumps(resp).encode() + b"\n")
        stdout.flush()


class RecordTimestamps:
    """Timestamp (seconds) of the record at an exact offset, read with assign + seek.

    One long-lived reader consumer (never subscribes, never commits) is assigned the
    wanted partitions at the wanted offsets, returns the first record of each, and is
    unassigned. Results are cached per (topic, partition, offset); :meth:`retain` drops
    entries no longer needed, so a scrape re-reads only offsets that changed. If the
    committed offset was deleted by retention the reader starts at the earliest record
    and that record's time is used.
    """

    def __init__(self, conf: Mapping, overrides: Mapping | None = None):
        # overrides: librdkafka settings applied last (bench/bench_lag_scrape.py measures
        # the old fetch.queue.backoff.ms with it)
        self.consumer = Consumer({
            **conf,
            "group.id": f"{conf.get('client.id', 'tradeops')}-lag-reader",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "queued.min.messages": 1,
            # with queued.min.messages = 1 every fetched record "exceeds" the queue
            # threshold, and librdkafka >= 2.4 then postpones the partition's next fetch
            # by fetch.queue.backoff.ms (default 1 s): each read of a new offset took 1.0 s,
            # half the scrape budget (docs/benchmarks.md, EXP-TUNE)
            "fetch.queue.backoff.ms": 0,
            "fetch.wait.max.ms": 10,  # a fetch left in flight at unassign delays the next read
            "fetch.max.bytes": 1048576,
            "max.partition.fetch.bytes": 65536,
            "log_level": 2,
            **(overrides or {}),
        })
        self.cache: dict[TPO, float | None] = {}
        self.reads = 0  # records actually fetched (tests: the cache works)
        self._known_topics: set[str] = set()

    def get(self, wanted: Iterable[TPO], deadline: float) -> dict[TPO, float | None]:
        wanted = set(wanted)
        missing = sorted(k for k in wanted if k not in self.cache)
        # one assignment reads one offset per partition: several groups lagging on the same
        # partition at different offsets (oms-core and oms-lifecycle on oms.order_events)
        # take one round each (a read is a few ms)
        while missing and time.monotonic() < deadline:
            todo: dict[TP, int] = {}
            rest = []
            for t, p, o in missing:
                if (t, p) in todo:
                    rest.append((t, p, o))
                else:
                    todo[(t, p)] = o
            self._read(todo, deadline)
            missing = rest
        return {k: self.cache.get(k) for k in wanted}

    def retain(self, keep: Iterable[TPO]) -> None:
        keep = set(keep)
        for k in [k for k in self.cache if k not in keep]:
            del self.cache[k]

    def _read(self, todo: dict[TP, int], deadline: float) -> None:
        c = self.consumer
        for topic in sorted({t for t, _ in todo} - self._known_topics):
            # the first assignment of a topic otherwise waits ~1 s for librdkafka's own
            # leader lookup; an explicit metadata request takes a few ms
            try:
                c.list_topics(topic, timeout=max(0.05, min(1.0, deadline - time.monotonic())))
                self._known_topics.add(topic)
            except KafkaException as e:
                log.debug("metadata of %s: %s", topic, e.args[0].str())
        c.assign([TopicPartition(t, p, o) for (t, p), o in todo.items()])
        pending = dict(todo)
        try:
            while pending and time.monotonic() < deadline:
                msgs = c.consume(num_messages=max(1, len(pending)),
                                 timeout=min(0.2, max(0.01, deadline - time.monotonic())))
                for m in msgs:
                    if m.error() is not None:
                        continue
                    key = (m.topic(), m.partition())
                    want = pending.get(key)
                    if want is None or m.offset() < want:
                        continue
                    ts_type, ts_ms = m.timestamp()
                    self.cache[(key[0], key[1], want)] = ts_ms / 1000.0 if ts_ms > 0 else None
                    self.reads += 1
                    del pending[key]
        finally:
            c.unassign()

    def close(self) -> None:
        self.consumer.close()


class LagCollector:
    """Scrape-time lag for ``groups``; call with the scrape's deadline. Exposition::

        # TYPE kafka_consumergroup_lag gauge
        kafka_consumergroup_lag{consumergroup="oms-core",partition="0",topic="oms.order_events"} 12.0
        # TYPE kafka_consumergroup_lag_sum gauge
        kafka_consumergroup_lag_sum{consumergroup="oms-core",topic="oms.order_events"} 12.0
        # TYPE kafka_consumergroup_lag_seconds gauge
        kafka_consumergroup_lag_seconds{consumergroup="oms-core",partition="0",topic="oms.order_events"} 3.2
        # TYPE kafka_consumergroup_current_offset gauge
        kafka_consumergroup_current_offset{consumergroup="oms-core",partition="0",topic="oms.ev"} 1500
        # TYPE kafka_consumergroup_members gauge
        kafka_consumergroup_members{consumergroup="oms-core"} 1.0
        # TYPE kafka_consumergroup_status gauge
        kafka_consumergroup_status{consumergroup="oms-core",status="OK"} 1.0
        kafka_consumergroup_status{consumergroup="oms-core",status="WARN"} 0.0
        ... (STALL, STOP, REWIND: one-hot)

    A group with no committed offset (never consumed, or deleted) has no series at all.
    """

    def __init__(self, groups: Sequence[str], reader: LagReader | IsolatedLagReader,
                 timestamps: RecordTimestamps, tracker: LagTracker, wall_clock=time.time):
        self.groups = list(dict.fromkeys(groups))
        self.reader = reader
        self.timestamps = timestamps
        self.tracker = tracker
        self.wall_clock = wall_clock

    def __call__(self, deadline: float) -> list:
        snaps = self.reader.snapshot(self.groups, deadline)
        now = self.wall_clock()
        lag = FastGaugeFamily("kafka_consumergroup_lag", "Messages the group has not consumed "
                                "(high watermark - committed offset, >= 0) per partition.",
                                labels=["consumergroup", "topic", "partition"])
        lag_sum = GaugeMetricFamily("kafka_consumergroup_lag_sum", "Sum of the lag over the "
                                    "topic's committed partitions.", labels=["consumergroup", "topic"])
        lag_s = FastGaugeFamily("kafka_consumergroup_lag_seconds", "Age of the record at the "
                                  "committed offset (0 when caught up), seconds.",
                                  labels=["consumergroup", "topic", "partition"])
        current = FastGaugeFamily("kafka_consumergroup_current_offset", "Committed offset.",
                                    labels=["consumergroup", "topic", "partition"])
        members = GaugeMetricFamily("kafka_consumergroup_members", "Members of the group.",
                                    labels=["consumergroup"])
        status = GaugeMetricFamily("kafka_consumergroup_status", "Burrow-style status of the group "
                                   "(one-hot over OK, WARN, STALL, STOP, REWIND).",
                                   labels=["consumergroup", "status"])
        lags: dict[str, dict[TP, int]] = {}
        wanted: list[TPO] = []
        for s in snaps:
            lags[s.group] = {tp: partition_lag(s.high[tp], off) for tp, off in s.committed.items()}
            wanted += [(t, p, s.committed[(t, p)]) for (t, p), n in lags[s.group].items() if n]
        ts = self.timestamps.get(wanted, deadline) if wanted else {}
        self.timestamps.retain(wanted)
        for s in snaps:
            g = s.group
            if not s.committed:
                self.tracker.forget(g)  # group deleted or never committed: no series
                continue
            self.tracker.observe(g, {tp: (s.committed[tp], n) for tp, n in lags[g].items()}, now)
            sums: dict[str, int] = {}
            for (t, p), n in sorted(lags[g].items()):
                labels = [g, t, str(p)]
                lag.add_metric(labels, n)
                current.add_metric(labels, s.committed[(t, p)])
                sums[t] = sums.get(t, 0) + n
                secs = lag_seconds(n, ts.get((t, p, s.committed[(t, p)])), now)
                if secs is not None:
                    lag_s.add_metric(labels, secs)
            for t, n in sorted(sums.items()):
                lag_sum.add_metric([g, t], n)
            members.add_metric([g], s.members)
            st = self.tracker.status(g, s.active) or Status.OK
            for name in STATUSES:
                status.add_metric([g, name], 1.0 if name == st.name else 0.0)
        for g in self.tracker.groups():
            if g not in self.groups:
                self.tracker.forget(g)
        return [lag, lag_sum, lag_s, current, members, status]


if __name__ == "__main__":
    worker_main()
