"""Doctor against real components: the shared Kafka/PostgreSQL/Prometheus/Pushgateway (never
stopped: "down" is a dead port, the same code path), a real `tradeops supervise`, real
exporter HTTP servers of the project's exporter framework started here, and the CLI.

Isolation: fresh database (pg_cfg/stack_cfg), unique topics and consumer groups, a unique
Pushgateway job, tmp folders. Every config lists only what its test starts.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import time
import uuid

import msgspec
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Gauge, delete_from_gateway, push_to_gateway

from supervisor_sides import Ours, Prog, wait_for
from tradeops import config as config_mod
from tradeops import db
from tradeops.calendar import TradingCalendar
from tradeops.doctor.checks.postgres import PG_DOWN, recon_day
from tradeops.doctor.result import Status
from tradeops.doctor.runner import exit_code, run_all
from tradeops.exporters.runtime import Exporter
from tradeops.kafka_admin import client_conf

replace = msgspec.structs.replace
TRADEOPS = [sys.executable, "-m", "tradeops.cli"]


def dead_port() -> int:
    """A port that was just bound and closed: nothing listens there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def only_doctor(cfg, **doctor):
    """cfg with a [doctor] that checks nothing but what the test names."""
    base = config_mod.DoctorConfig(prometheus_url="", pushgateway_url="", check_timeout_s=3.0)
    return replace(cfg, doctor=replace(base, **doctor),
                   supervisor=replace(cfg.supervisor, programs=[]),
                   gateway_oms=replace(cfg.gateway_oms, lag_groups=[]))


def by_name(results):
    return {r.name: r for r in results}


@pytest.fixture
def exporter():
    """A real exporter (the project's framework: /healthz, /metrics with <prefix>_up)."""
    made = []

    def make(deps=("kafka",)):
        app = Exporter("doctor-test", "doctor_test_exporter", "127.0.0.1:0", dependencies=deps, env={})
        app.start_server()
        app.health.beat()
        for d in deps:
            app.set_up(d, True)
        made.append(app)
        return app, f"http://127.0.0.1:{app.server.port}"

    yield make
    for app in made:
        app.stop_server()


def commit_group(cfg, topic: str, group: str, produce: int, commit_at: int | None) -> None:
    """Produce ``produce`` messages to partition 0 and commit ``group`` at ``commit_at``
    (None: at the end); the consumer then leaves (no active member)."""
    p = Producer(client_conf(cfg))
    for i in range(produce):
        p.produce(topic, value=b'{"x": %d}' % i, partition=0)
    assert p.flush(10) == 0
    c = Consumer(client_conf(cfg, **{"group.id": group, "enable.auto.commit": False}))
    c.commit(offsets=[TopicPartition(topic, 0, produce if commit_at is None else commit_at)],
             asynchronous=False)
    c.close()


def test_healthy_components_are_all_ok(stack_cfg, exporter, tmp_path):
    cfg = stack_cfg
    group = f"doctor-ok-{uuid.uuid4().hex[:6]}"
    commit_group(cfg, cfg.topics.order_events, group, produce=5, commit_at=None)
    _, url = exporter()
    # a fresh bar and today's recon: OK whether or not the session is open right now
    now = dt.datetime.now(dt.UTC)
    day = recon_day(TradingCalendar.from_config(cfg), now, 3600)
    with db.connect(cfg, autocommit=True) as conn:
        conn.execute("INSERT INTO bars_1m (symbol, ts, open, high, low, close, volume) "
                     "VALUES ('NSE:X', %s, 1, 1, 1, 1, 1)", (now - dt.timedelta(seconds=30),))
        conn.execute("INSERT INTO recon_runs (run_id, trading_day, status, finished_at) "
                     "VALUES ('r-ok', %s, 'clean', now())", (day,))
    (tmp_path / "k").mkdir()
    cfg = only_doctor(cfg, lag_groups=[group], exporters={"t": url},
                      kafka_data_dir=str(tmp_path / "k"), postgres_data_dir=str(tmp_path))
    results = run_all(cfg, ["kafka", "postgres", "exporter", "disk"])
    got = {r.name: (r.status.name, r.finding) for r in results}
    assert {n for n, (s, _) in got.items() if s != "OK"} == set(), got
    assert set(got) == {"kafka", "kafka.topics", f"kafka.lag:{group}", "postgres", "postgres.migrations",
                        "postgres.bars_1m", "recon", "exporter:t", "disk:kafka", "disk:postgres"}
    assert got[f"kafka.lag:{group}"][1].startswith("lag 0 messages")
    assert exit_code(results) == 0


