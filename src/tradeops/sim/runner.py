"""Run the simulator: ``fast`` (a whole session, then a JSON ground truth) or ``live``.

Sinks: Kafka (one idempotent producer, topic names from ``[topics]``, keys per contract)
and PostgreSQL ``bars_1m`` (COPY into a temporary table, then one idempotent upsert with
``source = 'sim'``; rows written by anything else, e.g. the autoheal's
``broker-backfill``, are never overwritten). Two consumer groups play the OMS and the
gateway (``oms-core`` on gateway events, ``gateway-zerodha`` on order events) and commit
as they go, so the lag exporters have real groups to watch.

Live mode survives Kafka and PostgreSQL going away: the producer buffers (librdkafka),
failed deliveries are counted, bars for PostgreSQL are kept (bounded) and written when it
is back. SIGTERM/SIGINT end it cleanly: producer flushed, groups committed and closed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import time
from collections import deque
from datetime import date as Date
from datetime import datetime, timedelta
from datetime import time as Time

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

from .. import contracts, db
from ..config import Config, listen_addr
from ..errors import UserError
from ..kafka_admin import client_conf, topic_names
from .market import IST, Market
from .trading import Generator
from .upstream import SimState, make_server

log = logging.getLogger("tradeops.sim")

GROUPS: dict[str, str] = {"oms-core": "gateway_events", "gateway-zerodha": "order_events"}
BAR_PUBLISH_DELAY = timedelta(minutes=1)
MAX_PG_BACKLOG = 2_000_000  # rows kept for PostgreSQL while it is away (live mode)


def session_of(cfg: Config, day: Date) -> tuple[Time, Time]:
    """The configured session (a special session overrides it for its date)."""
    cal = cfg.calendar
    o, c = cal.session_open, cal.session_close
    for sp in cal.special_sessions:
        if sp.date == day.isoformat():
            o, c = sp.open, sp.close
    return Time.fromisoformat(o), Time.fromisoformat(c)


def market_factory(cfg: Config, seed: int, n_symbols: int):
    @functools.lru_cache(maxsize=4)
    def market_for(day: Date) -> Market:
        return Market(day, seed=seed, n_symbols=n_symbols, session=session_of(cfg, day),
                      discrepancy_rate=cfg.sim.discrepancy_rate)

    return market_for


# ---------------------------------------------------------------------- PostgreSQL
def write_bars(conn: psycopg.Connection, cfg: Config, rows: list[tuple]) -> int:
    """Upsert internal bars (symbol, ts, o, h, l, c, v) with source 'sim'; returns rows changed.

    COPY into a temporary table, then one INSERT .. ON CONFLICT: rerunning the same day
    changes nothing; rows from another source are left alone.
    """
    if not rows:
        return 0
    table = sql.Identifier(cfg.tables.bars_1m)
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS sim_bars_in (symbol text, ts timestamptz, "
            "open float8, high float8, low float8, close float8, volume bigint) "
            "ON COMMIT DELETE ROWS")
        with conn.cursor().copy(
                "COPY sim_bars_in (symbol, ts, open, high, low, close, volume) FROM STDIN"
        ) as cp:
            for r in rows:
                cp.write_row(r)
        cur = conn.execute(sql.SQL(
            "INSERT INTO {t} AS b (symbol, ts, open, high, low, close, volume, source) "
            "SELECT DISTINCT ON (symbol, ts) symbol, ts, open, high, low, close, volume, 'sim' "
            "FROM sim_bars_in ORDER BY symbol, ts "
            "ON CONFLICT (symbol, ts) DO UPDATE SET open = EXCLUDED.open, high = EXCLUDED.high, "
            "low = EXCLUDED.low, close = EXCLUDED.close, volume = EXCLUDED.volume "
            "WHERE b.source = 'sim' AND (b.open, b.high, b.low, b.close, b.volume) "
            "IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, "
            "EXCLUDED.volume)").format(t=table))
        return cur.rowcount


# ---------------------------------------------------------------------- Kafka
class KafkaSink:
    """One producer for every topic; counts what was handed over and what failed."""

    def __init__(self, cfg: Config, state: SimState, strict: bool):
        self.cfg = cfg
        self.topics = topic_names(cfg)
        self.state = state
        self.strict = strict
        self.failed_reasons: deque[str] = deque(maxlen=5)
        self._fatal = ""
        self._said_down = False
        self.producer = self._new_producer()

    def _new_producer(self) -> Producer:
        return Producer(client_conf(
            self.cfg, **{"enable.idempotence": True, "linger.ms": 20,
                         "batch.num.messages": 10000, "queue.buffering.max.messages": 1_000_000,
                         "queue.buffering.max.kbytes": 1_048_576, "compression.type": "lz4",
                         "message.timeout.ms": 120_000 if self.strict else 300_000,
                         # librdkafka repeats broker-down lines every few ms: say it once
                         "log_level": 2, "error_cb": self._on_error}))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err.str()
        down = err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT)
        if down:
            if not self._said_down:
                log.warning("kafka %s: unreachable (%s); buffering", self.cfg.kafka.bootstrap_servers,
                            err.str())
                self._said_down = True
            self.state.up["kafka"] = False
        else:
            log.warning("kafka: %s", err.str())

    def _delivered(self, err, msg) -> None:
        if err is not None:
            with self.state.lock:
                self.state.delivery_failures += 1
            self.failed_reasons.append(f"{msg.topic()}: {err.str()}")
        else:
            if self._said_down:
                log.info("kafka %s: reachable again", self.cfg.kafka.bootstrap_servers)
                self._said_down = False
            self.state.up["kafka"] = True

    def _replace_if_fatal(self) -> None:
        """An idempotent producer can hit a fatal error (e.g. after long outages): start a
        new one rather than fail every later message; what the old one held is counted lost."""
        if not self._fatal:
            return
        if self.strict:
            raise UserError(f"Kafka {self.cfg.kafka.bootstrap_servers}: producer fatal error: "
                            f"{self._fatal}")
        lost = len(self.producer)
        log.error("kafka: producer fatal error (%s): starting a new producer, %d messages lost",
                  self._fatal, lost)
        with self.state.lock:
            self.state.dropped += lost
        self._fatal = ""
        self.producer = self._new_producer()

    def send(self, batch: list[tuple[str, str, object]]) -> None:
        self._replace_if_fatal()
        encode = contracts.encode
        produce = self.producer.produce
        counts: dict[str, int] = {}
        # fast mode: record time = when it happened on the simulated day, never in the future
        # (brokers reject records stamped ahead of their clock: log.message.timestamp.after.max.ms)
        stamp = self.strict
        now_ms = int(time.time() * 1000)
        for kind, key, msg in batch:
            topic = self.topics[kind]
            value = encode(msg)
            ts_ms = 0
            if stamp:
                # a bar is published when its minute closes; everything else at its ts
                when = msg.ts + BAR_PUBLISH_DELAY if kind == "bars_1m" else msg.ts
                ts_ms = min(int(when.timestamp() * 1000), now_ms)
            while True:
                try:
                    produce(topic, value, key.encode(), on_delivery=self._delivered,
                            timestamp=ts_ms)
                    break
                except BufferError:
                    # queue full: serve deliveries; in live mode with Kafka away, drop
                    self.producer.poll(0.5)
                    if not self.strict and not self.state.up["kafka"]:
                        with self.state.lock:
                            self.state.dropped += 1
                        break
            counts[topic] = counts.get(topic, 0) + 1
        self.producer.poll(0)
        with self.state.lock:
            for t, n in counts.items():
                self.state.produced[t] = self.state.produced.get(t, 0) + n

    def flush(self, timeout: float) -> int:
        return self.producer.flush(timeout)


class GroupConsumer(threading.Thread):
    """A consumer group of the simulated stack: consumes, decodes, commits as it goes."""

    def __init__(self, cfg: Config, group: str, kind: str, state: SimState,
                 group_suffix: str = ""):
        super().__init__(name=f"group-{group}", daemon=True)
        self.cfg, self.group, self.kind, self.state = cfg, group, kind, state
        self.group_id = group + group_suffix  # tests isolate their groups with a suffix
        self.topic = topic_names(cfg)[kind]
        self.stop_event = threading.Event()
        self.drain_event = threading.Event()  # fast mode: exit once caught up
        self.caught_up = False
        self.error = ""

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - a consumer thread must never kill the sim
            self.error = f"{type(e).__name__}: {e}"
            log.error("consumer group %s stopped: %s", self.group, self.error)

    def _run(self) -> None:
        c = Consumer(client_conf(self.cfg, **{
            "group.id": self.group_id, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 10_000, "log_level": 2,
            "error_cb": lambda err: log.debug("group %s: %s", self.group, err.str())}))
        c.subscribe([self.topic])
        paused: set[tuple[str, int]] = set()  # partitions paused by the control
        last_commit = time.monotonic()
        uncommitted = 0
        idle = 0
        try:
            while not self.stop_event.is_set():
                want_pause = self.state.group_paused.get(self.group, False)
                if want_pause or paused:
                    # (re)applied after every rebalance: a new assignment starts unpaused
                    assignment = c.assignment()
                    current = {(tp.topic, tp.partition) for tp in assignment}
                    if want_pause and current != paused:
                        c.pause(assignment)
                        paused = current
                    elif not want_pause:
                        if assignment:
                            c.resume(assignment)
                        paused = set()
                msgs = c.consume(500, 0.2)
                if not msgs:
                    idle += 1
                for m in msgs:
                    if m.error():
                        continue
                    idle = 0
                    try:
                        contracts.decode(self.kind, m.value())
                    except contracts.DecodeError:
                        self.state.decode_errors[self.group] += 1
                    self.state.consumed[self.group] += 1
                    uncommitted += 1
                at_end = (self.drain_event.is_set() and not msgs and idle >= 3
                          and self._at_end(c))
                if uncommitted and (at_end or uncommitted >= 1000
                                    or time.monotonic() - last_commit > 1):
                    last_commit = time.monotonic()
                    try:
                        c.commit(asynchronous=False)
                        uncommitted = 0
                    except KafkaException as e:
                        if e.args[0].code() == KafkaError._NO_OFFSET:
                            uncommitted = 0  # nothing of the current assignment to commit
                        else:  # e.g. a rebalance: kept, retried next round
                            log.debug("group %s commit: %s", self.group, e)
                            continue
                if at_end:
                    self.caught_up = True  # everything consumed and committed
                    return
        finally:
            if uncommitted:
                with contextlib.suppress(KafkaException):
                    c.commit(asynchronous=False)
            c.close()

    def _at_end(self, c: Consumer) -> bool:
        assignment = c.assignment()
        if not assignment:
            return False
        for tp in c.position(assignment):
            try:
                _, high = c.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                  timeout=5, cached=False)
            except KafkaException:
                return False  # broker restarting or leader moving: ask again later
            pos = tp.offset if tp.offset >= 0 else 0
            if pos < high:
                return False
        return True


def check_kafka(cfg: Config) -> None:
    """Fast mode refuses to start without Kafka and the contract's topics (one line)."""
    admin = AdminClient(client_conf(cfg, log_level=2))
    try:
        md = admin.list_topics(timeout=cfg.kafka.request_timeout_s)
    except KafkaException as e:
        raise UserError(f"Kafka {cfg.kafka.bootstrap_servers}: not reachable: "
                        f"{e.args[0].str()}") from None
    missing = [t for t in topic_names(cfg).values() if t not in md.topics]
    if missing:
        raise UserError(f"Kafka {cfg.kafka.bootstrap_servers}: topic {missing[0]} does not "
                        "exist (run `tradeops kafka ensure-topics`)")


