"""oms-lifecycle speed and memory, against the real local Kafka (`make up-core`).

Produces a simulated trading day (default 1,000,000 order events, ~200k orders, keyed by
order_id, 6 partitions) to a throw-away topic, then measures, pinned to ONE CPU:

1. anchor: bare confluent-kafka consume + msgspec decode (the contract's decoder) of the
   whole topic;
2. hot path: the exporter's own loop (OmsConsumeLoop + order book) rebuilding the same
   topic, from partition assignment to every partition LIVE; ratio against 1.;
3. the real process: `tradeops exporter oms-lifecycle` started on that topic, time from
   exec to READY=1 (read from its NOTIFY_SOCKET, the systemd readiness signal) and its
   resident memory (VmRSS, VmHWM) once the whole day is rebuilt.

Targets (issue 3): hot path >= 100,000 events/s and >= 0.5x the anchor; replay to ready
< 15 s; RSS after a full day < 150 MB. Usage:

    .venv/bin/python bench/bench_oms_lifecycle.py [--events N] [--runs R] [--cpu C]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tradeops import config as config_mod
from tradeops import contracts
from tradeops.exporters.oms_lifecycle import OmsConsumeLoop, build
from tradeops.kafka_admin import client_conf

REPO = Path(__file__).resolve().parents[1]
DEV_CONFIG = REPO / "infra" / "dev" / "tradeops.toml"
replace = msgspec.structs.replace

PATHS = [  # (weight, statuses)
    (40, ["CREATED", "RISK_APPROVED", "SUBMITTED", "OPEN", "FILLED"]),
    (15, ["CREATED", "RISK_APPROVED", "SUBMITTED", "OPEN", "PARTIALLY_FILLED", "FILLED"]),
    (15, ["CREATED", "RISK_APPROVED", "SUBMITTED", "OPEN", "CANCEL_PENDING", "CANCELLED"]),
    (8, ["CREATED", "RISK_APPROVED", "SUBMITTED", "TRIGGER_PENDING", "OPEN", "FILLED"]),
    (5, ["CREATED", "RISK_APPROVED", "SUBMITTED", "OPEN", "MODIFY_PENDING", "OPEN", "FILLED"]),
    (5, ["CREATED", "RISK_REJECTED"]),
    (4, ["CREATED", "RISK_APPROVED", "SUBMITTED", "REJECTED"]),
    (4, ["SUBMITTED", "OPEN", "FILLED"]),  # manual orders
    (2, ["CREATED", "RISK_APPROVED", "SUBMITTED", "OPEN", "EXPIRED"]),
    (2, ["CREATED", "RISK_APPROVED", "SUBMITTED", "OPEN"]),  # still open at the close
]
STRATEGIES = ["momentum", "meanrev", "pairs", "breakout", "manual"]


def simulated_day(n_events: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """(key, value) in event-time order: orders spread over 09:15-15:30 IST today."""
    rnd = random.Random(seed)
    ist = ZoneInfo("Asia/Kolkata")
    today = datetime.now(ist).date()
    open_ = datetime(today.year, today.month, today.day, 9, 15, tzinfo=ist).timestamp()
    weights = [w for w, _ in PATHS]
    paths = [p for _, p in PATHS]
    enc = msgspec.json.Encoder()
    rows: list[tuple[float, int, bytes, bytes]] = []
    n = i = 0
    while n < n_events:
        path = rnd.choices(paths, weights)[0]
        oid = f"ORD-{today:%Y%m%d}-{i:07d}"
        strat = rnd.choice(STRATEGIES)
        sym = f"NSE:SYM{rnd.randrange(300)}"
        t = open_ + rnd.uniform(0, 22_500)
        for seq, st in enumerate(path, 1):
            t += rnd.uniform(0.005, 2.0)
            filled = 10 if st == "FILLED" else (4 if st == "PARTIALLY_FILLED" else 0)
            ev = {"order_id": oid, "seq": seq,
                  "ts": datetime.fromtimestamp(t, ist).isoformat(timespec="milliseconds"),
                  "status": st, "strategy": strat, "symbol": sym, "side": "BUY",
                  "quantity": 10, "filled_quantity": filled, "price": 1500.5}
            rows.append((t, n, oid.encode(), enc.encode(ev)))
            n += 1
        i += 1
    rows.sort()
    return [(k, v) for _, _, k, v in rows[:n_events]]


def produce(cfg, topic: str, msgs) -> float:
    p = Producer(client_conf(cfg, **{"linger.ms": 20, "batch.num.messages": 10000,
                                     "queue.buffering.max.messages": 1_000_000,
                                     "compression.type": "lz4"}))
    t0 = time.perf_counter()
    for k, v in msgs:
        while True:
            try:
                p.produce(topic, v, key=k)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0
    return time.perf_counter() - t0


def anchor(cfg, topic: str, partitions: int, n: int) -> tuple[float, float]:
    """(wall s, CPU s of the process) for a bare consume + contract decode of the topic."""
    # same librdkafka settings as the exporter's consumer, so the ratio measures our Python
    c = Consumer(client_conf(cfg, **{"group.id": f"bench-anchor-{uuid.uuid4().hex[:6]}",
                                     "enable.auto.commit": False,
                                     "queued.max.messages.kbytes": 16384}))
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    decode = contracts.decoder("order_events").decode
    got = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while got < n:
        for m in c.consume(num_messages=2000, timeout=1.0):
            if m.error() is None:
                decode(m.value())
                got += 1
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    c.close()
    return dt, cpu


class TimedLoop(OmsConsumeLoop):
    """The exporter's loop, stamped: first assignment -> every partition LIVE."""

    t_assign: float | None = None
    t_ready: float | None = None
    c_assign = c_ready = 0.0
    events_at_ready = 0

    def _on_assign(self, consumer, partitions):
        if self.t_assign is None:
            self.t_assign, self.c_assign = time.perf_counter(), time.process_time()
        super()._on_assign(consumer, partitions)

    def _handle(self, msgs):
        super()._handle(msgs)
        if self.t_ready is None and self.book.parts and self.book.ready:
            self.t_ready, self.c_ready = time.perf_counter(), time.process_time()
            self.events_at_ready = sum(pb.events for pb in self.book.parts.values())
            self.app.stop_event.set()


