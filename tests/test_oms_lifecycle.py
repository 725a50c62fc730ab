"""oms-lifecycle exporter against the real local Kafka (`kafka_cfg`: unique topics per test):
scripted sequences -> exact metric values, restart mid-stream -> identical metrics after the
rebuild, two instances + rebalances -> exact sums, /orders and `tradeops oms orders`."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition

from tradeops.cli import cli
from tradeops.contracts import decode
from tradeops.exporters.oms_book import ALLOWED_PAIRS, BookConfig, OrderBook, Totals
from tradeops.exporters.oms_lifecycle import OmsConsumeLoop, build, build_families
from tradeops.kafka_admin import client_conf
from waiting import wait_for

pytestmark = pytest.mark.integration
replace = msgspec.structs.replace

# one fixed "now" per test run: record timestamps, event times and the exporters' clock all
# derive from it, so a run across IST midnight cannot split "today"
NOW = time.time()
NOW_MS = int(NOW * 1000)
EV_T0 = datetime.fromtimestamp(NOW, UTC) - timedelta(seconds=600)


def unique_group(cfg):
    return replace(cfg, oms_lifecycle=replace(cfg.oms_lifecycle,
                                              group_id=f"t-oms-{uuid.uuid4().hex[:8]}"))


def order(oid, seq, status, t=0.0, strategy="momentum", filled=0, **extra) -> dict:
    return {"order_id": oid, "seq": seq, "ts": (EV_T0 + timedelta(seconds=t)).isoformat(),
            "status": status, "strategy": strategy, "symbol": "NSE:INFY", "side": "BUY",
            "quantity": 10, "filled_quantity": filled, **extra}


def produce(cfg, items) -> None:
    """items: dicts (JSON, keyed by order_id) or (key, raw bytes | None) tuples."""
    p = Producer(client_conf(cfg, **{"linger.ms": 5}))
    topic = cfg.topics.order_events
    for it in items:
        if isinstance(it, dict):
            p.produce(topic, json.dumps(it).encode(), key=it["order_id"].encode(), timestamp=NOW_MS)
        else:
            key, raw = it
            p.produce(topic, raw, key=key.encode(), timestamp=NOW_MS)
        p.poll(0)
    assert p.flush(15) == 0


@contextmanager
def running(cfg, loop_cls=None, **kw):
    app, loop, book = build(cfg, listen="127.0.0.1:0", clock=lambda: NOW, env={}, **kw)
    if loop_cls is not None:
        loop = loop_cls(cfg, book, **kw)
    t = threading.Thread(target=app.serve, args=(loop,), kwargs={"signals": False}, daemon=True)
    t.start()
    try:
        wait_for(lambda: app.state.name == "RUNNING", 40, "READY")
        yield app, loop, book
    finally:
        app.stop_event.set()
        t.join(15)
        assert not t.is_alive()


def val(app, name, **labels):
    return app.registry.get_sample_value(name, labels)


def committed_offsets(cfg) -> dict[int, int]:
    c = Consumer(client_conf(cfg, **{"group.id": cfg.oms_lifecycle.group_id}))
    try:
        tps = [TopicPartition(cfg.topics.order_events, p) for p in range(cfg.topics.partitions)]
        return {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
    finally:
        c.close()


def consumed(loop) -> int:
    return loop.processed


SKIP = ("oms_scrape_duration_seconds", "oms_up", "oms_partitions", "oms_book_")


def snapshot(app) -> dict[tuple, float]:
    """Every sample of the exporter except the per-instance bookkeeping ones."""
    out = {}
    for fam in app.registry.collect():
        for s in fam.samples:
            if not s.name.startswith(SKIP):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


SCRIPT = [
    # a Kite-status order from strategy pairs: PUT ORDER REQ RECEIVED -> OPEN -> partial -> COMPLETE
    order("k1", 1, "PUT ORDER REQ RECEIVED", 0.0, "pairs"),
    order("k1", 2, "OPEN", 0.04, "pairs"),
    order("k1", 3, "OPEN", 1.0, "pairs", filled=4),
    order("k1", 4, "COMPLETE", 2.0, "pairs", filled=10),
    # the full strategy path, with a duplicate and a modification
    order("a", 1, "CREATED", 0.0), order("a", 2, "RISK_APPROVED", 0.1),
    order("a", 3, "SUBMITTED", 0.2), order("a", 3, "SUBMITTED", 0.2),
    order("a", 4, "TRIGGER_PENDING", 0.7), order("a", 5, "MODIFY_PENDING", 1.0),
    order("a", 6, "TRIGGER_PENDING", 1.1),
    # gap (seq 3 lost), then the late seq 3 arrives: out of order
    order("g", 1, "CREATED", 0.0), order("g", 2, "RISK_APPROVED", 0.1),
    order("g", 4, "CANCELLED", 5.0), order("g", 3, "SUBMITTED", 0.2),
    # invalid: fill after cancel; and a risk reject from an unconfigured strategy
    order("c", 1, "SUBMITTED", 0.0, "meanrev"), order("c", 2, "CANCELLED", 1.0, "meanrev"),
    order("c", 3, "FILLED", 2.0, "meanrev"),
    order("r", 1, "CREATED", 0.0, "manual-desk"), order("r", 2, "RISK_REJECTED", 0.1, "manual-desk"),
    # stuck: SUBMITTED 600 s ago (threshold 5 s)
    order("s", 1, "SUBMITTED", 0.0, "breakout"),
    # malformed: not JSON, unknown status, missing field, a tombstone
    ("bad1", b"{not json"),
    ("bad2", json.dumps(order("bad2", 1, "HALF_FILLED")).encode()),
    ("bad3", json.dumps({k: v for k, v in order("bad3", 1, "CREATED").items() if k != "seq"}).encode()),
    ("bad4", None),
]
N_VALID = sum(isinstance(x, dict) for x in SCRIPT)


def test_scripted_sequence_exact_metrics(kafka_cfg, caplog):
    cfg = unique_group(kafka_cfg)
    produce(cfg, SCRIPT)
    topic = cfg.topics.order_events
    with running(cfg) as (app, loop, book):
        wait_for(lambda: consumed(loop) >= len(SCRIPT), 30, "all messages")
        assert val(app, "oms_up", dependency="kafka") == 1.0
        assert val(app, "oms_order_events_total") == N_VALID == 21
        assert val(app, "oms_decode_errors_total", topic=topic) == 4
        assert val(app, "oms_duplicate_events_total") == 1
        assert val(app, "oms_out_of_order_events_total") == 1
        assert val(app, "oms_seq_gap_events_total") == 1
        tr = {("NEW", "SUBMITTED"): 3, ("SUBMITTED", "OPEN"): 1, ("OPEN", "PARTIALLY_FILLED"): 1,
              ("PARTIALLY_FILLED", "FILLED"): 1, ("NEW", "CREATED"): 3,
              ("CREATED", "RISK_APPROVED"): 2, ("RISK_APPROVED", "SUBMITTED"): 1,
              ("SUBMITTED", "TRIGGER_PENDING"): 1, ("TRIGGER_PENDING", "MODIFY_PENDING"): 1,
              ("MODIFY_PENDING", "TRIGGER_PENDING"): 1, ("RISK_APPROVED", "CANCELLED"): 1,
              ("SUBMITTED", "CANCELLED"): 1, ("CREATED", "RISK_REJECTED"): 1}
        samples = {(s.labels["from_status"], s.labels["to_status"]): s.value
                   for fam in app.registry.collect() if fam.name == "oms_order_transitions"
                   for s in fam.samples}
        assert {k: v for k, v in samples.items() if v} == tr
        assert len(samples) == len(ALLOWED_PAIRS) == 54  # every allowed pair pre-initialised
        assert val(app, "oms_order_invalid_transitions_total", from_status="CANCELLED",
                   to_status="FILLED") == 1
        assert val(app, "oms_order_invalid_transitions_total", from_status="FILLED",
                   to_status="CANCELLED") == 0
        assert val(app, "oms_orders", status="TRIGGER_PENDING") == 1
        assert val(app, "oms_orders", status="SUBMITTED") == 1
        assert val(app, "oms_orders", status="OPEN") == 0
        assert val(app, "oms_orders_completed_total", status="FILLED") == 1
        assert val(app, "oms_orders_completed_total", status="CANCELLED") == 2
        assert val(app, "oms_orders_completed_total", status="RISK_REJECTED") == 1
        assert val(app, "oms_orders_completed_total", status="EXPIRED") == 0
        assert val(app, "oms_orders_stuck", status="SUBMITTED") == 1
        assert val(app, "oms_orders_stuck", status="TRIGGER_PENDING") == 0
        assert val(app, "oms_order_rejects_total", strategy="other", status="RISK_REJECTED") == 1
        assert val(app, "oms_order_rejects_total", strategy="momentum", status="REJECTED") == 0
        assert val(app, "oms_time_to_ack_seconds_count") == 2
        assert val(app, "oms_time_to_ack_seconds_sum") == pytest.approx(0.54)
        assert val(app, "oms_time_to_ack_seconds_bucket", le="0.05") == 1
        assert val(app, "oms_time_to_fill_seconds_count") == 1
        assert val(app, "oms_time_to_fill_seconds_sum") == pytest.approx(2.0)
        assert val(app, "oms_last_event_timestamp_seconds") == pytest.approx(EV_T0.timestamp() + 5.0)
        # one log line per malformed message with topic[partition]@offset and the reason
        bad = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
        assert len(bad) == 4 and all(f"{topic}[" in m and "]@" in m for m in bad)
        assert any("unknown order status 'HALF_FILLED'" in m for m in bad)

        # HTTP: /metrics, /healthz, /orders/stuck and the CLI on top of it
        base = f"http://{app.server.address}"
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'oms_orders_stuck{status="SUBMITTED"} 1.0' in text
        health = json.loads(urllib.request.urlopen(base + "/healthz", timeout=5).read())
        assert health["dependencies"] == {"kafka": True}
        stuck = json.loads(urllib.request.urlopen(base + "/orders/stuck", timeout=5).read())
        assert [(o["order_id"], o["status"], o["strategy"]) for o in stuck["orders"]] == [
            ("s", "SUBMITTED", "breakout")]
        everything = json.loads(urllib.request.urlopen(base + "/orders", timeout=5).read())
        assert {o["order_id"] for o in everything["orders"]} == {"a", "s"}

        res = CliRunner().invoke(cli, ["oms", "orders", "--stuck", "--url", base])
        assert res.exit_code == 0, res.output
        lines = res.output.strip().splitlines()
        assert lines[0].split() == ["ORDER_ID", "STRATEGY", "SYMBOL", "STATUS", "AGE_S"]
        assert lines[1].split()[:4] == ["s", "breakout", "NSE:INFY", "SUBMITTED"]
        assert float(lines[1].split()[4]) == pytest.approx(600.0, abs=1)
        res = CliRunner().invoke(cli, ["oms", "orders", "--stuck", "--json", "--url", base])
        assert [o["order_id"] for o in json.loads(res.output)] == ["s"]


def random_day(n_orders: int, seed: int, strategies=("momentum", "meanrev", "pairs", "x")):
    """A mix of lifecycles with duplicates, gaps, late events and invalid ones."""
    rnd = random.Random(seed)
    paths = [
        ["CREATED", "RISK_APPROVED", "SUBMITTED", "OPEN", "PARTIALLY_FILLED", "FILLED"],
        ["CREATED", "RISK_APPROVED", "SUBMITTED", "OPEN", "CANCEL_PENDING", "CANCELLED"],
        ["CREATED", "RISK_REJECTED"],
        ["SUBMITTED", "REJECTED"],
        ["CREATED", "RISK_APPROVED", "SUBMITTED", "TRIGGER_PENDING", "OPEN", "FILLED"],
        ["CREATED", "RISK_APPROVED", "SUBMITTED"],  # left stuck
        ["SUBMITTED", "OPEN", "FILLED", "CANCELLED"],  # invalid at the end
    ]
    out = []
    for i in range(n_orders):
        oid = f"o{seed}-{i}"
        strat = rnd.choice(strategies)
        t = rnd.uniform(0, 500)
        evs = [order(oid, s, st, t + s * rnd.uniform(0.01, 0.5), strat)
               for s, st in enumerate(rnd.choice(paths), 1)]
        r = rnd.random()
        if r < 0.05:
            evs.append(evs[rnd.randrange(len(evs))])  # duplicate
        elif r < 0.10 and len(evs) > 2:
            evs[1], evs[2] = evs[2], evs[1]  # gap + out of order
        out.extend(evs)
    return out


def reference(events) -> OrderBook:
    """The expected state: the same events through a bare book, one partition."""
    b = OrderBook(BookConfig(["momentum", "meanrev", "pairs", "breakout"],
                             {"CREATED": 5.0, "RISK_APPROVED": 5.0, "SUBMITTED": 5.0,
                              "MODIFY_PENDING": 10.0, "CANCEL_PENDING": 10.0}, 300.0),
                  clock=lambda: NOW)
    pb = b.partition(0)
    for e in events:
        pb.apply(decode("order_events", json.dumps(e).encode()))
    return b


def expected_samples(book: OrderBook) -> dict[tuple, float]:
    out = {}
    for fam in build_families(book.totals(), ("momentum", "meanrev", "pairs", "breakout", "other")):
        for s in fam.samples:
            if not s.name.startswith(SKIP):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_restart_mid_stream_rebuilds_identical_metrics(kafka_cfg):
    cfg = unique_group(kafka_cfg)
    first, second = random_day(300, 1), random_day(300, 2)
    produce(cfg, first)
    with running(cfg) as (app, loop, _):
        wait_for(lambda: consumed(loop) >= len(first), 30, "first half")
        produce(cfg, second)
        wait_for(lambda: consumed(loop) >= len(first) + len(second), 30, "second half")
        before = snapshot(app)
    # offsets were committed on stop (for lag monitoring; not the resume point)
    assert sum(committed_offsets(cfg).values()) == len(first) + len(second)
    # a fresh process in the same group: rebuilds today from the topic before READY
    with running(cfg) as (app2, loop2, book2):
        assert book2.ready and loop2.processed >= len(first) + len(second)
        after = snapshot(app2)
        # and the stream goes on: nothing lost or doubled across the restart
        third = random_day(200, 3)
        produce(cfg, third)
        total = len(first) + len(second) + len(third)
        wait_for(lambda: val(app2, "oms_order_events_total") == total, 30, "third batch")
        assert book_only(snapshot(app2)) == expected_samples(reference(first + second + third))
    assert after == before
    assert book_only(after) == expected_samples(reference(first + second))
    assert after[("oms_order_events_total", ())] == len(first) + len(second)


BOOK_SAMPLES = {s.name for fam in build_families(Totals(), ("x",)) for s in fam.samples}


def book_only(snap: dict) -> dict:
    """Only the order book's series (not the framework's per-process ones)."""
    return {k: v for k, v in snap.items() if k[0] in BOOK_SAMPLES}


def _sum(snaps: list[dict]) -> dict:
    out: dict = {}
    for s in snaps:
        for k, v in s.items():
            if k[0] == "oms_last_event_timestamp_seconds":
                out[k] = max(out.get(k, 0.0), v)
            else:
                out[k] = out.get(k, 0.0) + v
    return out


def test_two_instances_rebalance_exact_sums(kafka_cfg):
    cfg = unique_group(kafka_cfg)  # 3 partitions
    batch1, batch2, batch3 = random_day(400, 11), random_day(200, 12), random_day(200, 13)
    produce(cfg, batch1)
    with running(cfg) as (a, la, ba):
        wait_for(lambda: la.processed >= len(batch1), 30, "A consumed batch 1")
        assert sorted(ba.parts) == [0, 1, 2]
        with running(cfg) as (b, lb, bb):
            # B joined: the group rebalanced; each partition is owned and LIVE exactly once
            wait_for(lambda: ba.ready and bb.ready and len(ba.parts) + len(bb.parts) == 3
                     and set(ba.parts).isdisjoint(bb.parts), 40, "rebalance")
            assert bb.parts, "B got no partition"
            produce(cfg, batch2)
            want = expected_samples(reference(batch1 + batch2))
            wait_for(lambda: _sum([snapshot(a), snapshot(b)]).get(("oms_order_events_total", ()))
                     == len(batch1) + len(batch2), 30, "batch 2 in both")
            got = _sum([snapshot(a), snapshot(b)])
            assert book_only(got) == want
            # the CLI over both instances lists every open order exactly once
            res = CliRunner().invoke(cli, ["oms", "orders", "--json",
                                           "--url", f"http://{a.server.address}",
                                           "--url", f"http://{b.server.address}"])
            assert res.exit_code == 0, res.output
            ids = [o["order_id"] for o in json.loads(res.output)]
            ref = reference(batch1 + batch2).orders_json()
            assert len(ids) == len(set(ids)) == len(ref) > 0
            assert set(ids) == {o["order_id"] for o in ref}
        # B left: A gets its partitions back, rebuilds them, and alone equals the whole
        wait_for(lambda: sorted(ba.parts) == [0, 1, 2] and ba.ready, 40, "A owns all again")
        produce(cfg, batch3)
        total = len(batch1) + len(batch2) + len(batch3)
        wait_for(lambda: val(a, "oms_order_events_total") == total, 30, "batch 3")
        assert book_only(snapshot(a)) == expected_samples(reference(batch1 + batch2 + batch3))


def test_cli_unreachable_exporter_is_one_line(base_cfg):
    res = CliRunner().invoke(cli, ["oms", "orders", "--url", "http://127.0.0.1:9"],
                             standalone_mode=False)
    assert res.exit_code != 0 or res.exception is not None
    assert "oms-lifecycle exporter at http://127.0.0.1:9" in str(res.exception)


def test_rebuild_ends_at_transaction_markers(kafka_cfg):
    """A transactional OMS producer leaves commit markers at the end of each partition: the
    high watermark is past the last message, and the rebuild must still end (READY)."""
    cfg = unique_group(kafka_cfg)
    events = random_day(200, 31)
    p = Producer(client_conf(cfg, **{"transactional.id": f"t-oms-{uuid.uuid4().hex[:8]}"}))
    p.init_transactions(15)
    p.begin_transaction()
    for e in events:
        p.produce(cfg.topics.order_events, json.dumps(e).encode(), key=e["order_id"].encode(),
                  timestamp=NOW_MS)
    p.commit_transaction(15)
    with running(cfg) as (app, loop, book):
        assert book.ready
        assert val(app, "oms_order_events_total") == len(events)
        assert book_only(snapshot(app)) == expected_samples(reference(events))


class _FallbackLoop(OmsConsumeLoop):
    """The exporter's loop taking its no-offsets_for_times path (as when that request fails)."""

    def _rebuild_starts(self, consumer, parts):
        return self._fallback_starts(parts, self.book.today()[0])


