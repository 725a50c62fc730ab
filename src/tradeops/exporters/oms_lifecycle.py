"""`tradeops exporter oms-lifecycle`: order-lifecycle metrics from `oms.order_events`.

Built on the shared framework (:class:`.runtime.Exporter`, :class:`.consumer.ConsumeLoop`)
with the order book of :mod:`.oms_book`. What this module adds:

- a specialised hot loop (:class:`OmsConsumeLoop`, overriding the framework's batch
  handler): one contract, msgspec decode straight into the partition's book, the book's
  lock held per batch (not per event), offsets tracked per partition;
- rebuild on assignment: every newly assigned partition starts at the first offset of the
  current trading day (``offsets_for_times`` at local midnight of ``[calendar].timezone``)
  and is REBUILDING until it has consumed up to the high watermark seen at assignment;
  only then is it reported, and READY=1 is sent only once every partition is LIVE;
- committed offsets are NOT the resume point: a restart or a rebalance always rebuilds
  "today" from the topic, so counters are exactly those of an exporter that never
  restarted. Offsets are still committed after processing so the consumer lag of
  ``[oms_lifecycle].group_id`` is visible (gateway-oms exporter);
- `/orders` (every non-terminal order, with a ``stuck`` flag) and `/orders/stuck` as JSON.

Metric families and their meaning: docs/exporters.md, section oms-lifecycle.
"""

from __future__ import annotations

import ctypes
import json
import logging
import time
from collections.abc import Callable

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from .. import contracts
from ..config import Config
from .consumer import ConsumeLoop
from .oms_book import (
    ALLOWED_PAIRS,
    INVALID_PAIRS,
    LIVE_IDX,
    NS,
    REJECT_IDX,
    STATUS_NAMES,
    TERMINAL_IDX,
    BookConfig,
    Hist,
    OrderBook,
    Totals,
)
from .runtime import Exporter

log = logging.getLogger("tradeops.exporters.oms_lifecycle")

PREFIX = "oms"
KIND = "order_events"


# ---------------------------------------------------------------------------- collector
class OmsCollector:
    """Renders the book's sums at scrape time (registered through the framework's
    single-flight scrape collector). Exposition (abridged)::

        # TYPE oms_order_transitions_total counter
        oms_order_transitions_total{from_status="SUBMITTED",to_status="OPEN"} 812.0
        # TYPE oms_order_invalid_transitions_total counter
        oms_order_invalid_transitions_total{from_status="FILLED",to_status="CANCELLED"} 0.0
        # TYPE oms_orders gauge
        oms_orders{status="OPEN"} 37.0
        # TYPE oms_orders_completed_total counter
        oms_orders_completed_total{status="FILLED"} 790.0
        # TYPE oms_orders_stuck gauge
        oms_orders_stuck{status="SUBMITTED"} 1.0
        # TYPE oms_order_rejects_total counter
        oms_order_rejects_total{status="REJECTED",strategy="momentum"} 3.0
        # TYPE oms_time_to_ack_seconds histogram
        oms_time_to_ack_seconds_bucket{le="0.05"} 790.0
        ...
        oms_time_to_ack_seconds_count 812.0
        oms_time_to_ack_seconds_sum 21.4
        # TYPE oms_order_events_total counter
        oms_order_events_total 4210.0
        oms_duplicate_events_total 2.0
        oms_out_of_order_events_total 1.0
        oms_seq_gap_events_total 1.0
        # TYPE oms_last_event_timestamp_seconds gauge
        oms_last_event_timestamp_seconds 1.7647e+09
        oms_partitions{state="live"} 6.0
        oms_book_orders 52.0
        oms_book_tombstones 760.0

    Every label set is pre-initialised to 0: all allowed and all invalid (from, to) pairs of
    the contract's table, every non-terminal / terminal status, every configured strategy
    plus ``other`` for each reject status.
    """

    def __init__(self, book: OrderBook, strategy_labels: tuple[str, ...]):
        self.book = book
        self.strategy_labels = strategy_labels

    def families(self, deadline: float | None = None) -> list:  # noqa: ARG002 - fast, in-memory
        return build_families(self.book.totals(), self.strategy_labels)

    def collect(self):
        yield from self.families()


