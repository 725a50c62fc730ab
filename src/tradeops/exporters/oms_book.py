"""The in-memory OMS order book behind the order-lifecycle exporter.

Pure logic, no Kafka and no Prometheus: :class:`OrderBook` holds one
:class:`PartitionBook` per Kafka partition it owns, and every event of ``oms.order_events``
goes through :meth:`PartitionBook.apply`. Designed for the hot path (>= 100k events/s on one
core): statuses are small ints, orders are ``__slots__`` objects, counters are plain ints
and lists, and nothing is rendered per event (the exporter's Collector sums the partitions
at scrape time).

Rules, in the order :meth:`PartitionBook.apply` checks them (per order, by ``seq``):

- duplicate: a ``seq`` already seen for that order -> ignored, counted;
- out of order: a ``seq`` lower than the newest one applied and not seen before (it was
  overtaken) -> not applied, counted;
- gap: a ``seq`` more than one above the newest applied -> applied, counted (the events in
  between were lost or are late);
- then the transition ``current -> status`` is checked against
  :data:`tradeops.order_states.TRANSITIONS` (the one table). Allowed: applied and counted per
  (from, to). Not allowed: counted per (from, to) and NOT applied (the order keeps its
  status; its seq still advances so a redelivery is a duplicate, not a second invalid).

State is per partition (events are keyed by order_id, so an order lives in exactly one
partition): when Kafka revokes a partition its whole state, counters included, is dropped,
and the instance that gets it rebuilds it from the topic. Counters therefore cover the
current trading day (IST by default) of the partitions an instance owns; they restart from
zero at the day boundary, exactly like a freshly started exporter that replays "today".

Terminal orders stay in memory for ``terminal_grace_s`` (event time) and are then evicted to
a one-int tombstone (status + seen seqs), so a late or redelivered event for an evicted
order is classified exactly as if it were still in memory: eviction never changes a metric.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from ..order_states import NEW, TERMINAL, TRANSITIONS, OrderStatus

# -- statuses as small ints ------------------------------------------------------------------

STATUS_NAMES: tuple[str, ...] = (NEW, *(s.value for s in OrderStatus))
NS = len(STATUS_NAMES)
IDX: dict[str, int] = {name: i for i, name in enumerate(STATUS_NAMES)}
I_NEW = IDX[NEW]
I_SUBMITTED = IDX[OrderStatus.SUBMITTED]
I_OPEN = IDX[OrderStatus.OPEN]
I_TRIGGER_PENDING = IDX[OrderStatus.TRIGGER_PENDING]
I_FILLED = IDX[OrderStatus.FILLED]
I_REJECTED = IDX[OrderStatus.REJECTED]
I_RISK_REJECTED = IDX[OrderStatus.RISK_REJECTED]

# ALLOWED[from] is a bit mask of the allowed "to" statuses, built from the contract's table.
ALLOWED: tuple[int, ...] = tuple(
    sum(1 << IDX[t] for t in TRANSITIONS.get(name, ())) for name in STATUS_NAMES
)
IS_TERMINAL: tuple[bool, ...] = tuple(name in TERMINAL for name in STATUS_NAMES)
TERMINAL_IDX: tuple[int, ...] = tuple(i for i in range(NS) if IS_TERMINAL[i])
# the statuses reported by oms_orders{status}: every non-terminal one (NEW is not a status)
LIVE_IDX: tuple[int, ...] = tuple(i for i in range(1, NS) if not IS_TERMINAL[i])
ALLOWED_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (f, t) for f in range(NS) for t in range(1, NS) if ALLOWED[f] >> t & 1
)
INVALID_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (f, t) for f in range(NS) for t in range(1, NS) if not ALLOWED[f] >> t & 1
)
REJECT_IDX = (I_RISK_REJECTED, I_REJECTED)
ACK_IDX = (I_OPEN, I_TRIGGER_PENDING)

# histogram upper bounds in seconds (le); the last bucket is +Inf
ACK_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FILL_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0
)

OTHER = "other"

# seqs below this are remembered one bit each (Kite allows 25 modifications per order, so
# real orders stay far below); a larger seq is still ordered, only not remembered
SEQ_BITS = 1024
_SEQ_MASK = (1 << 32) - 1


def _tombstone(seen: int, seq: int, status: int) -> int:
    """An evicted order as one int: seen-bits | last seq (32 bits) | status (4 bits)."""
    return (seen << 36) | (min(seq, _SEQ_MASK) << 4) | status


_DAY_BASE: dict[tuple, float] = {}


def epoch_seconds(ts: datetime, _fixed=timezone, _cache=_DAY_BASE) -> float:
    """``ts.timestamp()`` at ~1/2.5 of its cost for the fixed-offset datetimes the decoder
    makes: the epoch of the local midnight is cached per (date, offset)."""
    tz = ts.tzinfo
    if type(tz) is not _fixed:
        return ts.timestamp()
    key = (ts.year, ts.month, ts.day, tz)
    base = _cache.get(key)
    if base is None:
        base = datetime(ts.year, ts.month, ts.day, tzinfo=tz).timestamp()
        if len(_cache) < 4096:
            _cache[key] = base
    return base + (ts.hour * 3600 + ts.minute * 60 + ts.second) + ts.microsecond * 1e-6


class Hist:
    """A fixed-bucket histogram in plain ints: ``counts[i]`` is the non-cumulative count of
    observations <= ``bounds[i]`` (the last slot is +Inf)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        if v < 0.0:  # clock skew between producers: never a negative latency
            v = 0.0
        self.counts[bisect_left(self.bounds, v)] += 1
        self.sum += v

    def add(self, other: Hist) -> None:
        c = self.counts
        for i, n in enumerate(other.counts):
            c[i] += n
        self.sum += other.sum

    def cumulative(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for b, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            acc += n
            out.append(("+Inf" if b == float("inf") else repr(b), acc))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)


