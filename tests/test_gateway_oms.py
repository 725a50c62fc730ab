"""gateway-oms exporter against the real local Kafka (topics unique per test via `kafka_cfg`):
scripted gateway events and heartbeats -> exact metric values; malformed payloads skipped
and counted; offsets committed; SIGTERM of the real command exits 0 with offsets committed.
Label bounding and the heartbeat up logic are also checked as pure unit tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from tradeops.config import GatewayOmsConfig
from tradeops.contracts import GatewayEvent, Heartbeat, encode
from tradeops.exporters.gateway_oms import GatewayOmsState, LabelBounds, StateCollector, build
from tradeops.exporters.runtime import LoopState
from tradeops.kafka_admin import client_conf
from waiting import wait_for

replace = msgspec.structs.replace
T0 = datetime(2026, 12, 3, 9, 15, tzinfo=UTC)


def gw(event, gateway="zerodha", dt=0.0, **kw) -> GatewayEvent:
    return GatewayEvent(ts=T0 + timedelta(seconds=dt), gateway=gateway, event=event, **kw)


def hb(process, ts: float) -> Heartbeat:
    return Heartbeat(ts=datetime.fromtimestamp(ts, UTC), process=process)


# ------------------------------------------------------------------------- pure logic
def test_label_bounds():
    b = LabelBounds(["zerodha"], GatewayOmsConfig().endpoints)
    assert b.gateway("zerodha") == "zerodha" and b.gateway("upstox") == "other"
    assert b.endpoint("/orders/regular") == "/orders/regular"
    assert b.endpoint("/orders/regular/230615000123?x=1") == "/orders/regular"
    assert b.endpoint("/orders/") == "/orders"
    assert b.endpoint("/instruments/historical/408065/minute") == "/instruments/historical"
    assert b.endpoint("/evil/" + "x" * 50) == "other" and b.endpoint("") == "other"
    auto = LabelBounds([], ["/orders"], max_auto=2)
    assert [auto.gateway(n) for n in ("a", "b", "c", "a")] == ["a", "b", "other", "a"]


def test_heartbeat_up_by_timeout_and_presence():
    reg = CollectorRegistry()
    sec = GatewayOmsConfig(critical_processes={"oms-core": 10.0, "risk": 5.0})
    st = GatewayOmsState(reg, sec)
    now = [1000.0]
    reg.register(StateCollector(st, sec.critical_processes, clock=lambda: now[0]))
    v = reg.get_sample_value
    assert v("tradeops_heartbeat_up", {"process": "oms-core"}) == 0  # never seen
    assert v("tradeops_heartbeat_timestamp_seconds", {"process": "oms-core"}) is None
    st.heartbeat(hb("oms-core", 995.0))
    st.heartbeat(hb("oms-core", 990.0))  # older, out of order: ignored
    st.heartbeat(hb("risk", 990.0))
    st.heartbeat(hb("strategy-x", 999.0))  # not critical: timestamp only
    assert v("tradeops_heartbeat_timestamp_seconds", {"process": "oms-core"}) == 995.0
    assert v("tradeops_heartbeat_up", {"process": "oms-core"}) == 1
    assert v("tradeops_heartbeat_up", {"process": "risk"}) == 0  # 10 s old > 5 s
    assert v("tradeops_heartbeat_up", {"process": "strategy-x"}) is None
    assert v("tradeops_heartbeat_timestamp_seconds", {"process": "strategy-x"}) == 999.0
    assert v("tradeops_heartbeat_timeout_seconds", {"process": "risk"}) == 5.0
    now[0] = 1005.5
    assert v("tradeops_heartbeat_up", {"process": "oms-core"}) == 0


def test_ack_latency_from_event_or_matched_send():
    reg = CollectorRegistry()
    st = GatewayOmsState(reg, GatewayOmsConfig(gateways=["zerodha"]))
    st.gateway_event(gw("order_ack", order_id="a", latency_ms=40.0))
    st.gateway_event(gw("order_sent", order_id="b"))
    st.gateway_event(gw("order_ack", order_id="b", dt=0.2))  # no latency_ms: from the send
    st.gateway_event(gw("order_ack", order_id="c"))  # neither: counted, not observed
    v = reg.get_sample_value
    assert v("gateway_order_ack_latency_seconds_count", {"gateway": "zerodha"}) == 2
    assert v("gateway_order_ack_latency_seconds_sum", {"gateway": "zerodha"}) == pytest.approx(0.24)
    assert v("gateway_order_ack_latency_seconds_bucket", {"gateway": "zerodha", "le": "0.05"}) == 1
    assert v("gateway_oms_exporter_acks_without_latency_total", {"gateway": "zerodha"}) == 1


# ----------------------------------------------------------------------- real Kafka
def produce(cfg, topic: str, payloads: list[bytes | None], key: bytes = b"k") -> None:
    p = Producer(client_conf(cfg))
    for body in payloads:
        p.produce(topic, body, key=key)
    assert p.flush(10) == 0


def committed(cfg, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer(client_conf(cfg, **{"group.id": group}))
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        c.close()


def high_watermarks(cfg, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer(client_conf(cfg, **{"group.id": "wm-" + uuid.uuid4().hex[:6]}))
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
    finally:
        c.close()


class Running:
    """The exporter served in a thread (no signal handlers), stopped on exit."""

    def __init__(self, cfg, **kw):
        self.app, self.loop, self.parts = build(cfg, listen="127.0.0.1:0",
                                                auto_offset_reset="earliest", env={}, **kw)
        self.thread = threading.Thread(target=self.app.serve, args=(self.loop,),
                                       kwargs={"signals": False}, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: self.app.state is LoopState.RUNNING, what="exporter ready")
        return self

    def __exit__(self, *exc):
        self.app.stop_event.set()
        self.thread.join(15)
        assert not self.thread.is_alive()

    def value(self, name, labels=None):
        return self.app.registry.get_sample_value(name, labels or {})

    def http(self, path):
        url = f"http://127.0.0.1:{self.app.server.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


@pytest.fixture
def gw_cfg(kafka_cfg):
    sec = replace(kafka_cfg.gateway_oms, group_id="t-gw-" + uuid.uuid4().hex[:8], lag_groups=[],
                  gateways=["zerodha", "upstox"],
                  critical_processes={"oms-core": 3600.0, "risk-manager": 3600.0})
    return replace(kafka_cfg, gateway_oms=sec)


def scripted_events():
    return [
        gw("order_sent", order_id="o1"),
        gw("order_sent", order_id="o2", dt=0.1),
        gw("order_ack", order_id="o1", latency_ms=12.0, dt=0.2),
        gw("order_ack", order_id="o2", latency_ms=180.0, dt=0.3),
        gw("fill", order_id="o1", quantity=10, price=100.5, dt=0.4),
        gw("fill", order_id="o1", quantity=5, price=100.5, dt=0.5),
        gw("rate_limited", endpoint="/orders/regular", dt=0.6),
        gw("rate_limited", endpoint="/orders/regular/123/", dt=0.7),
        gw("rate_limited", endpoint="/quote", dt=0.8),
        gw("rate_limited", endpoint="/made/up", dt=0.9),
        gw("reject", order_id="o3", message="RMS", dt=1.0),
        gw("error", message="500", dt=1.1),
        gw("reconnect", dt=1.2),
        gw("order_sent", gateway="upstox", order_id="u1", dt=2.0),
        gw("fill", gateway="mystery", dt=3.0),  # unknown gateway: folds into "other"
    ]


def test_scripted_events_exact_metrics_and_commits(gw_cfg):
    cfg = gw_cfg
    t = cfg.topics
    produce(cfg, t.gateway_events, [encode(e) for e in scripted_events()], key=b"zerodha")
    malformed = [b"{not json", b'{"ts":"2026-12-03T09:15:00Z","gateway":"zerodha","event":"nope"}',
                 None, b'{"gateway":"zerodha","event":"fill"}']
    produce(cfg, t.gateway_events, malformed, key=b"zerodha")
    now = time.time()
    produce(cfg, t.heartbeats, [encode(hb("oms-core", now - 5)), encode(hb("oms-core", now - 1)),
                                encode(hb("strategy-a", now - 2)), b"[]"], key=b"p")
    total = len(scripted_events()) + len(malformed) + 4
    with Running(cfg) as r:
        wait_for(lambda: r.loop.processed >= total, what="all messages consumed")
        v = r.value
        z = {"gateway": "zerodha"}
        assert v("gateway_orders_sent_total", z) == 2
        assert v("gateway_orders_sent_total", {"gateway": "upstox"}) == 1
        assert v("gateway_fills_total", z) == 2
        assert v("gateway_fills_total", {"gateway": "other"}) == 1
        assert v("gateway_rate_limited_total", {**z, "endpoint": "/orders/regular"}) == 2
        assert v("gateway_rate_limited_total", {**z, "endpoint": "/quote"}) == 1
        assert v("gateway_rate_limited_total", {**z, "endpoint": "other"}) == 1
        assert v("gateway_rate_limited_total", {**z, "endpoint": "/trades"}) == 0  # pre-initialised
        assert v("gateway_rate_limited_total", {"gateway": "upstox", "endpoint": "/quote"}) == 0
        assert v("gateway_rejects_total", z) == 1
        assert v("gateway_errors_total", z) == 1
        assert v("gateway_reconnects_total", z) == 1
        assert v("gateway_reconnects_total", {"gateway": "upstox"}) == 0
        assert v("gateway_order_ack_latency_seconds_count", z) == 2
        assert v("gateway_order_ack_latency_seconds_sum", z) == pytest.approx(0.192)
        assert v("gateway_order_ack_latency_seconds_bucket", {**z, "le": "0.025"}) == 1
        assert v("gateway_order_ack_latency_seconds_bucket", {**z, "le": "0.25"}) == 2
        assert v("gateway_last_event_timestamp_seconds", z) == (T0 + timedelta(seconds=1.2)).timestamp()
        assert v("gateway_last_event_timestamp_seconds", {"gateway": "other"}) == (
            T0 + timedelta(seconds=3)).timestamp()
        assert v("tradeops_heartbeat_timestamp_seconds", {"process": "oms-core"}) == pytest.approx(now - 1)
        assert v("tradeops_heartbeat_timestamp_seconds", {"process": "strategy-a"}) == pytest.approx(now - 2)
        assert v("tradeops_heartbeat_up", {"process": "oms-core"}) == 1
        assert v("tradeops_heartbeat_up", {"process": "risk-manager"}) == 0
        pre = "gateway_oms_exporter"
        assert v(f"{pre}_decode_errors_total", {"topic": t.gateway_events}) == 4
        assert v(f"{pre}_decode_errors_total", {"topic": t.heartbeats}) == 1
        assert v(f"{pre}_handler_errors_total", {"topic": t.gateway_events}) == 0
        assert v(f"{pre}_up", {"dependency": "kafka"}) == 1
        status, body = r.http("/healthz")
        assert status == 200 and json.loads(body)["dependencies"] == {"kafka": True}
        status, body = r.http("/metrics")
        assert status == 200 and b'gateway_fills_total{gateway="zerodha"} 2.0' in body
    # stopped: every consumed offset is committed
    parts = cfg.topics.partitions
    for topic in (t.gateway_events, t.heartbeats):
        hw = {p: o for p, o in high_watermarks(cfg, topic, parts).items() if o > 0}
        assert committed(cfg, cfg.gateway_oms.group_id, topic, parts) == hw


def test_restart_resumes_from_committed_offsets(gw_cfg):
    cfg = gw_cfg
    t = cfg.topics
    produce(cfg, t.gateway_events, [encode(gw("fill", dt=i)) for i in range(5)])
    with Running(cfg) as r:
        wait_for(lambda: r.loop.processed >= 5)
        assert r.value("gateway_fills_total", {"gateway": "zerodha"}) == 5
    produce(cfg, t.gateway_events, [encode(gw("fill", dt=10 + i)) for i in range(3)])
    with Running(cfg) as r:
        wait_for(lambda: r.loop.processed >= 3)
        time.sleep(0.5)
        # only the 3 new events: nothing re-read, nothing lost
        assert r.value("gateway_fills_total", {"gateway": "zerodha"}) == 3
        assert r.loop.processed == 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_exits_cleanly_with_offsets_committed(gw_cfg, tmp_path):
    cfg = gw_cfg
    t = cfg.topics
    port = free_port()
    conf = tmp_path / "tradeops.toml"
    conf.write_text(f"""