def test_only_todays_records_are_rebuilt_by_both_paths(kafka_cfg):
    cfg = unique_group(kafka_cfg)
    yesterday, today = random_day(60, 41), random_day(80, 42)
    late = order("late-1", 1, "SUBMITTED", 1.0)
    p = Producer(client_conf(cfg))
    for e in yesterday:
        p.produce(cfg.topics.order_events, json.dumps(e).encode(), key=e["order_id"].encode(),
                  timestamp=NOW_MS - 86_400_000)
    for e in today:
        p.produce(cfg.topics.order_events, json.dumps(e).encode(), key=e["order_id"].encode(),
                  timestamp=NOW_MS)
    # stamped yesterday but written after today's records of its partition (same key as
    # one of them): both paths must count it, as offsets_for_times starts before it
    p.produce(cfg.topics.order_events, json.dumps(late).encode(),
              key=today[-1]["order_id"].encode(), timestamp=NOW_MS - 86_400_000)
    assert p.flush(15) == 0
    want = expected_samples(reference(today + [late]))
    with running(cfg) as (app, loop, book):
        assert book.ready
        assert book_only(snapshot(app)) == want
    cfg2 = unique_group(cfg)
    with running(cfg2, loop_cls=_FallbackLoop) as (app2, loop2, book2):
        assert book2.ready
        assert book_only(snapshot(app2)) == want
        assert loop2.processed == len(yesterday) + len(today) + 1  # it did read from the start