def test_kafka_down_is_crit_within_its_timeout(base_cfg):
    cfg = only_doctor(base_cfg, timeouts={"kafka": 1.5}, lag_groups=["oms-core"])
    cfg = replace(cfg, kafka=replace(cfg.kafka, bootstrap_servers=f"127.0.0.1:{dead_port()}"))
    t0 = time.monotonic()
    results = run_all(cfg, ["kafka"])
    took = time.monotonic() - t0
    assert took < 1.5 + 0.3 + 1.0, took  # the check's timeout + the runner's grace (+ CI slack)
    assert [r.name for r in results] == ["kafka", "kafka.topics", "kafka.lag:oms-core"]
    assert all(r.status == Status.CRIT for r in results)
    assert "is down or unreachable" in results[0].advice
    assert exit_code(results) == 2


def test_missing_topic_and_group_without_member(kafka_cfg):
    cfg = kafka_cfg
    group = f"doctor-stop-{uuid.uuid4().hex[:6]}"
    commit_group(cfg, cfg.topics.gateway_events, group, produce=10, commit_at=2)
    cfg = only_doctor(cfg, lag_groups=[group], group_units={group: "oms-core.service"})
    cfg = replace(cfg, topics=replace(cfg.topics, positions=f"no.such.topic.{uuid.uuid4().hex[:6]}"))
    res = by_name(run_all(cfg, ["kafka"]))
    assert res["kafka"].status == Status.OK
    assert res["kafka.topics"].status == Status.CRIT
    assert res["kafka.topics"].finding == f"missing topics: positions={cfg.topics.positions}"
    lag = res[f"kafka.lag:{group}"]
    assert lag.status == Status.CRIT and lag.details["lag_messages"] == 8
    assert lag.advice.startswith(f"consumer group {group} has no active member and lag on "
                                 f"{cfg.topics.gateway_events}[0] for ")
    assert "`journalctl -u oms-core.service -n 100`" in lag.advice


def test_postgres_down(base_cfg):
    cfg = only_doctor(base_cfg)
    cfg = replace(cfg, postgres=replace(cfg.postgres, port=dead_port()))
    res = run_all(cfg, ["postgres"])
    assert [r.name for r in res] == ["postgres", "postgres.migrations", "postgres.bars_1m", "recon"]
    assert all(r.status == Status.CRIT for r in res)
    assert res[0].finding.startswith(f"PostgreSQL 127.0.0.1:{cfg.postgres.port}/tradeops: ")
    assert res[0].advice == PG_DOWN


def test_recon_missing_then_open_discrepancies_then_healed(pg_cfg):
    cfg = only_doctor(pg_cfg)
    day = recon_day(TradingCalendar.from_config(cfg), dt.datetime.now(dt.UTC), cfg.doctor.recon_grace_s)
    r = by_name(run_all(cfg, ["recon"]))
    assert list(r) == ["recon"]
    assert r["recon"].status == Status.CRIT and r["recon"].finding == f"no recon run for {day}"
    with db.connect(cfg, autocommit=True) as conn:
        conn.execute("INSERT INTO recon_runs (run_id, trading_day, status, discrepancies) "
                     "VALUES ('r1', %s, 'discrepancies', 2)", (day,))
        for i in range(2):
            conn.execute("INSERT INTO bars_1m_recon (trading_day, run_id, symbol, ts, kind) "
                         "VALUES (%s, 'r1', 'NSE:X', %s, 'price_mismatch')",
                         (day, dt.datetime(2026, 1, 1, 4, i, tzinfo=dt.UTC)))
    rec = run_all(cfg, ["recon"])[0]
    assert rec.status == Status.WARN and rec.finding == f"{day}: run r1 discrepancies, 2 open discrepancies"
    assert f"`tradeops recon autoheal --date {day}`" in rec.advice
    with db.connect(cfg, autocommit=True) as conn:
        conn.execute("UPDATE bars_1m_recon SET status = 'healed'")
        conn.execute("INSERT INTO recon_runs (run_id, trading_day, status, started_at) "
                     "VALUES ('r2', %s, 'healed', now() + interval '1 second')", (day,))
    assert run_all(cfg, ["recon"])[0].status == Status.OK


