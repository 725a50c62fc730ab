"""Monitoring mixin against live components (real Kafka, PostgreSQL, Prometheus,
Pushgateway and Alertmanager on 127.0.0.1; nothing mocked except Slack and Teams, which
cannot exist here: a local HTTP receiver stands in for both and checks their payload shapes).

One simulated trading session per module, all on free ports and unique topics/groups/
database (never the `make up` stack's): the simulator (live mode, in-process), the four
exporters and the supervisor (`tradeops` subprocesses), our own Pushgateway with a recon and
an autoheal pushed by the recon's own push code, our own Prometheus loaded with
infra/prometheus/prometheus.yml (targets moved to the test ports, 1 s scrape/evaluation)
and the real rules (every `for:` shortened to 2 s: the promtool unit tests check the real
durations), and our own Alertmanager 0.35 with infra/alertmanager/alertmanager.yml
(webhook URL files pointing at the receiver, group waits shortened to 1 s).

- test_every_dashboard_panel_returns_data: every PromQL target of every Grafana panel
  returns at least one non-NaN sample (no typo'd metric can hide).
- test_heartbeat_alert_reaches_slack_and_teams_then_resolves: the simulator stops the
  oms-core heartbeat -> HeartbeatMissing fires -> Slack (attachments) and Teams
  (adaptive card) messages; heartbeat back -> resolved messages.
- test_kafka_down_inhibits_the_lag_alert: Alertmanager marks a lag alert suppressed by
  KafkaDown.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest
import yaml

from conftest import delete_topics, drop_db, make_db, make_topics
from tradeops import config as config_mod
from tradeops.calendar import TradingCalendar
from tradeops.recon import metrics as recon_metrics
from tradeops.sim.runner import LiveRunner, run_fast

pytestmark = pytest.mark.integration

replace = msgspec.structs.replace
REPO = Path(__file__).resolve().parents[1]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"
ALERTMANAGER = REPO / ".state" / "bin" / "alertmanager"
DASHBOARDS = REPO / "infra" / "grafana" / "dashboards"
TRADEOPS = [sys.executable, "-m", "tradeops.cli"]
HB_TIMEOUT_S = 5.0  # the simulator beats every second


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 5):
    req = urllib.request.Request(url, method=method, data=body,
                                 headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def wait_until(what: str, fn, timeout: float, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Receiver:
    """Stands in for the Slack and Teams webhooks: records (path, JSON body) of each POST."""

    def __init__(self):
        self.messages: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.messages.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def find(self, path: str, *needles: str) -> list[dict]:
        with self.lock:
            return [m for p, m in self.messages if p == path and all(n in json.dumps(m) for n in needles)]


class Procs:
    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list, env: dict | None = None) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        p = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        p.log = log
        self.procs[name] = p
        return p

    def log_tail(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")[-2000:]

    def wait_http(self, name: str, url: str, timeout: float = 60) -> None:
        def ok():
            p = self.procs[name]
            if p.poll() is not None:
                raise AssertionError(f"{name} exited {p.returncode}:\n{self.log_tail(name)}")
            return http(url)[0] == 200
        try:
            wait_until(f"{name} at {url}", ok, timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log_tail(name)}") from None

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
            p.log.close()


def write_config(cfg, path: Path) -> Path:
    abs_ = lambda v: str(config_mod.secret_path(cfg, v)) if v else v  # noqa: E731
    c = replace(cfg, postgres=replace(cfg.postgres, password_file=abs_(cfg.postgres.password_file)),
                broker=replace(cfg.broker, api_key_file=abs_(cfg.broker.api_key_file),
                               access_token_file=abs_(cfg.broker.access_token_file)))
    path.write_text(config_mod.to_toml(config_mod.redacted(c)))
    return path


def prometheus_config(ports: dict[str, int], rules_dir: Path, am_port: int) -> dict:
    cfg = yaml.safe_load((REPO / "infra" / "prometheus" / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", scrape_timeout="900ms", evaluation_interval="1s",
                         external_labels={"env": "e2e"})
    cfg["rule_files"] = [str(rules_dir / "*.yml")]
    cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{am_port}"]
    for job in cfg["scrape_configs"]:
        job["static_configs"][0]["targets"] = [f"127.0.0.1:{ports[job['job_name']]}"]
    return cfg


def short_rules(dst: Path) -> None:
    dst.mkdir()
    for f in (REPO / "infra" / "prometheus" / "rules").glob("*.yml"):
        doc = yaml.safe_load(f.read_text())
        for g in doc["groups"]:
            for r in g["rules"]:
                if "for" in r:
                    r["for"] = "2s"
        (dst / f.name).write_text(yaml.safe_dump(doc, sort_keys=False))


def alertmanager_config(tmp: Path, receiver: Receiver) -> Path:
    sec = tmp / "am-secrets"
    sec.mkdir()
    for name in ("slack_platform", "slack_trading", "teams"):
        (sec / f"{name}_webhook_url").write_text(f"{receiver.url}/{name}\n")
    rendered = tmp / "am-rendered.yml"
    subprocess.run([sys.executable, REPO / "infra" / "alertmanager" / "render.py", rendered,
                    "--secrets", sec], check=True)
    cfg = yaml.safe_load(rendered.read_text())

    def fast(route):
        for k, v in (("group_wait", "1s"), ("group_interval", "1s"), ("repeat_interval", "1h")):
            if k in route or route is cfg["route"]:
                route[k] = v
        for r in route.get("routes", []):
            fast(r)
    fast(cfg["route"])
    out = tmp / "alertmanager.yml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def session(base_cfg, pg_ready, kafka_ready, tmp_path_factory):
    if not ALERTMANAGER.exists():
        pytest.fail(f"{ALERTMANAGER} missing: scripts/install.d/60-monitoring.sh builds it (make install)")
    tmp = tmp_path_factory.mktemp("mixin")
    cfg = make_topics(make_db(base_cfg), kafka_ready)
    suffix = "." + cfg.topics.order_events.rsplit(".", 1)[1]
    procs = Procs(tmp)
    runner = sim_thread = None
    receiver = Receiver()
    try:
        ports = {name: free_port() for name in
                 ("gateway-oms", "oms-lifecycle", "risk-drawdown", "pairs", "supervisor", "simulator",
                  "pushgateway", "prometheus", "alertmanager")}
        # the JMX exporter agent in the shared dev broker these tests produce to (scripts/stack.sh)
        ports["kafka-broker"] = 19308
        uniq = uuid.uuid4().hex[:8]
        cfg = replace(
            cfg,
            sim=replace(cfg.sim, orders_per_minute=1200.0),
            gateway_oms=replace(cfg.gateway_oms, listen=f"127.0.0.1:{ports['gateway-oms']}",
                                group_id=f"mixin-gw-{uniq}",
                                lag_groups=[f"oms-core{suffix}", f"gateway-zerodha{suffix}"],
                                critical_processes={p: HB_TIMEOUT_S for p in ("oms-core", "gateway-zerodha",
                                                                              "risk-manager", "strategy-runner")},
                                lag_min_interval_s=1.0),
            oms_lifecycle=replace(cfg.oms_lifecycle, listen=f"127.0.0.1:{ports['oms-lifecycle']}",
                                  group_id=f"mixin-oms-{uniq}"),
            risk=replace(cfg.risk, listen=f"127.0.0.1:{ports['risk-drawdown']}", group_id=f"mixin-risk-{uniq}",
                         flush_interval_s=1.0),
            pairs_exporter=replace(cfg.pairs_exporter, listen=f"127.0.0.1:{ports['pairs']}",
                                   group_id=f"mixin-pairs-{uniq}"),
            supervisor=replace(cfg.supervisor, listen=f"127.0.0.1:{ports['supervisor']}",
                               group_id=f"mixin-sup-{uniq}", status_file=str(tmp / "supervisor.json"),
                               programs=[config_mod.ProgramConfig(
                                   name="oms-core", mode="watch",
                                   heartbeat=config_mod.HeartbeatConfig(source="kafka", timeout_s=HB_TIMEOUT_S))]),
            recon=replace(cfg.recon, pushgateway_url=f"http://127.0.0.1:{ports['pushgateway']}",
                          job="tradeops_recon"),
        )
        conf = write_config(cfg, tmp / "tradeops.toml")

        # a past day's bars in bars_1m: the pairs exporter warms up from them (z-scores at once)
        day = TradingCalendar.from_config(cfg).previous_trading_day(dt.date.today())
        run_fast(cfg, day, seed=5, n_symbols=12, kafka=False, groups=False)

        # the session: simulator (in-process, like tests/test_sim_integration.py)
        runner = LiveRunner(cfg, seed=11, n_symbols=12, listen=f"127.0.0.1:{ports['simulator']}",
                            group_suffix=suffix)
        sim_thread = threading.Thread(target=lambda: runner.run(install_signals=False), daemon=True)
        sim_thread.start()

        procs.start("pushgateway", [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{ports['pushgateway']}"])
        for name in ("gateway-oms", "oms-lifecycle", "risk-drawdown", "pairs"):
            procs.start(name, [*TRADEOPS, "--config", conf, "exporter", name])
        procs.start("supervisor", [*TRADEOPS, "--config", conf, "supervise"])

        am_cfg = alertmanager_config(tmp, receiver)
        procs.start("alertmanager", [ALERTMANAGER, f"--config.file={am_cfg}", f"--storage.path={tmp / 'am-data'}",
                                     f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                                     "--cluster.listen-address="])
        short_rules(tmp / "rules")
        prom_cfg = tmp / "prometheus.yml"
        prom_cfg.write_text(yaml.safe_dump(prometheus_config(ports, tmp / "rules", ports["alertmanager"])))
        procs.start("prometheus", [PROMETHEUS, f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{ports['prometheus']}"])

        procs.wait_http("pushgateway", f"http://127.0.0.1:{ports['pushgateway']}/-/ready")
        # a recon with discrepancies, then an autoheal, pushed by the recon's own code
        assert recon_metrics.push_recon(cfg, ok=True, exit_code=1, stages={"fetch": 1.5, "compare": 0.4},
                                        rows={"internal": 4480, "broker": 4490},
                                        counts={"missing_internal": 10, "price_mismatch": 4}) == ""
        assert recon_metrics.push_autoheal(cfg, ok=True, exit_code=0, stages={"plan": 0.1, "write": 0.2},
                                           outcomes={"healed": 12, "unhealable": 2}) == ""
        for name in ("gateway-oms", "oms-lifecycle", "risk-drawdown", "pairs", "supervisor"):
            procs.wait_http(name, f"http://127.0.0.1:{ports[name]}/healthz", 90)
        procs.wait_http("alertmanager", f"http://127.0.0.1:{ports['alertmanager']}/-/ready")
        procs.wait_http("prometheus", f"http://127.0.0.1:{ports['prometheus']}/-/ready")
        yield {"cfg": cfg, "ports": ports, "runner": runner, "receiver": receiver, "procs": procs,
               "prom": f"http://127.0.0.1:{ports['prometheus']}", "am": f"http://127.0.0.1:{ports['alertmanager']}"}
    finally:
        if runner is not None:
            runner.stop()
            sim_thread.join(30)
        procs.stop_all()
        receiver.server.shutdown()
        delete_topics(cfg, kafka_ready)
        drop_db(cfg)


def query(prom: str, expr: str) -> list[dict]:
    code, body = http(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert code == 200, f"{expr}: HTTP {code} {body[:300]!r}"
    return json.loads(body)["data"]["result"]


def panel_targets():
    for f in sorted(DASHBOARDS.glob("*.json")):
        d = json.loads(f.read_text())
        for p in d["panels"]:
            for t in p["targets"]:
                yield d["uid"], p["title"], t["expr"]


def test_every_dashboard_panel_returns_data(session):
    prom = session["prom"]
    targets = list(panel_targets())
    assert len({(u, t) for u, t, _ in targets}) == 58

    def missing():
        out = []
        for uid, title, expr in targets:
            res = query(prom, expr)
            if not any(not math.isnan(float(r["value"][1])) for r in res):
                out.append(f"{uid} / {title}: {expr}")
        return out

    left = missing()
    deadline = time.monotonic() + 90
    while left and time.monotonic() < deadline:
        time.sleep(2)
        left = missing()
    assert left == [], "panels without data:\n" + "\n".join(left)
    # every scrape target of the real config is up
    down = [r["metric"]["job"] for r in query(prom, "up == 0")]
    assert down == []


def test_heartbeat_alert_reaches_slack_and_teams_then_resolves(session):
    runner, rcv, prom = session["runner"], session["receiver"], session["prom"]
    wait_until("oms-core heartbeating", lambda: query(prom, 'tradeops_heartbeat_up{process="oms-core"} == 1'), 60)
    assert http(runner.url + "/control/heartbeat/oms-core/stop", "POST")[0] == 200
    try:
        group = "HeartbeatMissing (critical, team platform)"
        slack = wait_until("Slack firing message",
                           lambda: rcv.find("/slack_platform", "[FIRING:", group, "No heartbeat from oms-core"), 60)[0]
        teams = wait_until("Teams firing message",
                           lambda: rcv.find("/teams", "[FIRING:", group, "No heartbeat from oms-core"), 30)[0]
    finally:
        assert http(runner.url + "/control/heartbeat/oms-core/start", "POST")[0] == 200
    # the title counts the alerts of the group, each listed in the text with its runbook
    firing = f"[FIRING:{slack['attachments'][0]['text'].count('Runbook:')}] {group}"

    # Slack incoming-webhook payload: attachments with title, text, colour
    (att,) = slack["attachments"]
    assert att["title"] == firing
    assert att["color"] == "danger"
    assert "No heartbeat from oms-core" in att["text"]
    assert "Runbook: docs/alerts.md#heartbeatmissing" in att["text"]
    # Teams (Workflows) payload: a message carrying one adaptive card
    assert teams["type"] == "message"
    (card,) = teams["attachments"]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    content = card["content"]
    assert content["type"] == "AdaptiveCard"
    texts = [b["text"] for b in content["body"] if b["type"] == "TextBlock"]
    assert texts[0] == firing
    assert any("No heartbeat from oms-core" in t and "docs/alerts.md#heartbeatmissing" in t for t in texts[1:])
    # a warning does not go to Teams: only critical alerts there
    assert not rcv.find("/teams", "(warning,")

    resolved = "[RESOLVED] HeartbeatMissing (critical, team platform)"
    s2 = wait_until("Slack resolved message", lambda: rcv.find("/slack_platform", resolved), 60)[0]
    t2 = wait_until("Teams resolved message", lambda: rcv.find("/teams", resolved), 30)[0]
    assert s2["attachments"][0]["color"] == "good"
    assert "RESOLVED: No heartbeat from oms-core" in s2["attachments"][0]["text"]
    assert t2["attachments"][0]["content"]["body"][0]["text"] == resolved


def test_kafka_down_inhibits_the_lag_alert(session):
    am = session["am"]
    now = dt.datetime.now(dt.UTC)
    alerts = [
        {"labels": {"alertname": "KafkaDown", "severity": "critical", "team": "platform", "env": "inhib"},
         "annotations": {"summary": "test"}, "startsAt": now.isoformat()},
        {"labels": {"alertname": "KafkaConsumerLagHigh", "severity": "warning", "team": "platform",
                    "env": "inhib", "consumergroup": "g", "topic": "t"},
         "annotations": {"summary": "test"}, "startsAt": now.isoformat()},
        {"labels": {"alertname": "OmsStuckOrders", "severity": "warning", "team": "trading", "env": "inhib",
                    "status": "SUBMITTED"},
         "annotations": {"summary": "test"}, "startsAt": now.isoformat()},
    ]
    assert http(f"{am}/api/v2/alerts", "POST", json.dumps(alerts).encode())[0] == 200

    def state(name):
        q = urllib.parse.urlencode({"filter": [f'alertname="{name}"', 'env="inhib"']}, doseq=True)
        code, body = http(f"{am}/api/v2/alerts?{q}")
        got = json.loads(body) if code == 200 else []
        return got[0]["status"] if got else None

    st = wait_until("lag alert suppressed", lambda: (s := state("KafkaConsumerLagHigh")) and
                    s["state"] == "suppressed" and s, 20)
    assert st["inhibitedBy"]
    assert state("KafkaDown")["state"] == "active"
    assert state("OmsStuckOrders")["state"] == "active"   # not caused by Kafka: not inhibited


def test_trading_warning_goes_to_the_trading_channel_only(session):
    """The simulator leaves some orders stuck on purpose: OmsStuckOrders (warning, team
    trading) reaches the trading Slack channel, and neither the platform channel nor Teams."""
    rcv = session["receiver"]
    msg = wait_until("OmsStuckOrders on the trading channel",
                     lambda: rcv.find("/slack_trading", "OmsStuckOrders (warning, team trading)",
                                      "orders stuck in"), 90)[0]
    (att,) = msg["attachments"]
    assert att["title"].startswith("[FIRING:") and att["color"] == "warning"
    assert "orders stuck in" in att["text"] and "docs/alerts.md#omsstuckorders" in att["text"]
    assert not rcv.find("/slack_platform", "OmsStuckOrders")
    assert not rcv.find("/teams", "OmsStuckOrders")
