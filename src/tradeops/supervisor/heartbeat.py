"""Heartbeat sources: how the supervisor knows a program is alive (not just its pid).

Every source answers :meth:`read` at once (the main loop never blocks on I/O): sources
that need I/O (Kafka, HTTP, systemd) do it in their own threads and keep the latest
answer. A :class:`Reading` says when the last heartbeat was (wall-clock seconds), whether
the source can be trusted right now (``known``), and from when (``floor``): after Kafka
comes back, a program's age counts from the moment Kafka was healthy again, so nobody is
restarted because *Kafka* was away ("unknown", never "hung").

- ``file``: the mtime of a file the program touches.
- ``kafka``: messages on ``ops.heartbeats`` (contracts.Heartbeat) whose ``process`` is
  the program's; the time is ``min(message ts, receive time)``.
- ``http``: a health URL; a 2xx answer is a heartbeat.
- ``systemd``: ``systemctl show``; ``ActiveState=active`` is a heartbeat,
  ``failed``/``inactive`` means the program exited.
- ``none``: no heartbeat; liveness is the child's pid (spawn mode only).
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

log = logging.getLogger("tradeops.supervisor")


@dataclass(frozen=True)
class Reading:
    last: float | None = None  # wall time of the latest heartbeat seen
    known: bool = True  # False: the source itself is unreachable -> judge nothing
    floor: float = 0.0  # ages count from max(last, floor, program start)
    exited: bool = False  # the source reports the program gone (systemd failed/inactive)
    detail: str = ""


class Source:
    kind = "none"

    def start(self) -> None:
        """Start background work (threads); called once by the supervisor."""

    def stop(self) -> None:
        """Stop background work."""

    def read(self, now: float) -> Reading:
        return Reading()


class NoneSource(Source):
    kind = "none"


class FileSource(Source):
    """The file's mtime is the heartbeat (one stat per loop; no thread)."""

    kind = "file"

    def __init__(self, path: str):
        self.path = path

    def read(self, now: float) -> Reading:
        try:
            return Reading(last=os.stat(self.path).st_mtime)
        except FileNotFoundError:
            return Reading(detail=f"{self.path}: no heartbeat file yet")
        except OSError as e:
            return Reading(known=False, detail=f"{self.path}: {e.strerror}")


class _Prober(Source):
    """Runs :meth:`probe` every ``interval`` seconds in its own daemon thread."""

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reading = Reading(known=False, detail="not probed yet")
        self._last_ok: float | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"probe-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._reading = self.probe()
            except Exception as e:  # noqa: BLE001 - a probe bug must not kill the thread
                self._reading = Reading(known=False, detail=f"probe failed: {e}")
            self._stop.wait(self.interval)

    def probe(self) -> Reading:
        raise NotImplementedError

    def read(self, now: float) -> Reading:
        return self._reading


class HttpSource(_Prober):
    kind = "http"

    def __init__(self, url: str, interval: float, timeout: float):
        super().__init__(interval)
        self.url = url
        self.timeout = timeout

    def probe(self) -> Reading:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:  # noqa: S310
                code = resp.status
        except urllib.error.HTTPError as e:
            code = e.code
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            # the program does not answer: no heartbeat (it is the program's health)
            return Reading(last=self._last_ok, detail=f"{self.url}: {reason}")
        if 200 <= code < 300:
            self._last_ok = time.time()
            return Reading(last=self._last_ok, detail=f"HTTP {code}")
        return Reading(last=self._last_ok, detail=f"{self.url}: HTTP {code}")


def parse_systemctl_show(text: str) -> dict[str, str]:
    """``Key=Value`` lines of ``systemctl show -p ...`` -> dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


class SystemdSource(_Prober):
    kind = "systemd"
    PROPS = "ActiveState,SubState,NRestarts,MainPID,Result"

    def __init__(self, unit: str, interval: float, systemctl: str = "systemctl"):
        super().__init__(interval)
        self.unit = unit
        self.systemctl = systemctl
        self.props: dict[str, str] = {}

    def probe(self) -> Reading:
        try:
            res = subprocess.run(
                [self.systemctl, "show", "-p", self.PROPS, self.unit],
                capture_output=True,
                text=True,
                timeout=max(self.interval * 3, 5.0),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return Reading(known=False, detail=f"systemctl show {self.unit}: {e}")
        props = parse_systemctl_show(res.stdout)
        if res.returncode != 0 or "ActiveState" not in props:
            first = (res.stderr.strip().splitlines() or ["no ActiveState"])[0]
            return Reading(known=False, detail=f"systemctl show {self.unit}: {first}")
        self.props = props
        reading = reading_from_unit(props, self._last_ok, time.time())
        self._last_ok = reading.last
        return reading


def reading_from_unit(props: dict[str, str], last_ok: float | None, now: float) -> Reading:
    """Map a unit's ActiveState/SubState to a heartbeat reading."""
    state = props.get("ActiveState", "")
    detail = f"{state}/{props.get('SubState', '')} NRestarts={props.get('NRestarts', '?')}"
    if state == "active":
        return Reading(last=now, detail=detail)
    return Reading(last=last_ok, exited=state in ("failed", "inactive"), detail=detail)