class Order:
    """One order in the book. ``seen`` is a bit set of the seqs seen (bit n = seq n)."""

    __slots__ = ("order_id", "strategy", "symbol", "status", "seq", "seen", "since",
                 "submitted", "acked")

    def __init__(self, order_id: str, strategy: str, symbol: str):
        self.order_id = order_id
        self.strategy = strategy
        self.symbol = symbol
        self.status = I_NEW
        self.seq = 0
        self.seen = 0
        self.since = 0.0  # event time (epoch s) the order entered its current status
        self.submitted = -1.0  # event time of SUBMITTED, -1 until seen
        self.acked = False


class DayWindow:
    """The trading-day boundaries (epoch ms) of a timezone: "today" for replay and rollover."""

    def __init__(self, tz: str = "Asia/Kolkata"):
        self.tz = ZoneInfo(tz)

    def bounds_ms(self, ts_ms: int) -> tuple[int, int]:
        d = datetime.fromtimestamp(ts_ms / 1000.0, self.tz).date()
        return self._start_ms(d), self._start_ms(d + timedelta(days=1))

    def _start_ms(self, d: date) -> int:
        return int(datetime.combine(d, time(0), self.tz).timestamp() * 1000)


class BookConfig:
    """What the book needs from ``[oms_lifecycle]``, resolved once."""

    def __init__(self, strategies: Iterable[str], stuck_after_s: dict[str, float],
                 terminal_grace_s: float, timezone: str = "Asia/Kolkata"):
        self.strategies = tuple(dict.fromkeys(strategies))
        self.strategy_labels = (*self.strategies, OTHER) if OTHER not in self.strategies \
            else self.strategies
        self.stuck_after: dict[int, float] = {}
        for name, secs in stuck_after_s.items():
            if name not in IDX or name == NEW or IS_TERMINAL[IDX[name]]:
                raise ValueError(f"stuck_after_s: {name!r} is not a non-terminal status")
            self.stuck_after[IDX[name]] = float(secs)
        self.terminal_grace_s = float(terminal_grace_s)
        self.day = DayWindow(timezone)

    @classmethod
    def from_config(cls, cfg) -> BookConfig:
        oc = cfg.oms_lifecycle
        return cls(oc.strategies, oc.stuck_after_s, oc.terminal_grace_s, cfg.calendar.timezone)


