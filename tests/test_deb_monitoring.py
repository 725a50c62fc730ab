"""The monitoring mixin as the .deb ships it (/usr/share/tradeops/monitoring), offline and fast.

debian/render-monitoring.py renders the host variant of infra/ at package build. Here it
renders the same files into a temp dir (prefix = that dir, so the absolute rule and template
paths exist) and checks them with the real promtool and amtool; a second render with the
package prefix must be the same bytes up to that prefix (what is checked is what ships).
The contents of the built package are asserted in tests/test_systemd_e2e.py (installed
with apt in a throwaway systemd).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tradeops.config import Config

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
AMTOOL = REPO / ".state" / "bin" / "amtool"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PKG_PREFIX = "/usr/share/tradeops/monitoring"

_spec = importlib.util.spec_from_file_location("render_monitoring", REPO / "debian" / "render-monitoring.py")
rm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rm)
_spec = importlib.util.spec_from_file_location("am_render", INFRA / "alertmanager" / "render.py")
am_render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(am_render)


def run(cmd) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("monitoring")
    assert rm.main([str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "monitoring"
    assert rm.main([str(out), "--prefix", PKG_PREFIX]) == 0
    return out


def test_layout_and_copies_are_the_infra_files(local):
    got = files(local)
    want = {"prometheus/prometheus.yml", "alertmanager/alertmanager.yml",
            "grafana/provisioning/datasources/tradeops.yml", "grafana/provisioning/dashboards/tradeops.yml"}
    copied = {}
    for sub, pattern in (("prometheus/rules", "*.yml"), ("alertmanager/templates", "*.tmpl"),
                         ("grafana/dashboards", "*.json")):
        src = sorted((INFRA / sub).glob(pattern))
        assert src, sub
        copied.update({f"{sub}/{p.name}": p.read_bytes() for p in src})
    assert set(got) == want | set(copied)
    # rules, templates and dashboards ship as they are
    assert {k: got[k] for k in copied} == copied


def test_package_render_differs_only_by_prefix(local, packaged):
    a, b = files(local), files(packaged)
    assert set(a) == set(b)
    for name in a:
        assert a[name].replace(str(local).encode(), PKG_PREFIX.encode()) == b[name], name
    # and no build/temp path is left in the package variant
    assert not [n for n, data in b.items() if str(packaged).encode() in data]


def test_promtool_check_config_and_rules(local):
    p = run([PROMTOOL, "check", "config", local / "prometheus" / "prometheus.yml"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 2 rule files found" in p.stdout, p.stdout
    rules = sorted((local / "prometheus" / "rules").glob("*.yml"))
    p = run([PROMTOOL, "check", "rules", *rules])
    assert p.returncode == 0, p.stdout + p.stderr


def test_prometheus_host_targets_are_the_package_defaults(packaged):
    text = (packaged / "prometheus" / "prometheus.yml").read_text()
    assert "127.0.0.1:19" not in text and ".state" not in text
    doc = yaml.safe_load(text)
    assert doc["rule_files"] == [f"{PKG_PREFIX}/prometheus/rules/*.yml"]
    assert doc["global"]["external_labels"] == {"env": "production"}
    assert doc["global"]["scrape_interval"] == "15s"
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in doc["scrape_configs"]}
    cfg = Config()
    assert jobs == {
        "prometheus": [urlsplit(cfg.doctor.prometheus_url).netloc],
        "pushgateway": [urlsplit(cfg.recon.pushgateway_url).netloc],
        "gateway-oms": [cfg.gateway_oms.listen],
        "oms-lifecycle": [cfg.oms_lifecycle.listen],
        "risk-drawdown": [cfg.risk.listen],
        "pairs": [cfg.pairs_exporter.listen],
        "supervisor": [cfg.supervisor.listen],
    }  # the simulator's job is dev-only
    assert jobs["pushgateway"] == [urlsplit(cfg.doctor.pushgateway_url).netloc]
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]
    # everything except the rewritten values is the dev config
    dev = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    dev_jobs = {j["job_name"]: j for j in dev["scrape_configs"]}
    for j in doc["scrape_configs"]:
        assert set(j) == set(dev_jobs[j["job_name"]]), j["job_name"]
        assert j.get("honor_labels") == dev_jobs[j["job_name"]].get("honor_labels")


@pytest.fixture(scope="module")
def amtool():
    if not AMTOOL.exists():
        pytest.fail(f"{AMTOOL} missing: scripts/install.d/60-monitoring.sh builds it (make install)")
    return AMTOOL


def test_amtool_check_config(amtool, local):
    cfg = local / "alertmanager" / "alertmanager.yml"
    # amtool parses the templates the glob matches (a broken one fails the check) but
    # accepts a glob matching nothing: make sure it matches the shipped files
    (glob,) = yaml.safe_load(cfg.read_text())["templates"]
    assert sorted(Path(glob).parent.glob(Path(glob).name)) == sorted(
        (local / "alertmanager" / "templates").glob("*.tmpl")) != []
    p = run([amtool, "check-config", cfg])
    assert p.returncode == 0, p.stdout + p.stderr
    assert " - 1 templates" in p.stdout, p.stdout


def test_alertmanager_paths_and_nothing_else_changed(packaged):
    doc = yaml.safe_load((packaged / "alertmanager" / "alertmanager.yml").read_text())
    assert doc["templates"] == [f"{PKG_PREFIX}/alertmanager/templates/*.tmpl"]
    url_files = [v for r in doc["receivers"] for kind, cfgs in r.items() if kind.endswith("_configs")
                 for c in cfgs for k, v in c.items() if k.endswith("_file")]
    assert sorted(set(url_files)) == [f"/etc/tradeops/alertmanager/{n}" for n in
                                      ("slack_platform_webhook_url", "slack_trading_webhook_url",
                                       "teams_webhook_url")]
    # the same config the dev renderer makes for these paths
    dev = am_render.render((INFRA / "alertmanager" / "alertmanager.yml").read_text(),
                           "/etc/tradeops/alertmanager", f"{PKG_PREFIX}/alertmanager/templates")
    assert doc == yaml.safe_load(dev)


def test_grafana_provisioning_points_at_the_shipped_files(local, packaged):
    ds = yaml.safe_load((packaged / "grafana/provisioning/datasources/tradeops.yml").read_text())
    prom = yaml.safe_load((packaged / "prometheus/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["url"] == "http://" + next(j["static_configs"][0]["targets"][0]
                                             for j in prom["scrape_configs"] if j["job_name"] == "prometheus")
    assert source["jsonData"]["timeInterval"] == prom["global"]["scrape_interval"]
    uids = set()
    for p in (local / "grafana" / "dashboards").glob("*.json"):
        d = json.loads(p.read_text())
        uids |= {t["datasource"]["uid"] for t in _targets(d) if isinstance(t.get("datasource"), dict)}
    assert uids == {source["uid"]}
    dash = yaml.safe_load((packaged / "grafana/provisioning/dashboards/tradeops.yml").read_text())
    (provider,) = dash["providers"]
    assert provider["options"]["path"] == f"{PKG_PREFIX}/grafana/dashboards"
    local_dash = yaml.safe_load((local / "grafana/provisioning/dashboards/tradeops.yml").read_text())
    assert sorted(Path(local_dash["providers"][0]["options"]["path"]).glob("*.json"))


def _targets(d: dict) -> list[dict]:
    out = []
    for panel in d.get("panels", []):
        out += panel.get("targets", [])
        for sub in panel.get("panels", []):
            out += sub.get("targets", [])
    return out


def test_a_dev_value_that_moved_fails_the_build_with_one_line(tmp_path):
    text = (INFRA / "prometheus" / "prometheus.yml").read_text().replace("127.0.0.1:19091", "127.0.0.1:29091")
    with pytest.raises(rm.RenderError, match=r"^infra/prometheus/prometheus.yml: expected 1x .*19091"):
        rm.render_prometheus(text, PKG_PREFIX)
    text = (INFRA / "grafana/provisioning/dashboards/tradeops.yml").read_text().replace("/var/lib", "/srv")
    with pytest.raises(rm.RenderError, match="/var/lib/tradeops/grafana/dashboards"):
        rm.render_grafana_dashboards(text, PKG_PREFIX)
    # dev-only jobs are dropped with their comments; an unknown job on a dev port fails
    base = (INFRA / "prometheus" / "prometheus.yml").read_text().rstrip("\n")
    jmx = "\n\n  # dev broker JMX agent\n  - job_name: kafka-broker\n    static_configs:\n" \
          "      - targets: [\"127.0.0.1:19308\"]\n"
    out = rm.render_prometheus(base + jmx, PKG_PREFIX)
    assert "kafka-broker" not in out and "JMX" not in out and "simulator" not in out
    assert yaml.safe_load(out)["scrape_configs"] == yaml.safe_load(
        rm.render_prometheus(base.split("\n\n  - job_name: kafka-broker")[0] + "\n", PKG_PREFIX))["scrape_configs"]
    other = jmx.replace("kafka-broker", "dev-thing")
    with pytest.raises(rm.RenderError, match="dev port .* DEV_ONLY_JOBS"):
        rm.render_prometheus(base + other, PKG_PREFIX)
    # the command: one line on stderr, exit 1, nothing half-written in the way of dpkg
    p = run(["/usr/bin/python3", REPO / "debian/render-monitoring.py", tmp_path / "x" / "y",
             "--prefix", PKG_PREFIX])
    assert p.returncode == 0, p.stderr
    bad = tmp_path / "notadir"
    bad.write_text("")
    p = run(["/usr/bin/python3", REPO / "debian/render-monitoring.py", bad / "out"])
    assert p.returncode == 1 and p.stderr.startswith("render-monitoring: ") and p.stderr.count("\n") == 1, p.stderr
