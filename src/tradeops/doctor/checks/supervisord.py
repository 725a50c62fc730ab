"""supervisord programs over XML-RPC (``[doctor].supervisord_url``: http(s):// or unix://).

``supervisor.getAllProcessInfo()``: RUNNING is OK; STARTING/BACKOFF/STOPPING WARN;
STOPPED WARN (an operator stopped it); EXITED/FATAL CRIT. Restart (the TUI) is
``stopProcess`` + ``startProcess`` over the same connection.
"""

from __future__ import annotations

import http.client
import socket
import time
import xmlrpc.client

from ..result import Result, Target, age_text, crit, ok, one_line, unknown, warn
from ..runner import Check, CheckContext


class _UnixConn(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._sock_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._sock_path)
        self.sock = s


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float):
        super().__init__()
        self.path, self.timeout = path, timeout

    def make_connection(self, host):
        return _UnixConn(self.path, self.timeout)


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


def proxy(url: str, timeout: float) -> xmlrpc.client.ServerProxy:
    if url.startswith("unix://"):
        return xmlrpc.client.ServerProxy("http://localhost/RPC2",
                                         transport=_UnixTransport(url[len("unix://"):], timeout))
    return xmlrpc.client.ServerProxy(url, transport=_TimeoutTransport(timeout))


def full_name(info: dict) -> str:
    return info["name"] if info.get("group") in (None, info["name"]) else f"{info['group']}:{info['name']}"


def judge(info: dict, now: float) -> Result:
    name = full_name(info)
    state = info.get("statename", "UNKNOWN")
    target = Target("supervisord", name, info.get("stdout_logfile") or "")
    since = info.get("start") or 0
    for_ = f" for {age_text(now - since)}" if state == "RUNNING" and since else ""
    desc = info.get("description", "")
    finding = f"{state}{for_}" + (f" ({desc})" if desc and state != "RUNNING" else "")
    res_name = f"supervisord:{name}"
    log = f"`supervisorctl tail {name} stderr` or {target.log_file or 'its log'}"
    if state == "RUNNING":
        return ok(res_name, finding, target=target, details=info)
    if state in ("STARTING", "BACKOFF", "STOPPING"):
        return warn(res_name, finding, f"supervisord is (re)starting it; if it stays {state}, read {log}",
                    target=target, details=info)
    if state == "STOPPED":
        return warn(res_name, finding, f"stopped by an operator: `supervisorctl start {name}` when intended",
                    target=target, details=info)
    if state in ("EXITED", "FATAL"):
        return crit(res_name, finding, f"read {log}, fix the cause, then `supervisorctl start {name}`",
                    target=target, details=info)
    return unknown(res_name, finding, f"`supervisorctl status {name}`", target=target, details=info)


def run(ctx: CheckContext) -> list[Result]:
    url = ctx.cfg.doctor.supervisord_url
    try:
        infos = proxy(url, ctx.left(0.1)).supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error, http.client.HTTPException) as e:
        return [crit("supervisord", f"{url} not reachable: {one_line(e)}",
                     "is supervisord running? `systemctl status supervisor` or start `supervisord -c ...`")]
    now = time.time()
    out = [judge(i, now) for i in infos]
    if not out:
        out.append(warn("supervisord", "supervisord runs no program", "check its [program:x] sections"))
    return out


def restart(url: str, name: str, timeout: float = 15.0) -> str:
    """Stop (if running) and start a supervisord program; returns a one-line message."""
    p = proxy(url, timeout)
    info = p.supervisor.getProcessInfo(name)
    if info.get("statename") in ("RUNNING", "STARTING", "BACKOFF"):
        p.supervisor.stopProcess(name, True)
    p.supervisor.startProcess(name, True)
    return f"supervisord program {name} restarted"


CHECKS = [Check("supervisord", run, "supervisord programs over XML-RPC",
                lambda cfg: bool(cfg.doctor.supervisord_url))]