def build_families(t: Totals, strategy_labels: tuple[str, ...]) -> list:
    p = PREFIX
    tr = CounterMetricFamily(f"{p}_order_transitions",
                             "Order status transitions applied (allowed by the contract's table).",
                             labels=["from_status", "to_status"])
    for f, to in ALLOWED_PAIRS:
        tr.add_metric([STATUS_NAMES[f], STATUS_NAMES[to]], t.trans[f * NS + to])
    inv = CounterMetricFamily(f"{p}_order_invalid_transitions",
                              "Order events whose status change the contract does not allow "
                              "(counted, not applied).", labels=["from_status", "to_status"])
    for f, to in INVALID_PAIRS:
        inv.add_metric([STATUS_NAMES[f], STATUS_NAMES[to]], t.invalid[f * NS + to])
    orders = GaugeMetricFamily(f"{p}_orders", "Orders currently in each non-terminal status.",
                               labels=["status"])
    stuck = GaugeMetricFamily(f"{p}_orders_stuck", "Orders in a non-terminal status for longer "
                              "than its [oms_lifecycle].stuck_after_s threshold.", labels=["status"])
    for i in LIVE_IDX:
        orders.add_metric([STATUS_NAMES[i]], t.orders[i])
        stuck.add_metric([STATUS_NAMES[i]], t.stuck[i])
    done = CounterMetricFamily(f"{p}_orders_completed",
                               "Orders that reached a terminal status.", labels=["status"])
    for i in TERMINAL_IDX:
        done.add_metric([STATUS_NAMES[i]], t.completed(i))
    rej = CounterMetricFamily(f"{p}_order_rejects", "Orders rejected (by risk or by the broker) "
                              "per strategy; unconfigured strategies fold into \"other\".",
                              labels=["status", "strategy"])
    keys = {(s, i) for s in strategy_labels for i in REJECT_IDX} | set(t.rejects)
    for s, i in sorted(keys):
        rej.add_metric([STATUS_NAMES[i], s], t.rejects.get((s, i), 0))
    fams = [tr, inv, orders, stuck, done, rej,
            _hist(f"{p}_time_to_ack_seconds", "Event time from SUBMITTED to the first OPEN or "
                  "TRIGGER_PENDING.", t.ack),
            _hist(f"{p}_time_to_fill_seconds", "Event time from SUBMITTED to FILLED.", t.fill)]
    for name, doc, value in (
        ("order_events", "Order events decoded and checked (applied or not).", t.events),
        ("duplicate_events", "Order events whose seq was already seen (ignored).", t.duplicates),
        ("out_of_order_events", "Order events older than the newest applied seq of their order "
         "(not applied).", t.out_of_order),
        ("seq_gap_events", "Order events applied although seqs before them were missing.",
         t.gaps),
    ):
        fams.append(CounterMetricFamily(f"{p}_{name}", doc, value=value))
    fams.append(GaugeMetricFamily(f"{p}_last_event_timestamp_seconds",
                                  "Event time (ts) of the newest order event today (0: none).",
                                  value=t.last_ts))
    parts = GaugeMetricFamily(f"{p}_partitions", "Partitions of the order-events topic this "
                              "instance owns, by state (rebuilding ones are not counted yet).",
                              labels=["state"])
    parts.add_metric(["live"], t.partitions_live)
    parts.add_metric(["rebuilding"], t.partitions_rebuilding)
    fams.append(parts)
    fams.append(GaugeMetricFamily(f"{p}_book_orders", "Orders held in memory (terminal ones "
                                  "until terminal_grace_s).", value=t.orders_in_memory))
    fams.append(GaugeMetricFamily(f"{p}_book_tombstones", "Evicted terminal orders remembered "
                                  "as one int each (today).", value=t.tombstones))
    return fams


