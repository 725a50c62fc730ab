"""Run `tradeops supervise` and supervisord side by side on the same real programs.

Shared by tests/test_supervisor_*.py and bench/bench_supervisor.py (which adds tests/ to
sys.path). Every program is the demo worker (`python -m tradeops.supervisor.demo`) writing
``start``/``exit`` lines with times to a marker file, so both supervisors are measured
the same way from the outside.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from waiting import wait_for

PY = sys.executable
DEMO = [PY, "-m", "tradeops.supervisor.demo"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(x)}' for k, x in v.items()) + " }"
    return json.dumps(str(v))


@dataclass
class Prog:
    name: str
    args: list[str] = field(default_factory=list)  # demo worker arguments
    options: dict = field(default_factory=dict)  # ProgramConfig keys for ours
    heartbeat: dict = field(default_factory=dict)
    command: list[str] | None = None  # instead of the demo worker


def markers(path: Path) -> list[tuple[str, int, float]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, pid, t = line.split()
        out.append((what, int(pid), float(t)))
    return out


def starts(path: Path) -> list[tuple[int, float]]:
    return [(pid, t) for what, pid, t in markers(path) if what == "start"]


class Ours:
    """`tradeops supervise` as a real subprocess with its own config, port and files."""

    def __init__(self, tmp: Path, progs: list[Prog], extra_toml: str = "", env: dict | None = None,
                 poll_interval_s: float = 0.2, probe_interval_s: float = 1.0):
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.status_file = tmp / "status.json"
        lines = [
            extra_toml,
            "[supervisor]",
            f'listen = "127.0.0.1:{self.port}"',
            f'status_file = "{self.status_file}"',
            f"poll_interval_s = {poll_interval_s}",
            f"probe_interval_s = {probe_interval_s}",
        ]
        for p in progs:
            cmd = p.command or [*DEMO, "--marker", str(self.marker(p.name)), *p.args]
            lines += ["", "[[supervisor.programs]]", f'name = "{p.name}"']
            if p.options.get("mode", "spawn") == "spawn":
                lines.append(f"command = {toml_value(cmd)}")
            lines += [f"{k} = {toml_value(v)}" for k, v in p.options.items()]
            if p.heartbeat:
                lines.append(f"heartbeat = {toml_value(p.heartbeat)}")
        self.config = tmp / "tradeops.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = tmp / "supervisor.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def marker(self, name: str) -> Path:
        return self.tmp / f"{name}.marker"

    def start(self, wait: bool = True) -> Ours:
        self.proc = subprocess.Popen(
            [PY, "-m", "tradeops.cli", "--config", str(self.config), "supervise"],
            stdout=open(self.log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        if wait:
            wait_for(self.try_status, 15, "the supervisor's /status")
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def try_status(self) -> dict | None:
        try:
            with urllib.request.urlopen(self.url("/status"), timeout=1) as r:
                return json.loads(r.read())
        except OSError:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited: {self.log.read_text()[-2000:]}") from None
            return None

    def status(self) -> dict:
        s = self.try_status()
        assert s is not None
        return s

    def program(self, name: str) -> dict:
        return next(p for p in self.status()["programs"] if p["name"] == name)

    def wait_state(self, name: str, state: str, timeout: float) -> dict:
        return wait_for(
            lambda: (p := self.program(name))["state"] == state and p, timeout, f"{name} {state}"
        )

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url("/metrics"), timeout=2) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"supervisor did not stop on {sig}: {self.log.read_text()[-2000:]}") from None


class Supervisord:
    """supervisord (from PyPI) on the same programs, with its usual settings."""

    def __init__(self, tmp: Path, progs: list[Prog], startsecs: float = 1, startretries: int = 3):
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.conf = tmp / "supervisord.conf"
        sock = tmp / "supervisord.sock"
        lines = [
            "[unix_http_server]", f"file={sock}", "",
            "[supervisord]", f"logfile={tmp / 'supervisord.log'}", f"pidfile={tmp / 'supervisord.pid'}",
            "nodaemon=true", "loglevel=info", f"childlogdir={tmp}", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{sock}", "",
        ]
        for p in progs:
            cmd = p.command or [*DEMO, "--marker", str(self.marker(p.name)), *p.args]
            lines += [
                f"[program:{p.name}]",
                "command=" + " ".join(cmd),
                "autorestart=true",
                f"startsecs={startsecs:g}",
                f"startretries={startretries}",
                "stopasgroup=true", "killasgroup=true", "",
            ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def marker(self, name: str) -> Path:
        return self.tmp / f"{name}.marker"

    def start(self) -> Supervisord:
        exe = str(Path(PY).parent / "supervisord")
        self.proc = subprocess.Popen(
            [exe, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def restart_gaps(path: Path) -> list[float]:
    """Seconds from each `exit` line to the next `start` line (crash -> restarted)."""
    gaps, last_exit = [], None
    for what, _pid, t in markers(path):
        if what == "exit":
            last_exit = t
        elif what == "start" and last_exit is not None:
            gaps.append(t - last_exit)
            last_exit = None
    return gaps
