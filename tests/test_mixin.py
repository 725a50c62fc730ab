"""Monitoring mixin, static checks (no services): Prometheus config and rules (promtool
check + the rule unit tests), every alert's labels/annotations/runbook/test coverage,
Alertmanager config (amtool) and its routing tree, Grafana dashboards JSON.

The live checks (every panel's PromQL against a running simulated session, and the alert
end to end through Prometheus and Alertmanager to Slack/Teams receivers) are in
tests/test_mixin_live.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROM = REPO / "infra" / "prometheus"
AM = REPO / "infra" / "alertmanager"
GRAFANA = REPO / "infra" / "grafana"
AMTOOL = REPO / ".state" / "bin" / "amtool"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

sys.path.insert(0, str(AM))
import render as am_render  # noqa: E402  (infra/alertmanager/render.py)


def alert_rules() -> list[dict]:
    rules = []
    for f in sorted((PROM / "rules").glob("*.yml")):
        for g in yaml.safe_load(f.read_text())["groups"]:
            rules += [r for r in g["rules"] if "alert" in r]
    return rules


def run(cmd, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_config_and_rules():
    p = run([PROMTOOL, "check", "config", PROM / "prometheus.yml"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 rule files found" in p.stdout
    p = run([PROMTOOL, "check", "rules", *sorted((PROM / "rules").glob("*.yml"))])
    assert p.returncode == 0, p.stdout + p.stderr


def test_prometheus_config_scrapes_every_component_and_sends_to_alertmanager():
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    ports = {"gateway-oms": 9811, "oms-lifecycle": 9812, "risk-drawdown": 9813, "pairs": 9814,
             "supervisor": 9815, "simulator": 9816, "pushgateway": 19091, "prometheus": 19090}
    for job, port in ports.items():
        assert jobs[job]["static_configs"][0]["targets"] == [f"127.0.0.1:{port}"], job
    assert jobs["pushgateway"]["honor_labels"] is True
    assert not any(j.get("honor_labels") for name, j in jobs.items() if name != "pushgateway")
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19094"]
    assert cfg["rule_files"] == ["rules/*.yml"]


def test_promtool_rule_unit_tests_pass():
    tests = sorted((PROM / "tests").glob("*.yml"))
    assert tests
    p = run([PROMTOOL, "test", "rules", *[t.name for t in tests]], cwd=PROM / "tests")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_every_alert_is_unit_tested_firing_and_quiet():
    """Each alert has a test case where it fires with labels and annotations, and one where
    it is expected quiet (exp_alerts: [])."""
    fires, quiet = set(), set()
    for f in (PROM / "tests").glob("*.yml"):
        for t in yaml.safe_load(f.read_text())["tests"]:
            for case in t.get("alert_rule_test", []):
                if case["exp_alerts"]:
                    for a in case["exp_alerts"]:
                        assert {"severity", "team"} <= set(a["exp_labels"]), case
                        assert set(a["exp_annotations"]) == {"summary", "description", "runbook"}, case
                    fires.add(case["alertname"])
                else:
                    quiet.add(case["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert len(names) == 23
    assert names - fires == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"


def test_every_alert_has_severity_team_and_a_runbook_section():
    doc = (REPO / "docs" / "alerts.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", doc, re.M)}
    seen = set()
    for r in alert_rules():
        name = r["alert"]
        assert name not in seen, f"duplicate alert {name}"
        seen.add(name)
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert r["labels"]["team"] in {"platform", "trading", "risk"}, name
        ann = r["annotations"]
        assert set(ann) == {"summary", "description", "runbook"}, name
        assert ann["runbook"] == f"docs/alerts.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/alerts.md has no section {name}"


@pytest.fixture(scope="module")
def amtool():
    if not AMTOOL.exists():
        pytest.fail(f"{AMTOOL} missing: scripts/install.d/60-monitoring.sh builds it (make install)")
    return AMTOOL


@pytest.fixture(scope="module")
def am_config(tmp_path_factory, amtool):
    d = tmp_path_factory.mktemp("am")
    out = d / "alertmanager.yml"
    am_render.main([str(out), "--secrets", str(d)])
    return out


def test_amtool_check_config(amtool, am_config):
    for f in (AM / "alertmanager.yml", am_config):
        p = run([amtool, "check-config", f])
        assert p.returncode == 0, p.stdout + p.stderr
        assert "SUCCESS" in p.stdout


def test_alertmanager_webhook_urls_only_from_files():
    cfg = yaml.safe_load((AM / "alertmanager.yml").read_text())
    n = 0
    for r in cfg["receivers"]:
        for s in r.get("slack_configs", []):
            assert "api_url" not in s and s["api_url_file"].startswith("/etc/tradeops/alertmanager/")
            assert s["send_resolved"] is True
            n += 1
        for t in r.get("msteamsv2_configs", []):
            assert "webhook_url" not in t and t["webhook_url_file"].startswith("/etc/tradeops/alertmanager/")
            assert t["send_resolved"] is True
            n += 1
    assert n == 6


@pytest.mark.parametrize("labels, receiver", [
    ({"alertname": "HeartbeatMissing", "severity": "critical", "team": "platform"}, "platform-critical"),
    ({"alertname": "KafkaConsumerLagHigh", "severity": "warning", "team": "platform"}, "platform"),
    ({"alertname": "RiskDrawdownLimitBreached", "severity": "critical", "team": "risk"}, "trading-critical"),
    ({"alertname": "OmsStuckOrders", "severity": "warning", "team": "trading"}, "trading"),
    ({"alertname": "PairsZscoreBeyondBand", "severity": "info", "team": "trading"}, "trading"),
    ({"alertname": "ReconNotRun", "severity": "critical", "team": "platform"}, "platform-critical"),
    ({"alertname": "Unlabelled"}, "platform"),
])
def test_alertmanager_routes_by_team_and_severity(amtool, am_config, labels, receiver):
    p = run([amtool, "config", "routes", "test", f"--config.file={am_config}",
             *[f"{k}={v}" for k, v in labels.items()]])
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.split() == [receiver]


def test_every_alert_routes_to_its_team_and_critical_ones_to_teams(amtool, am_config):
    cfg = yaml.safe_load(am_config.read_text())
    has_teams = {r["name"] for r in cfg["receivers"] if r.get("msteamsv2_configs")}
    for r in alert_rules():
        labels = {"alertname": r["alert"], **r["labels"]}
        p = run([amtool, "config", "routes", "test", f"--config.file={am_config}",
                 *[f"{k}={v}" for k, v in labels.items()]])
        (recv,) = p.stdout.split()
        assert recv.startswith("platform" if labels["team"] == "platform" else "trading"), r["alert"]
        assert (recv in has_teams) == (labels["severity"] == "critical"), r["alert"]


def test_kafka_down_inhibits_the_alerts_it_causes():
    cfg = yaml.safe_load((AM / "alertmanager.yml").read_text())
    targets = set()
    for rule in cfg["inhibit_rules"]:
        if rule["source_matchers"] == ['alertname="KafkaDown"']:
            for m in rule["target_matchers"]:
                mm = re.fullmatch(r'alertname=~?"([^"]+)"', m)
                if mm:
                    targets |= set(mm.group(1).split("|"))
    alerts = {r["alert"] for r in alert_rules()}
    assert {"KafkaConsumerLagHigh", "KafkaConsumerLagCritical", "KafkaConsumerGroupStalled",
            "HeartbeatMissing", "TradeopsDependencyDown"} <= targets
    assert targets <= alerts


def test_render_points_secrets_and_templates_elsewhere(tmp_path):
    out = tmp_path / "am.yml"
    am_render.main([str(out), "--secrets", str(tmp_path / "s")])
    text = out.read_text()
    assert "/etc/tradeops" not in text
    assert f"{tmp_path}/s/teams_webhook_url" in text
    assert f"{AM}/templates/*.tmpl" in text


# ------------------------------------------------------------------ Grafana

UIDS = {"tradeops-overview", "tradeops-oms", "tradeops-risk", "tradeops-pairs", "tradeops-recon",
        "tradeops-supervisor", "tradeops-kafka"}


def dashboards() -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted((GRAFANA / "dashboards").glob("*.json"))]


def test_dashboards_json_is_what_the_generator_writes():
    p = run([sys.executable, GRAFANA / "dashboards.py", "--check"])
    assert p.returncode == 0, p.stderr


def test_dashboards_have_stable_unique_uids_and_complete_panels():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "tradeops.yml").read_text())
    ds_uid = ds["datasources"][0]["uid"]
    boards = dashboards()
    assert {d["uid"] for d in boards} == UIDS and len(boards) == len(UIDS)
    n_panels = 0
    for d in boards:
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), d["uid"]
        for p in d["panels"]:
            where = f'{d["uid"]}: panel {p["id"]} {p["title"]!r}'
            assert p["datasource"] == {"type": "prometheus", "uid": ds_uid}, where
            assert p["targets"], where
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), where
            for t in p["targets"]:
                assert t["datasource"]["uid"] == ds_uid and t["expr"].strip(), where
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, where
            n_panels += 1
    assert n_panels == 58
    assert (GRAFANA / "provisioning" / "dashboards" / "tradeops.yml").exists()


def test_recon_not_run_times_match_the_calendar_and_the_doctor(base_cfg):
    """ReconNotRun hard-codes the close (10:00 UTC) and the due time (11:00 UTC): they must be
    [calendar].session_close in [calendar].timezone and that + [doctor].recon_grace_s."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    cal = base_cfg.calendar
    h, m = map(int, cal.session_close.split(":"))
    close = dt.datetime(2026, 12, 3, h, m, tzinfo=ZoneInfo(cal.timezone)).astimezone(dt.UTC)
    due = close + dt.timedelta(seconds=base_cfg.doctor.recon_grace_s)
    (rule,) = [r for r in alert_rules() if r["alert"] == "ReconNotRun"]
    assert f"time() % 86400 + {close.hour} * 3600" in rule["expr"]
    assert f"hour() >= {due.hour}" in rule["expr"]
    assert close.minute == 0 and due.minute == 0