class PartitionBook:
    """State and counters of one partition for one trading day.

    Lifecycle of a partition in an instance (guarded by :class:`OrderBook`):
    REBUILDING (assigned, replaying today's events up to the high watermark seen at
    assignment; not reported) -> LIVE (reported) -> dropped (revoked or lost).
    """

    def __init__(self, partition: int, conf: BookConfig, day: tuple[int, int],
                 rebuild_until: int = 0):
        self.partition = partition
        self.conf = conf
        self.day_start_ms, self.day_end_ms = day
        # offset of the next record to consume; and the offset replay must reach to be LIVE
        self.next_offset = -1
        # while > 0: skip records stamped before it (rebuild fallback without offsets_for_times)
        self.skip_before_ms = 0
        # the group's committed offset at assignment: never commit below it while replaying
        # (a committed offset going backwards reads as REWIND to the lag monitor)
        self.commit_floor = -1
        self.rebuild_until = rebuild_until
        self.live = rebuild_until <= 0
        self.owned = True
        self._reset_state()

    def _reset_state(self) -> None:
        self.orders: dict[str, Order] = {}
        self.tombstones: dict[str, int] = {}
        # orders currently in each non-terminal status (insertion-ordered), by status int
        self.members: list[dict[str, Order] | None] = [
            {} if i in LIVE_IDX else None for i in range(NS)
        ]
        self.evict_q: deque[tuple[float, str]] = deque()
        self.trans = [0] * (NS * NS)
        self.invalid = [0] * (NS * NS)
        self.rejects: dict[tuple[str, int], int] = {}
        self.events = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.gaps = 0
        self.decode_errors = 0
        self.last_ts = 0.0
        self.ack = Hist(ACK_BUCKETS)
        self.fill = Hist(FILL_BUCKETS)
        self._labels: dict[str, str] = {}
        self._strs: dict[str, str] = {}

    def roll_day(self, ts_ms: int) -> None:
        """A record of a later trading day arrived: start the new day from zero, exactly as
        an exporter started now would (it replays only today's records)."""
        self.day_start_ms, self.day_end_ms = self.conf.day.bounds_ms(ts_ms)
        self._reset_state()

    def label(self, strategy: str) -> str:
        lab = self._labels.get(strategy)
        if lab is None:
            lab = strategy if strategy in self.conf.strategies else OTHER
            if len(self._labels) < 10_000:
                self._labels[strategy] = lab
        return lab

    def _intern(self, s: str) -> str:
        v = self._strs.get(s)
        if v is None:
            if len(self._strs) >= 50_000:
                return s
            self._strs[s] = v = s
        return v

    # -- the hot path ------------------------------------------------------------------------

    def apply(self, ev) -> None:
        """Apply one decoded :class:`tradeops.contracts.OrderEvent` (status canonical)."""
        oid = ev.order_id
        seq = ev.seq
        to = IDX[ev.status]
        ts = epoch_seconds(ev.ts)
        self.events += 1
        if ts > self.last_ts:
            self.last_ts = ts
        # seqs above SEQ_BITS are not remembered individually (bounded memory per order)
        bit = 1 << seq if seq < SEQ_BITS else 0
        o = self.orders.get(oid)
        if o is None:
            packed = self.tombstones.get(oid)
            if packed is not None:
                self._apply_evicted(oid, packed, seq, bit, to)
                return
            o = Order(oid, self._intern(ev.strategy), self._intern(ev.symbol))
            self.orders[oid] = o
        else:
            seen = o.seen
            if seen & bit or seq == o.seq:
                # duplicate: this seq was already seen -> ignored
                self.duplicates += 1
                return
            if seq < o.seq:
                # out of order: overtaken by a newer seq -> not applied
                self.out_of_order += 1
                o.seen = seen | bit
                return
        if seq > o.seq + 1:
            # gap: applied; the missing seqs may still arrive (then: out of order)
            self.gaps += 1
        o.seq = seq
        o.seen |= bit
        frm = o.status
        if not ALLOWED[frm] >> to & 1:
            # invalid: counted, the order keeps its status
            self.invalid[frm * NS + to] += 1
            return
        self.trans[frm * NS + to] += 1
        if frm == to:
            # e.g. OPEN -> OPEN (modified), PARTIALLY_FILLED -> PARTIALLY_FILLED (more fills):
            # same status, its age keeps running
            return
        members = self.members
        if frm != I_NEW:
            del members[frm][oid]
        o.status = to
        o.since = ts
        if IS_TERMINAL[to]:
            # non-terminal -> terminal: kept for the grace period, then evicted
            self.evict_q.append((ts, oid))
            if to == I_FILLED:
                if o.submitted >= 0.0:
                    self.fill.observe(ts - o.submitted)
            elif to in REJECT_IDX:
                key = (self.label(o.strategy), to)
                self.rejects[key] = self.rejects.get(key, 0) + 1
            return
        members[to][oid] = o
        if to == I_SUBMITTED:
            if o.submitted < 0.0:
                o.submitted = ts
        elif to in ACK_IDX and not o.acked and o.submitted >= 0.0:
            o.acked = True
            self.ack.observe(ts - o.submitted)

    def _apply_evicted(self, oid: str, packed: int, seq: int, bit: int, to: int) -> None:
        """An event for an evicted (terminal) order: same classification as in memory."""
        status = packed & 15
        last = (packed >> 4) & _SEQ_MASK
        seen = packed >> 36
        if seen & bit or seq == last:
            self.duplicates += 1
            return
        if seq < last:
            self.out_of_order += 1
        else:
            if seq > last + 1:
                self.gaps += 1
            # a terminal status has no way out: always invalid
            self.invalid[status * NS + to] += 1
            last = seq
        self.tombstones[oid] = _tombstone(seen | bit, last, status)

    def evict(self) -> int:
        """Evict terminal orders older than the grace period (by event time); return count."""
        q = self.evict_q
        if not q:
            return 0
        horizon = self.last_ts - self.conf.terminal_grace_s
        orders, tomb = self.orders, self.tombstones
        n = 0
        while q and q[0][0] < horizon:
            _, oid = q.popleft()
            o = orders.pop(oid, None)
            if o is not None:
                tomb[oid] = _tombstone(o.seen, o.seq, o.status)
                n += 1
        return n

    # -- read side ---------------------------------------------------------------------------

    def live_orders(self) -> Iterator[Order]:
        for i in LIVE_IDX:
            yield from self.members[i].values()  # type: ignore[union-attr]

    def stuck_orders(self, now: float) -> Iterator[tuple[Order, float]]:
        """(order, age_s) of orders in a status longer than its configured threshold."""
        for i, limit in self.conf.stuck_after.items():
            for o in self.members[i].values():  # type: ignore[union-attr]
                age = now - o.since
                if age > limit:
                    yield o, age