def _hist(name: str, doc: str, h: Hist) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=h.cumulative(), sum_value=h.sum)


# ----------------------------------------------------------------------------- the loop
class OmsConsumeLoop(ConsumeLoop):
    """The framework's loop with this exporter's hot path and partition lifecycle.

    Partition lifecycle (per instance): unassigned -> REBUILDING (assigned: seek to today's
    first offset, replay up to the high watermark seen at assignment) -> LIVE (reported)
    -> revoked (kept aside, not reported) -> either re-assigned (LIVE again, continues at
    its own position: eager rebalances revoke everything first) or dropped.
    """

    def __init__(self, cfg: Config, book: OrderBook, *, assign_timeout_s: float = 5.0,
                 **kw):
        self.book = book
        self.topic = cfg.topics.order_events
        self.assign_timeout_s = assign_timeout_s
        # librdkafka prefetches up to 64 MB by default; a rebuild reads as fast as it can, so
        # that queue would be full all the time: 16 MB keeps the fetcher ahead at 1/4 the RSS
        # partition EOF events end a rebuild even when the high watermark is past the last
        # message (transaction markers occupy offsets the consumer never sees)
        kw["extra_conf"] = {"queued.max.messages.kbytes": 16384, "enable.partition.eof": True,
                            **(kw.get("extra_conf") or {})}
        super().__init__(cfg, group_id=cfg.oms_lifecycle.group_id, topics={self.topic: KIND},
                         handler=_unused_handler, on_assign=self._on_assign,
                         on_revoke=self._on_revoke, on_tick=self._on_tick,
                         batch_size=kw.pop("batch_size", 2000), **kw)
        self._decoder = contracts.decoder(KIND)
        self._last_status = 0.0
        self._last_trim = 0.0
        self._trimmed = True

    # -- readiness: READY=1 only when every assigned partition is LIVE
    def _assign_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        super()._assign_cb(consumer, partitions)
        self._assigned = self.book.ready

    # -- rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        book = self.book
        mine = [tp for tp in partitions if tp.topic == self.topic]
        with book.lock:
            keep = {tp.partition for tp in mine}
            for p in list(book.parts):
                if p not in keep:
                    # revoked and not given back: drop its state (another instance owns it)
                    book.drop_partition(p)
            fresh = [tp.partition for tp in mine if tp.partition not in book.parts
                     or book.parts[tp.partition].next_offset < 0]
        starts = self._rebuild_starts(consumer, fresh) if fresh else {}
        floors = self._commit_floors(consumer, fresh) if fresh else {}
        assign = []
        with book.lock:
            for tp in mine:
                p = tp.partition
                if p in starts:
                    start, hwm, skip_before = starts[p]
                    # unassigned -> REBUILDING (LIVE at once when there is nothing to replay)
                    pb = book.add_partition(p, rebuild_until=hwm if hwm > start else 0)
                    pb.skip_before_ms = skip_before
                    pb.next_offset = start
                    pb.commit_floor = floors.get(p, -1)
                    log.info("%s[%d]: rebuilding from offset %d to %d (today from %s)",
                             self.topic, p, start, hwm, _fmt_ms(pb.day_start_ms))
                else:
                    # revoked -> LIVE again: continue where this instance was
                    pb = book.parts[p]
                    pb.owned = True
                assign.append(TopicPartition(self.topic, p, pb.next_offset))
        consumer.assign(assign)

    def _commit_floors(self, consumer: Consumer, parts: list[int]) -> dict[int, int]:
        """The group's committed offsets of ``parts`` (-1: none or unknown)."""
        if self.app is not None:
            self.app.tick()
        try:
            got = consumer.committed([TopicPartition(self.topic, p) for p in parts],
                                     timeout=self.assign_timeout_s)
        except KafkaException as e:
            log.warning("%s: committed offsets unavailable (%s): replay positions are committed "
                        "as they come", self.topic, e.args[0].str())
            return {}
        return {tp.partition: tp.offset for tp in got if tp.error is None and tp.offset >= 0}

    def _rebuild_starts(self, consumer: Consumer, parts: list[int]) -> dict[int, tuple[int, int, int]]:
        """partition -> (start offset, high watermark, skip-before ms) for today's replay."""
        day_start, _ = self.book.today()
        out: dict[int, tuple[int, int, int]] = {}
        try:
            found = consumer.offsets_for_times(
                [TopicPartition(self.topic, p, day_start) for p in parts],
                timeout=self.assign_timeout_s)
            for tp in found:
                if tp.error is not None:
                    raise KafkaException(tp.error)
                if self.app is not None:
                    self.app.tick()  # still the work loop (inside consume): feed the watchdog
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, tp.partition), timeout=self.assign_timeout_s)
                # -1: no record of today yet -> start at the end
                start = high if tp.offset < 0 else tp.offset
                out[tp.partition] = (start, high, 0)
        except KafkaException as e:
            log.warning("%s: offsets for today unavailable (%s); rebuilding from the beginning "
                        "of %s", self.topic, e.args[0].str(), parts)
            out.update(self._fallback_starts([p for p in parts if p not in out], day_start))
        return out

    @staticmethod
    def _fallback_starts(parts: list[int], day_start: int) -> dict[int, tuple[int, int, int]]:
        """Exact fallback: read from the beginning and skip records until the first one
        stamped today, which is where offsets_for_times would have started. The end is
        unknown: REBUILDING until partition EOF."""
        return {p: (-2, 1 << 62, day_start) for p in parts}  # -2: OFFSET_BEGINNING

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        with self.book.lock:
            for tp in partitions:
                pb = self.book.parts.get(tp.partition)
                if pb is not None and tp.topic == self.topic:
                    # LIVE/REBUILDING -> revoked: not reported until re-assigned or dropped
                    pb.owned = False

    def _on_tick(self, now: float) -> None:
        book = self.book
        with book.lock:
            for pb in book.parts.values():
                pb.evict()
            ready = book.ready
            if not self._assigned and book.parts and ready:
                self._assigned = True
        # a rebuild churns through hundreds of MB of short-lived objects in several malloc
        # arenas (librdkafka's threads and ours); give the freed memory back to the OS while
        # rebuilding and once when it is done, so RSS stays near what the book really holds
        if not ready:
            if now - self._last_trim >= 0.25:
                self._last_trim = now
                _malloc_trim()
            self._trimmed = False
        elif not self._trimmed:
            self._trimmed = True
            _malloc_trim()
        if self.app is not None and now - self._last_status >= 10.0:
            self._last_status = now
            t = book.totals()
            self.app.status(f"{t.partitions_live} partitions live, {t.partitions_rebuilding} "
                            f"rebuilding, {t.events} events today, {t.orders_in_memory} orders")

    # -- the hot path
    def _handle(self, msgs: list) -> None:
        book = self.book
        parts = book.parts
        decode = self._decoder.decode
        topic = self.topic
        errors = []
        n = 0
        with book.lock:
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pb = parts.get(msg.partition())
                        if pb is not None and pb.owned and not pb.live:
                            # REBUILDING -> LIVE: reached the end of the partition
                            pb.live = True
                            log.info("%s[%d]: rebuilt (%d events today; end of partition), "
                                     "now live", topic, pb.partition, pb.events)
                    else:
                        self._error_cb(err)
                    continue
                n += 1
                p = msg.partition()
                pb = parts.get(p)
                if pb is None or not pb.owned:
                    continue  # a late message of a partition no longer ours
                offset = msg.offset()
                ts_ms = msg.timestamp()[1]
                if pb.skip_before_ms or ts_ms >= pb.day_end_ms:
                    if pb.skip_before_ms:
                        if ts_ms < pb.skip_before_ms:
                            pb.next_offset = offset + 1
                            continue
                        # the first record of today: from here on everything counts
                        pb.skip_before_ms = 0
                    if ts_ms >= pb.day_end_ms:
                        log.info("%s[%d]: new trading day at offset %d: counters restart",
                                 topic, p, offset)
                        pb.roll_day(ts_ms)
                try:
                    pb.apply(decode(msg.value()))
                except (msgspec.ValidationError, msgspec.DecodeError, TypeError):
                    errors.append(msg)
                except Exception:  # noqa: BLE001 - never crash on input
                    self._handler_errors.labels(topic=topic).inc()
                    log.exception("handler failed on %s[%d]@%d", topic, p, offset)
                pb.next_offset = offset + 1
                if not pb.live and offset + 1 >= pb.rebuild_until:
                    # REBUILDING -> LIVE
                    pb.live = True
                    log.info("%s[%d]: rebuilt (%d events today), now live", topic, p, pb.events)
        positions = self._positions
        for p, pb in parts.items():
            nxt = pb.next_offset
            if pb.owned and nxt >= 0:
                # a replay behind the group's last commit keeps that commit (no REWIND)
                positions[(topic, p)] = nxt if nxt >= pb.commit_floor else pb.commit_floor
        for msg in errors:
            # outside the lock: reason, counter, one log line per message
            try:
                contracts.decode(KIND, msg.value())
                reason = "not a valid order event"
            except contracts.DecodeError as e:
                reason = str(e)
            self._decode_errors.labels(topic=topic).inc()
            log.warning("skipped malformed message %s[%d]@%d: %s", topic, msg.partition(),
                        msg.offset(), reason)
        # records only (partition EOF events are not messages)
        self.processed += n
        self._since_commit += n


