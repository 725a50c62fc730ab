"""The tradeops supervisor's table (``tradeops supervise status``): one result per program.

Read through :func:`tradeops.supervisor.cli.fetch_status` (its ``/status``, else its status
file) and trusted only when :func:`stale_reason` says so. RUNNING is OK; STARTING, BACKOFF
and STOPPED WARN; HUNG and FATAL CRIT. The supervisor itself not answering (with programs
configured) is CRIT: nothing watches the trading processes then.
"""

from __future__ import annotations

import time

from ...supervisor.cli import fetch_status, stale_reason
from ..result import Result, Target, age_text, crit, ok, unknown, warn
from ..runner import Check, CheckContext

START = ("`sudo systemctl start tradeops-supervisor` (dev: `make up`; terminal: "
         "`tradeops supervise`)")


def judge(p: dict, now: float) -> Result:
    name, state = p["name"], p["state"]
    res = f"supervisor:{name}"
    target = Target("program", name, p.get("log_file") or "")
    hb_age = p.get("heartbeat_age_s")
    if hb_age is None and p.get("last_heartbeat"):
        hb_age = now - float(p["last_heartbeat"])
    hb = (f"heartbeat ({p['heartbeat_source']}) {age_text(hb_age)} ago" if hb_age is not None
          else f"no heartbeat ({p['heartbeat_source']}) yet" if p.get("heartbeat_source") != "none"
          else "pid only")
    since = p.get("since")
    finding = f"{state}" + (f" for {age_text(now - since)}" if since else "") + f", {hb}"
    if p.get("detail"):
        finding += f"; {p['detail']}"
    where = p.get("log_file") or (f"`journalctl -u {p['unit']}`" if p.get("unit") else
                                  f"`journalctl -t tradeops-{name}`")
    if not p.get("heartbeat_known", True):
        return unknown(res, f"{finding}; heartbeat source unknown: {p.get('heartbeat_detail', '')}",
                       "the heartbeat source is not readable (Kafka down?): see the kafka check",
                       target=target, details=p)
    if state == "RUNNING":
        return ok(res, finding, target=target, details=p)
    if state == "HUNG":
        act = ("the supervisor restarts it" if p.get("mode") in ("spawn", "systemd") else
               "watch mode: nothing restarts it")
        return crit(res, finding,
                    f"{name} is alive but silent: check the process and its log ({where}); {act}; "
                    f"`tradeops supervise restart {name}` restarts it now", target=target, details=p)
    if state == "FATAL":
        return crit(res, finding,
                    f"restart budget spent, it stays down: read {where}, fix the cause, then "
                    f"`tradeops supervise restart {name}`", target=target, details=p)
    if state in ("STARTING", "BACKOFF"):
        nxt = p.get("next_start_in_s")
        extra = f" (next start in {nxt:.1f}s)" if state == "BACKOFF" and nxt is not None else ""
        return warn(res, finding + extra,
                    f"being (re)started; if it does not reach RUNNING, read {where}",
                    target=target, details=p)
    return warn(res, finding, f"stopped: `tradeops supervise restart {name}`", target=target, details=p)


def run(ctx: CheckContext) -> list[Result]:
    cfg = ctx.cfg
    data, where = fetch_status(cfg, timeout=ctx.left(0.1))
    if data is None:
        return [crit("supervisor", f"tradeops supervisor not answering: {where}",
                     f"nothing watches the trading programs: start it, {START}")]
    stale = stale_reason(data, where)
    if stale:
        return [crit("supervisor", f"status from {where} is stale: {stale}",
                     f"the supervisor is not running, nothing watches the trading programs: "
                     f"start it, {START}")]
    now = time.time()
    out = [judge(p, now) for p in data.get("programs", [])]
    deps = data.get("dependencies", {})
    down = [k for k, v in deps.items() if not v]
    summary = f"{len(out)} programs, from {where}"
    if down:
        out.insert(0, warn("supervisor", f"{summary}; cannot read heartbeats from {', '.join(down)}",
                           f"fix {', '.join(down)} (see its check); programs heartbeating through "
                           "it are unknown, not restarted"))
    else:
        out.insert(0, ok("supervisor", summary))
    return out


CHECKS = [Check("supervisor", run, "the tradeops supervisor's program table",
                lambda cfg: bool(cfg.supervisor.programs))]
