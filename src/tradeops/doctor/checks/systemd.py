"""systemd units: tradeops' own (when enabled) and ``[doctor].units``.

One ``systemctl show -p ... --timestamp=unix UNIT...`` for all units. On a host where
systemd is not the init system (``/run/systemd/system`` missing, as in a container or this
dev machine) the result is one clear UNKNOWN instead of a systemctl error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from ..result import Result, Target, age_text, crit, ok, unknown, warn
from ..runner import Check, CheckContext

# packaged units: checked when enabled on this host
OWN_UNITS = [
    "tradeops-supervisor.service",
    "tradeops-exporter-gateway-oms.service",
    "tradeops-exporter-oms-lifecycle.service",
    "tradeops-exporter-risk-drawdown.service",
    "tradeops-exporter-pairs.service",
    "tradeops-recon.timer",
]
PROPS = ["Id", "LoadState", "ActiveState", "SubState", "NRestarts", "Result", "Type",
         "UnitFileState", "ExecMainStartTimestamp", "ActiveEnterTimestamp"]
RUN_DIR = "/run/systemd/system"


def booted(run_dir: str = RUN_DIR) -> bool:
    """sd_booted(): systemd is the running init system."""
    return os.path.isdir(run_dir)


def parse_show(text: str) -> list[dict[str, str]]:
    """`systemctl show` output for several units: blocks of KEY=VALUE separated by blank lines."""
    blocks: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        k, _, v = line.partition("=")
        cur[k] = v
    if cur:
        blocks.append(cur)
    return blocks


def _ts(value: str) -> float | None:
    v = value.strip().lstrip("@")
    try:
        f = float(v)
    except ValueError:
        return None
    return f if f > 0 else None


def judge(props: dict[str, str], configured: bool, now: float) -> Result | None:
    """One unit's result; None for an own unit that is not installed or not enabled."""
    unit = props.get("Id", "?")
    name = f"unit:{unit}"
    target = Target("unit", unit)
    load, active, sub = props.get("LoadState", ""), props.get("ActiveState", ""), props.get("SubState", "")
    restarts = props.get("NRestarts", "")
    enabled = props.get("UnitFileState") in ("enabled", "enabled-runtime")
    if not configured and (load != "loaded" or not enabled):
        return None
    if load == "not-found":
        return crit(name, "unit not found on this host",
                    f"install it or remove {unit} from [doctor].units", target=target, details=props)
    since = _ts(props.get("ActiveEnterTimestamp", "")) or _ts(props.get("ExecMainStartTimestamp", ""))
    for_ = f" for {age_text(now - since)}" if since else ""
    rs = f", {restarts} restarts" if restarts and restarts not in ("0", "[not set]") else ""
    state = f"{active}/{sub}{for_}{rs}"
    journal = f"`journalctl -u {unit} -n 100`"
    if active == "active":
        return ok(name, state, target=target, details=props)
    if active == "failed":
        return crit(name, f"{state} (result {props.get('Result', '?')})",
                    f"read why in {journal}, fix it, then `sudo systemctl restart {unit}`",
                    target=target, details=props)
    if active in ("activating", "deactivating", "reloading"):
        return warn(name, state, f"starting or stopping; if it stays so, read {journal}",
                    target=target, details=props)
    if active == "inactive" and props.get("Type") == "oneshot" and props.get("Result") == "success":
        return ok(name, f"{state} (last run succeeded)", target=target, details=props)
    return crit(name, f"{state} (result {props.get('Result', '?')})",
                f"not running: `sudo systemctl start {unit}`; {journal} says why it stopped",
                target=target, details=props)


def units_for(cfg) -> tuple[list[str], set[str]]:
    configured = list(dict.fromkeys(cfg.doctor.units))
    progs = [p.unit for p in cfg.supervisor.programs if p.mode == "systemd" and p.unit]
    configured += [u for u in progs if u not in configured]
    return configured + [u for u in OWN_UNITS if u not in configured], set(configured)


def run(ctx: CheckContext, run_dir: str = RUN_DIR) -> list[Result]:
    if not booted(run_dir) or shutil.which("systemctl") is None:
        return [unknown("systemd", "no systemd running on this host: units not checked",
                        "run the doctor on the host whose systemd runs the services; programs run "
                        "without systemd are covered by the supervisor/supervisord checks")]
    units, configured = units_for(ctx.cfg)
    try:
        proc = subprocess.run(  # noqa: S603 - fixed argv, unit names from config
            ["systemctl", "show", "--timestamp=unix", "-p", ",".join(PROPS), "--", *units],
            capture_output=True, text=True, timeout=ctx.left(0.1), check=False)
    except subprocess.TimeoutExpired:
        return [unknown("systemd", f"systemctl show did not answer within {ctx.timeout:.1f}s",
                        "systemd (PID 1) is busy or hung: `systemctl status`")]
    if proc.returncode != 0 and not proc.stdout:
        return [unknown("systemd", f"systemctl show failed: {proc.stderr.strip().splitlines()[:1]}",
                        "check `systemctl status` on this host")]
    now = time.time()
    out = []
    for props in parse_show(proc.stdout):
        r = judge(props, props.get("Id") in configured, now)
        if r is not None:
            out.append(r)
    if not out:
        out.append(ok("systemd", "no tradeops unit enabled and none configured in [doctor].units"))
    return out


def _enabled(cfg) -> bool:
    # on a host without systemd and without configured units there is nothing to say
    return bool(units_for(cfg)[1]) or booted()


CHECKS = [Check("systemd", run, "systemd units (ActiveState, SubState, NRestarts, since when)", _enabled,
                aliases=("unit",))]