[kafka]
bootstrap_servers = "{cfg.kafka.bootstrap_servers}"
[topics]
gateway_events = "{t.gateway_events}"
heartbeats = "{t.heartbeats}"
partitions = {t.partitions}
[gateway_oms]
listen = "127.0.0.1:{port}"
group_id = "{cfg.gateway_oms.group_id}"
critical_processes = {{ "oms-core" = 30.0 }}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    proc = subprocess.Popen([sys.executable, "-m", "tradeops.cli", "--config", str(conf),
                             "exporter", "gateway-oms"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def metrics() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    return r.read().decode()
            except OSError:
                return ""

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(healthy, timeout=30, interval=0.2, what="/healthz 200")

        # the command starts at `latest` on a new group: heartbeat until one is seen
        def seen() -> bool:
            produce(cfg, t.heartbeats, [encode(hb("oms-core", time.time()))])
            return 'tradeops_heartbeat_up{process="oms-core"} 1.0' in metrics()

        wait_for(seen, timeout=30, interval=0.3, what="heartbeat consumed")
        produce(cfg, t.gateway_events, [encode(gw("fill", dt=i)) for i in range(7)])
        wait_for(lambda: 'gateway_fills_total{gateway="zerodha"} 7.0' in metrics(), what="fills")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read().decode()
    assert rc == 0, out
    assert took < 5.0, f"shutdown took {took:.1f} s"
    assert "Traceback" not in out
    parts = t.partitions
    for topic in (t.gateway_events, t.heartbeats):
        hw = {p: o for p, o in high_watermarks(cfg, topic, parts).items() if o > 0}
        assert committed(cfg, cfg.gateway_oms.group_id, topic, parts) == hw, topic


def test_lag_of_configured_groups_served_on_metrics(gw_cfg):
    """The lag collector is wired into the exporter: its own group's lag on /metrics."""
    cfg = replace(gw_cfg, gateway_oms=replace(gw_cfg.gateway_oms, lag_groups=[gw_cfg.gateway_oms.group_id],
                                              lag_min_interval_s=0.0))
    t = cfg.topics
    produce(cfg, t.gateway_events, [encode(gw("fill", dt=i)) for i in range(4)])
    with Running(cfg) as r:
        wait_for(lambda: r.loop.processed >= 4)
        group = cfg.gateway_oms.group_id

        def caught_up():
            status, body = r.http("/metrics")
            text = body.decode()
            return (f'kafka_consumergroup_lag_sum{{consumergroup="{group}",topic="{t.gateway_events}"}} 0.0'
                    in text and f'kafka_consumergroup_status{{consumergroup="{group}",status="OK"}} 1.0'
                    in text)

        wait_for(caught_up, timeout=20, interval=0.3, what="own group's lag on /metrics")
        assert r.value("gateway_oms_exporter_scrape_duration_seconds") >= 0


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stack(*args) -> float:
    t0 = time.monotonic()
    subprocess.run([os.path.join(REPO, "scripts", "stack.sh"), *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    return time.monotonic() - t0


@pytest.mark.integration
def test_broker_outage_keeps_serving_and_recovers(gw_cfg):
    """Stops the shared broker for a few seconds (keep this the only such test)."""
    cfg = replace(gw_cfg, gateway_oms=replace(gw_cfg.gateway_oms, lag_groups=[gw_cfg.gateway_oms.group_id],
                                              scrape_budget_s=1.0))
    t = cfg.topics
    produce(cfg, t.gateway_events, [encode(gw("fill", dt=i)) for i in range(5)])
    # a second exporter (own group) is stopped during the outage: shutdown stays quick
    other = Running(replace(cfg, gateway_oms=replace(cfg.gateway_oms, group_id=cfg.gateway_oms.group_id + "-b",
                                                     lag_groups=[])))
    with Running(cfg, probe_interval_s=1.0) as r:
        up = {"dependency": "kafka"}
        other.__enter__()
        wait_for(lambda: r.loop.processed >= 5 and other.loop.processed >= 5)
        wait_for(lambda: r.value("gateway_oms_exporter_up", up) == 1)
        try:
            t_stop = stack("stop", "kafka")
            t_down = time.monotonic()
            wait_for(lambda: r.value("gateway_oms_exporter_up", up) == 0, timeout=15,
                     what="_up 0 after the broker stopped")
            t0 = time.monotonic()
            other.__exit__(None, None, None)
            stop_took = time.monotonic() - t0
            assert stop_took < 5.0, f"shutdown during the outage took {stop_took:.1f} s"
            t0 = time.monotonic()
            status, body = r.http("/metrics")
            took = time.monotonic() - t0
            assert status == 200 and b'gateway_oms_exporter_up{dependency="kafka"} 0.0' in body
            assert b'gateway_fills_total{gateway="zerodha"} 5.0' in body
            assert took < 3.0  # the lag collection is bounded by the scrape budget
            assert r.http("/healthz")[0] == 503
        finally:
            t_start = stack("start", "kafka")
            outage = time.monotonic() - t_down
        t0 = time.monotonic()
        wait_for(lambda: r.value("gateway_oms_exporter_up", up) == 1, timeout=30,
                 what="_up 1 after the broker returned")
        print(f"broker stop {t_stop:.1f} s, start {t_start:.1f} s, outage {outage:.1f} s, "
              f"other exporter stopped in {stop_took:.2f} s, _up 1 after {time.monotonic() - t0:.1f} s")
        assert r.http("/healthz")[0] == 200
        produce(cfg, t.gateway_events, [encode(gw("fill", dt=10 + i)) for i in range(5)])
        wait_for(lambda: r.value("gateway_fills_total", {"gateway": "zerodha"}) == 10, timeout=30)
        time.sleep(1.0)
        assert r.value("gateway_fills_total", {"gateway": "zerodha"}) == 10  # nothing doubled
        assert r.loop.processed == 10
    parts = t.partitions
    hw = {p: o for p, o in high_watermarks(cfg, t.gateway_events, parts).items() if o > 0}
    assert committed(cfg, cfg.gateway_oms.group_id, t.gateway_events, parts) == hw


def test_restart_rereads_recent_heartbeats_but_not_gateway_events(gw_cfg):
    """After a restart the critical processes are up at once (heartbeats re-read from the
    last minute), while gateway events are not re-counted."""
    cfg = gw_cfg
    t = cfg.topics
    now = time.time()
    old = now - 3 * 3600  # far outside the look-back (record time too): not re-read
    p = Producer(client_conf(cfg))
    p.produce(t.heartbeats, encode(hb("risk-manager", old)), key=b"r", timestamp=int(old * 1000))
    assert p.flush(10) == 0
    produce(cfg, t.heartbeats, [encode(hb("oms-core", now - 2))], key=b"o")
    produce(cfg, t.gateway_events, [encode(gw("fill", dt=i)) for i in range(3)])
    with Running(cfg) as r:
        wait_for(lambda: r.loop.processed >= 5)
        assert r.value("tradeops_heartbeat_up", {"process": "oms-core"}) == 1
    with Running(cfg) as r:
        # before any new message: the heartbeat of the last minute is back, the old one not
        wait_for(lambda: r.value("tradeops_heartbeat_timestamp_seconds", {"process": "oms-core"})
                 is not None, timeout=15)
        assert r.value("tradeops_heartbeat_up", {"process": "oms-core"}) == 1
        assert r.value("tradeops_heartbeat_timestamp_seconds", {"process": "risk-manager"}) is None
        time.sleep(0.5)
        assert r.value("gateway_fills_total", {"gateway": "zerodha"}) == 0
        assert r.loop.processed == 1
