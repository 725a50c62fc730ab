"""Prometheus targets (``/api/v1/targets``) and the recon's last success on the Pushgateway.

- ``prometheus.targets``: every active target's ``health`` is ``up`` (down ones: WARN, with
  their ``lastError``: monitoring is blind to them); Prometheus unreachable is CRIT.
- ``pushgateway.recon``: ``tradeops_recon_last_success_timestamp_seconds`` of job
  ``[recon].job`` is at or after the due time of the last trading day's recon.
"""

from __future__ import annotations

import datetime as dt
import re
from concurrent.futures import ThreadPoolExecutor

from ...calendar import TradingCalendar
from ..http import HttpError, get, get_json
from ..result import Result, age_text, crit, ok, warn
from ..runner import Check, CheckContext
from .postgres import recon_day


def targets(ctx: CheckContext) -> Result:
    url = ctx.cfg.doctor.prometheus_url.rstrip("/") + "/api/v1/targets?state=active"
    try:
        _, data = get_json(url, ctx.left(0.1))
    except HttpError as e:
        return crit("prometheus.targets", str(e),
                    "Prometheus is down: `systemctl status prometheus` (dev: `scripts/stack.sh status`)")
    active = data.get("data", {}).get("activeTargets", [])
    down = [t for t in active if t.get("health") != "up"]
    details = {"targets": [{"job": t.get("labels", {}).get("job"),
                            "instance": t.get("labels", {}).get("instance"),
                            "health": t.get("health"), "last_error": t.get("lastError", "")}
                           for t in active]}
    if not active:
        return warn("prometheus.targets", "no active target", "check prometheus.yml scrape configs",
                    details=details)
    if down:
        names = ", ".join(f"{t['labels'].get('job')}@{t['labels'].get('instance')}" for t in down[:5])
        first = (down[0].get("lastError") or "").split(": ")[-1]
        return warn("prometheus.targets", f"{len(down)}/{len(active)} targets down: {names}"
                    + (f" ({first})" if first else ""),
                    "start the components behind these targets (see their checks), or remove "
                    "targets that no longer exist from prometheus.yml", details=details)
    return ok("prometheus.targets", f"all {len(active)} targets up", details=details)


def recon_success(ctx: CheckContext, now: dt.datetime | None = None) -> Result:
    cfg = ctx.cfg
    url = cfg.doctor.pushgateway_url.rstrip("/") + "/metrics"
    try:
        _, body = get(url, ctx.left(0.1))
    except HttpError as e:
        return crit("pushgateway.recon", str(e),
                    "the Pushgateway is down (recon metrics are lost): `systemctl status "
                    "prometheus-pushgateway` (dev: `scripts/stack.sh status`)")
    job = re.escape(cfg.recon.job)
    m = re.search(r'^tradeops_recon_last_success_timestamp_seconds\{[^}]*job="' + job + r'"[^}]*\} (\S+)$',
                  body.decode("utf-8", "replace"), re.M)
    now = now or dt.datetime.now(dt.UTC)
    cal = TradingCalendar.from_config(cfg)
    day = recon_day(cal, now, cfg.doctor.recon_grace_s)
    s = cal.session(day)
    due = s.close if s else None
    if m is None:
        return warn("pushgateway.recon", f"no recon success pushed for job {cfg.recon.job}",
                    "no recon has succeeded since the Pushgateway started: "
                    f"`tradeops recon run --date {day}`")
    last = dt.datetime.fromtimestamp(float(m.group(1)), dt.UTC)
    ago = age_text((now - last).total_seconds())
    details = {"last_success": last.isoformat(), "expected_after": due.isoformat() if due else None}
    if due is not None and last < due:
        return warn("pushgateway.recon", f"last recon success {ago} ago, before {day}'s close",
                    f"the recon of {day} has not succeeded: see the recon check and "
                    "`journalctl -u tradeops-recon`", details=details)
    return ok("pushgateway.recon", f"last recon success {ago} ago", details=details)


def run(ctx: CheckContext) -> list[Result]:
    fns = [f for f, url in ((targets, ctx.cfg.doctor.prometheus_url),
                            (recon_success, ctx.cfg.doctor.pushgateway_url)) if url]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda f: f(ctx), fns))


CHECKS = [Check("prometheus", run, "Prometheus targets up; Pushgateway recon last success",
                lambda cfg: bool(cfg.doctor.prometheus_url or cfg.doctor.pushgateway_url),
                aliases=("pushgateway",))]
