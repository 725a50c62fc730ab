"""`tradeops exporter risk-drawdown`: drawdown and exposure per bucket from `risk.positions`.

Built on the shared framework (:class:`.runtime.Exporter`, :class:`.consumer.ConsumeLoop`)
with the math of :mod:`.risk_math`. What this module adds:

- persistence (PostgreSQL, one transaction every ``[risk].flush_interval_s`` when anything
  changed): the dirty buckets' peaks in ``risk_peaks`` (per session day and bucket,
  max-merged), the changed position snapshots in ``risk_positions`` and the next offset of
  every consumed partition in ``risk_offsets``; rows go through COPY into temp tables and
  one upsert each;
- start: positions, peaks of the latest persisted session and offsets are loaded before
  anything is consumed (waiting, with ``risk_up{dependency="postgres"} 0``, while
  PostgreSQL is unreachable); each assigned partition resumes at its persisted offset,
  or, never seen, at the first record of the current session (``offsets_for_times``).
  So a restart continues exactly where the persisted state was: peaks, max drawdowns
  and positions as if the exporter had not stopped;
- PostgreSQL going away: the loop keeps consuming and serving, the state stays dirty and
  is written when PostgreSQL is back (``risk_up{dependency="postgres"}``,
  ``risk_state_flush_errors_total``).

Metric families: docs/exporters.md, section risk-drawdown.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from psycopg import sql

from .. import db
from ..config import Config
from .consumer import ConsumeLoop
from .render import FastGaugeFamily
from .risk_math import RiskBook
from .runtime import Exporter

log = logging.getLogger("tradeops.exporters.risk_drawdown")

PREFIX = "risk"
KIND = "positions"
LABELS = ["bucket_type", "bucket"]


def make_book(cfg: Config) -> RiskBook:
    r = cfg.risk
    capital = {(b.type, b.name): b.capital for b in r.buckets if b.capital}
    return RiskBook(bucket_types=r.bucket_types, sectors=r.sectors, underlyings=r.underlyings,
                    capital=capital, timezone=cfg.calendar.timezone,
                    reset_time=r.reset_time or cfg.calendar.session_open)


# ----------------------------------------------------------------------------- storage
class RiskStore:
    """Load and persist the exporter's state (tables named by config, via sql.Identifier)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        ids = db.table_identifiers(cfg)
        self.peaks, self.positions, self.offsets = (
            ids["risk_peaks"], ids["risk_positions"], ids["risk_offsets"])
        self.conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            self.conn = db.connect(self.cfg)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def load(self, book: RiskBook, topic: str) -> dict[int, int]:
        """Fill ``book`` with the persisted state; return partition -> next offset."""
        conn = self._connect()
        with conn.transaction():
            rows = conn.execute(sql.SQL(
                "SELECT ts, strategy, symbol, quantity, average_price, last_price, realized_pnl, "
                "multiplier FROM {}").format(self.positions)).fetchall()
            for r in rows:
                book.load_position(*r)
            day = conn.execute(sql.SQL("SELECT max(trading_day) FROM {}").format(self.peaks)).fetchone()[0]
            if day is not None:
                for bt, b, peak, mdd in conn.execute(sql.SQL(
                        "SELECT bucket_type, bucket, peak_equity, max_drawdown FROM {} "
                        "WHERE trading_day = %s").format(self.peaks), (day,)):
                    book.restore_peak(day, (bt, b), peak, mdd)
            offsets = dict(conn.execute(sql.SQL(
                "SELECT partition, next_offset FROM {} WHERE topic = %s").format(self.offsets),
                (topic,)).fetchall())
        log.info("state loaded: %d positions, session %s, offsets %s", len(rows), day, offsets)
        return offsets

    def save(self, day: dt.date | None, peaks: list[tuple], positions: list[tuple],
             offsets: list[tuple]) -> None:
        """One transaction: peaks (max-merged), position snapshots, offsets."""
        conn = self._connect()
        with conn.transaction():
            if peaks and day is not None:
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS _rp (bucket_type text, bucket text, "
                             "peak double precision, mdd double precision) ON COMMIT DELETE ROWS")
                with conn.cursor().copy("COPY _rp FROM STDIN") as cp:
                    for row in peaks:
                        cp.write_row(row)
                conn.execute(sql.SQL(
                    "INSERT INTO {t} AS p (trading_day, bucket_type, bucket, peak_equity, max_drawdown) "
                    "SELECT %s, bucket_type, bucket, peak, mdd FROM _rp "
                    "ON CONFLICT (trading_day, bucket_type, bucket) DO UPDATE SET "
                    "peak_equity = GREATEST(p.peak_equity, EXCLUDED.peak_equity), "
                    "max_drawdown = GREATEST(p.max_drawdown, EXCLUDED.max_drawdown), "
                    "updated_at = now()").format(t=self.peaks), (day,))
            if positions:
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS _rpos (strategy text, symbol text, "
                             "ts timestamptz, quantity bigint, average_price double precision, "
                             "last_price double precision, realized_pnl double precision, "
                             "multiplier double precision) ON COMMIT DELETE ROWS")
                with conn.cursor().copy("COPY _rpos FROM STDIN") as cp:
                    for row in positions:
                        cp.write_row(row)
                conn.execute(sql.SQL(
                    "INSERT INTO {t} (strategy, symbol, ts, quantity, average_price, last_price, "
                    "realized_pnl, multiplier) SELECT * FROM _rpos "
                    "ON CONFLICT (strategy, symbol) DO UPDATE SET ts = EXCLUDED.ts, "
                    "quantity = EXCLUDED.quantity, average_price = EXCLUDED.average_price, "
                    "last_price = EXCLUDED.last_price, realized_pnl = EXCLUDED.realized_pnl, "
                    "multiplier = EXCLUDED.multiplier, updated_at = now()").format(t=self.positions))
            if offsets:
                with conn.cursor() as cur:
                    cur.executemany(sql.SQL(
                        "INSERT INTO {t} (topic, partition, next_offset) VALUES (%s, %s, %s) "
                        "ON CONFLICT (topic, partition) DO UPDATE SET "
                        "next_offset = EXCLUDED.next_offset, updated_at = now()").format(
                            t=self.offsets), offsets)