def test_every_allowed_and_invalid_transition_through_kafka(kafka_cfg):
    """Each allowed (from, to) pair and each invalid one on its own order, via the broker:
    exact counts for every series of both transition families."""
    from collections import Counter

    from test_oms_book import path_to
    from tradeops.exporters.oms_book import INVALID_PAIRS, STATUS_NAMES

    cfg = unique_group(kafka_cfg)
    events, want_ok, want_bad = [], Counter(), Counter()
    for kind, pairs in (("ok", ALLOWED_PAIRS), ("bad", INVALID_PAIRS)):
        for n, (f, t) in enumerate(pairs):
            frm, to = STATUS_NAMES[f], STATUS_NAMES[t]
            prefix = path_to(frm)
            prev = "NEW"
            for seq, st in enumerate([*prefix, to], 1):
                events.append(order(f"{kind}{n}", seq, st, seq * 0.1))
                if seq <= len(prefix) or kind == "ok":
                    want_ok[(prev, st)] += 1
                    prev = st
            if kind == "bad":
                want_bad[(frm, to)] += 1
    produce(cfg, events)
    with running(cfg) as (app, loop, book):
        assert val(app, "oms_order_events_total") == len(events)
        for fam in app.registry.collect():
            if fam.name in ("oms_order_transitions", "oms_order_invalid_transitions"):
                want = want_ok if fam.name == "oms_order_transitions" else want_bad
                got = {(s.labels["from_status"], s.labels["to_status"]): s.value
                       for s in fam.samples}
                assert {k: v for k, v in got.items() if v} == want
                assert len(got) == (len(ALLOWED_PAIRS) if want is want_ok else len(INVALID_PAIRS))