class Totals:
    """Sums over the reported partitions of one :class:`OrderBook` at one instant."""

    def __init__(self) -> None:
        self.trans = [0] * (NS * NS)
        self.invalid = [0] * (NS * NS)
        self.rejects: dict[tuple[str, int], int] = {}
        self.orders = [0] * NS
        self.stuck = [0] * NS
        self.events = self.duplicates = self.out_of_order = self.gaps = self.decode_errors = 0
        self.last_ts = 0.0
        self.ack = Hist(ACK_BUCKETS)
        self.fill = Hist(FILL_BUCKETS)
        self.partitions_live = 0
        self.partitions_rebuilding = 0
        self.orders_in_memory = 0
        self.tombstones = 0

    def completed(self, status: int) -> int:
        return sum(self.trans[f * NS + status] for f in range(NS))


class OrderBook:
    """The partitions one exporter instance owns. ``lock`` guards every read and write: the
    consume loop holds it per batch, a scrape holds it while summing."""

    def __init__(self, conf: BookConfig, clock: Callable[[], float] | None = None):
        import time as _time

        self.conf = conf
        self.parts: dict[int, PartitionBook] = {}
        self.lock = threading.RLock()
        self.clock = clock or _time.time

    def today(self) -> tuple[int, int]:
        return self.conf.day.bounds_ms(int(self.clock() * 1000))

    def add_partition(self, partition: int, rebuild_until: int = 0) -> PartitionBook:
        """A newly assigned partition: empty state for today, REBUILDING until its replay
        has consumed offsets below ``rebuild_until`` (0: nothing to replay, LIVE at once)."""
        pb = PartitionBook(partition, self.conf, self.today(), rebuild_until)
        self.parts[partition] = pb
        return pb

    def drop_partition(self, partition: int) -> None:
        self.parts.pop(partition, None)

    def partition(self, partition: int) -> PartitionBook:
        pb = self.parts.get(partition)
        if pb is None:
            pb = self.add_partition(partition)
        return pb

    @property
    def ready(self) -> bool:
        return all(pb.live for pb in self.parts.values())

    def totals(self, now: float | None = None) -> Totals:
        now = self.clock() if now is None else now
        t = Totals()
        with self.lock:
            for pb in self.parts.values():
                if not pb.owned:
                    continue
                if not pb.live:
                    t.partitions_rebuilding += 1
                    continue
                t.partitions_live += 1
                for i, n in enumerate(pb.trans):
                    if n:
                        t.trans[i] += n
                for i, n in enumerate(pb.invalid):
                    if n:
                        t.invalid[i] += n
                for k, n in pb.rejects.items():
                    t.rejects[k] = t.rejects.get(k, 0) + n
                for i in LIVE_IDX:
                    t.orders[i] += len(pb.members[i])  # type: ignore[arg-type]
                for o, _age in pb.stuck_orders(now):
                    t.stuck[o.status] += 1
                t.events += pb.events
                t.duplicates += pb.duplicates
                t.out_of_order += pb.out_of_order
                t.gaps += pb.gaps
                t.decode_errors += pb.decode_errors
                t.last_ts = max(t.last_ts, pb.last_ts)
                t.ack.add(pb.ack)
                t.fill.add(pb.fill)
                t.orders_in_memory += len(pb.orders)
                t.tombstones += len(pb.tombstones)
        return t

    def orders_json(self, stuck_only: bool = False, now: float | None = None) -> list[dict]:
        """Non-terminal orders (or only the stuck ones) as plain data for ``/orders``."""
        now = self.clock() if now is None else now
        out = []
        with self.lock:
            for pb in self.parts.values():
                if not (pb.owned and pb.live):
                    continue
                for o in pb.live_orders():
                    age = now - o.since
                    limit = self.conf.stuck_after.get(o.status)
                    stuck = limit is not None and age > limit
                    if stuck_only and not stuck:
                        continue
                    out.append({
                        "order_id": o.order_id,
                        "strategy": o.strategy,
                        "symbol": o.symbol,
                        "status": STATUS_NAMES[o.status],
                        "age_s": round(age, 3),
                        "since": o.since,
                        "seq": o.seq,
                        "stuck": stuck,
                        "partition": pb.partition,
                    })
        out.sort(key=lambda d: -d["age_s"])
        return out