# ------------------------------------------------------------------------------- loop
class RiskConsumeLoop(ConsumeLoop):
    """The framework's loop plus: load state before consuming, resume at persisted
    offsets, flush state on ticks."""

    def __init__(self, cfg: Config, book: RiskBook, store: RiskStore, lock: threading.Lock,
                 **kw):
        self.book = book
        self.store = store
        self.lock = lock
        self.topic = cfg.topics.positions
        self.flush_interval_s = cfg.risk.flush_interval_s
        self.stored_offsets: dict[int, int] = {}
        self.applied: dict[int, int] = {}  # partition -> next offset, as applied here
        self.loaded = False
        self.flush_errors = 0
        self.last_flush_ts: float | None = None
        self._next_flush = 0.0
        self._flushed_offsets: dict[int, int] = {}
        super().__init__(cfg, group_id=cfg.risk.group_id, topics={self.topic: KIND},
                         handler=self._on_position, on_assign=self._on_assign,
                         on_tick=self._on_tick, **kw)

    def run(self, app: Exporter) -> None:
        self.app = app
        while not self.loaded and not app.stop_event.is_set():
            try:
                with self.lock:
                    self.stored_offsets = self.store.load(self.book, self.topic)
                self.loaded = True
                app.set_up("postgres", True)
            except (db.DatabaseError, psycopg.Error) as e:
                app.set_up("postgres", False)
                log.warning("cannot load risk state from PostgreSQL (retrying): %s",
                            str(e).splitlines()[0] if str(e) else type(e).__name__)
                self.store.close()
                app.tick()
                app.stop_event.wait(1.0)
        if self.loaded:
            super().run(app)
        self.flush()
        self.store.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [tp for tp in partitions if tp.topic == self.topic]
        fresh = [tp.partition for tp in mine
                 if tp.partition not in self.stored_offsets and tp.partition not in self.applied]
        starts: dict[int, int] = {}
        if fresh:
            day = self.book.session_of(dt.datetime.now(dt.UTC))
            start = dt.datetime.combine(day, self.book.reset, tzinfo=self.book.tz)
            ms = int(start.timestamp() * 1000)
            try:
                for tp in consumer.offsets_for_times(
                        [TopicPartition(self.topic, p, ms) for p in fresh], timeout=10):
                    starts[tp.partition] = tp.offset if tp.offset >= 0 else -1  # -1: end
            except KafkaException as e:
                log.warning("%s: offsets of the session start unavailable (%s): reading %s "
                            "from the beginning", self.topic, e.args[0].str(), fresh)
                starts = dict.fromkeys(fresh, -2)
        assign = []
        for tp in mine:
            # where this process is (a re-assignment after a rebalance: replaying older
            # snapshots over newer ones would create equity states that never existed),
            # else the persisted offset, else the session start
            off = self.applied.get(tp.partition)
            if off is None:
                off = self.stored_offsets.get(tp.partition, starts.get(tp.partition, -2))
            log.info("%s[%d]: starting at offset %d", self.topic, tp.partition, off)
            assign.append(TopicPartition(self.topic, tp.partition, off))
        consumer.assign(assign)

    def _on_position(self, kind, p, msg) -> None:
        book = self.book
        if msg is not None:
            self.applied[msg.partition()] = msg.offset() + 1
        with self.lock:
            seen = len(book.unmapped_symbols)
            book.apply(p.ts, p.strategy, p.symbol, p.quantity, p.average_price,
                       p.last_price, p.realized_pnl, p.multiplier)
            fresh = len(book.unmapped_symbols) > seen
        if fresh and msg is not None:
            # once per symbol and bucket type: it is counted and kept in 'unmapped'
            types = sorted(bt for bt, sym in book.unmapped_symbols if sym == p.symbol)
            log.warning("symbol %s has no %s mapping in [risk]: counted in bucket 'unmapped' "
                        "(first seen at %s[%d]@%d)", p.symbol, " or ".join(types), msg.topic(),
                        msg.partition(), msg.offset())

    def _on_tick(self, now: float) -> None:
        if now >= self._next_flush:
            self._next_flush = now + self.flush_interval_s
            self.flush()

    def flush(self) -> bool:
        """Write what changed since the last successful flush; False when it failed."""
        if not self.loaded:
            return False
        book = self.book
        offsets = {p: o for (t, p), o in self._positions.items() if t == self.topic}
        changed_offsets = [(self.topic, p, o) for p, o in offsets.items()
                           if self._flushed_offsets.get(p) != o]
        with self.lock:
            if not (book.dirty_buckets or book.dirty_positions or changed_offsets):
                return True
            peaks = [(bt, b, book.buckets[(bt, b)][6], book.buckets[(bt, b)][7])
                     for (bt, b) in book.dirty_buckets]
            positions = []
            for key in book.dirty_positions:
                ts, q, ap, lp, r, m = book.positions[key][4]
                positions.append((key[0], key[1], ts, q, ap, lp, r, m))
            day = book.day
        # the handler runs in this thread: nothing changes the book during the write, and
        # the dirty sets are cleared only once it succeeded
        try:
            self.store.save(day, peaks, positions, changed_offsets)
        except (db.DatabaseError, psycopg.Error) as e:
            self.flush_errors += 1
            self.store.close()
            if self.app is not None:
                self.app.set_up("postgres", False)
            log.warning("risk state not written (kept, retried): %s",
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
            return False
        with self.lock:
            book.dirty_buckets.clear()
            book.dirty_positions.clear()
        self._flushed_offsets.update(offsets)
        self.last_flush_ts = time.time()
        if self.app is not None:
            self.app.set_up("postgres", True)
        return True


# -------------------------------------------------------------------------- collector
class RiskCollector:
    """Fresh metric families from the book at every scrape::

        # HELP risk_drawdown_amount Peak equity minus equity of the bucket this session (INR).
        # TYPE risk_drawdown_amount gauge
        risk_drawdown_amount{bucket_type="strategy",bucket="momentum"} 1250.0
        risk_equity_amount{bucket_type="total",bucket="total"} -340.5
        risk_peak_equity_amount{...} 910.0
        risk_max_drawdown_amount{...} 2100.0
        risk_drawdown_ratio{...} 0.000125          (only where capital is configured)
        risk_exposure_gross_amount{...} 1.2e6
        risk_exposure_net_amount{...} -3.0e5
        risk_exposure_gross_ratio{...} 0.12         (only where capital is configured)
        risk_exposure_net_ratio{...} -0.03          (only where capital is configured)
        risk_capital_amount{...} 1e7                (only where capital is configured)
        risk_drawdown_limit_amount{bucket_type="strategy"} 250000.0
        risk_positions 42
        risk_session_start_timestamp_seconds 1.7647e9
        risk_unmapped_symbols_total{bucket_type="sector"} 3
        risk_state_flush_errors_total 0
        risk_state_last_flush_timestamp_seconds 1.7647e9
    """

    def __init__(self, cfg: Config, book: RiskBook, lock: threading.Lock,
                 loop: RiskConsumeLoop | None = None):
        self.book = book
        self.lock = lock
        self.loop = loop
        self.limits = dict(cfg.risk.drawdown_limits)

    def families(self, deadline: float | None = None) -> list:  # noqa: ARG002 - in-memory
        g = {name: FastGaugeFamily(f"risk_{name}", doc, labels=LABELS) for name, doc in (
            ("equity_amount", "Realized plus unrealized PnL of the bucket (INR)."),
            ("peak_equity_amount", "Running peak of the bucket's equity this session, at "
                                   "least 0 (INR)."),
            ("drawdown_amount", "Peak equity minus equity of the bucket this session (INR)."),
            ("max_drawdown_amount", "Largest drawdown of the bucket this session (INR)."),
            ("drawdown_ratio", "Drawdown / (capital + peak equity), 0-1; buckets with capital."),
            ("exposure_gross_amount", "Sum of |quantity x last price x multiplier| (INR)."),
            ("exposure_net_amount", "Sum of quantity x last price x multiplier (INR)."),
            ("exposure_gross_ratio", "Gross exposure / capital; buckets with capital."),
            ("exposure_net_ratio", "Net exposure / capital; buckets with capital."),
            ("capital_amount", "Capital configured for the bucket (INR)."),
        )}
        with self.lock:
            rows = [(key, self.book.values(key)) for key in self.book.buckets]
            npos = len(self.book.positions)
            day = self.book.day
            unmapped = dict(self.book.unmapped)
        for (bt, b), v in sorted(rows):
            lab = (bt, b)
            g["equity_amount"].add_metric(lab, v["equity"])
            g["peak_equity_amount"].add_metric(lab, v["peak"])
            g["drawdown_amount"].add_metric(lab, v["drawdown"])
            g["max_drawdown_amount"].add_metric(lab, v["max_drawdown"])
            g["exposure_gross_amount"].add_metric(lab, v["gross"])
            g["exposure_net_amount"].add_metric(lab, v["net"])
            if v["capital"]:
                g["capital_amount"].add_metric(lab, v["capital"])
                g["exposure_gross_ratio"].add_metric(lab, v["gross_ratio"])
                g["exposure_net_ratio"].add_metric(lab, v["net_ratio"])
                if v["drawdown_ratio"] is not None:
                    g["drawdown_ratio"].add_metric(lab, v["drawdown_ratio"])
        out = list(g.values())
        lim = GaugeMetricFamily("risk_drawdown_limit_amount", "Drawdown limit per bucket type "
                                "from [risk].drawdown_limits (INR).", labels=["bucket_type"])
        for bt, value in sorted(self.limits.items()):
            lim.add_metric([bt], value)
        out.append(lim)
        out.append(GaugeMetricFamily("risk_positions", "Position snapshots held "
                                     "(strategy x symbol).", value=npos))
        if day is not None:
            start = dt.datetime.combine(day, self.book.reset, tzinfo=self.book.tz)
            out.append(GaugeMetricFamily("risk_session_start_timestamp_seconds", "Start of the "
                                         "session the peaks belong to.", value=start.timestamp()))
        um = CounterMetricFamily("risk_unmapped_symbols", "Distinct symbols without a bucket of "
                                 "this type (put in the bucket 'unmapped').", labels=["bucket_type"])
        for bt, n in sorted(unmapped.items()):
            um.add_metric([bt], n)
        out.append(um)
        if self.loop is not None:
            out.append(CounterMetricFamily("risk_state_flush_errors", "Failed writes of the "
                                           "state to PostgreSQL (retried).",
                                           value=self.loop.flush_errors))
            if self.loop.last_flush_ts is not None:
                out.append(GaugeMetricFamily("risk_state_last_flush_timestamp_seconds",
                                             "Last successful write of the state.",
                                             value=self.loop.last_flush_ts))
        return out


# ------------------------------------------------------------------------------ wiring
def build(cfg: Config, *, listen: str | None = None, env: dict | None = None,
          **loop_kw) -> tuple[Exporter, RiskConsumeLoop, RiskBook]:
    """The exporter, its loop and its book (tests run ``app.serve(loop, signals=False)``)."""
    book = make_book(cfg)
    lock = threading.Lock()
    store = RiskStore(cfg)
    app = Exporter("risk-drawdown", PREFIX, listen or cfg.risk.listen,
                   dependencies=["kafka", "postgres"], env=env)
    loop = RiskConsumeLoop(cfg, book, store, lock, **loop_kw)
    collector = RiskCollector(cfg, book, lock, loop)
    app.add_scrape_collector("risk-book", collector.families)
    return app, loop, book


def run(cfg: Config, _build: Callable = build) -> None:
    """`tradeops exporter risk-drawdown`: serve until SIGTERM."""
    app, loop, _book = _build(cfg)
    app.serve(loop)