# ---------------------------------------------------------------------- fast mode
def run_fast(cfg: Config, day: Date, seed: int, n_symbols: int, *, postgres: bool = True,
             groups: bool = True, kafka: bool = True, group_suffix: str = "") -> dict:
    """A whole session as fast as possible; returns the ground-truth summary."""
    t0 = time.perf_counter()
    state = SimState(cfg.sim.strategies, list(GROUPS))
    conn = None
    if kafka:
        check_kafka(cfg)
    if postgres:
        conn = db.connect(cfg)
    market_for = market_factory(cfg, seed, n_symbols)
    market = market_for(day)
    gen = Generator(market_for, cfg.sim, market.minutes[0])
    state.generator = gen
    sink = KafkaSink(cfg, state, strict=True) if kafka else None
    consumers = [GroupConsumer(cfg, g, k, state, group_suffix) for g, k in GROUPS.items()] if (
        groups and kafka) else []
    for c in consumers:
        c.start()
    pg_changed = 0
    try:
        step = 600
        t = 0
        while t <= gen.horizon_s:
            t += step
            batch = gen.advance(t) if t <= gen.horizon_s else gen.finish()
            if sink:
                sink.send(batch)
            if conn is not None and (len(gen.pg_rows) >= 50_000 or t > gen.horizon_s):
                pg_changed += write_bars(conn, cfg, gen.pg_rows)
                gen.pg_rows = []
        if sink:
            left = sink.flush(120)
            if left or state.delivery_failures:
                reasons = "; ".join(sink.failed_reasons) or f"{left} messages not delivered"
                raise UserError(f"Kafka {cfg.kafka.bootstrap_servers}: "
                                f"{state.delivery_failures + left} messages failed: {reasons}")
        gen_s = time.perf_counter() - t0
        for c in consumers:
            c.drain_event.set()
        deadline = time.monotonic() + 60
        for c in consumers:
            c.join(max(0.1, deadline - time.monotonic()))
            c.stop_event.set()
    except psycopg.Error as e:
        raise UserError(f"PostgreSQL {cfg.postgres.host}:{cfg.postgres.port}: writing "
                        f"{cfg.tables.bars_1m} failed: {str(e).strip().splitlines()[0]}") from None
    finally:
        for c in consumers:
            c.stop_event.set()
        if conn is not None:
            conn.close()
    summary = {
        "mode": "fast",
        "date": day.isoformat(),
        "seed": seed,
        "symbols": n_symbols,
        "topics": {topic_names(cfg)[k]: n for k, n in sorted(gen.truth.messages.items())}
        if kafka else {},
        **gen.truth.as_dict(),
        "injected_discrepancies": _count_kinds(market),
        "postgres_rows_changed": pg_changed,
        "groups": {c.group_id: {"topic": c.topic, "consumed": state.consumed[c.group],
                             "caught_up": c.caught_up, "error": c.error} for c in consumers},
        "seconds": {"generate_and_produce": round(gen_s, 3),
                    "total": round(time.perf_counter() - t0, 3)},
    }
    if not postgres:
        summary["bars"]["postgres_rows"] = 0
    return summary


