#!/usr/bin/python3
"""Render the host variant of the monitoring mixin (infra/) into OUT.

    render-monitoring.py OUT [--prefix DIR]

OUT receives prometheus/ (prometheus.yml + rules/), alertmanager/ (alertmanager.yml +
templates/) and grafana/ (provisioning/ + dashboards/). PREFIX is where OUT will live
when used (default: OUT itself; debian/rules passes /usr/share/tradeops/monitoring), so
every absolute path written into the files points inside PREFIX.

One source of truth: infra/ holds the dev-stack files; this script only rewrites the
dev-only values (ports 19090/19091/19094, 5 s scrape interval, `env: dev`, the dev-only
scrape jobs (simulator, kafka-broker), relative rule paths, the Grafana dashboards path),
and fails when one of the expected dev values is missing or a dev port is left, so a
change in infra/ cannot silently ship a dev value.
Alertmanager paths go through infra/alertmanager/render.py (the dev stack's renderer).
Standard library only: it runs under Debian's python3 at package build time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_PREFIX = "/usr/share/tradeops/monitoring"
# the webhook URL files on a host: the path infra/alertmanager/alertmanager.yml already
# names (a directory of its own, readable by the Alertmanager's user without giving it
# the tradeops secrets of /etc/tradeops/secrets)
AM_SECRETS = "/etc/tradeops/alertmanager"
# host ports: Debian's prometheus, prometheus-pushgateway, prometheus-alertmanager defaults
HOST_PROMETHEUS = "127.0.0.1:9090"
HOST_PUSHGATEWAY = "127.0.0.1:9091"
HOST_ALERTMANAGER = "127.0.0.1:9093"
HOST_SCRAPE_INTERVAL = "15s"
# scrape jobs of the dev stack only: the simulator and the JMX agent of the dev broker
DEV_ONLY_JOBS = {"simulator", "kafka-broker"}


class RenderError(Exception):
    pass


def _sub(text: str, old: str, new: str, where: str, count: int = 1) -> str:
    """Replace exactly `count` occurrences of `old`; anything else is a build error."""
    n = text.count(old)
    if n != count:
        raise RenderError(f"{where}: expected {count}x {old!r} (a dev value), found {n}")
    return text.replace(old, new)


def _resub(text: str, pattern: str, new: str, where: str) -> str:
    """Replace the one line matching `pattern` (comments on it included) by `new`."""
    text, n = re.subn(pattern, new, text, flags=re.M)
    if n != 1:
        raise RenderError(f"{where}: expected 1 line matching {pattern!r} (a dev value), found {n}")
    return text


def _header(src: str) -> str:
    return (f"# GENERATED from {src} by debian/render-monitoring.py at package build:\n"
            "# the host variant of the dev-stack file (docs/deploy.md, \"The monitoring mixin on\n"
            "# the host\"). Do not edit here; copy to /etc and edit the copy, or change infra/.\n")


def _drop_dev_jobs(text: str, where: str) -> str:
    """Remove the scrape jobs of DEV_ONLY_JOBS (each a blank-line separated block under
    scrape_configs, its comment lines included)."""
    head, sep, jobs = text.partition("\nscrape_configs:\n")
    if not sep:
        raise RenderError(f"{where}: no scrape_configs")
    kept, dropped = [], set()
    for block in jobs.strip("\n").split("\n\n"):
        names = re.findall(r"^  - job_name: (\S+)$", block, flags=re.M)
        if len(names) != 1:
            raise RenderError(f"{where}: expected one job_name per blank-line separated block, got {names}")
        if names[0] in DEV_ONLY_JOBS:
            dropped.add(names[0])
        else:
            kept.append(block)
    if "simulator" not in dropped:
        raise RenderError(f"{where}: no simulator job to drop (DEV_ONLY_JOBS out of date?)")
    return head + sep + "\n\n".join(kept) + "\n"


def render_prometheus(text: str, prefix: str) -> str:
    w = "infra/prometheus/prometheus.yml"
    text = _drop_dev_jobs(text, w)
    # the dev file's leading comment describes the dev stack: replace it
    body = text.split("\nglobal:\n", 1)
    if len(body) != 2 or not all(ln.startswith("#") for ln in body[0].splitlines()):
        raise RenderError(f"{w}: expected a leading comment block, then `global:`")
    text = ("# Prometheus of tradeops on a host (docs/deploy.md, \"The monitoring mixin on the\n"
            "# host\"; alerts in docs/alerts.md). Targets: the exporters on their default ports, Debian's\n"
            f"# Pushgateway ({HOST_PUSHGATEWAY}) and Alertmanager ({HOST_ALERTMANAGER}), all on 127.0.0.1.\n"
            "# kafka_exporter is not scraped; consumer-group lag comes from the gateway-oms exporter.\n"
            "global:\n" + body[1])
    for old, new in (("127.0.0.1:19090", HOST_PROMETHEUS), ("127.0.0.1:19091", HOST_PUSHGATEWAY),
                     ("127.0.0.1:19094", HOST_ALERTMANAGER)):
        text = _sub(text, f'"{old}"', f'"{new}"', w)
    text = _resub(text, r"^  scrape_interval: 5s\b.*$", f"  scrape_interval: {HOST_SCRAPE_INTERVAL}", w)
    text = _sub(text, "  scrape_timeout: 4s\n", "  scrape_timeout: 10s\n", w)
    text = _sub(text, "  evaluation_interval: 5s\n", f"  evaluation_interval: {HOST_SCRAPE_INTERVAL}\n", w)
    text = _sub(text, "    env: dev\n", "    env: production\n", w)
    # absolute: /etc/prometheus/prometheus.yml may be a copy or a symlink of this file
    text = _sub(text, "  - rules/*.yml\n", f"  - {prefix}/prometheus/rules/*.yml\n", w)
    if "127.0.0.1:19" in text:
        raise RenderError(f"{w}: a dev port (127.0.0.1:19xxx) is left in the host variant "
                          "(a new dev-only job? add it to DEV_ONLY_JOBS of debian/render-monitoring.py)")
    return _header(w) + text


def render_grafana_datasource(text: str) -> str:
    w = "infra/grafana/provisioning/datasources/tradeops.yml"
    text = _resub(text, r"^    url: http://127\.0\.0\.1:19090\b.*$", f"    url: http://{HOST_PROMETHEUS}", w)
    text = _resub(text, r"^      timeInterval: 5s\b.*$",
                  f"      timeInterval: {HOST_SCRAPE_INTERVAL}   # = scrape_interval of prometheus.yml", w)
    return _header(w) + text


def render_grafana_dashboards(text: str, prefix: str) -> str:
    w = "infra/grafana/provisioning/dashboards/tradeops.yml"
    text = _sub(text, "      path: /var/lib/tradeops/grafana/dashboards\n",
                f"      path: {prefix}/grafana/dashboards\n", w)
    return _header(w) + text


def _am_render():
    path = os.path.join(INFRA, "alertmanager", "render.py")
    spec = importlib.util.spec_from_file_location("tradeops_am_render", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def render_alertmanager(text: str, prefix: str) -> str:
    w = "infra/alertmanager/alertmanager.yml"
    mod = _am_render()
    if mod.PREFIX not in text:
        raise RenderError(f"{w}: no path under {mod.PREFIX} to rewrite")
    out = mod.render(text, AM_SECRETS, f"{prefix}/alertmanager/templates")
    if "templates/*.tmpl" not in out or f"{prefix}/alertmanager/templates/" not in out:
        raise RenderError(f"{w}: the templates path was not rewritten")
    return _header(w) + out


INFRA = os.path.join(os.path.dirname(HERE), "infra")


def _read(*p: str) -> str:
    with open(os.path.join(INFRA, *p), encoding="utf-8") as f:
        return f.read()


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _copy_files(src_dir: str, dst_dir: str, suffix: str) -> list[str]:
    names = sorted(n for n in os.listdir(src_dir) if n.endswith(suffix))
    if not names:
        raise RenderError(f"{os.path.relpath(src_dir, os.path.dirname(INFRA))}: no *{suffix} files")
    os.makedirs(dst_dir, exist_ok=True)
    for n in names:
        shutil.copyfile(os.path.join(src_dir, n), os.path.join(dst_dir, n))
    return names


def render_all(out: str, prefix: str | None = None) -> None:
    prefix = (prefix or os.path.abspath(out)).rstrip("/")
    _write(os.path.join(out, "prometheus", "prometheus.yml"),
           render_prometheus(_read("prometheus", "prometheus.yml"), prefix))
    _copy_files(os.path.join(INFRA, "prometheus", "rules"), os.path.join(out, "prometheus", "rules"), ".yml")
    _write(os.path.join(out, "alertmanager", "alertmanager.yml"),
           render_alertmanager(_read("alertmanager", "alertmanager.yml"), prefix))
    _copy_files(os.path.join(INFRA, "alertmanager", "templates"),
                os.path.join(out, "alertmanager", "templates"), ".tmpl")
    _write(os.path.join(out, "grafana", "provisioning", "datasources", "tradeops.yml"),
           render_grafana_datasource(_read("grafana", "provisioning", "datasources", "tradeops.yml")))
    _write(os.path.join(out, "grafana", "provisioning", "dashboards", "tradeops.yml"),
           render_grafana_dashboards(_read("grafana", "provisioning", "dashboards", "tradeops.yml"), prefix))
    _copy_files(os.path.join(INFRA, "grafana", "dashboards"),
                os.path.join(out, "grafana", "dashboards"), ".json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--prefix", help="where OUT is installed (default: OUT)")
    a = ap.parse_args(argv)
    try:
        render_all(a.out, a.prefix)
    except (RenderError, OSError) as e:
        print(f"render-monitoring: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
