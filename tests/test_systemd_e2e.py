"""End to end: the built .deb in a throwaway real systemd (tests/systemd_ns.py).

The package is built once per session (scripts/build-deb.sh, skipped when the tree is
unchanged), installed with apt INSIDE the container (never on this machine), configured
against the local stack's real Kafka and PostgreSQL on 127.0.0.1 (a fresh database and
fresh topics, free ports for the daemons), then driven like an operator would:

install (nothing starts without a config) -> start tradeops.target (every daemon active =
READY=1 received, /metrics and /healthz answer) -> SIGSTOP one daemon (watchdog abort and
restart, timed) -> reinstall = upgrade (running daemons restarted) -> recon on a trading
day (recon_runs row, journal output, job-status record, autoheal after it) -> recon on a
holiday (skipped by ExecCondition, not failed) -> doctor (when it exists) -> apt-get remove
(everything stops, config kept) -> purge (config and state gone).

Daemons whose command is not in this build yet (its module has not landed) are reported
with a warning, never skipped silently; the assertions cover every daemon that exists.
The steps run in file order and share one container (module-scoped).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import warnings
import zoneinfo
from pathlib import Path

import msgspec
import psycopg
import pytest
from psycopg import sql

import reconlib
from conftest import delete_topics, drop_db, make_db, make_topics
from systemd_ns import SystemdContainer
from tradeops import db
from tradeops.config import read_secret, redacted, to_toml
from tradeops.sim.market import Market

pytestmark = [pytest.mark.systemd, pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DEB_INSIDE = "/tmp/tradeops.deb"
CONFIG = "/etc/tradeops/tradeops.toml"
# unit -> (tradeops argv, config section with `listen`)
DAEMONS = {
    "tradeops-exporter-gateway-oms.service": (["exporter", "gateway-oms"], "gateway_oms"),
    "tradeops-exporter-oms-lifecycle.service": (["exporter", "oms-lifecycle"], "oms_lifecycle"),
    "tradeops-exporter-risk-drawdown.service": (["exporter", "risk-drawdown"], "risk"),
    "tradeops-exporter-pairs.service": (["exporter", "pairs"], "pairs_exporter"),
    "tradeops-supervisor.service": (["supervise"], "supervisor"),
}
WATCHDOG_S, RESTART_S = 10.0, 2.0
N_SYMBOLS = 4  # symbols of today's simulated session used by the recon step
STATE: dict = {}  # shared between the ordered steps; measured numbers end up here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ist_today() -> str:
    return dt.datetime.now(zoneinfo.ZoneInfo("Asia/Kolkata")).date().isoformat()


def _http(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


@pytest.fixture(scope="module")
def deb() -> Path:
    r = subprocess.run([str(REPO / "scripts/build-deb.sh")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"make deb failed:\n{r.stderr[-4000:]}"
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.is_file(), r.stdout
    return path


@pytest.fixture(scope="module")
def env_cfg(base_cfg, pg_ready, kafka_ready):
    cfg = make_topics(make_db(base_cfg), kafka_ready)
    yield cfg
    delete_topics(cfg, kafka_ready)
    drop_db(cfg)


@pytest.fixture(scope="module")
def broker(env_cfg, tmp_path_factory):
    """The project's Kite-compatible server (`tradeops sim broker-api`, the real one the
    recon tests use) on a free port of the host's 127.0.0.1, reachable from the container."""
    port = _free_port()
    tmp = tmp_path_factory.mktemp("broker")
    path = reconlib.write_config(env_cfg, tmp / "broker.toml")
    log = open(tmp / "broker.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "tradeops.cli", "--config", path, "sim", "broker-api",
                             "--listen", f"127.0.0.1:{port}", "--symbols", str(N_SYMBOLS), "--rate-limit", "50"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    ok = _wait(lambda: _http(url + "/_stats", timeout=2)[0] == 200 or proc.poll() is not None, 30)
    assert ok and proc.poll() is None, (tmp / "broker.log").read_text()
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture(scope="module")
def box(deb, env_cfg):
    with SystemdContainer("tradeops-e2e") as c:
        dest = c.path(DEB_INSIDE)
        dest.write_bytes(deb.read_bytes())
        STATE["boot_s"] = c.boot_seconds
        yield c
        _cleanup_pushgateway(env_cfg)


def _cleanup_pushgateway(cfg) -> None:
    url = cfg.recon.pushgateway_url
    for path in (f"/metrics/job/tradeops_job_status/unit/{u}"
                 for u in ("tradeops-recon.service", "tradeops-autoheal.service")):
        req = urllib.request.Request(url + path, method="DELETE")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(req, timeout=5).close()
    if STATE.get("recon_job"):
        req = urllib.request.Request(f"{url}/metrics/job/{STATE['recon_job']}", method="DELETE")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(req, timeout=5).close()


def _config_text(cfg, ports: dict[str, int], *, holiday: bool) -> str:
    """The test stack's config as an operator would write it at /etc/tradeops."""
    data = redacted(cfg)
    data["postgres"]["password_file"] = "secrets/pg_password" if cfg.postgres.password_file else ""
    data["broker"]["api_key_file"] = "secrets/kite_api_key" if cfg.broker.api_key_file else ""
    data["broker"]["access_token_file"] = "secrets/kite_access_token" if cfg.broker.access_token_file else ""
    for unit, (_argv, section) in DAEMONS.items():
        data[section]["listen"] = f"127.0.0.1:{ports[unit]}"
        # own consumer groups: never join (and rebalance) the groups of a dev stack's daemons
        data[section]["group_id"] = f"{data[section]['group_id']}-{STATE['recon_job'][-6:]}"
    data["supervisor"]["status_file"] = "/run/tradeops/supervisor.json"
    # the supervisor in the container watches one of the exporters through its /healthz
    data["supervisor"]["programs"] = [{
        "name": "gateway-oms-exporter", "mode": "watch",
        "heartbeat": {"source": "http", "timeout_s": 30.0,
                      "url": f"http://127.0.0.1:{ports['tradeops-exporter-gateway-oms.service']}/healthz"},
    }]
    data["recon"]["job"] = STATE["recon_job"]
    if STATE.get("broker_url"):
        data["broker"]["base_url"] = STATE["broker_url"]
        data["broker"]["rate_limit_per_s"] = 20.0
    data["recon"]["symbols"] = []
    today = _ist_today()
    data["calendar"]["holidays"] = [today] if holiday else []
    # today is a trading day whose session has already closed (at 00:01 IST), whatever the
    # time of day, so /usr/libexec/tradeops/session-date names today (not between 00:00 and
    # 00:01 IST, when it would rightly name the previous session)
    data["calendar"]["special_sessions"] = [] if holiday else [{"date": today, "open": "00:00", "close": "00:01"}]
    data["doctor"]["units"] = list(DAEMONS)
    data["doctor"]["exporters"] = {
        argv[1]: f"http://127.0.0.1:{ports[u]}" for u, (argv, _section) in DAEMONS.items() if argv[0] == "exporter"
    }
    data["doctor"]["kafka_data_dir"] = ""
    data["doctor"]["postgres_data_dir"] = ""
    return to_toml(data)


def _write_config(box, cfg, *, holiday: bool) -> None:
    box.path(CONFIG).write_text(_config_text(cfg, STATE["ports"], holiday=holiday))
    box.run("chown", "root:tradeops", CONFIG)
    box.run("chmod", "0640", CONFIG)


def _write_secrets(box, cfg) -> None:
    for key, value, name in (("[postgres].password_file", cfg.postgres.password_file, "pg_password"),
                             ("[broker].api_key_file", cfg.broker.api_key_file, "kite_api_key"),
                             ("[broker].access_token_file", cfg.broker.access_token_file, "kite_access_token")):
        if value:
            p = box.path(f"/etc/tradeops/secrets/{name}")
            p.write_text(read_secret(cfg, key, value) + "\n")
            box.run("chown", "root:tradeops", f"/etc/tradeops/secrets/{name}")
            box.run("chmod", "0640", f"/etc/tradeops/secrets/{name}")


def _available(box, argv: list[str]) -> bool:
    r = box.run("/usr/bin/tradeops", *argv, "--help", check=False)
    return r.returncode == 0 and "not available in this build" not in r.stdout


def _wait(pred, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    return last


# --- the steps ------------------------------------------------------------------------------

@pytest.mark.timeout(900)  # includes building the .deb (module fixture) on a cold tree
def test_install_starts_nothing_without_a_config(box, env_cfg):
    STATE["recon_job"] = f"tradeops_recon_e2e_{uuid.uuid4().hex[:6]}"
    STATE["ports"] = {u: _free_port() for u in DAEMONS}
    r = box.run("apt-get", "install", "-y", "-q", "--no-install-recommends", DEB_INSIDE, timeout=300)
    assert "no /etc/tradeops/tradeops.toml yet: no daemon started" in r.stdout, r.stdout[-3000:]
    assert box.run("id", "-u", "tradeops").stdout.strip().isdigit()
    st = box.run("stat", "-c", "%a %U %G", "/etc/tradeops", "/etc/tradeops/secrets").stdout.split("\n")
    assert st[:2] == ["750 root tradeops", "750 root tradeops"]
    assert box.run("systemctl", "is-enabled", "tradeops.target").stdout.strip() == "enabled"
    assert box.run("systemctl", "is-active", "tradeops-recon.timer").stdout.strip() == "active"
    # the timer is armed for the next weekday at 16:15 IST = 10:45 UTC
    nxt = box.show("tradeops-recon.timer", "NextElapseUSecRealtime")["NextElapseUSecRealtime"]
    if nxt.startswith("@"):
        nxt = dt.datetime.fromtimestamp(float(nxt[1:]), dt.UTC).strftime("%a %Y-%m-%d %H:%M:%S UTC")
    assert re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri) \d{4}-\d\d-\d\d 10:45:00 UTC", nxt), nxt
    for unit in DAEMONS:
        assert box.show(unit, "ActiveState")["ActiveState"] == "inactive", unit
    # the installed units verify cleanly with the real executables and the real man page
    r = box.sh("systemd-analyze verify /lib/systemd/system/tradeops*.service "
               "/lib/systemd/system/tradeops*.timer /lib/systemd/system/tradeops.target", check=False)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    assert box.run("man", "-w", "tradeops").stdout.strip().endswith("tradeops.1.gz")
    # the example is a conffile; the live config is the operator's
    assert box.path("/etc/tradeops/tradeops.toml.example").is_file()
    assert not box.path(CONFIG).exists()
    # the monitoring mixin's host variant (tests/test_deb_monitoring.py checks its contents)
    mon = "/usr/share/tradeops/monitoring"
    listed = set(box.sh(f"cd {mon} && find . -type f | sort").stdout.split())
    for sub, pattern in (("prometheus/rules", "*.yml"), ("alertmanager/templates", "*.tmpl"),
                         ("grafana/dashboards", "*.json")):
        names = {f"./{sub}/{p.name}" for p in (REPO / "infra" / sub).glob(pattern)}
        assert names and names <= listed, (sub, sorted(listed))
    for f in ("prometheus/prometheus.yml", "alertmanager/alertmanager.yml",
              "grafana/provisioning/datasources/tradeops.yml", "grafana/provisioning/dashboards/tradeops.yml"):
        assert f"./{f}" in listed, (f, sorted(listed))
    prom = box.path(f"{mon}/prometheus/prometheus.yml").read_text()
    assert f"  - {mon}/prometheus/rules/*.yml\n" in prom and "127.0.0.1:19" not in prom, prom
    # the packaged command runs on Debian's python3 with the vendored, compiled wheels
    r = box.run("/usr/bin/tradeops", "--version")
    assert "tradeops" in r.stdout
    r = box.run("/opt/venvs/tradeops/bin/python3", "-c",
                "import sys, confluent_kafka, psycopg, msgspec; "
                "print(sys.executable, sys.version_info[:2], psycopg.pq.__impl__)")
    assert "(3, 11)" in r.stdout and "binary" in r.stdout, r.stdout
    STATE["available"] = {u: _available(box, argv) for u, (argv, _s) in DAEMONS.items()}
    missing = [u for u, ok in STATE["available"].items() if not ok]
    if missing:
        warnings.warn(f"not in this build yet (their units are installed but not asserted): {missing}",
                      stacklevel=1)


def test_target_starts_every_daemon_ready_with_metrics(box, env_cfg):
    _write_secrets(box, env_cfg)
    _write_config(box, env_cfg, holiday=False)
    assert box.run("/usr/bin/tradeops", "config", "check", "-q").returncode == 0
    t0 = time.monotonic()
    box.run("systemctl", "start", "--no-block", "tradeops.target")
    present = [u for u, ok in STATE["available"].items() if ok]
    assert present, "no daemon in this build"
    ready = {}
    for unit in present:
        def active(unit=unit):
            s = box.show(unit, "ActiveState", "SubState", "Result")
            return s if s["ActiveState"] == "active" else None
        s = _wait(active, 120)
        assert s, f"{unit} not active: {box.show(unit, 'ActiveState', 'SubState', 'Result')}\n{box.journal(unit)[-3000:]}"
        ready[unit] = round(time.monotonic() - t0, 2)
    STATE["ready_s"] = ready
    for unit in present:
        props = box.show(unit, "Type", "NotifyAccess", "WatchdogUSec", "User", "StatusText", "NRestarts")
        # Type=notify: "active" means systemd received READY=1
        assert props["Type"] == "notify" and props["NotifyAccess"] == "main"
        assert props["WatchdogUSec"] in ("10s", str(int(WATCHDOG_S * 1e6))), props
        assert props["NRestarts"] == "0", (unit, props, box.journal(unit)[-2000:])
        port = STATE["ports"][unit]
        code, body = _wait(lambda port=port: (lambda r: r if r[0] == 200 else None)(
            _http(f"http://127.0.0.1:{port}/metrics")), 30) or (0, "")
        assert code == 200 and "# TYPE" in body, f"{unit} /metrics: {code} {body[:300]}"
        code, _ = _http(f"http://127.0.0.1:{port}/healthz")
        assert code in (200, 503), f"{unit} /healthz: {code}"
        # the process runs sandboxed as the tradeops user
        pid = box.show(unit, "MainPID")["MainPID"]
        status = box.run("cat", f"/proc/{pid}/status").stdout
        uid = box.run("id", "-u", "tradeops").stdout.strip()
        assert re.search(rf"^Uid:\s+{uid}\s", status, re.M), status[:500]
        assert re.search(r"^NoNewPrivs:\s+1", status, re.M)
        assert "Traceback" not in box.journal(unit)


def test_watchdog_aborts_and_restarts_a_hung_daemon(box):
    # the supervisor if it is in this build: an exporter's new consumer waits for the dead
    # one's Kafka session to expire (~45 s) before READY, which only slows the test down
    order = ["tradeops-supervisor.service", *DAEMONS]
    unit = next(u for u in order if STATE["available"].get(u))
    before = box.show(unit, "MainPID", "NRestarts")
    pid = before["MainPID"]
    assert pid != "0"
    t_stop = time.time()
    box.run("kill", "-STOP", pid)

    def restarted():
        s = box.show(unit, "NRestarts", "ActiveState", "MainPID", "ExecMainStartTimestamp")
        return s if s["NRestarts"] == "1" and s["ActiveState"] == "active" and s["MainPID"] != pid else None

    s = _wait(restarted, WATCHDOG_S + RESTART_S + 60)
    assert s, f"{unit} not restarted: {box.show(unit, 'NRestarts', 'ActiveState', 'Result')}"
    t_active = time.time()
    new_start = float(s["ExecMainStartTimestamp"].lstrip("@"))
    journal = box.journal(unit)
    assert "Watchdog timeout (limit 10s)!" in journal, journal[-3000:]
    m = re.search(r"^(\d+\.\d+) .*Watchdog timeout", journal, re.M)
    t_abort = float(m.group(1))
    assert re.search(rf"Killing process {pid} .* with signal SIGABRT", journal), journal[-3000:]
    restart_after = new_start - t_stop
    STATE["watchdog"] = {"unit": unit, "abort_after_stop_s": round(t_abort - t_stop, 2),
                         "new_process_after_stop_s": round(restart_after, 2),
                         "active_again_after_stop_s": round(t_active - t_stop, 2)}
    print("watchdog:", json.dumps(STATE["watchdog"]))
    # aborted within WatchdogSec of the last ping, new process RestartSec later
    assert restart_after <= WATCHDOG_S + RESTART_S + 1.0, STATE["watchdog"]


def test_upgrade_restarts_running_daemons(box):
    present = [u for u, ok in STATE["available"].items() if ok]
    before = {u: box.show(u, "MainPID", "ExecMainStartTimestamp") for u in present}
    r = box.run("apt-get", "install", "-y", "-q", "--reinstall", DEB_INSIDE, timeout=300)
    assert "no daemon started" not in r.stdout

    def all_new():
        now = {u: box.show(u, "MainPID", "ExecMainStartTimestamp", "ActiveState") for u in present}
        ok = all(now[u]["ActiveState"] == "active" and now[u]["MainPID"] != before[u]["MainPID"] for u in present)
        return now if ok else None

    assert _wait(all_new, 120), {u: box.show(u, "MainPID", "ActiveState") for u in present}


def _recon_runs(cfg, day: str) -> int:
    with db.connect(cfg) as conn:
        q = sql.SQL("SELECT count(*) FROM {} WHERE trading_day = %s AND kind = 'recon'").format(
            db.table_identifiers(cfg)["recon_runs"])
        return conn.execute(q, (day,)).fetchone()[0]


def test_recon_runs_on_a_trading_day(box, env_cfg, broker):
    if not _available(box, ["recon", "run"]):
        pytest.fail("`tradeops recon run` is not in this build")
    today = _ist_today()
    # today's session: our bars in the test database, the broker's from the real server
    market = Market(dt.date.fromisoformat(today), seed=env_cfg.sim.seed, n_symbols=N_SYMBOLS)
    assert reconlib.load_internal(env_cfg, market) > 0
    STATE["broker_url"] = broker
    _write_config(box, env_cfg, holiday=False)
    n0 = _recon_runs(env_cfg, today)
    r = box.run("systemctl", "start", "tradeops-recon.service", check=False, timeout=600)
    props = box.show("tradeops-recon.service", "Result", "ExecMainStatus", "ActiveState")
    journal = box.journal("tradeops-recon.service")
    assert r.returncode == 0 and props["Result"] == "success", f"{props}\n{journal[-4000:]}"
    assert props["ExecMainStatus"] in ("0", "1")  # clean or differences found
    assert _recon_runs(env_cfg, today) == n0 + 1
    # its own output is in the journal of its unit
    assert re.search(r"tradeops-recon\[\d+\]: ", journal), journal[-2000:]
    # OnSuccess=: the result is recorded and the autoheal runs
    rec = _wait(lambda: box.path("/var/lib/tradeops/jobs/tradeops-recon.service.json").is_file()
                and json.loads(box.path("/var/lib/tradeops/jobs/tradeops-recon.service.json").read_text()), 30)
    assert rec and rec["result"] == "ok", box.journal("tradeops-job-status@ok:tradeops-recon.service.service")[-3000:]
    heal = _wait(lambda: (lambda s: s if s["ExecMainExitTimestamp"] not in ("", "0") else None)(
        box.show("tradeops-autoheal.service", "ExecMainExitTimestamp", "Result")), 120)
    assert heal, box.journal("tradeops-autoheal.service")[-3000:]
    STATE["recon_record_mtime"] = box.path("/var/lib/tradeops/jobs/tradeops-recon.service.json").stat().st_mtime


def test_recon_is_skipped_on_a_holiday_without_failing(box, env_cfg):
    _write_config(box, env_cfg, holiday=True)
    try:
        today = _ist_today()
        n0 = _recon_runs(env_cfg, today)
        hook = "tradeops-job-status@ok:tradeops-recon.service.service"
        hook_runs = box.journal(hook).count("nothing recorded")
        box.run("systemctl", "reset-failed", "tradeops-recon.service", check=False)
        r = box.run("systemctl", "start", "tradeops-recon.service", check=False, timeout=120)
        props = box.show("tradeops-recon.service", "Result", "ActiveState", "ConditionResult")
        # skipped, not failed: systemd 252 records the skip as Result=exec-condition
        assert r.returncode == 0 and props["ActiveState"] == "inactive", props
        assert props["Result"] == "exec-condition" and props["ConditionResult"] == "no", props
        assert "failed" not in box.run("systemctl", "is-failed", "tradeops-recon.service", check=False).stdout
        journal = box.journal("tradeops-recon.service")
        assert "not a trading day" in journal and "exec-condition" in journal, journal[-2000:]
        assert _recon_runs(env_cfg, today) == n0
        # systemd still triggers OnSuccess=: the hook runs and records nothing for a skip
        assert _wait(lambda: box.journal(hook).count("nothing recorded") > hook_runs, 30), box.journal(hook)[-2000:]
        rec = json.loads(box.path("/var/lib/tradeops/jobs/tradeops-recon.service.json").read_text())
        assert rec["result"] == "ok" and box.path(
            "/var/lib/tradeops/jobs/tradeops-recon.service.json").stat().st_mtime == STATE["recon_record_mtime"]
    finally:
        _write_config(box, env_cfg, holiday=False)


def test_recon_failure_is_recorded_for_alerts_and_the_doctor(box, env_cfg):
    """OnFailure= end to end: a recon that cannot reach PostgreSQL (wrong password) fails
    (exit 2); the hook writes the job record and pushes tradeops_job_failed 1."""
    secret = box.path("/etc/tradeops/secrets/pg_password")
    if not env_cfg.postgres.password_file:
        pytest.fail("the test stack's PostgreSQL has no password: cannot provoke the failure")
    good = secret.read_text()
    secret.write_text("wrong-" + good)
    try:
        box.run("systemctl", "reset-failed", "tradeops-recon.service", check=False)
        r = box.run("systemctl", "start", "tradeops-recon.service", check=False, timeout=300)
        props = box.show("tradeops-recon.service", "Result", "ActiveState", "ExecMainStatus")
        assert r.returncode != 0 and props["ActiveState"] == "failed" and props["ExecMainStatus"] == "2", props
        path = "/var/lib/tradeops/jobs/tradeops-recon.service.json"
        rec = _wait(lambda: (lambda d: d if d.get("result") == "failed" else None)(
            json.loads(box.path(path).read_text())), 30)
        assert rec and rec["service_result"] == "exit-code" and rec["exit_status"] == "2", rec
        url = env_cfg.recon.pushgateway_url

        def pushed():
            code, text = _http(f"{url}/metrics")
            return code == 200 and re.search(
                r'^tradeops_job_failed\{[^}]*unit="tradeops-recon\.service"[^}]*\} 1$', text, re.M)

        assert _wait(pushed, 30), box.journal("tradeops-job-status@failed:tradeops-recon.service.service")[-2000:]
        # a broken config is not a "holiday": the condition fails the job (exit 255) instead of skipping it
        box.path(CONFIG).write_text(box.path(CONFIG).read_text() + "\n[calendar_typo]\n")
        box.run("systemctl", "reset-failed", "tradeops-recon.service", check=False)
        r = box.run("systemctl", "start", "tradeops-recon.service", check=False, timeout=120)
        props = box.show("tradeops-recon.service", "Result", "ActiveState")
        assert r.returncode != 0 and props["ActiveState"] == "failed", props
        assert "failing the job" in box.journal("tradeops-recon.service")
    finally:
        secret.write_text(good)
        _write_config(box, env_cfg, holiday=False)
        box.run("systemctl", "reset-failed", "tradeops-recon.service", check=False)


def test_doctor_sees_the_units(box):
    if not _available(box, ["doctor"]):
        warnings.warn("`tradeops doctor` is not in this build yet: not checked", stacklevel=1)
        return
    r = box.run("/usr/bin/tradeops", "doctor", "--check", check=False, timeout=120)
    out = r.stdout + r.stderr
    print(f"doctor --check (exit {r.returncode}):\n{out[-3000:]}")
    present = [u for u, ok in STATE["available"].items() if ok]
    for unit in present:
        assert re.search(rf"^OK\s+unit:{re.escape(unit)}: active/running", out, re.M), out[-4000:]
    assert re.search(r"^OK\s+unit:tradeops-recon\.timer: active/waiting", out, re.M), out[-4000:]


def test_remove_stops_everything_and_keeps_the_config(box):
    box.run("apt-get", "remove", "-y", "-q", "tradeops", timeout=300)
    assert box.path(CONFIG).is_file()
    assert box.path("/etc/tradeops/secrets").is_dir()
    r = box.run("pgrep", "-u", "tradeops", "-a", check=False)
    assert r.returncode == 1, f"processes left: {r.stdout}"
    for unit in [*DAEMONS, "tradeops-recon.timer"]:
        assert box.show(unit, "ActiveState")["ActiveState"] == "inactive", unit
    for port in STATE["ports"].values():
        assert _http(f"http://127.0.0.1:{port}/metrics", timeout=2)[0] == 0


def test_purge_removes_config_and_state(box):
    box.run("apt-get", "purge", "-y", "-q", "tradeops", timeout=300)
    for p in ("/etc/tradeops", "/var/lib/tradeops", "/opt/venvs/tradeops", "/usr/bin/tradeops"):
        assert not box.path(p).exists(), p
    print("e2e numbers:", json.dumps({k: STATE.get(k) for k in ("boot_s", "ready_s", "watchdog")}))


def test_config_dump_roundtrip_guard(env_cfg):
    """The config written into the container is what the loader accepts (guards the
    helpers above against schema drift: a new required key fails here first)."""
    from tradeops.config import loads

    STATE.setdefault("ports", {u: _free_port() for u in DAEMONS})
    STATE.setdefault("recon_job", "tradeops_recon_e2e")
    cfg = loads(_config_text(env_cfg, STATE["ports"], holiday=True))
    assert cfg.calendar.holidays == [_ist_today()]
    assert msgspec.to_builtins(cfg.supervisor.programs[0])["mode"] == "watch"
    assert isinstance(psycopg.__version__, str)