def test_new_trading_day_restarts_the_partition(kafka_cfg):
    """A record stamped after midnight (record time) starts that partition's day from zero,
    exactly what a fresh start would report; other partitions are untouched. The broker
    refuses future timestamps, so "today" is yesterday for this exporter (its clock)."""
    cfg = unique_group(kafka_cfg)
    day1 = [order("d1", 1, "SUBMITTED", 0.0), order("d1", 2, "OPEN", 0.1)]
    other = [order("x1", 1, "CREATED", 0.0)]
    nextday = order("d2", 1, "SUBMITTED", 1.0)
    p = Producer(client_conf(cfg))
    for e in day1 + other:
        p.produce(cfg.topics.order_events, json.dumps(e).encode(), key=e["order_id"].encode(),
                  timestamp=NOW_MS - 86_400_000)
    assert p.flush(15) == 0
    app, _, book = build(cfg, listen="127.0.0.1:0", clock=lambda: NOW - 86_400, env={})
    loop = OmsConsumeLoop(cfg, book)
    t = threading.Thread(target=app.serve, args=(loop,), kwargs={"signals": False}, daemon=True)
    t.start()
    try:
        wait_for(lambda: app.state.name == "RUNNING", 40, "READY")
        assert val(app, "oms_order_events_total") == 3
        part = next(pb.partition for pb in book.parts.values() if "d1" in pb.orders)
        # same key as d1: same partition; stamped now = the exporter's next day
        p.produce(cfg.topics.order_events, json.dumps(nextday).encode(), key=b"d1",
                  timestamp=NOW_MS)
        assert p.flush(15) == 0
        wait_for(lambda: loop.processed == 4, 20, "the record of the next day")
        pb = book.parts[part]
        assert set(pb.orders) == {"d2"} and pb.events == 1
        assert val(app, "oms_order_transitions_total", from_status="SUBMITTED",
                   to_status="OPEN") == 0
        assert val(app, "oms_order_transitions_total", from_status="NEW",
                   to_status="SUBMITTED") == 1
        x_rolled = "x1" not in next(q for q in book.parts.values() if "x1" in q.orders
                                    or q is pb).orders
        assert val(app, "oms_orders", status="CREATED") == (0 if x_rolled else 1)
    finally:
        app.stop_event.set()
        t.join(15)


