"""The Kafka work loop every consuming exporter runs: batched consume, decode, handle, commit.

- confluent-kafka ``Consumer`` built from :func:`kafka_admin.client_conf`, auto-commit off;
  offsets are committed *after* the handler processed the message (at-least-once),
  asynchronously every ``commit_every_n`` messages or ``commit_every_s`` seconds, and
  synchronously on revoke and on shutdown.
- Each message is decoded with :func:`contracts.decode` for its topic's contract kind; a
  malformed one is skipped, counted in ``<prefix>_decode_errors_total{topic}`` and logged
  once with topic[partition]@offset and the reason. A handler exception is logged, counted
  in ``<prefix>_handler_errors_total{topic}`` and the loop goes on.
- ``on_assign(consumer, partitions)`` runs inside the rebalance callback before any message
  of those partitions is handed out (rebuild state there); ``on_revoke(partitions)`` runs
  after the revoked partitions' offsets were committed (drop their state there).
- Broker health: librdkafka's error callback (``_ALL_BROKERS_DOWN`` -> down, ``_TRANSPORT``
  -> probe now) and a cheap metadata probe every ``probe_interval_s`` (every second while
  down) drive ``<prefix>_up{dependency="kafka"}``; the loop never exits on broker errors and
  recovers by itself when the broker comes back.
- Group session: ``[kafka].consumer_session_timeout_s`` (default 10 s, heartbeats every
  third): a member killed without leaving the group (SIGKILL, watchdog after SIGSTOP) is
  dropped by the broker after that long, so its restarted replacement gets the partitions
  and sends READY=1 within about that time instead of librdkafka's 45 s default.
- Every iteration calls ``app.tick()`` (liveness + WATCHDOG=1) and ``on_tick(now)``; one
  blocking consume lasts at most ``app.max_poll_s()``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter

from .. import contracts
from ..config import Config
from ..kafka_admin import client_conf
from .runtime import Exporter, LoopState

log = logging.getLogger("tradeops.exporters.consumer")

Handler = Callable[[str, Any, Message], None]


class ConsumeLoop:
    """Consume ``topics`` (topic name -> contract kind, e.g. ``{"gateway.events": "gateway_events"}``)."""

    def __init__(self, cfg: Config, *, group_id: str, topics: Mapping[str, str], handler: Handler,
                 on_assign: Callable[[Consumer, list[TopicPartition]], None] | None = None,
                 on_revoke: Callable[[list[TopicPartition]], None] | None = None,
                 on_tick: Callable[[float], None] | None = None,
                 batch_size: int = 1000, poll_timeout_s: float = 0.5,
                 commit_every_n: int = 5000, commit_every_s: float = 1.0,
                 probe_interval_s: float = 5.0, auto_offset_reset: str = "earliest",
                 extra_conf: Mapping[str, Any] | None = None):
        for topic, kind in topics.items():
            if kind not in contracts.MESSAGE_TYPES:
                raise ValueError(f"topic {topic}: unknown contract kind {kind!r}")
        self.cfg = cfg
        self.group_id = group_id
        self.topics = dict(topics)
        self.handler = handler
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.on_tick = on_tick
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.commit_every_n = commit_every_n
        self.commit_every_s = commit_every_s
        self.probe_interval_s = probe_interval_s
        session_ms = int(cfg.kafka.consumer_session_timeout_s * 1000)
        self.conf = client_conf(cfg, **{
            "group.id": group_id,
            # a killed/hung predecessor holds its partitions until its session expires:
            # a short session lets a restarted exporter become READY within seconds
            # (librdkafka's default 45 s made a watchdog restart take ~54 s)
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 3),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": auto_offset_reset,
            "enable.partition.eof": False,
            # librdkafka keeps reconnecting in the background; its per-attempt connect
            # failures (level 3) would flood stdout during an outage: the error callback
            # reports them once as a state change of `_up{dependency="kafka"}` instead
            "reconnect.backoff.max.ms": 2000,
            "log_level": 2,
            **(extra_conf or {}),
        })
        self.consumer: Consumer | None = None
        self.app: Exporter | None = None
        # (topic, partition) -> next offset to commit (processed + 1); committed view
        self._positions: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._since_commit = 0
        self._last_commit = time.monotonic()
        self._next_probe = 0.0
        self._probe_failures = 0
        self._assigned = False
        self.processed = 0
        self._decode_errors: Counter | None = None
        self._handler_errors: Counter | None = None

    # ---------------------------------------------------------------- callbacks
    def _error_cb(self, err: KafkaError) -> None:
        code = err.code()
        if code == KafkaError._ALL_BROKERS_DOWN:
            self._set_kafka(False, err.str())
        elif code in (KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._TIMED_OUT):
            self._next_probe = 0.0  # probe on the next iteration
        else:
            log.warning("kafka: %s", err.str())

    def _set_kafka(self, up: bool, why: str = "") -> None:
        if self.app is not None:
            self.app.set_up("kafka", up, why)

    def _commit_cb(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            # keep the positions dirty: the next commit retries them
            log.warning("kafka: offset commit failed: %s", err.str())
            return
        for tp in partitions:
            if tp.error is None and tp.offset >= 0:
                self._committed[(tp.topic, tp.partition)] = tp.offset

    def _assign_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _tps(partitions))
        if self.on_assign is not None:
            self.on_assign(consumer, partitions)
        self._assigned = True
        self._set_kafka(True, "partitions assigned")

    def _revoke_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", _tps(partitions))
        keys = {(tp.topic, tp.partition) for tp in partitions}
        self.commit(sync=True, only=keys)
        for k in keys:
            self._positions.pop(k, None)
            self._committed.pop(k, None)
        if self.on_revoke is not None:
            self.on_revoke(partitions)

    def _lost_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # partitions lost (session timed out): committing is pointless, just drop the state
        log.warning("lost %s", _tps(partitions))
        for tp in partitions:
            self._positions.pop((tp.topic, tp.partition), None)
            self._committed.pop((tp.topic, tp.partition), None)
        if self.on_revoke is not None:
            self.on_revoke(partitions)

    # ----------------------------------------------------------------- commits
    def dirty(self) -> dict[tuple[str, int], int]:
        return {k: v for k, v in self._positions.items() if self._committed.get(k) != v}

    def commit(self, *, sync: bool = False, only: set[tuple[str, int]] | None = None) -> bool:
        """Commit processed positions; returns False when a synchronous commit failed."""
        todo = self.dirty()
        if only is not None:
            todo = {k: v for k, v in todo.items() if k in only}
        self._since_commit = 0
        self._last_commit = time.monotonic()
        if not todo or self.consumer is None:
            return True
        offsets = [TopicPartition(t, p, o) for (t, p), o in todo.items()]
        try:
            if sync:
                result = self.consumer.commit(offsets=offsets, asynchronous=False)
                self._commit_cb(None, result or [])
            else:
                self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as e:
            log.warning("kafka: offset commit failed: %s", e.args[0].str())
            return False
        return True

    # ------------------------------------------------------------------ probes
    def probe(self, timeout: float = 1.0) -> bool:
        """Cheap metadata request to the broker; updates `_up{dependency="kafka"}`."""
        assert self.consumer is not None
        topic = next(iter(self.topics))
        try:
            md = self.consumer.list_topics(topic, timeout=timeout)
            ok = bool(md.brokers)
        except KafkaException as e:
            ok = False
            why = e.args[0].str()
        else:
            why = "metadata probe ok" if ok else "metadata probe: no brokers"
        if ok:
            self._probe_failures = 0
            self._set_kafka(True, why)
        else:
            # one slow answer on a loaded machine is not an outage: down after two in a
            # row (librdkafka's _ALL_BROKERS_DOWN still marks it down at once)
            self._probe_failures += 1
            if self._probe_failures >= 2:
                self._set_kafka(False, why)
        return ok

    # --------------------------------------------------------------------- run
    def _handle(self, msgs: list[Message]) -> None:
        decode = contracts.decode
        topics = self.topics
        handler = self.handler
        positions = self._positions
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                self._error_cb(err)
                continue
            topic = msg.topic()
            kind = topics.get(topic)
            partition = msg.partition()
            offset = msg.offset()
            if kind is not None:
                try:
                    event = decode(kind, msg.value())
                except contracts.DecodeError as e:
                    self._decode_errors.labels(topic=topic).inc()
                    log.warning("skipped malformed message %s[%d]@%d: %s", topic, partition, offset, e)
                else:
                    try:
                        handler(kind, event, msg)
                    except Exception:  # noqa: BLE001 - never crash on input
                        self._handler_errors.labels(topic=topic).inc()
                        log.exception("handler failed on %s[%d]@%d", topic, partition, offset)
            positions[(topic, partition)] = offset + 1
        self.processed += len(msgs)
        self._since_commit += len(msgs)

    def run(self, app: Exporter) -> None:
        self.app = app
        self._decode_errors = app.decode_errors(self.topics)
        self._handler_errors = Counter(
            f"{app.prefix}_handler_errors", "Messages whose processing raised an error (a bug; "
            "logged with the traceback).", ["topic"], registry=app.registry)
        for t in self.topics:
            self._handler_errors.labels(topic=t)
        conf = dict(self.conf, error_cb=self._error_cb, on_commit=self._commit_cb)
        self.consumer = Consumer(conf)
        self.consumer.subscribe(list(self.topics), on_assign=self._assign_cb,
                                on_revoke=self._revoke_cb, on_lost=self._lost_cb)
        app.status(f"connecting to {self.cfg.kafka.bootstrap_servers}")
        timeout = app.max_poll_s(self.poll_timeout_s)
        try:
            while not app.stop_event.is_set():
                try:
                    msgs = self.consumer.consume(num_messages=self.batch_size, timeout=timeout)
                except KafkaException as e:
                    err = e.args[0]
                    if err.fatal():
                        raise  # the client is unusable: exit non-zero, systemd restarts us
                    log.warning("kafka: consume: %s", err.str())
                    msgs = []
                now = time.monotonic()
                if msgs:
                    self._handle(msgs)
                    if not app.health.is_up("kafka"):
                        self._set_kafka(True, "messages flowing")
                if self._assigned and app.state is LoopState.STARTING:
                    app.ready(f"consuming {', '.join(self.topics)} as {self.group_id}")
                if self._since_commit >= self.commit_every_n or (
                        self._since_commit and now - self._last_commit >= self.commit_every_s):
                    self.commit()
                elif now - self._last_commit >= self.commit_every_s and self.dirty():
                    self.commit()  # retry after a failed async commit
                if now >= self._next_probe:
                    up = self.probe(timeout=app.max_poll_s(2.0))
                    self._next_probe = time.monotonic() + (self.probe_interval_s if up else 1.0)
                if self.on_tick is not None:
                    self.on_tick(now)
                app.tick()
        finally:
            self.close()

    def close(self) -> None:
        app = self.app
        if app is not None and app.state in (LoopState.STARTING, LoopState.RUNNING):
            # STARTING/RUNNING -> STOPPING
            app.transition(LoopState.STOPPING)
        if self.consumer is not None:
            if not self.commit(sync=True):
                log.warning("offsets not committed at shutdown; the next start re-reads from "
                            "the last commit (at-least-once)")
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError) as e:
                log.warning("kafka: close: %s", e)
            self.consumer = None
        if app is not None and app.state is LoopState.STOPPING:
            # STOPPING -> STOPPED
            app.transition(LoopState.STOPPED)


def _tps(partitions: list[TopicPartition]) -> str:
    if not partitions:
        return "(none)"
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)
