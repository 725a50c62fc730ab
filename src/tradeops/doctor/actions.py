"""Restart the target of a check result: a systemd unit, a tradeops-supervisor program or
a supervisord program. Each returns ``(ok, one-line message)``; an action that needs
privileges says so (and which command to run) instead of failing obscurely.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import xmlrpc.client

from ..config import Config
from .checks import supervisord
from .checks.systemd import booted
from .result import Target


def describe(target: Target | None) -> str:
    """What the restart would do (the confirmation dialog's question); '' when impossible."""
    if target is None:
        return ""
    if target.kind == "unit":
        return f"systemctl restart {target.name}"
    if target.kind == "program":
        return f"tradeops supervise restart {target.name}"
    if target.kind == "supervisord":
        return f"supervisorctl restart {target.name}"
    return ""


def restart_unit(unit: str, timeout: float = 30.0) -> tuple[bool, str]:
    if not booted() or shutil.which("systemctl") is None:
        return False, f"cannot restart {unit}: no systemd running on this host"
    try:
        p = subprocess.run(["systemctl", "--no-ask-password", "restart", "--", unit],  # noqa: S603, S607
                           capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, (f"systemctl restart {unit} did not finish within {timeout:.0f}s: "
                       f"`systemctl status {unit}`")
    if p.returncode == 0:
        return True, f"{unit} restarted"
    err = (p.stderr or p.stdout).strip().splitlines()
    first = err[0] if err else f"exit {p.returncode}"
    if os.geteuid() != 0 and any(w in (p.stderr or "").lower() for w in
                                 ("authentication", "access denied", "not authorized", "permission")):
        return False, (f"restarting {unit} needs privileges (you are not root and no polkit rule allows it): "
                       f"run `sudo systemctl restart {unit}`")
    return False, f"systemctl restart {unit} failed: {first}"


def restart_program(cfg: Config, name: str, timeout: float = 15.0) -> tuple[bool, str]:
    url = f"http://{cfg.supervisor.listen}/programs/{name}/restart"
    req = urllib.request.Request(url, method="POST", data=b"")  # noqa: S310 - from config
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return True, json.loads(resp.read()).get("message", f"{name} restarted")
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read())["message"]
        except (ValueError, KeyError):
            msg = f"HTTP {e.code}"
        return False, f"supervisor: {msg}"
    except (urllib.error.URLError, OSError) as e:
        return False, (f"supervisor {cfg.supervisor.listen} not reachable ({getattr(e, 'reason', e)}): "
                       "is `tradeops supervise` running?")


def restart_supervisord(cfg: Config, name: str) -> tuple[bool, str]:
    try:
        return True, supervisord.restart(cfg.doctor.supervisord_url, name)
    except xmlrpc.client.Fault as e:
        if "UNAUTHORIZED" in str(e.faultString).upper():
            return False, "supervisord refused: its [inet_http_server]/[unix_http_server] needs credentials"
        return False, f"supervisord: {e.faultString}"
    except (OSError, xmlrpc.client.Error) as e:
        if isinstance(e, PermissionError):
            return False, (f"no permission on supervisord's socket {cfg.doctor.supervisord_url}: "
                           "run as its owner (`sudo supervisorctl restart " + name + "`)")
        return False, f"supervisord {cfg.doctor.supervisord_url}: {e}"


def restart(cfg: Config, target: Target | None) -> tuple[bool, str]:
    if target is None or not describe(target):
        return False, "nothing to restart for this check"
    if target.kind == "unit":
        return restart_unit(target.name)
    if target.kind == "program":
        return restart_program(cfg, target.name)
    return restart_supervisord(cfg, target.name)