class KafkaHeartbeats:
    """One consumer thread reading ``ops.heartbeats`` for all kafka-sourced programs.

    It assigns every partition at the end (no group coordination, never commits), keeps
    the latest heartbeat per process name, and tracks Kafka's health: metadata checked
    every ``health_interval`` s; on failure the readings become unknown and, when Kafka
    is back, ages count from that moment (``floor``).
    """

    def __init__(self, cfg, processes: set[str], health_interval: float = 2.0):
        self.cfg = cfg
        self.topic = cfg.topics.heartbeats
        self.processes = set(processes)
        self.health_interval = health_interval
        self.last: dict[str, float] = {}
        self.healthy = False
        self.healthy_since = 0.0
        self.detail = "not connected yet"
        self.invalid = 0  # messages that broke the contract (counter)
        self.loop_at = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kafka-heartbeats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _set_health(self, ok: bool, detail: str) -> None:
        if ok and not self.healthy:
            self.healthy_since = time.time()
            log.info("kafka heartbeats: %s reachable", self.cfg.kafka.bootstrap_servers)
        elif not ok and self.healthy:
            log.warning("kafka heartbeats: %s; kafka-sourced heartbeats are unknown", detail)
        self.healthy = ok
        self.detail = detail

    def _run(self) -> None:
        from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

        from ..contracts import DecodeError, decode
        from ..kafka_admin import client_conf

        def on_error(err) -> None:
            if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
                self._set_health(False, f"kafka {self.cfg.kafka.bootstrap_servers}: {err.str()}")

        consumer = Consumer(
            client_conf(
                self.cfg,
                **{
                    "group.id": self.cfg.supervisor.group_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "latest",
                    "error_cb": on_error,
                    # broker-down lines would repeat every few ms; the health detail and
                    # the one log line per change (see _set_health) say it once
                    "log_level": 2,
                },
            )
        )
        assigned = False
        next_health = 0.0
        try:
            while not self._stop.is_set():
                self.loop_at = time.monotonic()
                if self.loop_at >= next_health:
                    next_health = self.loop_at + self.health_interval
                    try:
                        md = consumer.list_topics(self.topic, timeout=self.health_interval)
                        tmd = md.topics.get(self.topic)
                        if tmd is None or tmd.error is not None or not tmd.partitions:
                            self._set_health(False, f"topic {self.topic}: missing")
                        else:
                            if not assigned:
                                consumer.assign(
                                    [TopicPartition(self.topic, p, OFFSET_END) for p in tmd.partitions]
                                )
                                assigned = True
                            self._set_health(True, "ok")
                    except KafkaException as e:
                        self._set_health(
                            False, f"kafka {self.cfg.kafka.bootstrap_servers}: {e.args[0].str()}"
                        )
                if not assigned:
                    self._stop.wait(0.2)
                    continue
                msgs = consumer.consume(500, timeout=0.2)
                for msg in msgs:
                    if msg.error() is not None:
                        continue
                    try:
                        hb = decode("heartbeats", msg.value())
                    except DecodeError as e:
                        self.invalid += 1
                        log.warning(
                            "%s[%d]@%d: skipped heartbeat: %s",
                            msg.topic(), msg.partition(), msg.offset(), e,
                        )
                        continue
                    if hb.process in self.processes:
                        t = min(hb.ts.timestamp(), time.time())
                        if t > self.last.get(hb.process, 0.0):
                            self.last[hb.process] = t
        finally:
            consumer.close()

    def read(self, process: str, now_mono: float) -> Reading:
        if self._thread is not None and now_mono - self.loop_at > max(10.0, 5 * self.health_interval):
            return Reading(last=self.last.get(process), known=False, detail="kafka reader stalled")
        if not self.healthy:
            return Reading(last=self.last.get(process), known=False, detail=self.detail)
        return Reading(last=self.last.get(process), floor=self.healthy_since, detail="kafka ok")


class KafkaSource(Source):
    kind = "kafka"

    def __init__(self, hub: KafkaHeartbeats, process: str):
        self.hub = hub
        self.process = process

    def read(self, now: float) -> Reading:
        return self.hub.read(self.process, time.monotonic())


def build_sources(cfg, programs) -> tuple[dict[str, Source], KafkaHeartbeats | None]:
    """One source per program; a shared Kafka reader when any program needs it."""
    from ..config import secret_path

    kafka_names = {
        p.heartbeat.process or p.name for p in programs if p.heartbeat.source == "kafka"
    }
    hub = KafkaHeartbeats(cfg, kafka_names) if kafka_names else None
    interval = cfg.supervisor.probe_interval_s
    out: dict[str, Source] = {}
    for p in programs:
        hb = p.heartbeat
        if hb.source == "file":
            out[p.name] = FileSource(str(secret_path(cfg, hb.path)))
        elif hb.source == "kafka":
            assert hub is not None
            out[p.name] = KafkaSource(hub, hb.process or p.name)
        elif hb.source == "http":
            out[p.name] = HttpSource(hb.url, interval, timeout=min(max(hb.timeout_s / 2, 0.2), 2.0))
        elif hb.source == "systemd":
            out[p.name] = SystemdSource(hb.unit or p.unit, interval)
        else:
            out[p.name] = NoneSource()
    return out, hub
