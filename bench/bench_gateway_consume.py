"""gateway-oms consume rate from the real broker vs a bare confluent-kafka consume + decode.

Produces N gateway events (mixed kinds, 3 partitions) to a fresh topic on the local stack,
then measures, in the same run:
- anchor: a bare ``Consumer.consume(num_messages=1000)`` loop that decodes every message
  with ``contracts.decode`` and does nothing else;
- ours: the exporter framework's ``ConsumeLoop`` (decode, handler, offset tracking, commits,
  probes, watchdog tick) with the gateway-oms ``GatewayOmsState`` handler updating the
  prometheus_client counters/histogram.
Both read the same topic from the beginning with their own group. Prints events/s and the
ratio ours/anchor.

    .venv/bin/python bench/bench_gateway_consume.py [--events 200000]
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tradeops import config as config_mod
from tradeops.contracts import GatewayEvent, decode, encode
from tradeops.exporters.gateway_oms import build
from tradeops.kafka_admin import client_conf

replace = msgspec.structs.replace
KINDS = ["order_sent", "order_ack", "fill", "order_sent", "order_ack", "fill", "reject",
         "rate_limited", "error", "reconnect"]


def make_events(n: int) -> list[bytes]:
    t0 = datetime(2026, 12, 3, 3, 45, tzinfo=UTC)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        out.append(encode(GatewayEvent(
            ts=t0 + timedelta(milliseconds=i), gateway="zerodha", event=kind, order_id=f"o{i // 3}",
            latency_ms=12.5 if kind == "order_ack" else None,
            endpoint="/orders/regular/123" if kind == "rate_limited" else "",
            quantity=10 if kind == "fill" else None)))
    return out


def bare(cfg, topic: str, n: int) -> float:
    c = Consumer(client_conf(cfg, **{"group.id": "bench-bare-" + uuid.uuid4().hex[:6],
                                     "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    c.subscribe([topic])
    seen = 0
    t0 = None
    while seen < n:
        msgs = c.consume(num_messages=1000, timeout=1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                decode("gateway_events", m.value())
                seen += 1
    took = time.perf_counter() - t0
    c.close()
    return n / took


def ours(cfg, n: int) -> float:
    sec = replace(cfg.gateway_oms, group_id="bench-ours-" + uuid.uuid4().hex[:6], lag_groups=[],
                  gateways=["zerodha"])
    app, loop, _ = build(replace(cfg, gateway_oms=sec), listen="127.0.0.1:0",
                         auto_offset_reset="earliest", env={})
    t = threading.Thread(target=app.serve, args=(loop,), kwargs={"signals": False}, daemon=True)
    t.start()
    while loop.processed == 0:
        time.sleep(0.001)
    t0 = time.perf_counter()
    start = loop.processed
    while loop.processed < n:
        time.sleep(0.002)
    took = time.perf_counter() - t0
    app.stop_event.set()
    t.join(20)
    fills = app.registry.get_sample_value("gateway_fills_total", {"gateway": "zerodha"})
    assert fills == sum(1 for i in range(n) if KINDS[i % len(KINDS)] == "fill"), fills
    return (n - start) / took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    args = ap.parse_args()
    cfg = config_mod.load("infra/dev/tradeops.toml")
    suffix = uuid.uuid4().hex[:8]
    topics = {"gateway_events": f"bench.gateway.events.{suffix}", "heartbeats": f"bench.hb.{suffix}"}
    cfg = replace(cfg, topics=replace(cfg.topics, **topics))
    admin = AdminClient(client_conf(cfg))
    for f in admin.create_topics([NewTopic(t, 3, 1) for t in topics.values()]).values():
        f.result(15)
    try:
        p = Producer(client_conf(cfg, **{"linger.ms": 20, "batch.num.messages": 10000}))
        for i, body in enumerate(make_events(args.events)):
            while True:
                try:
                    p.produce(topics["gateway_events"], body, key=str(i % 3).encode())
                    break
                except BufferError:
                    p.poll(0.05)
        assert p.flush(60) == 0
        anchor = bare(cfg, topics["gateway_events"], args.events)
        rate = ours(cfg, args.events)
        print(f"events: {args.events} gateway events, 3 partitions")
        print(f"anchor bare consume + decode: {anchor:,.0f} events/s")
        print(f"ours ConsumeLoop + gateway-oms handler: {rate:,.0f} events/s")
        print(f"ratio ours/anchor: {rate / anchor:.2f}x")
    finally:
        for f in admin.delete_topics(list(topics.values()), operation_timeout=10).values():
            with contextlib.suppress(Exception):  # best-effort cleanup
                f.result(15)


if __name__ == "__main__":
    main()