def _load_malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0), or a no-op where there is no glibc."""
    try:
        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    fn.argtypes = [ctypes.c_size_t]
    return lambda: fn(0)


_malloc_trim = _load_malloc_trim()


def _unused_handler(kind, event, msg) -> None:  # pragma: no cover - _handle is overridden
    raise RuntimeError("OmsConsumeLoop handles messages itself")


def _fmt_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


# ------------------------------------------------------------------------------ wiring
def build(cfg: Config, *, listen: str | None = None, clock: Callable[[], float] | None = None,
          env: dict | None = None, **loop_kw) -> tuple[Exporter, OmsConsumeLoop, OrderBook]:
    """The exporter, its loop and its book (tests run ``app.serve(loop, signals=False)``)."""
    sec = cfg.oms_lifecycle
    try:
        conf = BookConfig.from_config(cfg)
    except ValueError as e:
        from ..config import ConfigError

        raise ConfigError(f"{_cfg_name(cfg)}: [oms_lifecycle].{e}") from None
    book = OrderBook(conf, clock=clock)
    app = Exporter("oms-lifecycle", PREFIX, listen or sec.listen, dependencies=["kafka"], env=env)
    collector = OmsCollector(book, conf.strategy_labels)
    app.add_scrape_collector("order-book", collector.families)
    app.extra_routes["/orders"] = lambda: _orders_route(book, False)
    app.extra_routes["/orders/stuck"] = lambda: _orders_route(book, True)
    app.landing_links += [("/orders", "non-terminal orders (JSON)"),
                          ("/orders/stuck", "stuck orders (JSON)")]
    loop = OmsConsumeLoop(cfg, book, **loop_kw)
    return app, loop, book


def _orders_route(book: OrderBook, stuck: bool) -> tuple[int, str, bytes]:
    now = book.clock()
    with book.lock:
        body = {"generated_at": now, "ready": book.ready, "stuck_only": stuck,
                "orders": book.orders_json(stuck_only=stuck, now=now)}
    return 200, "application/json", json.dumps(body).encode() + b"\n"


def _cfg_name(cfg: Config) -> str:
    from pathlib import Path

    return Path(cfg.source).name if cfg.source else "tradeops.toml"


def run(cfg: Config) -> None:
    """`tradeops exporter oms-lifecycle`: serve until SIGTERM."""
    app, loop, _book = build(cfg)
    app.serve(loop)
