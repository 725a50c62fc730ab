"""Log sources for the TUI's log pane: a file being appended to, or a unit's journal.

:class:`FileTail` prints the last lines of a file, then follows it (polling; a file that
shrinks or is replaced is reopened from its start). :class:`JournalTail` runs
``journalctl -u UNIT -f -o json -n N`` (or ``-t IDENT``) and turns each JSON entry into
``HH:MM:SS MESSAGE``. Both deliver lines to a callback from their own daemon thread and stop
with :meth:`stop`. :func:`source_for` picks the source of a check result.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable

from ..config import Config, secret_path
from .checks.systemd import booted
from .result import Result

Emit = Callable[[str], None]


class FileTail:
    def __init__(self, path: str, emit: Emit, lines: int = 50, poll_s: float = 0.2):
        self.path, self.emit, self.lines, self.poll_s = path, emit, lines, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="doctor-tail", daemon=True)

    @property
    def label(self) -> str:
        return f"file {self.path}"

    def start(self) -> FileTail:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _last_lines(self, f) -> int:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        start = max(0, end - 64 * 1024)
        f.seek(start)
        data = f.read(end - start)
        text = data.decode("utf-8", "replace").splitlines()
        if start > 0 and text:
            text = text[1:]  # a partial first line
        for line in text[-self.lines:]:
            self.emit(line)
        return end

    def _run(self) -> None:
        f = None
        pos = 0
        ino = None
        buf = b""
        while not self._stop.is_set():
            if f is None:
                try:
                    f = open(self.path, "rb")  # noqa: SIM115 - kept open while following
                except OSError as e:
                    self.emit(f"(cannot open {self.path}: {e.strerror}; waiting for it)")
                    if self._stop.wait(2.0):
                        return
                    continue
                ino = os.fstat(f.fileno()).st_ino
                pos = self._last_lines(f) if pos == 0 else 0
            try:
                st = os.stat(self.path)
                if st.st_ino != ino or st.st_size < pos:  # rotated or truncated: reopen
                    f.close()
                    f = open(self.path, "rb")  # noqa: SIM115
                    ino, pos, buf = os.fstat(f.fileno()).st_ino, 0, b""
            except OSError:
                pass
            f.seek(pos)
            chunk = f.read(1 << 20)
            if chunk:
                pos += len(chunk)
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self.emit(line.decode("utf-8", "replace"))
            elif self._stop.wait(self.poll_s):
                break
        if f is not None:
            f.close()


def journal_line(entry: dict) -> str:
    """One `journalctl -o json` entry as ``HH:MM:SS ident: MESSAGE``."""
    msg = entry.get("MESSAGE", "")
    if isinstance(msg, list):  # non-UTF-8 messages come as byte arrays
        msg = bytes(msg).decode("utf-8", "replace")
    ts = entry.get("__REALTIME_TIMESTAMP")
    when = dt.datetime.fromtimestamp(int(ts) / 1e6).strftime("%H:%M:%S") if ts else "--:--:--"
    ident = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or ""
    return f"{when} {ident}: {msg}" if ident else f"{when} {msg}"


class JournalTail:
    def __init__(self, emit: Emit, unit: str = "", ident: str = "", lines: int = 50):
        self.emit, self.unit, self.ident, self.lines = emit, unit, ident, lines
        self.proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name="doctor-journal", daemon=True)

    @property
    def label(self) -> str:
        return f"journal of {self.unit}" if self.unit else f"journal -t {self.ident}"

    def argv(self) -> list[str]:
        sel = ["-u", self.unit] if self.unit else ["-t", self.ident]
        return ["journalctl", *sel, "-f", "-o", "json", "-n", str(self.lines), "--no-pager"]

    def start(self) -> JournalTail:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def _run(self) -> None:
        if shutil.which("journalctl") is None:
            self.emit("(journalctl is not installed here: no journal to read)")
            return
        try:
            self.proc = subprocess.Popen(self.argv(), stdout=subprocess.PIPE,  # noqa: S603
                                         stderr=subprocess.STDOUT)
        except OSError as e:
            self.emit(f"(cannot run journalctl: {e.strerror})")
            return
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.emit(journal_line(json.loads(raw)))
            except ValueError:
                self.emit(raw.decode("utf-8", "replace").rstrip())
        rc = self.proc.wait()
        if rc not in (0, -15):
            self.emit(f"(journalctl exited with status {rc}: not allowed to read this journal? "
                      "add the user to the systemd-journal or adm group)")


# check family -> the local service log file name in [doctor].log_dir
SERVICE_LOGS = {"kafka": "kafka.log", "postgres": "postgres.log", "recon": "recon-demo.log",
                "prometheus": "prometheus.log", "pushgateway": "pushgateway.log",
                "supervisor": "supervisor.log", "oms": "exporter-oms-lifecycle.log"}


def source_for(cfg: Config, result: Result, emit: Emit) -> FileTail | JournalTail | None:
    """The log of a result's target, or of its local service; None when there is none."""
    t = result.target
    if t is not None and t.log_file:
        return FileTail(str(secret_path(cfg, t.log_file).resolve()), emit)
    if t is not None and booted():
        if t.kind == "unit":
            return JournalTail(emit, unit=t.name)
        if t.kind == "program":
            return JournalTail(emit, ident=f"tradeops-{t.name}")
    if cfg.doctor.log_dir:
        d = secret_path(cfg, cfg.doctor.log_dir).resolve()
        head = result.name.split(".", 1)[0].split(":", 1)[0]
        for key in (result.name.split(":", 1)[-1], head, result.family):
            cands = [SERVICE_LOGS.get(key, ""), f"{key}.log", f"exporter-{key}.log"]
            for c in cands:
                if c and (d / c).is_file():
                    return FileTail(str(d / c), emit)
    if t is not None and t.kind == "unit" and shutil.which("journalctl"):
        return JournalTail(emit, unit=t.name)
    return None