class _RecordingLoop(OmsConsumeLoop):
    """Records every offset the group commits (the framework's commit callback)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.commits: list[tuple[int, int]] = []

    def _commit_cb(self, err, partitions):
        if err is None:
            self.commits += [(tp.partition, tp.offset) for tp in partitions
                             if tp.error is None and tp.offset >= 0]
        super()._commit_cb(err, partitions)


def test_rebuild_never_commits_behind_the_group(kafka_cfg):
    """The replay of today starts behind the group's committed offsets; committing replay
    positions would move them backwards (REWIND for the lag monitor): it must not."""
    cfg = unique_group(kafka_cfg)
    events = random_day(300, 51)
    produce(cfg, events)
    with running(cfg) as (_, loop, _):
        wait_for(lambda: loop.processed >= len(events), 30, "all events")
    before = committed_offsets(cfg)
    assert sum(before.values()) == len(events)
    with running(cfg, loop_cls=_RecordingLoop, batch_size=10, commit_every_n=20,
                 commit_every_s=0.01) as (_, loop2, book2):
        assert book2.ready
    assert loop2.commits, "no commit observed: the check would be vacuous"
    for p, off in loop2.commits:
        assert off >= before[p], f"partition {p}: committed {off} < {before[p]}"
    assert committed_offsets(cfg) == before
