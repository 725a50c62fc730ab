"""Acting on programs: spawn mode (we own the child) and systemd mode (systemctl restart).

Spawn mode: the child gets its own session and process group (``setsid``), stdin from
/dev/null, stdout+stderr to its log file, or to the journal under its own identifier when
the supervisor runs under systemd, or else to the supervisor's stdout (a terminal, tmux).
``NOTIFY_SOCKET``, ``WATCHDOG_*`` and ``LISTEN_*`` are stripped from its environment: the
supervisor's systemd contract is not the child's. Stopping is SIGTERM (+ SIGCONT, so a
SIGSTOPped child gets it at once) to the whole group, SIGKILL after ``stop_grace_s``. The
supervisor is a child subreaper, and every member of a program's group is reaped with
``waitpid(-pgid)``, so nothing it started is left behind as an orphan or a zombie.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

STRIP_ENV_PREFIXES = ("NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
JOURNAL_STDOUT = "/run/systemd/journal/stdout"


def child_env(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(STRIP_ENV_PREFIXES)}
    env.update(extra)
    for k in list(env):
        if k.startswith(STRIP_ENV_PREFIXES):
            del env[k]
    return env


def set_child_subreaper() -> bool:
    """Adopt orphaned descendants (PR_SET_CHILD_SUBREAPER) so they can be reaped here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def _journal_stream(identifier: str) -> socket.socket | None:
    """A stream to journald with our own identifier (only when running under systemd)."""
    if not os.environ.get("JOURNAL_STREAM") or not os.path.exists(JOURNAL_STDOUT):
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(JOURNAL_STDOUT)
        s.shutdown(socket.SHUT_RD)
        # identifier, unit id, priority, level prefix, syslog, kmsg, console
        s.sendall(f"{identifier}\n\n6\n0\n0\n0\n0\n".encode())
    except OSError:
        s.close()
        return None
    return s


class SpawnError(Exception):
    """The command could not be executed (missing, not executable): one line."""


class Child:
    """One run of a spawned program: the leader pid and its process group."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.pid = popen.pid
        self.pgid = popen.pid  # setsid: the leader's pid is the group id
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.status: int | None = None  # wait status of the leader once reaped
        self.kill_at: float | None = None  # monotonic deadline for SIGKILL after SIGTERM

    @classmethod
    def spawn(cls, name: str, argv: list[str], cwd: str | None, env: dict[str, str],
              log_file: str | None) -> Child:
        out: int | None = None
        closer: contextlib.ExitStack = contextlib.ExitStack()
        with closer:
            if log_file:
                Path(log_file).parent.mkdir(parents=True, exist_ok=True)
                out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
                closer.callback(os.close, out)
            else:
                js = _journal_stream(f"tradeops-{name}")
                if js is not None:
                    closer.callback(js.close)
                    out = js.fileno()
            try:
                popen = subprocess.Popen(  # noqa: S603 - argv from the operator's config
                    argv,
                    cwd=cwd or None,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT if out is not None else None,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as e:
                raise SpawnError(f"cannot run {argv[0]!r}: {e.strerror}") from None
        return cls(popen)

    def reap(self) -> bool:
        """Reap every exited member of the group; True once the leader has exited."""
        while True:
            try:
                pid, status = os.waitpid(-self.pgid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == self.pid:
                self.status = status
                self.popen.returncode = os.waitstatus_to_exitcode(status)
        return self.status is not None

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def terminate(self, grace: float) -> None:
        """SIGTERM (and SIGCONT) to the whole group; SIGKILL becomes due after ``grace``."""
        self._signal(signal.SIGTERM)
        self._signal(signal.SIGCONT)
        if self.kill_at is None:
            self.kill_at = time.monotonic() + grace

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def finished(self) -> bool:
        """Leader reaped and no member of its group left."""
        self.reap()
        return self.status is not None and not self.group_alive()


class SystemctlRestart:
    """``systemctl restart UNIT`` running in the background (never blocks the loop)."""

    def __init__(self, unit: str, systemctl: str = "systemctl", timeout: float = 90.0):
        self.unit = unit
        self.deadline = time.monotonic() + timeout
        try:
            self.popen: subprocess.Popen | None = subprocess.Popen(  # noqa: S603
                [systemctl, "restart", unit],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            self.error = ""
        except OSError as e:
            self.popen = None
            self.error = f"systemctl restart {unit}: {e.strerror}"

    def done(self) -> tuple[bool, str]:
        """(finished, error or '')."""
        if self.popen is None:
            return True, self.error
        rc = self.popen.poll()
        if rc is None:
            if time.monotonic() > self.deadline:
                self.popen.kill()
                self.popen.wait()
                return True, f"systemctl restart {self.unit}: timed out"
            return False, ""
        err = (self.popen.stderr.read() if self.popen.stderr else "").strip()
        if self.popen.stderr:
            self.popen.stderr.close()
        if rc != 0:
            line = err.splitlines()[0] if err else f"exit {rc}"
            return True, f"systemctl restart {self.unit}: {line}"
        return True, ""
