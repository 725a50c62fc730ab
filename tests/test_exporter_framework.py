"""Exporter framework: pure logic (health verdict, watchdog interval, loop states,
single-flight, text rendering), the real HTTP server on 127.0.0.1, and the Kafka consume
loop against the real broker (hooks, commit on revoke across a rebalance, handler errors).
The gateway-oms tests exercise the loop further (decode errors, outage, SIGTERM)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from tradeops.exporters import Exporter, Health, LoopState, Notifier, SingleFlight, WatchdogTimer
from tradeops.exporters.runtime import InvalidTransition


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


# ----------------------------------------------------------------------------- health
def test_health_needs_recent_loop_and_all_dependencies():
    clock = Clock()
    h = Health(["kafka", "postgres"], loop_stale_s=10, clock=clock)
    ok, body = h.report()
    assert not ok and body["loop"]["age_seconds"] is None and body["status"] == "unhealthy"
    h.beat()
    h.set_up("kafka", True)
    ok, body = h.report()
    assert not ok and body["dependencies"] == {"kafka": True, "postgres": False}
    h.set_up("postgres", True)
    clock.t += 0.25
    ok, body = h.report()
    assert ok and body == {"status": "ok", "loop": {"age_seconds": 0.25, "live": True},
                           "dependencies": {"kafka": True, "postgres": True}}
    clock.t += 10.0  # loop stuck: stale beat
    ok, body = h.report()
    assert not ok and body["loop"]["live"] is False
    h.beat()
    assert h.report()[0]
    assert h.set_up("kafka", False) is True and h.set_up("kafka", False) is False
    assert not h.report()[0]
    with pytest.raises(KeyError):
        h.set_up("redis", True)


# --------------------------------------------------------------------------- watchdog
def test_watchdog_pings_every_quarter_of_timeout():
    clock = Clock(0.0)
    w = WatchdogTimer.from_env({"WATCHDOG_USEC": "20000000"}, pid=123, clock=clock)
    assert w.enabled and w.timeout_s == 20.0 and w.interval_s == 5.0
    assert w.max_iteration_s(1.0) == 1.0 and WatchdogTimer(2_000_000).max_iteration_s(1.0) == 0.5
    sent = []
    # a loop iterating every 0.7 s for 60 s: gaps between pings stay under half the timeout
    while clock.t < 60:
        if w.due():
            sent.append(clock.t)
        clock.t += 0.7
    gaps = [b - a for a, b in zip(sent, sent[1:], strict=False)]
    assert sent[0] == 0.0 and max(gaps) < 10.0 and min(gaps) >= 5.0


def test_watchdog_disabled_without_env_or_for_other_pid():
    assert not WatchdogTimer.from_env({}).enabled
    assert not WatchdogTimer.from_env({"WATCHDOG_USEC": "x"}).enabled
    w = WatchdogTimer.from_env({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, pid=99)
    assert not w.enabled and not w.due()
    assert WatchdogTimer.from_env({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "99"}, pid=99).enabled


def test_notifier_sends_datagrams(tmp_path):
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": path})
        assert n.notify("READY=1", "STATUS=consuming")
        assert srv.recv(100) == b"READY=1\nSTATUS=consuming"
        n.close()
    finally:
        srv.close()
    assert not Notifier.from_env({}).notify("READY=1")


def test_exporter_tick_sends_watchdog_from_loop(tmp_path):
    path = str(tmp_path / "n.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(1)
    try:
        app = Exporter("t", "t_exporter", "127.0.0.1:0",
                       env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
        app.ready("consuming x")
        assert srv.recv(100) == b"READY=1\nSTATUS=consuming x"
        app.tick()
        assert srv.recv(100) == b"WATCHDOG=1"
        app.tick()  # within a quarter of 4 s: no second ping
        srv.setblocking(False)
        with pytest.raises(BlockingIOError):
            srv.recv(100)
        assert app.max_poll_s(5.0) == 1.0
    finally:
        srv.close()


def test_loop_state_transitions_are_guarded():
    app = Exporter("t", "t_exporter", "127.0.0.1:0", env={})
    assert app.state is LoopState.STARTING
    app.ready("x")
    assert app.state is LoopState.RUNNING
    app.ready("again")  # idempotent, no transition
    with pytest.raises(InvalidTransition):
        app.transition(LoopState.STARTING)
    app.transition(LoopState.STOPPING)
    app.transition(LoopState.STOPPED)
    with pytest.raises(InvalidTransition):
        app.transition(LoopState.RUNNING)


# ------------------------------------------------------------------------ single-flight
def test_single_flight_shares_one_call_between_concurrent_callers():
    started = threading.Event()
    release = threading.Event()

    def slow(deadline):
        started.set()
        release.wait(5)
        return ["result"]

    sf = SingleFlight(slow, budget_s=5)
    results = []
    threads = [threading.Thread(target=lambda: results.append(sf())) for _ in range(8)]
    threads[0].start()
    started.wait(5)
    for t in threads[1:]:
        t.start()
    time.sleep(0.1)
    release.set()
    for t in threads:
        t.join(5)
    assert results == [(True, ["result"])] * 8
    assert sf.calls == 1
    release.clear()
    release.set()
    assert sf() == (True, ["result"]) and sf.calls == 2  # a later call runs again


def test_single_flight_budget_bounds_the_wait_and_late_callers_join():
    release = threading.Event()
    sf = SingleFlight(lambda d: release.wait(5) and 42, budget_s=0.2)
    t0 = time.monotonic()
    assert sf() == (False, None)
    assert time.monotonic() - t0 < 1.0
    assert sf() == (False, None) and sf.calls == 1  # joined the running call
    release.set()
    time.sleep(0.05)
    assert sf() == (True, 42) and sf.calls == 2


def test_single_flight_error_reaches_callers():
    def boom(deadline):
        raise RuntimeError("broker gone")

    with pytest.raises(RuntimeError, match="broker gone"):
        SingleFlight(boom, budget_s=1)()


def test_scrape_collector_failure_does_not_break_metrics():
    app = Exporter("t", "t_exporter", "127.0.0.1:0", env={})

    def fail(deadline):
        raise RuntimeError("nope")

    c = app.add_scrape_collector("bad", fail)
    app.add_scrape_collector("good", lambda d: [GaugeMetricFamily("t_good", "g", value=7)])
    v = app.registry.get_sample_value
    assert v("t_good") == 7
    assert v("t_exporter_up", {"dependency": "kafka"}) == 0
    # get_sample_value stops at the first match: only the "t_good" lookup ran "bad" so far
    assert c.errors == 1
    assert v("t_exporter_scrape_collection_failures_total", {"collection": "bad", "reason": "error"}) == 2
    assert v("t_exporter_scrape_collection_failures_total", {"collection": "good", "reason": "error"}) == 0
    assert v("t_exporter_scrape_collection_failures_total", {"collection": "bad", "reason": "timeout"}) == 0


# ---------------------------------------------------------------------------- HTTP
class TickLoop:
    """A work loop without Kafka: ticks until stopped (the framework's contract)."""

    def __init__(self):
        self.stuck = threading.Event()

    def run(self, app):
        app.set_up("kafka", True)
        app.ready("ticking")
        while not app.stop_event.wait(0.02):
            if not self.stuck.is_set():
                app.tick()
        app.transition(LoopState.STOPPING)
        app.transition(LoopState.STOPPED)


def get(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


@pytest.fixture
def served():
    # 2 s: generous on a loaded CI machine; the stuck-loop test waits past it
    app = Exporter("test", "test_exporter", "127.0.0.1:0", loop_stale_s=2.0, env={})
    calls = Counter("test_things", "things", ["kind"], registry=app.registry)
    calls.labels(kind="a").inc(3)
    loop = TickLoop()
    t = threading.Thread(target=app.serve, args=(loop,), kwargs={"signals": False})
    t.start()
    for _ in range(100):
        if app.server is not None and app.state is LoopState.RUNNING:
            break
        time.sleep(0.02)
    yield app, loop, f"http://127.0.0.1:{app.server.port}"
    app.stop_event.set()
    t.join(5)
    assert not t.is_alive()


def test_http_routes(served):
    app, loop, base = served
    status, ctype, body = get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    text = body.decode()
    assert 'test_things_total{kind="a"} 3.0' in text
    assert 'test_exporter_up{dependency="kafka"} 1.0' in text
    assert "test_exporter_scrape_duration_seconds " in text
    assert "_created" not in text
    status, ctype, body = get(base + "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and ctype.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    status, _, body = get(base + "/")
    assert status == 200 and b'href="/metrics"' in body
    assert get(base + "/nope")[0] == 404
    status, ctype, body = get(base + "/healthz")
    assert status == 200 and ctype == "application/json"
    report = json.loads(body)
    assert report["status"] == "ok" and report["dependencies"] == {"kafka": True}


def test_healthz_503_when_dependency_down_or_loop_stuck(served):
    app, loop, base = served
    app.set_up("kafka", False)
    status, _, body = get(base + "/healthz")
    assert status == 503 and json.loads(body)["dependencies"] == {"kafka": False}
    assert b'test_exporter_up{dependency="kafka"} 0.0' in get(base + "/metrics")[2]
    app.set_up("kafka", True)
    assert get(base + "/healthz")[0] == 200
    loop.stuck.set()  # the loop stops iterating: /healthz must notice
    time.sleep(2.5)
    status, _, body = get(base + "/healthz")
    assert status == 503 and json.loads(body)["loop"]["live"] is False
    assert get(base + "/metrics")[0] == 200  # metrics keep answering


def test_concurrent_scrapes_share_one_collection(served):
    app, loop, base = served
    gate = threading.Event()

    def slow(deadline):
        gate.wait(5)
        return [GaugeMetricFamily("test_slow", "slow state", value=1)]

    c = app.add_scrape_collector("slow", slow, budget_s=5)
    out = []
    threads = [threading.Thread(target=lambda: out.append(get(base + "/metrics"))) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in threads:
        t.join(10)
    assert len(out) == 6 and all(s == 200 and b"test_slow 1.0" in b for s, _, b in out)
    assert c.flight.calls == 1


def test_scrape_budget_bounds_response_time(served):
    app, loop, base = served
    gate = threading.Event()
    app.add_scrape_collector("stuck", lambda d: gate.wait(10) and [], budget_s=0.3)
    t0 = time.monotonic()
    status, _, body = get(base + "/metrics")
    took = time.monotonic() - t0
    gate.set()
    assert status == 200 and took < 2.0 and b"test_things_total" in body
    assert b'test_exporter_scrape_collection_failures_total{collection="stuck",reason="timeout"} 1.0' in body


def test_listen_in_use_is_a_user_error(served):
    from tradeops.errors import UserError

    app, loop, base = served
    other = Exporter("other", "other_exporter", f"127.0.0.1:{app.server.port}", env={})
    with pytest.raises(UserError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
        other.serve(TickLoop(), signals=False)


def test_text_renderer_equals_generate_latest():
    from prometheus_client import Enum, Gauge, Histogram, Info, Summary, generate_latest
    from prometheus_client.core import CounterMetricFamily

    from tradeops.exporters.render import TextRenderer

    reg = __import__("prometheus_client").CollectorRegistry()
    c = Counter("r_events", "Events with \\ and\nnewline in help.", ["kind", "path"], registry=reg)
    c.labels(kind='quo"te', path="back\\slash\nnl").inc(2)
    c.labels(kind="plain", path="/").inc()
    g = Gauge("r_level", "A gauge.", ["x"], registry=reg)
    g.labels(x="nan").set(float("nan"))
    g.labels(x="inf").set(float("inf"))
    g.labels(x="big").set(123456789.0)
    g.labels(x="small").set(1e-9)
    Histogram("r_latency_seconds", "h", ["gw"], registry=reg).labels(gw="z").observe(0.3)
    Summary("r_size_bytes", "s", registry=reg).observe(12)
    Info("r_build", "i", registry=reg).info({"version": "1.2"})
    Enum("r_state", "e", states=["a", "b"], registry=reg).state("b")

    class Custom:
        def collect(self):
            fam = CounterMetricFamily("r_custom", "with created", labels=["k"], created=None)
            fam.add_metric(["v"], 3, created=1700000000.0)
            yield fam
            yield GaugeMetricFamily("r_nolabels", "plain", value=-2.5)

    reg.register(Custom())
    r = TextRenderer()
    expected = generate_latest(reg)
    assert r.render(reg) == expected
    assert r.render(reg) == expected  # second time from the cache
    c.labels(kind="new", path="x").inc()
    assert r.render(reg) == generate_latest(reg)


def test_fast_gauge_family_renders_like_a_gauge_family():
    from prometheus_client import CollectorRegistry, generate_latest

    from tradeops.exporters.render import FastGaugeFamily, TextRenderer

    class C:
        def __init__(self, cls):
            self.cls = cls

        def collect(self):
            fam = self.cls("r_lag", "Lag \\ help.", labels=["group", "partition"])
            fam.add_metric(["g\"1", "0"], 5)
            fam.add_metric(["g\n2", "1"], float("nan"))
            fam.add_metric(["g3", "2"], 1e-3)
            yield fam

    fast, plain = CollectorRegistry(), CollectorRegistry()
    fast.register(C(FastGaugeFamily))
    plain.register(C(GaugeMetricFamily))
    expected = generate_latest(plain)
    r = TextRenderer()
    assert r.render(fast) == expected and r.render(fast) == expected
    assert generate_latest(fast) == expected
    assert fast.get_sample_value("r_lag", {"group": "g3", "partition": "2"}) == 1e-3


def test_client_reset_is_not_a_traceback(served, capfd):
    import struct

    app, loop, base = served
    s = socket.create_connection(("127.0.0.1", app.server.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST before any request
    time.sleep(0.2)
    assert get(base + "/metrics")[0] == 200
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


# ------------------------------------------------------------------- consume loop (Kafka)
def _produce(cfg, topic, n, start=0):
    from confluent_kafka import Producer

    from tradeops.contracts import Heartbeat, encode
    from tradeops.kafka_admin import client_conf

    p = Producer(client_conf(cfg))
    for i in range(start, start + n):
        hb = Heartbeat(ts=__import__("datetime").datetime.now(__import__("datetime").UTC),
                       process=f"p{i}", pid=i)
        p.produce(topic, encode(hb), key=f"k{i}".encode())
    assert p.flush(10) == 0


def _wait(pred, timeout=40.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_consume_loop_rebalance_hooks_commit_on_revoke_and_handler_errors(kafka_cfg):
    import uuid

    from tradeops.exporters import ConsumeLoop

    cfg = kafka_cfg
    topic = cfg.topics.heartbeats
    group = "t-loop-" + uuid.uuid4().hex[:8]
    seen: dict[str, list] = {"a": [], "b": []}
    hooks: list[tuple[str, str, int]] = []

    def make(name):
        def handle(kind, event, msg):
            assert kind == "heartbeats"
            if event.pid == 13:
                raise ValueError("a bug in the handler")
            seen[name].append((msg.partition(), msg.offset()))

        app = Exporter(name, f"t_{name}", "127.0.0.1:0", env={})
        loop = ConsumeLoop(cfg, group_id=group, topics={topic: "heartbeats"}, handler=handle,
                           on_assign=lambda c, tps: hooks.append((name, "assign", len(tps))),
                           on_revoke=lambda tps: hooks.append((name, "revoke", len(tps))),
                           commit_every_n=10_000, commit_every_s=3600)  # only revoke/close commit
        t = threading.Thread(target=app.serve, args=(loop,), kwargs={"signals": False}, daemon=True)
        return app, loop, t

    _produce(cfg, topic, 30)
    a_app, a_loop, a_t = make("a")
    a_t.start()
    _wait(lambda: a_loop.processed >= 30)
    assert a_app.registry.get_sample_value("t_a_handler_errors_total", {"topic": topic}) == 1
    b_app, b_loop, b_t = make("b")
    b_t.start()
    _wait(lambda: ("a", "revoke", 3) in hooks and any(h[:2] == ("b", "assign") and h[2] > 0 for h in hooks))
    _produce(cfg, topic, 30, start=30)
    _wait(lambda: a_loop.processed + b_loop.processed >= 60)
    time.sleep(1.0)
    for app, t in ((a_app, a_t), (b_app, b_t)):
        app.stop_event.set()
        t.join(20)
        assert not t.is_alive()
    handled = seen["a"] + seen["b"]
    # the revoke committed what A had processed: B re-read nothing, nothing was lost
    assert len(handled) == 59 and len(set(handled)) == 59
    assert a_loop.processed + b_loop.processed == 60
    assert hooks[0] == ("a", "assign", 3)
