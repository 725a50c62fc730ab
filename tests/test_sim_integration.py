"""The simulator against the real local Kafka and PostgreSQL (`stack_cfg`: own topics and
database per test). Fast mode: what lands in Kafka and bars_1m equals its own ground truth.
Live mode: upstream metrics and the heartbeat / consumer-group controls work for real."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import date

import msgspec
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from tradeops import contracts, db
from tradeops.errors import UserError
from tradeops.kafka_admin import client_conf, topic_names
from tradeops.sim.market import Market
from tradeops.sim.runner import GROUPS, LiveRunner, run_fast

pytestmark = pytest.mark.integration
DAY = date(2026, 12, 3)
replace = msgspec.structs.replace


def consume_all(cfg, topic: str) -> list[tuple[bytes, bytes, int]]:
    """Every message (key, value, record timestamp ms) of a topic, to the high watermarks."""
    c = Consumer(client_conf(cfg, **{"group.id": f"t-read-{uuid.uuid4().hex[:8]}",
                                     "enable.auto.commit": False}))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        tps = []
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                tps.append(TopicPartition(topic, p, low))
        c.assign(tps)
        out = []
        deadline = time.monotonic() + 60
        while ends and time.monotonic() < deadline:
            for m in c.consume(10_000, 1.0):
                if m.error():
                    continue
                out.append((m.key(), m.value(), m.timestamp()[1]))
                if m.offset() + 1 >= ends.get(m.partition(), 0):
                    ends.pop(m.partition(), None)
        assert not ends, f"{topic}: could not read to the end"
        return out
    finally:
        c.close()


def committed(cfg, group: str, topic: str) -> int:
    c = Consumer(client_conf(cfg, **{"group.id": group, "enable.auto.commit": False}))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        offs = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return sum(max(0, tp.offset) for tp in offs)
    finally:
        c.close()


def high_watermarks(cfg, topic: str) -> int:
    c = Consumer(client_conf(cfg, **{"group.id": "t-hw"}))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in parts)
    finally:
        c.close()


def test_fast_day_in_kafka_and_postgres_matches_its_ground_truth(stack_cfg):
    cfg = stack_cfg
    suffix = "." + cfg.topics.order_events.rsplit(".", 1)[1]
    summary = run_fast(cfg, DAY, seed=7, n_symbols=40, group_suffix=suffix)
    topics = topic_names(cfg)
    # messages per topic, read back from Kafka
    got = {}
    decoded: dict[str, list] = {}
    for kind in ("order_events", "gateway_events", "heartbeats", "positions", "bars_1m"):
        msgs = consume_all(cfg, topics[kind])
        got[topics[kind]] = len(msgs)
        decoded[kind] = [(k, v) for k, v, _ in msgs]
        # record timestamps are the simulated day's: the event's ts, a bar's close
        for _, v, ts_ms in msgs[:300]:
            ev = contracts.decode(kind, v)
            delay = 60_000 if kind == "bars_1m" else 0
            assert ts_ms == int(ev.ts.timestamp() * 1000) + delay
    assert got == summary["topics"]
    assert sum(got.values()) > 100_000
    # order events per canonical status, Kite strings on the wire
    status = Counter()
    kite = 0
    for _, v in decoded["order_events"]:
        ev = contracts.decode("order_events", v)
        status[ev.status] += 1
        kite += msgspec.json.decode(v)["status"] != ev.status
    assert dict(status) == summary["order_events"]["by_status"]
    assert kite == summary["order_events"]["kite_status_strings"] > 0
    gw = Counter(contracts.decode("gateway_events", v).event for _, v in decoded["gateway_events"])
    assert dict(gw) == summary["gateway_events"]["by_event"]
    hb = Counter(k.decode() for k, _ in decoded["heartbeats"])
    assert dict(hb) == summary["heartbeats"]
    # keys per contract
    for k, v in decoded["bars_1m"][:500]:
        assert contracts.decode("bars_1m", v).symbol == k.decode()
    # bars_1m holds exactly the market's internal bars (with its injected faults)
    market = Market(DAY, seed=7, n_symbols=40, discrepancy_rate=cfg.sim.discrepancy_rate)
    expected = sorted((s, b.ts, b.open, b.high, b.low, b.close, b.volume)
                      for s in market.symbols for b in market.internal_bars(s))
    with db.connect(cfg) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT symbol, ts, open, high, low, close, volume FROM {} WHERE source = 'sim' "
            "ORDER BY symbol, ts").format(sql.Identifier(cfg.tables.bars_1m))).fetchall()
    assert len(rows) == summary["bars"]["postgres_rows"] == summary["bars"]["kafka"]
    assert sorted(rows) == expected
    kinds = Counter(i.kind for i in market.injected())
    assert summary["injected_discrepancies"] == dict(sorted(kinds.items()))
    # the consumer groups caught up and committed everything
    for group, kind in GROUPS.items():
        info = summary["groups"][group + suffix]
        assert info["caught_up"] and not info["error"], info
        assert committed(cfg, group + suffix, topics[kind]) == got[topics[kind]]
    # rerun (PostgreSQL only): idempotent, nothing changes, no duplicates
    again = run_fast(cfg, DAY, seed=7, n_symbols=40, kafka=False, groups=False)
    assert again["postgres_rows_changed"] == 0
    assert again["bars"]["postgres_rows"] == len(expected)
    with db.connect(cfg) as conn:
        n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(cfg.tables.bars_1m))).fetchone()[0]
    assert n == len(expected)


def test_fast_mode_never_overwrites_other_sources(stack_cfg):
    cfg = stack_cfg
    market = Market(DAY, seed=3, n_symbols=2, discrepancy_rate=cfg.sim.discrepancy_rate)
    b = market.true_bars("NSE:INFY")[10]
    table = sql.Identifier(cfg.tables.bars_1m)
    with db.connect(cfg) as conn:
        conn.execute(sql.SQL("INSERT INTO {} (symbol, ts, open, high, low, close, volume, source) "
                             "VALUES (%s, %s, 1, 2, 0.5, 1.5, 7, 'broker-backfill')").format(table),
                     ("NSE:INFY", b.ts))
        conn.commit()
    run_fast(cfg, DAY, seed=3, n_symbols=2, kafka=False, groups=False)
    with db.connect(cfg) as conn:
        row = conn.execute(sql.SQL("SELECT volume, source FROM {} WHERE symbol = %s AND ts = %s")
                           .format(table), ("NSE:INFY", b.ts)).fetchone()
    assert row == (7, "broker-backfill")


def _http(url: str, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_live_mode_metrics_and_controls(stack_cfg):
    cfg = replace(stack_cfg, sim=replace(stack_cfg.sim, orders_per_minute=900.0))
    suffix = "." + cfg.topics.order_events.rsplit(".", 1)[1]
    topics = topic_names(cfg)
    runner = LiveRunner(cfg, seed=9, n_symbols=10, listen="127.0.0.1:0", group_suffix=suffix)
    result = {}
    th = threading.Thread(target=lambda: result.update(runner.run(install_signals=False)))
    th.start()
    try:
        deadline = time.monotonic() + 20
        while _http(runner.url + "/healthz")[0] != 200:
            assert time.monotonic() < deadline and th.is_alive()
            time.sleep(0.2)
        # wait until the groups have joined and committed something
        gz = "gateway-zerodha" + suffix
        while committed(cfg, gz, topics["order_events"]) == 0:
            assert time.monotonic() < deadline + 20, "gateway-zerodha never committed"
            time.sleep(0.5)
        code, body = _http(runner.url + "/metrics")
        text = body.decode()
        assert code == 200
        for s in cfg.sim.strategies:
            assert f'orders_emitted_total{{strategy="{s}"}}' in text
            assert f'risk_orders_approved_total{{strategy="{s}"}}' in text
            assert f'risk_orders_rejected_total{{reason="price_band",strategy="{s}"}}' in text
        assert 'sim_up{dependency="kafka"} 1.0' in text
        assert 'sim_consumer_decode_errors_total{group="oms-core"} 0.0' in text
        # heartbeat control
        assert _http(runner.url + "/control/heartbeat/nope/stop", "POST")[0] == 404
        assert _http(runner.url + "/control/heartbeat/oms-core/stop", "POST")[0] == 200
        stopped_at = time.time()
        # consumer-group control: paused -> commits stop while the topic grows
        assert _http(runner.url + "/control/group/gateway-zerodha/pause", "POST")[0] == 200
        time.sleep(2.0)
        c0 = committed(cfg, gz, topics["order_events"])
        h0 = high_watermarks(cfg, topics["order_events"])
        time.sleep(2.5)
        assert committed(cfg, gz, topics["order_events"]) == c0
        assert high_watermarks(cfg, topics["order_events"]) > h0
        assert 'sim_consumer_group_paused{group="gateway-zerodha"} 1.0' in _http(
            runner.url + "/metrics")[1].decode()
        assert _http(runner.url + "/control/group/gateway-zerodha/resume", "POST")[0] == 200
        assert _http(runner.url + "/control/heartbeat/oms-core/start", "POST")[0] == 200
        restarted_at = time.time()
        deadline = time.monotonic() + 15
        while committed(cfg, gz, topics["order_events"]) <= c0:
            assert time.monotonic() < deadline, "commits did not resume"
            time.sleep(0.3)
        time.sleep(1.5)
        status = json.loads(_http(runner.url + "/control")[1])
        assert status["heartbeats"]["oms-core"] is True
        truth = json.loads(_http(runner.url + "/truth")[1])
        emitted = truth["upstream_metrics"]["orders_emitted_total"]
        assert sum(emitted.values()) > 0 and truth["heartbeats"]["risk-manager"] > 3
    finally:
        runner.stop()
        th.join(30)
    assert not th.is_alive(), "live sim did not stop"
    # oms-core fell silent between stop and start; the others never did
    beats: dict[str, list[float]] = {}
    for k, v, _ in consume_all(cfg, topics["heartbeats"]):
        beats.setdefault(k.decode(), []).append(
            contracts.decode("heartbeats", v).ts.timestamp())
    oms = sorted(beats["oms-core"])
    assert not [t for t in oms if stopped_at + 1.0 < t < restarted_at - 1.0]
    assert max(b - a for a, b in zip(oms, oms[1:])) > restarted_at - stopped_at - 2.5
    risk = sorted(beats["risk-manager"])
    assert max(b - a for a, b in zip(risk, risk[1:])) < 1.9
    assert result["messages"]["order_events"] > 20
    assert result["heartbeats"]["risk-manager"] > result["heartbeats"]["oms-core"]


def test_fast_mode_without_topics_is_a_one_line_error(pg_cfg):
    cfg = replace(pg_cfg, topics=replace(pg_cfg.topics, order_events="no.such.topic.x1"))
    with pytest.raises(UserError) as e:
        run_fast(cfg, DAY, seed=1, n_symbols=2)
    assert "topic no.such.topic.x1 does not exist" in str(e.value)
    assert "\n" not in str(e.value)



class _Forwarder(threading.Thread):
    """A TCP forwarder standing in for "PostgreSQL comes back" (the real server behind it)."""

    def __init__(self, listen_port: int, target: tuple[str, int]):
        super().__init__(daemon=True)
        import socket

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", listen_port))
        self.sock.listen()
        self.target = target

    def run(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_mode_survives_kafka_and_postgres_away(pg_cfg):
    """Kafka never reachable and PostgreSQL away at start: the live sim keeps running, says
    so in sim_up, picks PostgreSQL up when it appears, and still stops cleanly."""
    pg_port = _free_port()
    cfg = replace(pg_cfg, kafka=replace(pg_cfg.kafka, bootstrap_servers=f"127.0.0.1:{_free_port()}"),
                  postgres=replace(pg_cfg.postgres, port=pg_port, connect_timeout_s=1.0))
    runner = LiveRunner(cfg, seed=1, n_symbols=5, listen="127.0.0.1:0")
    th = threading.Thread(target=runner.run, kwargs={"install_signals": False})
    th.start()
    fwd = None
    try:
        deadline = time.monotonic() + 15
        while _http(runner.url + "/healthz")[0] != 200:
            assert time.monotonic() < deadline and th.is_alive()
            time.sleep(0.2)
        time.sleep(2.5)
        text = _http(runner.url + "/metrics")[1].decode()
        assert 'sim_up{dependency="kafka"} 0.0' in text
        assert 'sim_up{dependency="postgres"} 0.0' in text
        assert 'sim_messages_produced_total{topic="ops.heartbeats"}' in text
        assert th.is_alive()
        fwd = _Forwarder(pg_port, (pg_cfg.postgres.host, pg_cfg.postgres.port))
        fwd.start()
        deadline = time.monotonic() + 15
        while 'sim_up{dependency="postgres"} 1.0' not in _http(runner.url + "/metrics")[1].decode():
            assert time.monotonic() < deadline, "PostgreSQL never seen again"
            time.sleep(0.5)
        assert _http(runner.url + "/healthz")[0] == 200
    finally:
        runner.stop()
        th.join(30)
        if fwd is not None:
            fwd.sock.close()
    assert not th.is_alive()


def test_fast_mode_command_prints_its_ground_truth_as_json(stack_cfg, tmp_path):
    import subprocess
    import sys

    import reconlib

    path = reconlib.write_config(stack_cfg, tmp_path / "tradeops.toml")
    r = subprocess.run([sys.executable, "-m", "tradeops.cli", "--config", path, "sim", "run",
                        "--mode", "fast", "--date", "2026-12-04", "--symbols", "5", "--seed", "3",
                        "--no-groups"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["date"] == "2026-12-04" and summary["symbols"] == 5
    with db.connect(stack_cfg) as conn:
        n = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE ts::date = %s").format(
            sql.Identifier(stack_cfg.tables.bars_1m)), (date(2026, 12, 4),)).fetchone()[0]
    assert n == summary["bars"]["postgres_rows"] == summary["bars"]["kafka"] > 5 * 370
    assert summary["topics"][stack_cfg.topics.heartbeats] == sum(summary["heartbeats"].values())
