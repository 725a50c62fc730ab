"""`tradeops exporter pairs`: spread, hedge ratio and z-score of every configured pair.

Consumes `marketdata.bars_1m` (closes) on the shared framework (:class:`.runtime.Exporter`,
:class:`.consumer.ConsumeLoop`); the math is :mod:`.pairs_math` (vectorised over pairs).

- Alignment: a pair updates when both legs have a bar for the same minute (no forward
  fill: a missing bar of one leg skips that minute for the pair). Each leg keeps a short
  buffer of recent bars, so legs consumed from different partitions at different speeds
  still pair up minute by minute, in order.
- Late and duplicate bars: a bar at or before its leg's latest minute is not applied:
  counted as a duplicate when it repeats a buffered bar (same minute, same close), as late
  otherwise. Bars of symbols that are no leg of any pair are counted and ignored.
- Stale leg: a leg whose latest bar is more than ``stale_after_s`` behind the other leg's
  is stale (``pairs_leg_stale 1``): the pair stops updating, and its z-score (kept at the
  last value) must not pass for a calm spread.
- Warm-up: before consuming, the last bars of every pair are read from ``bars_1m`` in
  PostgreSQL (2W + 2 joint minutes for rolling OLS and static pairs, which is all their
  state depends on, so the z-score equals that of an exporter that saw every bar live;
  ``kalman_warmup_windows`` x W for Kalman pairs, whose state has no window: their filter
  state after every update is persisted in ``pairs_kalman_state``, and the warm-up starts
  from the latest persisted state that leaves 2W + 2 bars to replay, so it too equals the
  live one; without such a state the filter restarts from the bars read). Kafka is then
  read from ``warmup_overlap_s`` before the warm-up query (bars already applied count as
  duplicates).

Metric families: docs/exporters.md, section pairs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict

import msgspec
import numpy as np
import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from psycopg import sql

from .. import contracts, db
from ..config import Config, PairConfig
from .consumer import ConsumeLoop
from .pairs_math import PairsEngine
from .runtime import Exporter

log = logging.getLogger("tradeops.exporters.pairs")

PREFIX = "pairs"
KIND = "bars_1m"
BAR_SECONDS = 60.0
KALMAN_LOG_MAX = 100_000
LEG_BUFFER = 512  # recent bars kept per leg (up to twice this) for alignment and duplicates


class PairsState:
    """Bars in, pair updates out (pure: no Kafka, no database)."""

    def __init__(self, pairs: list[PairConfig]):
        self.pairs = list(pairs)
        self.names = [p.name for p in self.pairs]
        self.engine = PairsEngine(
            [p.window for p in self.pairs], [p.hedge for p in self.pairs],
            static_beta=[p.beta if p.beta is not None else np.nan for p in self.pairs],
            kalman_delta=[p.kalman_delta for p in self.pairs],
            kalman_obs_var=[p.kalman_obs_var for p in self.pairs])
        self.leg_buf: dict[str, dict[int, float]] = {}
        for p in self.pairs:
            self.leg_buf.setdefault(p.leg_a, {})
            self.leg_buf.setdefault(p.leg_b, {})
        # symbol -> [(pair index, is leg a, the other leg's buffer)]
        self.legs: dict[str, list[tuple[int, bool, dict[int, float]]]] = defaultdict(list)
        for i, p in enumerate(self.pairs):
            self.legs[p.leg_a].append((i, True, self.leg_buf[p.leg_b]))
            self.legs[p.leg_b].append((i, False, self.leg_buf[p.leg_a]))
        self.legs = dict(self.legs)
        self.leg_last: dict[str, int] = {}
        self.pair_last = np.full(len(self.pairs), -1, dtype=np.int64)
        self.pending: dict[int, tuple[float, float]] = {}
        self.kalman_rows = np.flatnonzero(self.engine.is_kalman)
        # (pair, bar ts, updates, beta, alpha, p00, p01, p11) after each Kalman update,
        # written to PostgreSQL by the loop (bounded while PostgreSQL is away)
        self.kalman_log: list[tuple] = []
        self.duplicates = 0
        self.late = 0
        self.not_a_leg = 0
        self.accepted = 0

    def on_bar(self, symbol: str, ts: int, close: float) -> str:
        """Apply one bar (``ts`` in epoch seconds); returns what happened to it."""
        legs = self.legs.get(symbol)
        if legs is None:
            self.not_a_leg += 1
            return "not_a_leg"
        buf = self.leg_buf[symbol]
        last = self.leg_last.get(symbol)
        if last is not None and ts <= last:
            if buf.get(ts) == close:
                self.duplicates += 1
                return "duplicate"
            self.late += 1
            return "late"
        self.accepted += 1
        self.leg_last[symbol] = ts
        buf[ts] = close
        if len(buf) > 2 * LEG_BUFFER:
            for k in list(buf)[:LEG_BUFFER]:
                del buf[k]
        pair_last = self.pair_last
        pending = self.pending
        for i, is_a, other in legs:
            oc = other.get(ts)
            if oc is None or ts <= pair_last[i]:
                continue
            if i in pending:
                self.flush()  # one update per pair per engine call, in order
            pending[i] = (close, oc) if is_a else (oc, close)
            pair_last[i] = ts
        return "accepted"

    def flush(self) -> int:
        """Apply the queued pair updates in one vectorised call."""
        n = len(self.pending)
        if n:
            idx = np.fromiter(self.pending.keys(), dtype=np.int64, count=n)
            ab = np.array(list(self.pending.values()))
            if n == len(self.pairs):
                # every pair (the steady state: each minute completes every pair): put the
                # rows in order and take the engine's fast path
                a = np.empty(n)
                b = np.empty(n)
                a[idx] = ab[:, 0]
                b[idx] = ab[:, 1]
                self.engine.update(None, a, b)
                self.log_kalman(self.kalman_rows)
            else:
                self.engine.update(idx, ab[:, 0], ab[:, 1])
                if len(self.kalman_rows):
                    self.log_kalman(idx[self.engine.is_kalman[idx]])
            self.pending.clear()  # last: "nothing pending" means the engine is up to date
        return n

    def log_kalman(self, rows) -> None:
        """Record the filter state of Kalman ``rows`` right after their update."""
        if not len(rows):
            return
        e = self.engine
        for i in rows.tolist():
            self.kalman_log.append((self.names[i], int(self.pair_last[i]), int(e.updates[i]),
                                    float(e.kb[i]), float(e.ka[i]), float(e.p00[i]),
                                    float(e.p01[i]), float(e.p11[i])))
        if len(self.kalman_log) > KALMAN_LOG_MAX:
            del self.kalman_log[: len(self.kalman_log) - KALMAN_LOG_MAX]

    def load_kalman(self, i: int, updates: int, beta: float, alpha: float, p00: float,
                    p01: float, p11: float) -> None:
        """Restore pair ``i``'s filter to a persisted state (its windows start empty)."""
        e = self.engine
        e.updates[i] = updates
        e.kb[i], e.ka[i], e.beta[i], e.alpha[i] = beta, alpha, beta, alpha
        e.p00[i], e.p01[i], e.p11[i] = p00, p01, p11

    def stale(self, i: int) -> tuple[bool, bool]:
        p = self.pairs[i]
        ta, tb = self.leg_last.get(p.leg_a), self.leg_last.get(p.leg_b)
        if ta is None or tb is None:
            return ta is None and tb is not None, tb is None and ta is not None
        return tb - ta > p.stale_after_s, ta - tb > p.stale_after_s


