"""Each exporter in ``[doctor].exporters``: its ``/healthz`` and its ``*_up`` gauges.

``/healthz`` 200 with every ``<prefix>_up{dependency}`` at 1 is OK; a 503 or an ``_up``
gauge at 0 is CRIT naming the dependency (or the stalled work loop); not reachable is CRIT.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from ..http import HttpError, get, get_json
from ..result import Result, Target, crit, ok
from ..runner import Check, CheckContext

# how long the check waits for an exporter's /metrics (its scrape-time work included)
METRICS_BUDGET_S = 0.5
_UP_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*_up)(\{[^}]*\})? (\S+)$", re.M)


def up_gauges(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample whose metric name ends in ``_up``."""
    return {f"{m.group(1)}{m.group(2) or ''}": float(m.group(3)) for m in _UP_RE.finditer(text)}


def unit_of(name: str) -> str:
    return f"tradeops-exporter-{name}.service"


def check_one(ctx: CheckContext, name: str, base: str) -> Result:
    res = f"exporter:{name}"
    log_dir = ctx.cfg.doctor.log_dir
    log = ""
    if log_dir:
        from ...config import secret_path

        log = str(secret_path(ctx.cfg, log_dir) / f"exporter-{name}.log")
    target = Target("unit", unit_of(name), log)
    base = base.rstrip("/")
    restart = (f"`sudo systemctl restart {unit_of(name)}` (dev: `make up`); why it stopped: "
               f"`journalctl -u {unit_of(name)} -n 100`")
    # /metrics may run scrape-time collections up to the exporter's scrape budget: fetch it
    # beside /healthz and use it only when it answers within METRICS_BUDGET_S (/healthz
    # carries the same dependency states as the <prefix>_up gauges)
    pool = ThreadPoolExecutor(max_workers=1)
    metrics_f = pool.submit(get, base + "/metrics", min(METRICS_BUDGET_S, ctx.left(0.1)))
    pool.shutdown(wait=False)
    try:
        status, health = get_json(base + "/healthz", ctx.left(0.1), accept_status=(200, 503))
    except HttpError as e:
        return crit(res, str(e), f"the exporter is not running: {restart}", target=target)
    details: dict = {"healthz": health}
    try:
        metrics = metrics_f.result(timeout=max(0.0, min(METRICS_BUDGET_S, ctx.left(0.05))))[1]
        ups = up_gauges(metrics.decode("utf-8", "replace"))
        details["up"] = ups
    except (HttpError, FutureTimeout) as e:
        ups = {}
        details["metrics_error"] = str(e) or f"/metrics slower than {METRICS_BUDGET_S}s"
    down = sorted(k for k, v in ups.items() if v != 1.0)
    loop = health.get("loop", {}) if isinstance(health, dict) else {}
    deps = health.get("dependencies", {}) if isinstance(health, dict) else {}
    if status == 503 or down:
        why = []
        if loop and not loop.get("live", True):
            why.append(f"work loop not live (last beat {loop.get('age_seconds')}s ago)")
        why += [f"{d} down" for d, v in deps.items() if not v]
        why += [f"{k}=0" for k in down if not any(d in k for d, v in deps.items() if not v)]
        deps_down = [d for d, v in deps.items() if not v]
        advice = (f"fix {', '.join(deps_down)} first (see its check); the exporter recovers by itself"
                  if deps_down else f"its loop is stuck: {restart}")
        return crit(res, "unhealthy: " + ("; ".join(why) or f"/healthz HTTP {status}"), advice,
                    target=target, details=details)
    if "metrics_error" in details:
        return ok(res, f"healthy (/healthz; _up gauges not read: {details['metrics_error']})",
                  target=target, details=details)
    return ok(res, f"healthy, {len(ups)} _up gauges at 1", target=target, details=details)


def run(ctx: CheckContext) -> list[Result]:
    items = list(ctx.cfg.doctor.exporters.items())
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(lambda kv: check_one(ctx, *kv), items))


CHECKS = [Check("exporter", run, "each exporter's /healthz and _up gauges",
                lambda cfg: bool(cfg.doctor.exporters))]
