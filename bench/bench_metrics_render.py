"""/metrics with 10,000 series: the exporter framework vs prometheus_client's generate_latest.

Anchor (same run): ``generate_latest`` over a plain CollectorRegistry holding the same
10,000 series as labelled ``Gauge`` children. Ours: an :class:`Exporter` whose state is
read at scrape time by a single-flight collector building the same series as
``FastGaugeFamily`` rows (the gateway-oms lag pattern: 100 groups x 25 partitions x 4 families), plus the
framework's own series; measured (a) in-process through the handler's encoder and (b) as
HTTP GETs of /metrics on 127.0.0.1. Targets: HTTP p99 < 50 ms; ours/anchor <= 1.5.

    .venv/bin/python bench/bench_metrics_render.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from tradeops.exporters import Exporter
from tradeops.exporters.render import FastGaugeFamily

GROUPS, PARTITIONS = 100, 25
FAMILIES = [("kafka_consumergroup_lag", 1.0), ("kafka_consumergroup_lag_seconds", 0.5),
            ("kafka_consumergroup_current_offset", 1000.0), ("bench_partition_info", 0.0)]
LABELS = ["consumergroup", "topic", "partition"]


def data():
    return [(f"group-{g:03d}", "oms.order_events", str(p), g * 100 + p)
            for g in range(GROUPS) for p in range(PARTITIONS)]


def plain_registry(rows) -> CollectorRegistry:
    reg = CollectorRegistry()
    for name, scale in FAMILIES:
        gauge = Gauge(name, "bench", LABELS, registry=reg)
        for g, t, p, v in rows:
            gauge.labels(g, t, p).set(v * scale)
    return reg


def our_exporter(rows) -> Exporter:
    app = Exporter("bench", "bench_exporter", "127.0.0.1:0", env={})

    def collect(deadline):
        out = []
        for name, scale in FAMILIES:
            fam = FastGaugeFamily(name, "bench", labels=LABELS)
            for g, t, p, v in rows:
                fam.add_metric([g, t, p], v * scale)
            out.append(fam)
        return out

    app.add_scrape_collector("bench", collect, budget_s=5.0)
    return app


class Loop:
    def run(self, app):
        app.set_up("kafka", True)
        app.ready("bench")
        while not app.stop_event.wait(0.05):
            app.tick()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    rows = data()
    plain = plain_registry(rows)
    app = our_exporter(rows)
    encoder = app.renderer.render  # what the handler serves for text/plain and */*
    series_plain = sum(1 for line in generate_latest(plain).splitlines() if not line.startswith(b"#"))
    series_ours = sum(1 for line in encoder(app.registry).splitlines() if not line.startswith(b"#"))

    t = threading.Thread(target=app.serve, args=(Loop(),), kwargs={"signals": False}, daemon=True)
    t.start()
    while app.server is None:
        time.sleep(0.01)
    conn = http.client.HTTPConnection("127.0.0.1", app.server.port, timeout=10)

    def http_get() -> int:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200
        return len(body)

    size = http_get()
    anchor, ours, over_http = [], [], []
    for _ in range(10):  # warm-up
        generate_latest(plain)
        encoder(app.registry)
    for _ in range(args.rounds):  # interleaved so drift hits both alike
        t0 = time.perf_counter()
        generate_latest(plain)
        t1 = time.perf_counter()
        app.scrape_started()
        encoder(app.registry)
        app._scrape_local.start = None
        t2 = time.perf_counter()
        http_get()
        t3 = time.perf_counter()
        anchor.append(t1 - t0)
        ours.append(t2 - t1)
        over_http.append(t3 - t2)
    conn.close()
    app.stop_event.set()
    t.join(5)

    def ms(x):
        return f"{x * 1000:.1f} ms"

    print(f"series: anchor {series_plain}, ours {series_ours} (incl. the framework's own); "
          f"/metrics body {size / 1024:.0f} KiB; rounds {args.rounds}")
    print(f"anchor generate_latest(plain registry): p50 {ms(statistics.median(anchor))}  p99 {ms(pct(anchor, 0.99))}")
    print(f"ours in-process (scrape-time collector): p50 {ms(statistics.median(ours))}  p99 {ms(pct(ours, 0.99))}")
    print(f"ours over HTTP GET /metrics:              p50 {ms(statistics.median(over_http))}  p99 {ms(pct(over_http, 0.99))}")
    r50 = statistics.median(ours) / statistics.median(anchor)
    r99 = pct(ours, 0.99) / pct(anchor, 0.99)
    h99 = pct(over_http, 0.99) / pct(anchor, 0.99)
    print(f"ratio ours/anchor: p50 {r50:.2f}x  p99 {r99:.2f}x  (HTTP p99 / anchor p99 {h99:.2f}x)  target <= 1.5x")
    print(f"HTTP p99 {ms(pct(over_http, 0.99))}: target < 50 ms -> "
          f"{'met' if pct(over_http, 0.99) < 0.05 else 'NOT met'}")


if __name__ == "__main__":
    main()