def hot_path(cfg) -> tuple[float, float, int]:
    cfg = replace(cfg, oms_lifecycle=replace(cfg.oms_lifecycle,
                                             group_id=f"bench-oms-{uuid.uuid4().hex[:6]}"))
    app, _, book = build(cfg, listen="127.0.0.1:0", env={})
    loop = TimedLoop(cfg, book)
    app.serve(loop, signals=False)
    assert loop.t_ready is not None and loop.t_assign is not None
    return loop.t_ready - loop.t_assign, loop.c_ready - loop.c_assign, loop.events_at_ready


def real_process(cfg_path: Path, cpu: int) -> tuple[float, int, int]:
    """(seconds exec -> READY=1, VmRSS kB, VmHWM kB) of the real exporter process."""
    with tempfile.TemporaryDirectory() as d:
        sock_path = os.path.join(d, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(sock_path)
        sock.settimeout(1.0)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env["NOTIFY_SOCKET"] = sock_path
        t0 = time.perf_counter()
        proc = subprocess.Popen(["taskset", "-c", str(cpu), str(REPO / ".venv/bin/tradeops"),
                                 "--config", str(cfg_path), "--log-level", "WARNING",
                                 "exporter", "oms-lifecycle"], env=env)
        try:
            ready = None
            while ready is None and time.perf_counter() - t0 < 120:
                if proc.poll() is not None:
                    raise SystemExit(f"exporter exited with {proc.returncode}")
                try:
                    data = sock.recv(4096).decode()
                except TimeoutError:
                    continue
                if "READY=1" in data.split("\n"):
                    ready = time.perf_counter() - t0
            if ready is None:
                raise SystemExit("exporter not READY within 120 s")
            status = Path(f"/proc/{proc.pid}/status").read_text()
            kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in status.splitlines()
                  if ln.startswith(("VmRSS", "VmHWM"))}
            return ready, kb["VmRSS"], kb["VmHWM"]
        finally:
            proc.terminate()
            proc.wait(20)
            sock.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--cpu", type=int, default=0, help="the one CPU everything is pinned to")
    args = ap.parse_args()
    base = config_mod.load(os.environ.get("TRADEOPS_CONFIG", str(DEV_CONFIG)))
    topic = f"bench.oms.order_events.{uuid.uuid4().hex[:8]}"
    cfg = replace(base, topics=replace(base.topics, order_events=topic,
                                       partitions=args.partitions))
    admin = AdminClient(client_conf(cfg))
    try:
        admin.create_topics([NewTopic(topic, num_partitions=args.partitions,
                                      replication_factor=1)])[topic].result(30)
    except KafkaException as e:
        raise SystemExit(f"bench: Kafka at {cfg.kafka.bootstrap_servers}: cannot create "
                         f"{topic}: {e.args[0].str()} (is `make up-core` running?)") from None
    try:
        t = time.perf_counter()
        msgs = simulated_day(args.events)
        print(f"generated {len(msgs):,} events in {time.perf_counter() - t:.1f} s")
        print(f"produced in {produce(cfg, topic, msgs):.1f} s")
        del msgs
        os.sched_setaffinity(0, {args.cpu})
        print(f"pinned to CPU {args.cpu}; {args.runs} runs each, interleaved, best of")
        anchors, hots, a_cpu, h_cpu = [], [], [], []
        for _ in range(args.runs):
            dt, cpu = anchor(cfg, topic, args.partitions, args.events)
            anchors.append(dt)
            a_cpu.append(cpu)
            dt, cpu, n = hot_path(cfg)
            assert n == args.events, f"hot path applied {n} of {args.events} events"
            hots.append(dt)
            h_cpu.append(cpu)
        a, h = min(anchors), min(hots)
        ra, rh = args.events / a, args.events / h
        print(f"anchor  bare consume+decode : {ra:12,.0f} events/s  ({a:.2f} s)")
        print(f"hot path (rebuild to LIVE)  : {rh:12,.0f} events/s  ({h:.2f} s)")
        print(f"ratio hot/anchor            : {rh / ra:.2f}   (target >= 0.50; "
              f"{'OK' if rh / ra >= 0.5 else 'MISSED'})")
        print(f"hot path events/s >= 100k   : {'OK' if rh >= 100_000 else 'MISSED'}")
        ca, ch = min(a_cpu) / args.events * 1e6, min(h_cpu) / args.events * 1e6
        print(f"CPU per event (all threads) : anchor {ca:.2f} us, hot path {ch:.2f} us "
              f"(ratio {ca / ch:.2f})")
        with tempfile.TemporaryDirectory() as d:
            cfg_path = Path(d) / "tradeops.toml"
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            proc_cfg = replace(cfg, source="", oms_lifecycle=replace(
                cfg.oms_lifecycle, listen=f"127.0.0.1:{port}",
                group_id=f"bench-oms-{uuid.uuid4().hex[:6]}"))
            cfg_path.write_text(config_mod.to_toml(config_mod.redacted(proc_cfg)))
            ready, rss, hwm = real_process(cfg_path, args.cpu)
        print(f"real process exec -> READY=1 : {ready:.2f} s for {args.events:,} events "
              f"(target < 15 s; {'OK' if ready < 15 else 'MISSED'})")
        print(f"RSS after the day           : {rss / 1024:.1f} MB (peak {hwm / 1024:.1f} MB; "
              f"target < 150 MB; {'OK' if hwm < 150 * 1024 else 'MISSED'})")
    finally:
        for fut in admin.delete_topics([topic], operation_timeout=30).values():
            try:
                fut.result(30)
            except KafkaException as e:
                print(f"bench: could not delete {topic}: {e.args[0].str()}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