def test_pending_migration_is_crit(pg_cfg):
    with db.connect(pg_cfg, autocommit=True) as conn:
        conn.execute("DELETE FROM tradeops_migrations WHERE version = (SELECT max(version) FROM tradeops_migrations)")
    r = by_name(run_all(only_doctor(pg_cfg), ["postgres"]))
    assert r["postgres.migrations"].status == Status.CRIT
    assert r["postgres.migrations"].advice.startswith("apply them: `tradeops db migrate`")


def test_exporter_down_and_dependency_down(base_cfg, exporter):
    app, url = exporter(deps=("kafka", "postgres"))
    app.set_up("kafka", True)
    app.set_up("postgres", False)
    dead = f"http://127.0.0.1:{dead_port()}"
    cfg = only_doctor(base_cfg, exporters={"live": url, "gone": dead})
    res = by_name(run_all(cfg, ["exporter"]))
    assert res["exporter:live"].status == Status.CRIT
    assert res["exporter:live"].finding == "unhealthy: postgres down"
    assert res["exporter:live"].advice.startswith("fix postgres first")
    assert res["exporter:live"].details["up"] == {
        'doctor_test_exporter_up{dependency="kafka"}': 1.0, 'doctor_test_exporter_up{dependency="postgres"}': 0.0}
    assert res["exporter:gone"].status == Status.CRIT
    assert res["exporter:gone"].finding.startswith(f"{dead}/healthz not reachable")
    assert "`sudo systemctl restart tradeops-exporter-gone.service`" in res["exporter:gone"].advice
    app.set_up("postgres", True)
    assert by_name(run_all(cfg, ["exporter:live"]))["exporter:live"].status == Status.OK


def test_supervisor_heartbeat_missing_and_supervisor_gone(base_cfg, tmp_path):
    hb = tmp_path / "w.hb"
    hb.touch()
    sup = Ours(tmp_path / "sup", [Prog("watched", options={"mode": "watch", "startsecs": 0.0},
                                       heartbeat={"source": "file", "path": str(hb), "timeout_s": 1.0})])
    sup.start()
    try:
        scfg = config_mod.load(str(sup.config))
        cfg = only_doctor(base_cfg)
        cfg = replace(cfg, supervisor=scfg.supervisor)
        wait_for(lambda: sup.program("watched")["state"] == "HUNG", 10, "watched HUNG")
        res = by_name(run_all(cfg, ["supervisor"]))
        assert res["supervisor"].status == Status.OK
        w = res["supervisor:watched"]
        assert w.status == Status.CRIT and w.finding.startswith("HUNG")
        assert "watched is alive but silent" in w.advice and "watch mode: nothing restarts it" in w.advice
        hb.touch()
        wait_for(lambda: sup.program("watched")["state"] == "RUNNING", 10, "watched RUNNING")
        assert by_name(run_all(cfg, ["supervisor"]))["supervisor:watched"].status == Status.OK
    finally:
        sup.stop()
    res = run_all(cfg, ["supervisor"])
    assert [r.name for r in res] == ["supervisor"]
    assert res[0].status == Status.CRIT and "nothing watches the trading programs" in res[0].advice


def test_pushgateway_recon_success(base_cfg):
    job = f"tradeops_recon_doctor_{uuid.uuid4().hex[:6]}"
    url = base_cfg.doctor.pushgateway_url
    cfg = only_doctor(base_cfg, pushgateway_url=url)
    cfg = replace(cfg, recon=replace(cfg.recon, job=job))
    assert run_all(cfg, ["pushgateway"])[0].status == Status.WARN  # nothing pushed for this job
    reg = CollectorRegistry()
    Gauge("tradeops_recon_last_success_timestamp_seconds", "t", registry=reg).set(time.time())
    push_to_gateway(url, job=job, registry=reg, timeout=5)
    try:
        r = run_all(cfg, ["pushgateway"])[0]
        assert r.status == Status.OK and r.finding.startswith("last recon success")
    finally:
        delete_from_gateway(url, job=job, timeout=5)


