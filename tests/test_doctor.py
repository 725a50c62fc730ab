"""Doctor: pure logic and the runner (no services needed).

The runner tests use small check functions written here (a crashing one, a hanging one):
they stand in for check families to exercise the runner's contract, not a component.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import msgspec
import pytest

from tradeops import config as config_mod
from tradeops.calendar import TradingCalendar
from tradeops.doctor import logs, report
from tradeops.doctor.checks import disk, kafka, postgres, supervisor, systemd
from tradeops.doctor.result import Status, crit, ok, overall, unknown, warn
from tradeops.doctor.runner import Check, Runner, exit_code, select
from tradeops.errors import UserError
from tradeops.exporters.kafka_lag import GroupSnapshot

replace = msgspec.structs.replace
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


@pytest.fixture
def cfg():
    return config_mod.loads("[doctor]\ncheck_timeout_s = 1.0\n")


def test_overall_and_exit_codes():
    assert overall([]) == Status.OK
    assert overall([Status.OK, Status.UNKNOWN]) == Status.UNKNOWN
    assert overall([Status.UNKNOWN, Status.WARN]) == Status.WARN
    assert overall([Status.WARN, Status.CRIT, Status.UNKNOWN]) == Status.CRIT
    assert exit_code([ok("a", "x")]) == 0
    assert exit_code([ok("a", "x"), warn("b", "y", "do")]) == 1
    assert exit_code([unknown("c", "?"), crit("d", "z", "do")]) == 2
    assert exit_code([unknown("c", "?"), ok("a", "x")]) == 3


def test_runner_crash_and_hang_become_unknown_results(cfg):
    def boom(ctx):
        raise ValueError("bad answer\nsecond line")

    def hang(ctx):
        time.sleep(30)

    def fine(ctx):
        return [ok("fine.a", "all good"), warn("fine.b", "meh", "do x")]

    cfg = replace(cfg, doctor=replace(cfg.doctor, check_timeout_s=0.5))
    r = Runner(cfg, [Check("boom", boom, "d"), Check("hang", hang, "d"), Check("fine", fine, "d")])
    t0 = time.monotonic()
    res = {x.name: x for x in r.run()}
    took = time.monotonic() - t0
    assert took < 0.5 + 0.3 + 0.5  # bounded by the timeout + grace (slack for CI)
    assert res["boom"].status == Status.UNKNOWN
    assert res["boom"].finding == "check failed: ValueError: bad answer"
    assert res["hang"].status == Status.UNKNOWN and "did not finish within 0.5s" in res["hang"].finding
    assert res["fine.b"].family == "fine" and res["fine.b"].status == Status.WARN


def test_runner_per_family_timeout(cfg):
    cfg = replace(cfg, doctor=replace(cfg.doctor, check_timeout_s=5.0, timeouts={"slow": 0.2}))
    r = Runner(cfg, [Check("slow", lambda ctx: time.sleep(3), "d")])
    t0 = time.monotonic()
    (res,) = r.run()
    assert res.status == Status.UNKNOWN and time.monotonic() - t0 < 1.5


def test_user_error_in_check_is_its_message(cfg):
    def fn(ctx):
        raise UserError("tradeops.toml: [postgres].password_file: cannot read secret file /x: No such file")

    (res,) = Runner(cfg, [Check("pg", fn, "d")]).run()
    assert res.status == Status.UNKNOWN and res.finding.startswith("tradeops.toml: [postgres]")


def test_select_only():
    checks = [Check("kafka", lambda c: [], "k"), Check("postgres", lambda c: [], "p", aliases=("recon",))]
    chosen, keep = select(checks, ["recon"])
    assert [c.family for c in chosen] == ["postgres"]
    assert keep(ok("recon", "x", family="postgres")) and not keep(ok("postgres", "x", family="postgres"))
    chosen, keep = select(checks, ["kafka.topics"])
    assert [c.family for c in chosen] == ["kafka"]
    assert keep(ok("kafka.topics", "x")) and not keep(ok("kafka.lag:g", "x", family="kafka"))
    with pytest.raises(UserError) as e:
        select(checks, ["nope"])
    assert e.value.exit_code == 3 and "known: kafka, postgres, recon" in str(e.value)


def test_report_text_and_json():
    rs = [ok("kafka", "1 broker"), crit("postgres", "down", "start it", details={"x": 1})]
    text = report.text(rs, 0.42)
    assert text.splitlines()[1] == "CRIT    postgres: down -> start it"
    assert text.splitlines()[-1] == "doctor: CRIT (1 CRIT, 0 WARN, 0 UNKNOWN, 1 OK) in 0.4s"
    doc = json.loads(report.to_json(rs, 0.42))
    assert doc["status"] == "CRIT" and doc["code"] == 2 and doc["counts"]["OK"] == 1
    assert doc["results"][1] == {"name": "postgres", "family": "", "status": "CRIT", "code": 2,
                                 "finding": "down", "advice": "start it", "duration_s": 0.0,
                                 "details": {"x": 1}, "target": None}


def test_systemd_parse_and_judge():
    text = ("Id=oms.service\nLoadState=loaded\nActiveState=failed\nSubState=failed\nNRestarts=4\n"
            "Result=exit-code\nType=notify\nUnitFileState=enabled\nExecMainStartTimestamp=@1700000000\n"
            "ActiveEnterTimestamp=\n\n"
            "Id=tradeops-recon.service\nLoadState=loaded\nActiveState=inactive\nSubState=dead\n"
            "NRestarts=0\nResult=success\nType=oneshot\nUnitFileState=enabled\n\n"
            "Id=tradeops-exporter-pairs.service\nLoadState=loaded\nActiveState=inactive\n"
            "SubState=dead\nUnitFileState=disabled\n\n"
            "Id=gone.service\nLoadState=not-found\nActiveState=inactive\n")
    blocks = systemd.parse_show(text)
    assert len(blocks) == 4
    now = 1700000000 + 300
    r = systemd.judge(blocks[0], True, now)
    assert r.status == Status.CRIT and r.finding.startswith("failed/failed for 5m, 4 restarts")
    assert "journalctl -u oms.service" in r.advice and r.target.kind == "unit"
    assert systemd.judge(blocks[1], False, now).status == Status.OK
    assert systemd.judge(blocks[2], False, now) is None  # own unit, not enabled here
    assert systemd.judge(blocks[3], True, now).status == Status.CRIT


def test_systemd_without_systemd_is_a_clear_unknown(cfg, tmp_path):
    from tradeops.doctor.runner import CheckContext

    (res,) = systemd.run(CheckContext(cfg, 1.0), run_dir=str(tmp_path / "no-such-dir"))
    assert res.status == Status.UNKNOWN and res.finding.startswith("no systemd running on this host")


def _snap(committed, high, active=True, members=1):
    return GroupSnapshot("oms-core", committed, high, active, members)


def test_kafka_lag_judgement(cfg):
    cfg = replace(cfg, doctor=replace(cfg.doctor, group_units={"oms-core": "oms-core.service"}))
    now = 1_000_000.0
    snap = _snap({("oms.order_events", 3): 100, ("oms.order_events", 1): 50},
                 {("oms.order_events", 3): 130, ("oms.order_events", 1): 50})
    ts = {("oms.order_events", 3, 100): now - 240}
    r = kafka.judge_group(cfg, snap, ts, "STALL", now)
    assert r.status == Status.CRIT
    assert r.advice.startswith("consumer group oms-core is STALLED on oms.order_events[3] for 4m: "
                               "check the process behind oms-core.service, `journalctl -u oms-core.service")
    assert r.details["lag_messages"] == 30
    assert kafka.judge_group(cfg, snap, ts, "OK", now).status == Status.WARN  # 240 s > lag_warn_s
    assert kafka.judge_group(cfg, snap, {("oms.order_events", 3, 100): now - 400}, "OK", now).status \
        == Status.CRIT
    assert kafka.judge_group(cfg, snap, {("oms.order_events", 3, 100): now - 2}, "OK", now).status \
        == Status.OK
    idle = _snap({("t", 0): 5}, {("t", 0): 9}, active=False, members=0)
    r = kafka.judge_group(cfg, idle, {}, None, now)
    assert r.status == Status.CRIT and "no active member" in r.advice
    assert kafka.judge_group(cfg, _snap({}, {}), {}, None, now).status == Status.WARN


def test_recon_day_and_results(cfg):
    cal = TradingCalendar.from_config(cfg)
    thu = dt.date(2026, 12, 3)
    assert postgres.recon_day(cal, dt.datetime(2026, 12, 3, 16, 0, tzinfo=IST), 3600) == dt.date(2026, 12, 2)
    assert postgres.recon_day(cal, dt.datetime(2026, 12, 3, 16, 31, tzinfo=IST), 3600) == thu
    assert postgres.recon_day(cal, dt.datetime(2026, 12, 7, 9, 0, tzinfo=IST), 3600) == dt.date(2026, 12, 4)
    now = dt.datetime(2026, 12, 3, 18, 0, tzinfo=IST)
    r = postgres.recon_result(cfg, thu, None, 0, now)
    assert r.status == Status.CRIT and "tradeops recon run --date 2026-12-03" in r.advice
    run = ("r1", "discrepancies", now, now, 7, "")
    r = postgres.recon_result(cfg, thu, run, 7, now)
    assert r.status == Status.WARN and "tradeops recon autoheal --date 2026-12-03" in r.advice
    assert postgres.recon_result(cfg, thu, ("r2", "healed", now, now, 7, ""), 0, now).status == Status.OK
    assert postgres.recon_result(cfg, thu, ("r3", "failed", now, now, 0, "broker 500"), 0, now).status \
        == Status.CRIT
    old = now - dt.timedelta(hours=2)
    assert postgres.recon_result(cfg, thu, ("r4", "running", old, None, 0, ""), 0, now).status == Status.CRIT


def test_bars_freshness_only_judged_in_session(cfg):
    cal = TradingCalendar.from_config(cfg)
    in_session = dt.datetime(2026, 12, 3, 11, 0, tzinfo=IST)
    assert postgres.bars_result(cfg, cal, in_session - dt.timedelta(seconds=60), in_session).status == Status.OK
    assert postgres.bars_result(cfg, cal, in_session - dt.timedelta(seconds=300), in_session).status \
        == Status.WARN
    assert postgres.bars_result(cfg, cal, None, in_session).status == Status.CRIT
    evening = dt.datetime(2026, 12, 3, 20, 0, tzinfo=IST)
    r = postgres.bars_result(cfg, cal, in_session, evening)
    assert r.status == Status.OK and r.finding.startswith("market closed")


def test_disk_thresholds():
    g = 2**30
    assert disk.judge("kafka", "/d", 100 * g, 50 * g, 0.85, 0.95).status == Status.OK
    assert disk.judge("kafka", "/d", 100 * g, 10 * g, 0.85, 0.95).status == Status.WARN
    r = disk.judge("postgres", "/d", 100 * g, 1 * g, 0.85, 0.95)
    assert r.status == Status.CRIT and r.finding == "/d: 99% used, 1.0 GiB free of 100.0 GiB"


def test_supervisor_program_judgement():
    now = 1000.0
    base = {"name": "oms", "mode": "spawn", "heartbeat_source": "file", "since": 900.0,
            "heartbeat_known": True, "log_file": "/var/log/oms.log"}
    assert supervisor.judge({**base, "state": "RUNNING", "heartbeat_age_s": 1.0}, now).status == Status.OK
    r = supervisor.judge({**base, "state": "HUNG", "heartbeat_age_s": 42.0, "detail": "no heartbeat"}, now)
    assert r.status == Status.CRIT and "alive but silent" in r.advice and "/var/log/oms.log" in r.advice
    assert r.target.kind == "program" and r.target.log_file == "/var/log/oms.log"
    r = supervisor.judge({**base, "state": "FATAL"}, now)
    assert r.status == Status.CRIT and "`tradeops supervise restart oms`" in r.advice
    assert supervisor.judge({**base, "state": "BACKOFF", "next_start_in_s": 2.0}, now).status == Status.WARN
    r = supervisor.judge({**base, "state": "STARTING", "heartbeat_known": False,
                          "heartbeat_detail": "kafka down"}, now)
    assert r.status == Status.UNKNOWN


def test_journal_line():
    e = {"__REALTIME_TIMESTAMP": str(int(dt.datetime(2026, 1, 1, 9, 15, 3).timestamp() * 1e6)),
         "SYSLOG_IDENTIFIER": "tradeops", "MESSAGE": "hello"}
    assert logs.journal_line(e) == "09:15:03 tradeops: hello"
    assert logs.journal_line({"MESSAGE": list(b"bytes \xff")}).endswith("bytes \ufffd")


def test_file_tail_follows_appends_and_truncation(tmp_path):
    p = tmp_path / "x.log"
    p.write_text("".join(f"old {i}\n" for i in range(100)))
    got: list[str] = []
    t = logs.FileTail(str(p), got.append, lines=3, poll_s=0.05).start()
    try:
        _wait(lambda: got == ["old 97", "old 98", "old 99"])
        with p.open("a") as f:
            f.write("new 1\nnew ")
            f.flush()
            _wait(lambda: got[-1] == "new 1")
            f.write("2\n")
        _wait(lambda: got[-1] == "new 2")
        p.write_text("after truncate\n")
        _wait(lambda: got[-1] == "after truncate")
    finally:
        t.stop()


def _wait(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_config_errors_are_one_line():
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.loads("[doctor]\nlag_warn_s = 100.0\nlag_crit_s = 10.0\n")
    assert str(e.value) == "tradeops.toml: [doctor].lag_crit_s: expected a number >= lag_warn_s, got 10.0"
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.loads('[doctor]\nexporters = { x = "127.0.0.1:9811" }\n')
    assert str(e.value) == 'tradeops.toml: [doctor].exporters.x: expected an http(s):// URL, got "127.0.0.1:9811"'
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.loads("[doctor]\ntimeouts = { kafka = 0 }\n")
    assert "[doctor].timeouts.kafka: expected a number > 0" in str(e.value)


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="host runs systemd")
def test_no_systemd_here_means_no_systemd_check_without_units(cfg):
    assert not systemd.CHECKS[0].enabled(cfg)
    with_units = replace(cfg, doctor=replace(cfg.doctor, units=["kafka.service"]))
    assert systemd.CHECKS[0].enabled(with_units)


def test_exporter_up_gauges_parse():
    from tradeops.doctor.checks.exporters import up_gauges

    text = ('# HELP x_up ...\n# TYPE x_up gauge\nx_up{dependency="kafka"} 1.0\n'
            'x_up{dependency="postgres"} 0.0\nx_upper 3\ntradeops_heartbeat_up{process="oms"} 1.0\nplain_up 1\n')
    assert up_gauges(text) == {'x_up{dependency="kafka"}': 1.0, 'x_up{dependency="postgres"}': 0.0,
                               'tradeops_heartbeat_up{process="oms"}': 1.0, "plain_up": 1.0}


def test_stuck_orders_judgement(cfg):
    from tradeops.doctor.checks.orders import judge

    assert judge(cfg, []).status == Status.OK
    o = {"order_id": "A1", "symbol": "NSE:INFY", "status": "SUBMITTED", "age_s": 12.0, "strategy": "m"}
    r = judge(cfg, [o, {**o, "order_id": "A2", "status": "CANCEL_PENDING", "age_s": 30.0}])
    assert r.status == Status.WARN
    assert r.finding == "2 stuck (1 CANCEL_PENDING, 1 SUBMITTED); oldest A2 NSE:INFY CANCEL_PENDING for 30s"
    assert "`tradeops oms orders --stuck`" in r.advice
    assert judge(cfg, [{**o, "age_s": 51.0}]).status == Status.CRIT  # > 10x the 5 s threshold


def test_supervisord_judgement():
    from tradeops.doctor.checks.supervisord import judge

    base = {"name": "oms", "group": "oms", "start": 900, "stdout_logfile": "/var/log/oms.log"}
    r = judge({**base, "statename": "RUNNING"}, 1000)
    assert r.status == Status.OK and r.name == "supervisord:oms" and r.finding == "RUNNING for 100s"
    assert r.target.kind == "supervisord" and r.target.log_file == "/var/log/oms.log"
    r = judge({**base, "group": "trading", "statename": "FATAL", "description": "Exited too quickly"}, 1000)
    assert r.status == Status.CRIT and r.name == "supervisord:trading:oms"
    assert r.finding == "FATAL (Exited too quickly)" and "`supervisorctl start trading:oms`" in r.advice
    assert judge({**base, "statename": "BACKOFF"}, 1000).status == Status.WARN
    assert judge({**base, "statename": "STOPPED"}, 1000).status == Status.WARN