# ---------------------------------------------------------------------------- warm-up
def warmup_bars(cfg: Config, pair: PairConfig) -> int:
    if pair.hedge == "kalman":
        return max(2 * pair.window + 2, cfg.pairs_exporter.kalman_warmup_windows * pair.window)
    return 2 * pair.window + 2


def warm_up(cfg: Config, state: PairsState, conn: psycopg.Connection) -> int:
    """Feed the last bars of every pair from ``bars_1m``; returns the pair updates applied."""
    t = db.table_identifiers(cfg)["bars_1m"]
    joint = sql.SQL(
        "SELECT extract(epoch FROM a.ts)::bigint, a.close, b.close FROM {t} a JOIN {t} b "
        "ON b.symbol = %s AND b.ts = a.ts WHERE a.symbol = %s ORDER BY a.ts DESC LIMIT %s"
    ).format(t=t)
    kstate = sql.SQL(
        "SELECT extract(epoch FROM ts)::bigint, updates, beta, alpha, p00, p01, p11 FROM {k} "
        "WHERE pair = %s AND ts <= to_timestamp(%s) AND ts >= to_timestamp(%s) "
        "ORDER BY ts DESC LIMIT 1").format(k=db.table_identifiers(cfg)["pairs_kalman_state"])
    by_ts: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
    for i, p in enumerate(state.pairs):
        rows = [r for r in conn.execute(joint, (p.leg_b, p.leg_a, warmup_bars(cfg, p)))
                if r[1] > 0 and r[2] > 0 and math.isfinite(r[1]) and math.isfinite(r[2])]
        rows.reverse()
        need = 2 * p.window + 2
        if p.hedge == "kalman" and len(rows) > need:
            # the latest persisted filter state that leaves `need` bars to replay: from it
            # the replay reproduces the live spreads exactly
            found = conn.execute(kstate, (p.name, rows[-need][0], rows[0][0])).fetchone()
            if found is not None:
                ts0 = found[0]
                state.load_kalman(i, *found[1:])
                rows = [r for r in rows if r[0] > ts0]
                log.info("%s: Kalman state of %s loaded, %d bars replayed", p.name,
                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts0)), len(rows))
            else:
                log.warning("%s: no persisted Kalman state in the last %d bars: the filter "
                            "restarts from them (close to, not equal to, the live one)",
                            p.name, len(rows))
        for ts, a, b in rows:
            by_ts[ts].append((i, a, b))
    n = 0
    for ts in sorted(by_ts):
        rows = by_ts[ts]
        idx = np.array([r[0] for r in rows], dtype=np.int64)
        state.engine.update(idx, np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))
        state.pair_last[idx] = ts
        state.log_kalman(idx[state.engine.is_kalman[idx]])
        n += len(rows)
    recent = sql.SQL(
        "SELECT extract(epoch FROM ts)::bigint, close FROM {t} WHERE symbol = %s "
        "ORDER BY ts DESC LIMIT %s").format(t=t)
    for sym in state.legs:
        rows = conn.execute(recent, (sym, LEG_BUFFER)).fetchall()
        for ts, close in reversed(rows):
            state.leg_buf[sym][ts] = close
        if rows:
            state.leg_last[sym] = rows[0][0]
    return n