def _count_kinds(market: Market) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in market.injected():
        out[i.kind] = out.get(i.kind, 0) + 1
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------- live mode
class LiveRunner:
    """Real-time pace from now until stopped; see the module docstring."""

    def __init__(self, cfg: Config, seed: int, n_symbols: int, *, postgres: bool = True,
                 listen: str | None = None, group_suffix: str = "", groups: bool = True):
        self.cfg = cfg
        self.group_suffix = group_suffix
        self.groups = groups
        self.state = SimState(cfg.sim.strategies, list(GROUPS) if groups else [])
        self.stop_event = threading.Event()
        self.postgres = postgres
        if not postgres:
            del self.state.up["postgres"]  # not used: neither up nor down
        self.market_for = market_factory(cfg, seed, n_symbols)
        host, port = listen_addr(listen or cfg.sim.metrics_listen)
        try:
            self.server = make_server(host, port, self.state)
        except OSError as e:
            where = "--listen" if listen else "[sim].metrics_listen"
            raise UserError(f"{where} {host}:{port}: cannot listen: {e.strerror}") from None
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._backlog: deque[tuple] = deque()
        self._conn: psycopg.Connection | None = None
        self._next_pg_try = 0.0

    def stop(self, *_args) -> None:
        self.stop_event.set()

    def run(self, install_signals: bool = True) -> dict:
        if install_signals:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        http = threading.Thread(target=self.server.serve_forever, name="sim-http", daemon=True)
        http.start()
        now = time.time()
        start_epoch = float(int(now) + 1)
        start = datetime.fromtimestamp(start_epoch, IST)
        gen = Generator(self.market_for, self.cfg.sim, start, live=True,
                        run_tag=start.strftime("L%H%M%S"))
        for p, ok in self.state.heartbeat_enabled.items():
            gen.heartbeat_enabled[p] = ok
        with self.state.lock:
            self.state.generator = gen
        sink = KafkaSink(self.cfg, self.state, strict=False)
        consumers = [GroupConsumer(self.cfg, g, k, self.state, self.group_suffix)
                     for g, k in GROUPS.items()] if self.groups else []
        for c in consumers:
            c.start()
        log.info("sim live: metrics and controls on %s/metrics; %d symbols", self.url,
                 len(gen.market.symbols))
        try:
            while not self.stop_event.is_set():
                self.state.loop_beat = time.monotonic()
                t = time.time() - start_epoch
                with self.state.lock:
                    batch = gen.advance(t)
                    rows, gen.pg_rows = gen.pg_rows, []
                if batch:
                    sink.send(batch)
                sink.producer.poll(0)
                if self.postgres and rows:
                    self._backlog.extend(rows)
                    while len(self._backlog) > MAX_PG_BACKLOG:
                        self._backlog.popleft()
                        self.state.dropped += 1
                if self.postgres and (rows or time.monotonic() >= self._next_pg_try):
                    self._pg_tick()
                self.stop_event.wait(0.1)
        finally:
            log.info("sim live: stopping (flushing Kafka, committing groups)")
            left = sink.flush(10 if self.state.up["kafka"] else 2)
            if left:
                log.warning("sim live: %d messages not delivered at shutdown", left)
            for c in consumers:
                c.stop_event.set()
            for c in consumers:
                c.join(15)
            if self.postgres and self._backlog:
                self._pg_tick()
            if self._conn is not None:
                self._conn.close()
            self.server.shutdown()
            self.server.server_close()
        return gen.truth.as_dict()

    def _pg_tick(self) -> None:
        """Write the bars backlog (or probe with SELECT 1); on failure keep it, retry in 5 s."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = db.connect(self.cfg, autocommit=True)
            if self._backlog:
                rows = list(self._backlog)
                n = write_bars(self._conn, self.cfg, rows)
                for _ in range(len(rows)):
                    self._backlog.popleft()
                with self.state.lock:
                    self.state.bars_written += len(rows)
                log.debug("sim live: %d bars written (%d changed)", len(rows), n)
            else:
                self._conn.execute("SELECT 1")
            if not self.state.up["postgres"]:
                log.info("sim live: PostgreSQL reachable")
            self.state.up["postgres"] = True
            self._next_pg_try = time.monotonic() + 15
        except (psycopg.Error, UserError) as e:
            if self.state.up["postgres"] or self._next_pg_try == 0.0:
                log.warning("sim live: PostgreSQL unavailable, keeping %d bars: %s",
                            len(self._backlog), str(e).strip().splitlines()[0])
            self.state.up["postgres"] = False
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None
            self._next_pg_try = time.monotonic() + 5


def today_ist() -> Date:
    return datetime.now(IST).date()


def parse_date(value: str) -> Date:
    try:
        return Date.fromisoformat(value)
    except ValueError:
        raise UserError(f"--date: expected YYYY-MM-DD, got {value!r}") from None