def test_prometheus_targets_match_the_api(base_cfg):
    import urllib.request

    url = base_cfg.doctor.prometheus_url
    cfg = only_doctor(base_cfg, prometheus_url=url)
    r = run_all(cfg, ["prometheus"])[0]
    with urllib.request.urlopen(url + "/api/v1/targets?state=active", timeout=5) as resp:
        active = json.loads(resp.read())["data"]["activeTargets"]
    down = [t for t in active if t["health"] != "up"]
    assert r.name == "prometheus.targets"
    assert r.status == (Status.WARN if down else Status.OK)
    if down:
        assert r.finding.startswith(f"{len(down)}/{len(active)} targets down")
    dead = only_doctor(base_cfg, prometheus_url=f"http://127.0.0.1:{dead_port()}")
    assert run_all(dead, ["prometheus"])[0].status == Status.CRIT


def _write(tmp_path, text: str):
    p = tmp_path / "tradeops.toml"
    p.write_text(text)
    return str(p)


def test_cli_json_exit_codes_and_errors(tmp_path):
    (tmp_path / "data").mkdir()
    ok_conf = _write(tmp_path, f'[doctor]\nprometheus_url = ""\npushgateway_url = ""\n'
                               f'kafka_data_dir = "{tmp_path}/data"\n')
    p = subprocess.run([*TRADEOPS, "--config", ok_conf, "doctor", "--check", "--json", "--only", "disk"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["status"] == "OK" and doc["code"] == 0
    assert set(doc) == {"status", "code", "duration_s", "counts", "results"}
    (r,) = doc["results"]
    assert set(r) == {"name", "family", "status", "code", "finding", "advice", "duration_s",
                      "details", "target"}
    assert r["name"] == "disk:kafka" and r["family"] == "disk" and r["details"]["total_bytes"] > 0
    full = _write(tmp_path, f'[doctor]\nprometheus_url = ""\npushgateway_url = ""\n'
                            f'kafka_data_dir = "{tmp_path}/data"\ndisk_warn_ratio = 0.0001\n'
                            'disk_crit_ratio = 0.0002\n')
    p = subprocess.run([*TRADEOPS, "--config", full, "doctor", "--check", "--only", "disk"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2
    assert p.stdout.splitlines()[0].startswith("CRIT    disk:kafka: ")
    assert p.stdout.splitlines()[-1].startswith("doctor: CRIT (1 CRIT, 0 WARN, 0 UNKNOWN, 0 OK)")
    p = subprocess.run([*TRADEOPS, "--config", full, "doctor", "--check", "--only", "bogus"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 3 and p.stdout == ""
    assert p.stderr.startswith("tradeops: --only bogus: unknown check; known: ") and p.stderr.count("\n") == 1
    # asked for by name but not configured: UNKNOWN, exit 3
    p = subprocess.run([*TRADEOPS, "--config", full, "doctor", "--check", "--only", "supervisord"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 3 and p.stdout.startswith("UNKNOWN supervisord: not configured")
    bad = _write(tmp_path, "[doctor]\ncheck_timeout_s = -1\n")
    p = subprocess.run([*TRADEOPS, "--config", bad, "doctor", "--check"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 3 and "Traceback" not in p.stderr  # Nagios: the plugin could not run
    assert p.stderr == "tradeops: tradeops.toml: [doctor].check_timeout_s: expected a number > 0, got -1.0\n"


def test_cli_kafka_down_bounded(tmp_path):
    conf = _write(tmp_path, f'[kafka]\nbootstrap_servers = "127.0.0.1:{dead_port()}"\n'
                            '[doctor]\nprometheus_url = ""\npushgateway_url = ""\ntimeouts = { kafka = 1.0 }\n')
    t0 = time.monotonic()
    p = subprocess.run([*TRADEOPS, "--config", conf, "doctor", "--check", "--json", "--only", "kafka"],
                       capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert p.returncode == 2, p.stderr
    doc = json.loads(p.stdout)
    assert [r["status"] for r in doc["results"]] == ["CRIT", "CRIT"]  # kafka, kafka.topics (no groups)
    assert took < 1.0 + 0.3 + 3.0  # timeout + grace + interpreter start (CI slack)


def test_supervisor_program_restart_action_and_log_source(base_cfg, tmp_path):
    from tradeops.doctor import actions, logs

    hb, log = tmp_path / "w.hb", tmp_path / "w.log"
    sup = Ours(tmp_path / "sup", [Prog("w", args=["--heartbeat-file", str(hb), "--interval", "0.2"],
                                       options={"log_file": str(log), "startsecs": 0.2},
                                       heartbeat={"source": "file", "path": str(hb), "timeout_s": 2.0})])
    sup.start()
    try:
        cfg = replace(only_doctor(base_cfg), supervisor=config_mod.load(str(sup.config)).supervisor)
        wait_for(lambda: sup.program("w")["state"] == "RUNNING", 10, "w RUNNING")
        w = by_name(run_all(cfg, ["supervisor"]))["supervisor:w"]
        assert w.status == Status.OK and w.target.kind == "program" and w.target.log_file == str(log)
        src = logs.source_for(cfg, w, lambda line: None)
        assert isinstance(src, logs.FileTail) and src.path == str(log)
        before = sup.program("w")["pid"]
        assert actions.describe(w.target) == "tradeops supervise restart w"
        ok, msg = actions.restart(cfg, w.target)
        assert ok, msg
        wait_for(lambda: (p := sup.program("w"))["pid"] not in (None, before) and p["state"] == "RUNNING",
                 10, "w restarted")
        ok, msg = actions.restart_program(cfg, "nope")
        assert not ok and msg.startswith("supervisor: ")
    finally:
        sup.stop()
    ok, msg = actions.restart_program(cfg, "w")
    assert not ok and "is `tradeops supervise` running?" in msg


class _StatusStandIn:
    """Stands in for the gateway-oms exporter's lag collector (its window-based status
    family, as documented in tradeops.exporters.kafka_lag.LagCollector) inside a real
    exporter-framework HTTP server: the doctor reads the status from that exposition."""

    def __init__(self, group: str, status: str):
        self.group, self.status = group, status

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        fam = GaugeMetricFamily("kafka_consumergroup_status", "status", labels=["consumergroup", "status"])
        for s in ("OK", "WARN", "STALL", "STOP", "REWIND"):
            fam.add_metric([self.group, s], 1.0 if s == self.status else 0.0)
        yield fam


def test_lag_status_from_the_gateway_oms_exporter(kafka_cfg, exporter):
    cfg = kafka_cfg
    group = f"doctor-stall-{uuid.uuid4().hex[:6]}"
    commit_group(cfg, cfg.topics.order_events, group, produce=6, commit_at=1)
    app, url = exporter()
    app.registry.register(_StatusStandIn(group, "STALL"))
    # a member that reads but never commits (what STALL means), so the group is active
    member = Consumer(client_conf(cfg, **{"group.id": group, "enable.auto.commit": False,
                                          "auto.offset.reset": "earliest"}))
    member.subscribe([cfg.topics.order_events])
    try:
        wait_for(lambda: member.poll(0.2) is not None or bool(member.assignment()), 20, "member assigned")
        cfg = only_doctor(cfg, lag_groups=[group], exporters={"gateway-oms": url},
                          group_units={group: "oms-core.service"})
        cfg = replace(cfg, gateway_oms=replace(cfg.gateway_oms, lag_groups=[group]))
        lag = by_name(run_all(cfg, ["kafka"]))[f"kafka.lag:{group}"]
        assert lag.status == Status.CRIT and lag.details["status"] == "STALL"
        assert lag.details["lag_messages"] == 5 and lag.details["members"] == 1
        assert lag.advice.startswith(f"consumer group {group} is STALLED on {cfg.topics.order_events}[0] for ")
        assert lag.advice.endswith("check the process behind oms-core.service, "
                                   "`journalctl -u oms-core.service -n 100`")
    finally:
        member.close()


def test_cli_list(tmp_path):
    conf = _write(tmp_path, '[doctor]\nprometheus_url = ""\npushgateway_url = ""\n')
    p = subprocess.run([*TRADEOPS, "--config", conf, "doctor", "--list"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0
    fams = {line.split()[0]: line.split()[1] for line in p.stdout.splitlines()}
    assert fams["kafka"] == "on" and fams["postgres"] == "on" and fams["supervisord"] == "off"
    assert fams["exporter"] == "off" and fams["prometheus"] == "off"