# ------------------------------------------------------------------------------- loop
class PairsConsumeLoop(ConsumeLoop):
    def __init__(self, cfg: Config, state: PairsState, lock: threading.Lock, **kw):
        self.state = state
        self.lock = lock
        self.topic = cfg.topics.bars_1m
        self.warmed = False
        self.warmup_updates = 0
        self.start_ms = 0
        self.overlap_ms = int(cfg.pairs_exporter.warmup_overlap_s * 1000)
        self._kconn: psycopg.Connection | None = None
        self.applied: dict[int, int] = {}  # partition -> next offset read by this process
        self._next_kwrite = 0.0
        self._next_prune = 0.0
        self.kalman_write_errors = 0
        super().__init__(cfg, group_id=cfg.pairs_exporter.group_id, topics={self.topic: KIND},
                         handler=self._on_bar, on_assign=self._on_assign,
                         on_tick=self._on_tick, **kw)
        self._decoder = contracts.decoder(KIND)

    def run(self, app: Exporter) -> None:
        self.app = app
        while not self.warmed and not app.stop_event.is_set():
            self.start_ms = int(time.time() * 1000)
            try:
                with db.connect(self.cfg) as conn, self.lock:
                    self.warmup_updates = warm_up(self.cfg, self.state, conn)
                self.warmed = True
                app.set_up("postgres", True)
                log.info("warmed up from bars_1m: %d pair updates", self.warmup_updates)
            except (db.DatabaseError, psycopg.Error) as e:
                app.set_up("postgres", False)
                log.warning("cannot warm up from bars_1m (retrying): %s",
                            str(e).splitlines()[0] if str(e) else type(e).__name__)
                app.tick()
                app.stop_event.wait(1.0)
        if self.warmed:
            try:
                super().run(app)
            finally:
                self.write_kalman()
                if self._kconn is not None:
                    self._kconn.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [tp for tp in partitions if tp.topic == self.topic]
        # a partition this process already read (given back after a rebalance, e.g. when
        # the broker restarted) continues where it was; others start warmup_overlap_s
        # before the warm-up
        assign = [TopicPartition(self.topic, tp.partition, self.applied[tp.partition])
                  for tp in mine if tp.partition in self.applied]
        fresh = [tp for tp in mine if tp.partition not in self.applied]
        if fresh:
            ms = self.start_ms - self.overlap_ms
            try:
                found = consumer.offsets_for_times(
                    [TopicPartition(self.topic, tp.partition, ms) for tp in fresh], timeout=10)
                assign += [TopicPartition(self.topic, tp.partition,
                                          tp.offset if tp.offset >= 0 else -1) for tp in found]
            except KafkaException as e:
                log.warning("%s: offsets by time unavailable (%s): reading from the beginning",
                            self.topic, e.args[0].str())
                assign += [TopicPartition(self.topic, tp.partition, -2) for tp in fresh]
        consumer.assign(assign)

    def _on_bar(self, kind, bar, msg) -> None:
        with self.lock:
            self.state.on_bar(bar.symbol, int(bar.ts.timestamp()), bar.close)

    def _handle(self, msgs: list) -> None:
        """The hot path (replaces the framework's per-message handler call): the lock held
        per batch, the contract's decoder called directly, offsets noted per partition.
        Bars whose key (the contract's key: the symbol) is no leg are counted and not
        decoded: most of the topic is other symbols."""
        st = self.state
        legs = st.legs
        on_bar = st.on_bar
        decode = self._decoder.decode
        errors = []
        nxt: dict[int, int] = {}
        with self.lock:
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        self._error_cb(err)
                    continue
                nxt[msg.partition()] = msg.offset() + 1
                key = msg.key()
                if key is not None and key.decode("utf-8", "replace") not in legs:
                    st.not_a_leg += 1
                    continue
                try:
                    bar = decode(msg.value())
                except (msgspec.ValidationError, msgspec.DecodeError, TypeError):
                    errors.append(msg)
                    continue
                on_bar(bar.symbol, int(bar.ts.timestamp()), bar.close)
        positions = self._positions
        for p, off in nxt.items():
            positions[(self.topic, p)] = off
        self.applied.update(nxt)
        for msg in errors:
            try:
                contracts.decode(KIND, msg.value())
                reason = "not a valid bar"
            except contracts.DecodeError as e:
                reason = str(e)
            self._decode_errors.labels(topic=self.topic).inc()
            log.warning("skipped malformed message %s[%d]@%d: %s", self.topic, msg.partition(),
                        msg.offset(), reason)
        self.processed += len(msgs)
        self._since_commit += len(msgs)

    def _on_tick(self, now: float) -> None:
        if self.state.pending:
            with self.lock:
                self.state.flush()
        if self.state.kalman_log and now >= self._next_kwrite:
            self._next_kwrite = now + 1.0
            self.write_kalman()

    def write_kalman(self) -> bool:
        """Append the logged Kalman states to ``pairs_kalman_state`` (kept and retried when
        PostgreSQL is away); prune rows older than a week once an hour."""
        with self.lock:
            rows, self.state.kalman_log = self.state.kalman_log, []
        if not rows:
            return True
        t = db.table_identifiers(self.cfg)["pairs_kalman_state"]
        try:
            if self._kconn is None or self._kconn.closed:
                self._kconn = db.connect(self.cfg)
            conn = self._kconn
            with conn.transaction():
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS _pks (pair text, ts bigint, "
                             "updates bigint, beta double precision, alpha double precision, "
                             "p00 double precision, p01 double precision, p11 double precision) "
                             "ON COMMIT DELETE ROWS")
                with conn.cursor().copy("COPY _pks FROM STDIN") as cp:
                    for r in rows:
                        cp.write_row(r)
                conn.execute(sql.SQL(
                    "INSERT INTO {t} (pair, ts, updates, beta, alpha, p00, p01, p11) "
                    "SELECT pair, to_timestamp(ts), updates, beta, alpha, p00, p01, p11 "
                    "FROM _pks ON CONFLICT (pair, ts) DO NOTHING").format(t=t))
                if time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + 3600
                    conn.execute(sql.SQL("DELETE FROM {t} WHERE ts < now() - interval '7 days'")
                                 .format(t=t))
        except (db.DatabaseError, psycopg.Error) as e:
            with self.lock:
                self.state.kalman_log[:0] = rows[-KALMAN_LOG_MAX:]
            self.kalman_write_errors += 1
            if self._kconn is not None:
                self._kconn.close()
                self._kconn = None
            if self.app is not None:
                self.app.set_up("postgres", False)
            log.warning("Kalman states not written (kept, retried): %s",
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
            return False
        if self.app is not None:
            self.app.set_up("postgres", True)
        return True


# -------------------------------------------------------------------------- collector
class PairsCollector:
    """Fresh families from the engine at every scrape::

        # HELP pairs_spread_zscore (spread - window mean) / window std of the pair's spread.
        # TYPE pairs_spread_zscore gauge
        pairs_spread_zscore{pair="INFY_TCS"} -1.73      (absent until valid; never NaN/inf)
        pairs_spread{pair="INFY_TCS"} 0.0042             (ln a - beta ln b - alpha)
        pairs_hedge_ratio{pair="INFY_TCS"} 0.93
        pairs_half_life_seconds{pair="INFY_TCS"} 1260.0  (only when mean-reverting)
        pairs_zscore_band{pair="INFY_TCS"} 2.0
        pairs_window_bars{pair="INFY_TCS"} 120
        pairs_last_update_timestamp_seconds{pair="INFY_TCS"} 1.7647e9   (bar start)
        pairs_leg_last_update_timestamp_seconds{pair="INFY_TCS",leg="a"} 1.7647e9
        pairs_leg_stale{pair="INFY_TCS",leg="b"} 0
        pairs_updates_total{pair="INFY_TCS"} 375
        pairs_bars_accepted_total 750
        pairs_bars_duplicate_total 0
        pairs_bars_late_total 0
        pairs_bars_not_a_leg_total 110250
    """

    def __init__(self, state: PairsState, lock: threading.Lock,
                 loop: PairsConsumeLoop | None = None):
        self.state = state
        self.lock = lock
        self.loop = loop

    def families(self, deadline: float | None = None) -> list:  # noqa: ARG002 - in-memory
        st, eng = self.state, self.state.engine
        with self.lock:
            z, spread, beta = eng.zscore.copy(), eng.spread.copy(), eng.beta.copy()
            hl, updates, last = eng.half_life_bars.copy(), eng.updates.copy(), st.pair_last.copy()
            legs = [(st.leg_last.get(p.leg_a), st.leg_last.get(p.leg_b)) for p in st.pairs]
            stale = [st.stale(i) for i in range(len(st.pairs))]
            counts = (st.accepted, st.duplicates, st.late, st.not_a_leg)

        def g(name, doc, labels=("pair",)):
            return GaugeMetricFamily(name, doc, labels=list(labels))

        fz = g("pairs_spread_zscore", "(spread - window mean) / window std of the pair's spread; "
               "absent until the window is full and while it is flat.")
        fs = g("pairs_spread", "Spread ln a - beta ln b - alpha (Kalman: one-step forecast error).")
        fb = g("pairs_hedge_ratio", "Hedge ratio beta of leg b.")
        fh = g("pairs_half_life_seconds", "AR(1) half-life of the spread; only when the AR(1) "
               "coefficient is in (0, 1).")
        fband = g("pairs_zscore_band", "Configured |z| band of the pair.")
        fwin = g("pairs_window_bars", "Window of the pair in 1-minute bars.")
        flast = g("pairs_last_update_timestamp_seconds", "Bar start of the pair's last update.")
        fleg = g("pairs_leg_last_update_timestamp_seconds", "Bar start of the leg's latest bar.",
                 ("pair", "leg"))
        fst = g("pairs_leg_stale", "1 when the leg's latest bar is more than stale_after_s "
                "behind the other leg's.", ("pair", "leg"))
        fup = CounterMetricFamily("pairs_updates", "Pair updates applied (warm-up included).",
                                  labels=["pair"])
        for i, p in enumerate(st.pairs):
            lab = [p.name]
            if np.isfinite(z[i]):
                fz.add_metric(lab, float(z[i]))
            if np.isfinite(spread[i]):
                fs.add_metric(lab, float(spread[i]))
            if np.isfinite(beta[i]):
                fb.add_metric(lab, float(beta[i]))
            if np.isfinite(hl[i]):
                fh.add_metric(lab, float(hl[i]) * BAR_SECONDS)
            fband.add_metric(lab, p.zscore_band)
            fwin.add_metric(lab, p.window)
            if last[i] >= 0:
                flast.add_metric(lab, float(last[i]))
            for leg, t, s in (("a", legs[i][0], stale[i][0]), ("b", legs[i][1], stale[i][1])):
                if t is not None:
                    fleg.add_metric([p.name, leg], float(t))
                fst.add_metric([p.name, leg], 1.0 if s else 0.0)
            fup.add_metric(lab, float(updates[i]))
        out = [fz, fs, fb, fh, fband, fwin, flast, fleg, fst, fup]
        for name, n, doc in (
            ("accepted", counts[0], "Bars of pair legs applied."),
            ("duplicate", counts[1], "Bars received again (same minute and close): not applied."),
            ("late", counts[2], "Bars older than (or correcting) their leg's latest: ignored."),
            ("not_a_leg", counts[3], "Bars of symbols that are no leg of a configured pair."),
        ):
            out.append(CounterMetricFamily(f"pairs_bars_{name}", doc, value=n))
        if self.loop is not None and len(st.kalman_rows):
            out.append(CounterMetricFamily(
                "pairs_kalman_state_write_errors", "Failed writes of Kalman filter states to "
                "PostgreSQL (kept and retried).", value=self.loop.kalman_write_errors))
        return out


# ------------------------------------------------------------------------------ wiring
def build(cfg: Config, *, listen: str | None = None, env: dict | None = None,
          **loop_kw) -> tuple[Exporter, PairsConsumeLoop, PairsState]:
    """The exporter, its loop and its state (tests run ``app.serve(loop, signals=False)``)."""
    state = PairsState(cfg.pairs)
    lock = threading.Lock()
    app = Exporter("pairs", PREFIX, listen or cfg.pairs_exporter.listen,
                   dependencies=["kafka", "postgres"], env=env)
    loop = PairsConsumeLoop(cfg, state, lock, **loop_kw)
    app.add_scrape_collector("pairs", PairsCollector(state, lock, loop).families)
    return app, loop, state


def run(cfg: Config) -> None:
    """`tradeops exporter pairs`: serve until SIGTERM."""
    app, loop, _state = build(cfg)
    app.serve(loop)
