"""The supervisor's main loop: heartbeats in, restarts out, status and metrics published.

One thread does all the deciding (:meth:`Supervisor.run`): it sleeps in ``select`` on a
self-pipe that signals (SIGCHLD, SIGTERM, SIGINT) and HTTP commands wake, for at most
``poll_interval_s`` or until the next deadline (backoff end, SIGKILL due, watchdog ping),
then steps every program through its state table. Because SIGCHLD wakes it, a crash is
seen at once. The same loop sends systemd READY=1 and WATCHDOG=1 (every half of
WATCHDOG_USEC): if the loop hangs, systemd notices. Heartbeat I/O (Kafka, HTTP, systemd)
happens in source threads that the loop only reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..config import Config, ProgramConfig, listen_addr, secret_path
from ..errors import UserError
from ..sd_notify import Notifier, WatchdogTimer
from . import states
from .heartbeat import Reading, Source, build_sources
from .metrics import render
from .policy import RestartPolicy
from .process import Child, SpawnError, SystemctlRestart, child_env, describe_status, set_child_subreaper
from .states import ProcessState

S = ProcessState
log = logging.getLogger("tradeops.supervisor")


@dataclass
class Program:
    cfg: ProgramConfig
    source: Source
    policy: RestartPolicy
    state: ProcessState = S.STOPPED
    since: float = field(default_factory=time.time)
    child: Child | None = None
    action: SystemctlRestart | None = None  # systemd mode: a restart in flight
    started_mono: float = 0.0
    started_wall: float = 0.0  # beats before this do not count for this run (0: adopted)
    backoff_until: float | None = None
    reason: str = ""  # cause of the pending restart: exit | hung
    restarts: dict[str, int] = field(default_factory=lambda: {"exit": 0, "hung": 0})
    reading: Reading = field(default_factory=Reading)
    last_exit: str = ""
    detail: str = ""
    operator_restart: bool = False
    log_file: str = ""

    @property
    def name(self) -> str:
        return self.cfg.name


class Supervisor:
    def __init__(self, cfg: Config, *, http: bool = True):
        self.cfg = cfg
        sc = cfg.supervisor
        sources, self.kafka = build_sources(cfg, sc.programs)
        self.programs: dict[str, Program] = {}
        for p in sc.programs:
            prog = Program(cfg=p, source=sources[p.name], policy=RestartPolicy.from_program(p))
            prog.log_file = str(secret_path(cfg, p.log_file)) if p.log_file else ""
            self.programs[p.name] = prog
        self.status_path = secret_path(cfg, sc.status_file) if sc.status_file else None
        self.poll = sc.poll_interval_s
        self.http = http
        self.notifier = Notifier.from_env()
        self.watchdog = WatchdogTimer.from_env()
        self.commands: queue.Queue[tuple[str, str, queue.Queue]] = queue.Queue()
        self.stopping = False
        self.stop_deadline: float | None = None
        self.loop_at = time.monotonic()
        self.loop_duration = 0.0
        self.started = time.time()
        self._snapshot: dict[str, Any] = {}
        self._status_written = 0.0
        self._status_dirty = True
        self._sel = selectors.DefaultSelector()
        self._rfd, self._wfd = socket.socketpair()
        self._server: ThreadingHTTPServer | None = None
        self._dying: list[Child] = []  # old process groups being stopped

    # ---- state changes -------------------------------------------------------------------

    def _to(self, p: Program, new: ProcessState, why: str) -> None:
        states.check(p.name, p.state, new)
        level = logging.ERROR if new in (S.FATAL, S.HUNG) else logging.INFO
        log.log(level, "%s: %s -> %s (%s)", p.name, p.state.value, new.value, why)
        p.state = new
        p.since = time.time()
        p.detail = why
        self._status_dirty = True

    def _start(self, p: Program, now: float, *, adopt: bool = False) -> None:
        """Enter STARTING: spawn the child, issue systemctl restart, or just observe."""
        p.started_mono = now
        p.started_wall = time.time()
        p.backoff_until = None
        mode = p.cfg.mode
        if mode == "spawn":
            try:
                p.child = Child.spawn(
                    p.name,
                    list(p.cfg.command),
                    str(secret_path(self.cfg, p.cfg.cwd)) if p.cfg.cwd else None,
                    child_env(dict(os.environ), p.cfg.env),
                    p.log_file or None,
                )
            except SpawnError as e:
                p.child = None
                # STOPPED/BACKOFF/FATAL -> STARTING, then at once to BACKOFF/FATAL (cannot exec)
                self._to(p, S.STARTING, "start")
                p.last_exit = str(e)
                self._fail(p, now, "exit", str(e))
                return
            # STOPPED/BACKOFF/FATAL -> STARTING: spawned
            self._to(p, S.STARTING, f"spawned pid {p.child.pid}")
        elif mode == "systemd" and not adopt:
            p.action = SystemctlRestart(p.cfg.unit)
            # BACKOFF/FATAL/STOPPED -> STARTING: restart requested from systemd
            self._to(p, S.STARTING, f"systemctl restart {p.cfg.unit}")
        else:
            p.started_wall = 0.0  # an adopted unit / a watched process: any fresh beat counts
            # STOPPED -> STARTING: adopt (systemd) or watch; nothing is started
            self._to(p, S.STARTING, "watching" if mode == "watch" else f"adopted unit {p.cfg.unit}")

    def _fail(self, p: Program, now: float, reason: str, why: str) -> None:
        """A run ended (exit) or was judged hung and is gone: back off, or FATAL."""
        delay = p.policy.on_failure(now, now - p.started_mono)
        if p.child is not None and p.child.group_alive():
            # the leader is gone but members of its group are not: stop them too
            p.child.terminate(p.cfg.stop_grace_s)
            self._dying.append(p.child)
        p.child = None
        if delay is None:
            # STARTING/RUNNING/HUNG -> FATAL: budget spent, stay down (alert via process_state)
            self._to(
                p, S.FATAL,
                f"{why}; restart budget spent ({p.policy.budget} in {p.policy.window_s:g}s): stays down",
            )
            return
        p.reason = reason
        p.backoff_until = now + delay
        # STARTING/RUNNING/HUNG -> BACKOFF: restart after the delay
        self._to(p, S.BACKOFF, f"{why}; restart in {delay:g}s")

    # ---- one pass over one program ---------------------------------------------------------

    def step(self, p: Program, now: float, wall: float) -> None:
        r = p.source.read(wall)
        p.reading = r
        timeout = p.cfg.heartbeat.timeout_s
        has_beat = p.source.kind != "none"
        last = r.last or 0.0
        # a run gets a full timeout from its start (adopted/watched: from ours)
        age = wall - max(last, r.floor, p.started_wall, self.started)
        fresh = has_beat and r.known and r.last is not None and r.last >= p.started_wall \
            and wall - r.last <= timeout
        stale = has_beat and r.known and age > timeout

        if p.cfg.mode == "spawn":
            self._step_spawn(p, now, r, fresh, stale, age)
        elif p.cfg.mode == "systemd":
            self._step_systemd(p, now, r, fresh, stale, age)
        else:
            self._step_watch(p, now, r, fresh, stale, age)

    def _step_spawn(self, p: Program, now: float, r: Reading, fresh: bool, stale: bool, age: float) -> None:
        child = p.child
        if child is not None and child.reap():
            p.last_exit = describe_status(child.status or 0)
            if p.operator_restart or self.stopping:
                if child.group_alive():
                    child.terminate(p.cfg.stop_grace_s)
                    self._dying.append(child)
                p.child = None
                # STARTING/RUNNING/HUNG -> STOPPED: asked to stop (shutdown or operator)
                self._to(p, S.STOPPED, f"stopped ({p.last_exit})")
                if p.operator_restart and not self.stopping:
                    p.operator_restart = False
                    p.policy.reset()
                    self._start(p, now)  # STOPPED -> STARTING
                return
            if p.state == S.HUNG:
                # HUNG -> BACKOFF/FATAL: the hung run is gone
                self._fail(p, now, "hung", f"hung run ended ({p.last_exit})")
            else:
                # STARTING/RUNNING -> BACKOFF/FATAL: it exited by itself
                self._fail(p, now, "exit", p.last_exit)
            return
        if p.state == S.HUNG and child is not None and child.kill_at is not None and now >= child.kill_at:
            log.warning("%s: pid %d still there %gs after SIGTERM: SIGKILL to its group",
                        p.name, child.pid, p.cfg.stop_grace_s)
            child.kill()
            child.kill_at = float("inf")
        if self.stopping:
            return
        if p.state in (S.STARTING, S.RUNNING) and child is not None and not p.operator_restart:
            if stale:
                # STARTING/RUNNING -> HUNG: heartbeat older than its timeout; kill the group
                self._to(p, S.HUNG, f"no heartbeat for {age:.1f}s (timeout {p.cfg.heartbeat.timeout_s:g}s)")
                child.terminate(p.cfg.stop_grace_s)
            elif p.state == S.STARTING and now - p.started_mono >= p.cfg.startsecs and (
                fresh or p.source.kind == "none"
            ):
                # STARTING -> RUNNING: alive for startsecs and heartbeating
                self._to(p, S.RUNNING, f"up after {now - p.started_mono:.2f}s")
        if p.state == S.BACKOFF and p.backoff_until is not None and now >= p.backoff_until:
            self._restart(p, now)

    def _restart(self, p: Program, now: float) -> None:
        reason = p.reason or "exit"
        p.restarts[reason] += 1
        p.policy.on_restart(now)
        # BACKOFF -> STARTING
        self._start(p, now)

    def _step_systemd(self, p: Program, now: float, r: Reading, fresh: bool, stale: bool, age: float) -> None:
        if p.action is not None:
            finished, err = p.action.done()
            if not finished:
                return
            p.action = None
            if self.stopping or p.state == S.STOPPED:
                return
            p.started_mono = now
            p.started_wall = time.time() - 0.5  # a beat during the restart counts
            if err:
                p.last_exit = err
                # STARTING -> BACKOFF/FATAL: the restart itself failed
                self._fail(p, now, "exit", err)
                return
        if self.stopping:
            return
        if p.state in (S.STARTING, S.RUNNING):
            if r.exited and r.known and now - p.started_mono >= p.cfg.startsecs:
                p.last_exit = r.detail
                self._fail(p, now, "exit", f"unit {r.detail}")  # STARTING/RUNNING -> BACKOFF/FATAL
            elif stale:
                # STARTING/RUNNING -> HUNG: the restart is what follows (systemctl restart)
                self._to(p, S.HUNG, f"no heartbeat for {age:.1f}s (timeout {p.cfg.heartbeat.timeout_s:g}s)")
                self._fail(p, now, "hung", "hung")  # HUNG -> BACKOFF/FATAL
            elif p.state == S.STARTING and fresh and now - p.started_mono >= p.cfg.startsecs:
                self._to(p, S.RUNNING, "heartbeating")  # STARTING -> RUNNING
        if p.state == S.BACKOFF and p.backoff_until is not None and now >= p.backoff_until:
            self._restart(p, now)

    def _step_watch(self, p: Program, now: float, r: Reading, fresh: bool, stale: bool, age: float) -> None:
        if self.stopping:
            return
        if p.state in (S.STARTING, S.RUNNING) and (stale or (r.exited and r.known)):
            # STARTING/RUNNING -> HUNG: watch mode only reports (no action)
            self._to(p, S.HUNG, r.detail if r.exited else f"no heartbeat for {age:.1f}s")
        elif p.state == S.STARTING and fresh:
            self._to(p, S.RUNNING, "heartbeating")  # STARTING -> RUNNING
        elif p.state == S.HUNG and fresh:
            self._to(p, S.RUNNING, "heartbeats resumed")  # HUNG -> RUNNING (watch mode)

    # ---- commands from HTTP (operator) -------------------------------------------------------

    def _command(self, cmd: str, name: str, now: float) -> tuple[int, str]:
        p = self.programs.get(name)
        if p is None:
            return 404, f"no program {name!r}"
        if cmd != "restart":
            return 400, f"unknown command {cmd!r}"
        if self.stopping:
            return 503, "the supervisor is stopping"
        if p.cfg.mode == "watch":
            return 409, f"{name}: mode watch: the supervisor does not act on it"
        if p.state in (S.FATAL, S.STOPPED, S.BACKOFF):
            p.policy.reset()
            p.reason = ""
            old = p.state
            self._start(p, now)  # FATAL/STOPPED/BACKOFF -> STARTING: operator restart
            return 200, f"{name}: {old.value} -> STARTING"
        if p.cfg.mode == "spawn" and p.child is not None:
            p.operator_restart = True
            p.child.terminate(p.cfg.stop_grace_s)
            return 202, f"{name}: stopping pid {p.child.pid}, then starting"
        if p.cfg.mode == "systemd" and p.action is None:
            p.policy.reset()
            p.action = SystemctlRestart(p.cfg.unit)
            return 202, f"{name}: systemctl restart {p.cfg.unit}"
        return 409, f"{name}: {p.state.value}: try again shortly"

    # ---- status ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return self._snapshot

    def _build_snapshot(self, wall: float) -> dict[str, Any]:
        progs = []
        for p in self.programs.values():
            r = p.reading
            progs.append({
                "name": p.name,
                "mode": p.cfg.mode,
                "state": p.state.value,
                "since": p.since,
                "pid": p.child.pid if p.child is not None else None,
                "unit": p.cfg.unit or p.cfg.heartbeat.unit,
                "heartbeat_source": p.cfg.heartbeat.source,
                "heartbeat_timeout_s": p.cfg.heartbeat.timeout_s,
                "last_heartbeat": r.last,
                "heartbeat_age_s": (wall - r.last) if r.last else None,
                "heartbeat_known": r.known,
                "heartbeat_detail": r.detail,
                "restarts": dict(p.restarts),
                "restarts_in_window": p.policy.in_window(time.monotonic()),
                "restart_budget": p.policy.budget,
                "next_start_in_s": (max(p.backoff_until - time.monotonic(), 0.0)
                                    if p.backoff_until is not None and p.state == S.BACKOFF else None),
                "last_exit": p.last_exit,
                "detail": p.detail,
                "log_file": p.log_file,
            })
        deps: dict[str, bool] = {}
        if self.kafka is not None:
            deps["kafka"] = self.kafka.read("", time.monotonic()).known
        sysd = [p for p in self.programs.values() if p.source.kind == "systemd"]
        if sysd:
            deps["systemd"] = any(p.reading.known for p in sysd)
        return {
            "supervisor_pid": os.getpid(),
            "started": self.started,
            "updated": wall,
            "listen": self.cfg.supervisor.listen,
            "stopping": self.stopping,
            "dependencies": deps,
            "invalid_heartbeats": self.kafka.invalid if self.kafka is not None else 0,
            "loop_duration_s": self.loop_duration,
            "programs": progs,
        }

    def _publish(self, wall: float) -> None:
        """Rebuild the snapshot (and rewrite the status file) on a state change, else 1/s."""
        if not self._status_dirty and wall - self._status_written < 1.0:
            return
        self._snapshot = self._build_snapshot(wall)
        if self.status_path is not None:
            write_status(self.status_path, self._snapshot)
        self._status_written = wall
        self._status_dirty = False

    # ---- the loop ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
            self.stopping = True

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wfd.send(b"\0")

    def start_http(self) -> None:
        host, port = listen_addr(self.cfg.supervisor.listen)
        handler = _make_handler(self)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            raise UserError(
                f"[supervisor].listen {self.cfg.supervisor.listen}: cannot listen: {e.strerror}"
            ) from None
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="http", daemon=True).start()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; stop every child; return the exit code."""
        set_child_subreaper()
        if self.status_path is not None:
            try:
                self.status_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"[supervisor].status_file {self.status_path}: {e.strerror}") from None
        self._rfd.setblocking(False)
        self._wfd.setblocking(False)
        signal.set_wakeup_fd(self._wfd.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select via the wakeup fd
        signal.signal(
            signal.SIGHUP,
            lambda *_: log.warning("SIGHUP: reload is not supported; restart the supervisor"),
        )
        self._sel.register(self._rfd, selectors.EVENT_READ)
        if self.http:
            self.start_http()
        if self.kafka is not None:
            self.kafka.start()
        for p in self.programs.values():
            p.source.start()
        now = time.monotonic()
        for p in self.programs.values():
            self._start(p, now, adopt=True)  # STOPPED -> STARTING
        self._publish(time.time())
        self.notifier.notify(f"READY=1\nSTATUS=supervising {len(self.programs)} programs")
        log.info("supervising %d programs; metrics and status on http://%s",
                 len(self.programs), self.cfg.supervisor.listen)
        try:
            return self._loop()
        finally:
            self._shutdown_resources()

    def _loop(self) -> int:
        while True:
            t0 = time.monotonic()
            wall = time.time()
            self.loop_at = t0
            while True:
                try:
                    cmd, name, reply = self.commands.get_nowait()
                except queue.Empty:
                    break
                reply.put(self._command(cmd, name, t0))
            if self.stopping and self.stop_deadline is None:
                self._begin_stop(t0)
            for p in self.programs.values():
                self.step(p, t0, wall)
            self._reap_dying(t0)
            self.loop_duration = time.monotonic() - t0
            self._publish(wall)
            if self.watchdog.due():  # from the main loop itself: a stuck loop stops the pings
                self.notifier.notify("WATCHDOG=1")
            next_ping = self.watchdog.next_due()
            if self.stopping and self._all_stopped():
                self.notifier.notify("STATUS=stopped")
                log.info("all programs stopped; exiting")
                return 0
            timeout = self._next_wait(time.monotonic(), next_ping)
            for _key, _ev in self._sel.select(timeout):
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    while self._rfd.recv(4096):
                        pass

    def _next_wait(self, now: float, next_ping: float | None) -> float:
        deadlines = [now + self.poll]
        if next_ping is not None:
            deadlines.append(next_ping)
        for p in self.programs.values():
            if p.state == S.BACKOFF and p.backoff_until is not None:
                deadlines.append(p.backoff_until)
            elif p.state == S.STARTING:
                deadlines.append(p.started_mono + p.cfg.startsecs)
            if p.child is not None and p.child.kill_at is not None:
                deadlines.append(p.child.kill_at)
        for c in self._dying:
            if c.kill_at is not None:
                deadlines.append(c.kill_at)
        return max(0.0, min(deadlines) - now)

    def _begin_stop(self, now: float) -> None:
        self.notifier.notify("STOPPING=1\nSTATUS=stopping children")
        log.info("stopping: SIGTERM to every child's process group")
        grace = 0.0
        for p in self.programs.values():
            if p.child is not None:
                p.child.terminate(p.cfg.stop_grace_s)
                grace = max(grace, p.cfg.stop_grace_s)
            elif p.state not in (S.STOPPED,):
                # BACKOFF/FATAL/STARTING(no child) -> STOPPED
                p.backoff_until = None
                self._to(p, S.STOPPED, "supervisor stopping")
        self.stop_deadline = now + grace

    def _all_stopped(self) -> bool:
        for p in self.programs.values():
            if p.child is not None:
                if p.child.kill_at is not None and time.monotonic() >= p.child.kill_at:
                    p.child.kill()
                    p.child.kill_at = float("inf")
                return False
            if p.action is not None and not p.action.done()[0]:
                return False
        return not self._dying

    def _reap_dying(self, now: float) -> None:
        still = []
        for c in self._dying:
            if c.finished():
                continue
            if c.kill_at is not None and now >= c.kill_at:
                c.kill()
                c.kill_at = float("inf")
            still.append(c)
        self._dying = still

    def _shutdown_resources(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self.kafka is not None:
            self.kafka.stop()
        for p in self.programs.values():
            p.source.stop()
        self.stopping = True
        self._status_dirty = True
        with contextlib.suppress(Exception):
            self._publish(time.time())
        signal.set_wakeup_fd(-1)


def write_status(path, data: dict[str, Any]) -> None:
    """Atomically replace the status file (write a temp file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(json.dumps(data, indent=1).encode())
        os.replace(tmp, path)
    except OSError as e:
        log.warning("status file %s: %s", path, e.strerror)


def _make_handler(sup: Supervisor):
    class Handler(BaseHTTPRequestHandler):
        server_version = "tradeops-supervisor"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("http: " + fmt, *args)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, render(sup.snapshot), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/status":
                self._send(200, json.dumps(sup.snapshot()).encode(), "application/json")
            elif path == "/healthz":
                lag = time.monotonic() - sup.loop_at
                ok = lag < max(5.0, 10 * sup.poll) and not sup.stopping
                body = {"ok": ok, "loop_lag_s": round(lag, 3), "stopping": sup.stopping}
                self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
            elif path == "/":
                self._send(200, b"tradeops supervisor: /metrics /status /healthz\n", "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def do_POST(self) -> None:  # noqa: N802
            parts = self.path.strip("/").split("/")
            if len(parts) != 3 or parts[0] != "programs":
                self._send(404, b"not found\n", "text/plain")
                return
            reply: queue.Queue = queue.Queue()
            sup.commands.put((parts[2], parts[1], reply))
            sup._wake()
            try:
                code, msg = reply.get(timeout=10)
            except queue.Empty:
                code, msg = 504, "supervisor main loop did not answer"
            self._send(code, json.dumps({"message": msg}).encode(), "application/json")

    return Handler
