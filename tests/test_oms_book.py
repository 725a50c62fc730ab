"""The OMS order book (pure logic, no services): transitions through the contract's table,
per-order seq handling, stuck detection, terminal eviction, histograms, day rollover."""

from __future__ import annotations

import json
from collections import Counter, deque
from datetime import UTC, datetime, timedelta

import pytest

from tradeops.contracts import OrderEvent, decode
from tradeops.exporters import oms_book as ob
from tradeops.exporters.oms_book import (
    ALLOWED_PAIRS,
    IDX,
    INVALID_PAIRS,
    NS,
    STATUS_NAMES,
    BookConfig,
    OrderBook,
)
from tradeops.order_states import NEW, TRANSITIONS

T0 = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)  # 09:30 IST
NOW = T0.timestamp() + 3600.0


def conf(**kw) -> BookConfig:
    return BookConfig(
        kw.pop("strategies", ["momentum", "pairs"]),
        kw.pop("stuck_after_s", {"SUBMITTED": 5.0, "CANCEL_PENDING": 10.0, "CREATED": 5.0}),
        kw.pop("terminal_grace_s", 300.0),
    )


def book(**kw) -> OrderBook:
    return OrderBook(conf(**kw), clock=lambda: kw.get("now", NOW))


def ev(oid: str, seq: int, status: str, t: float = 0.0, strategy: str = "momentum",
       filled: int = 0) -> OrderEvent:
    return OrderEvent(order_id=oid, seq=seq, ts=T0 + timedelta(seconds=t), status=status,
                      strategy=strategy, symbol="NSE:INFY", side="BUY", quantity=10,
                      filled_quantity=filled)


def path_to(status: str) -> list[str]:
    """Shortest list of statuses NEW -> ... -> status allowed by the contract's table."""
    q = deque([(NEW, [])])
    seen = {NEW}
    while q:
        cur, p = q.popleft()
        if cur == status:
            return p
        for nxt in sorted(TRANSITIONS[cur]):
            if nxt not in seen:
                seen.add(nxt)
                q.append((nxt, [*p, nxt]))
    raise AssertionError(f"{status} unreachable")


def feed(b: OrderBook, events, partition: int = 0) -> None:
    pb = b.partition(partition)
    for e in events:
        pb.apply(e)


def trans_counter(t) -> Counter:
    return Counter({(STATUS_NAMES[i // NS], STATUS_NAMES[i % NS]): n
                    for i, n in enumerate(t.trans) if n})


def invalid_counter(t) -> Counter:
    return Counter({(STATUS_NAMES[i // NS], STATUS_NAMES[i % NS]): n
                    for i, n in enumerate(t.invalid) if n})


def test_table_is_the_contracts():
    allowed = {(STATUS_NAMES[f], STATUS_NAMES[t]) for f, t in ALLOWED_PAIRS}
    assert allowed == {(f, t) for f, tos in TRANSITIONS.items() for t in tos}
    assert len(ALLOWED_PAIRS) + len(INVALID_PAIRS) == NS * (NS - 1)


def test_every_allowed_transition_exact_counts():
    b = book()
    expected = Counter()
    for n, (f, t) in enumerate(ALLOWED_PAIRS):
        frm, to = STATUS_NAMES[f], STATUS_NAMES[t]
        statuses = [*path_to(frm), to] if frm != NEW else [to]
        prev = NEW
        for seq, st in enumerate(statuses, 1):
            feed(b, [ev(f"o{n}", seq, st, t=seq)])
            expected[(prev, st)] += 1
            prev = st
    tot = b.totals()
    assert trans_counter(tot) == expected
    assert not invalid_counter(tot)
    assert tot.duplicates == tot.out_of_order == tot.gaps == 0
    assert tot.events == sum(expected.values())
    # completed = allowed transitions into a terminal status
    for st in ("FILLED", "CANCELLED", "REJECTED", "EXPIRED", "RISK_REJECTED"):
        assert tot.completed(IDX[st]) == sum(n for (_, to), n in expected.items() if to == st)


def test_every_invalid_transition_counted_and_not_applied():
    b = book()
    expected_invalid = Counter()
    for n, (f, t) in enumerate(INVALID_PAIRS):
        frm, to = STATUS_NAMES[f], STATUS_NAMES[t]
        statuses = path_to(frm)
        for seq, st in enumerate(statuses, 1):
            feed(b, [ev(f"x{n}", seq, st, t=seq)])
        feed(b, [ev(f"x{n}", len(statuses) + 1, to, t=99)])
        expected_invalid[(frm, to)] += 1
        # guarded: the order keeps its status
        o = b.parts[0].orders[f"x{n}"]
        assert STATUS_NAMES[o.status] == frm
    tot = b.totals()
    assert invalid_counter(tot) == expected_invalid
    assert len(expected_invalid) == len(INVALID_PAIRS)


def test_duplicates_out_of_order_and_gaps():
    b = book()
    feed(b, [
        ev("a", 1, "CREATED", 0), ev("a", 2, "RISK_APPROVED", 1),
        ev("a", 2, "RISK_APPROVED", 1),  # duplicate of the newest
        ev("a", 1, "CREATED", 0),  # duplicate of an older one
        ev("a", 5, "OPEN", 5),  # gap (3, 4 missing); RISK_APPROVED -> OPEN is invalid
        ev("a", 3, "SUBMITTED", 3),  # late: out of order, not applied
        ev("a", 3, "SUBMITTED", 3),  # the late one again: duplicate
        ev("a", 6, "CANCELLED", 6),  # RISK_APPROVED -> CANCELLED applied
    ])
    tot = b.totals()
    assert (tot.duplicates, tot.out_of_order, tot.gaps, tot.events) == (3, 1, 1, 8)
    assert trans_counter(tot) == Counter({(NEW, "CREATED"): 1, ("CREATED", "RISK_APPROVED"): 1,
                                          ("RISK_APPROVED", "CANCELLED"): 1})
    assert invalid_counter(tot) == Counter({("RISK_APPROVED", "OPEN"): 1})


def test_first_event_gap_and_invalid_first_status():
    b = book()
    feed(b, [ev("m", 3, "SUBMITTED", 0),  # manual order first seen at seq 3: a gap
             ev("z", 1, "OPEN", 0), ev("z", 1, "OPEN", 0)])  # NEW -> OPEN invalid, then dup
    tot = b.totals()
    assert tot.gaps == 1 and tot.duplicates == 1
    assert invalid_counter(tot) == Counter({(NEW, "OPEN"): 1})
    assert tot.orders[IDX["SUBMITTED"]] == 1 and tot.orders[IDX["OPEN"]] == 0


def test_orders_gauge_tracks_live_statuses():
    b = book()
    feed(b, [ev("a", 1, "CREATED"), ev("b", 1, "CREATED"), ev("b", 2, "RISK_APPROVED"),
             ev("c", 1, "SUBMITTED"), ev("c", 2, "OPEN"), ev("c", 3, "OPEN", filled=4),
             ev("d", 1, "SUBMITTED"), ev("d", 2, "FILLED")])
    tot = b.totals()
    live = {STATUS_NAMES[i]: tot.orders[i] for i in ob.LIVE_IDX if tot.orders[i]}
    assert live == {"CREATED": 1, "RISK_APPROVED": 1, "PARTIALLY_FILLED": 1}
    assert tot.completed(IDX["FILLED"]) == 1


def test_kite_statuses_through_the_decoder():
    b = book()
    base = {"order_id": "k1", "strategy": "pairs", "symbol": "NSE:TCS", "side": "SELL",
            "quantity": 10, "ts": "2026-12-03T09:30:00+05:30"}
    raw = [("PUT ORDER REQ RECEIVED", 0), ("OPEN", 0), ("OPEN", 4), ("MODIFY PENDING", 4),
           ("OPEN", 4), ("CANCEL PENDING", 4), ("COMPLETE", 10)]
    events = [decode("order_events", json.dumps({**base, "seq": i, "status": s,
                                                 "filled_quantity": q}).encode())
              for i, (s, q) in enumerate(raw, 1)]
    feed(b, events)
    assert trans_counter(b.totals()) == Counter({
        (NEW, "SUBMITTED"): 1, ("SUBMITTED", "OPEN"): 1, ("OPEN", "PARTIALLY_FILLED"): 1,
        ("PARTIALLY_FILLED", "MODIFY_PENDING"): 1, ("MODIFY_PENDING", "PARTIALLY_FILLED"): 1,
        ("PARTIALLY_FILLED", "CANCEL_PENDING"): 1, ("CANCEL_PENDING", "FILLED"): 1})


def test_latency_histograms_from_event_time():
    b = book()
    feed(b, [ev("a", 1, "SUBMITTED", 0.0), ev("a", 2, "OPEN", 0.02), ev("a", 3, "TRIGGER_PENDING", 1),
             ev("a", 4, "FILLED", 2.0),
             ev("b", 1, "CREATED", 0), ev("b", 2, "RISK_APPROVED", 0),
             ev("b", 3, "SUBMITTED", 10.0), ev("b", 4, "TRIGGER_PENDING", 13.0),
             ev("c", 1, "SUBMITTED", 0), ev("c", 2, "FILLED", 400.0),  # fill without ack
             ev("d", 1, "OPEN", 0)])  # invalid first event: no observation
    tot = b.totals()
    assert tot.ack.count == 2 and tot.ack.sum == pytest.approx(3.02)
    ack = dict(tot.ack.cumulative())
    assert ack["0.01"] == 0 and ack["0.025"] == 1 and ack["2.5"] == 1 and ack["5.0"] == 2
    assert ack["+Inf"] == 2
    assert tot.fill.count == 2 and tot.fill.sum == pytest.approx(402.0)
    fill = dict(tot.fill.cumulative())
    assert fill["1.0"] == 0 and fill["2.5"] == 1 and fill["300.0"] == 1 and fill["900.0"] == 2


def test_rejects_by_strategy_fold_unknown_into_other():
    b = book(strategies=["momentum", "pairs"])
    feed(b, [ev("a", 1, "CREATED", strategy="momentum"), ev("a", 2, "RISK_REJECTED", strategy="momentum"),
             ev("b", 1, "SUBMITTED", strategy="pairs"), ev("b", 2, "REJECTED", strategy="pairs"),
             ev("c", 1, "SUBMITTED", strategy="manual-x"), ev("c", 2, "REJECTED", strategy="manual-x"),
             ev("d", 1, "SUBMITTED", strategy="zzz"), ev("d", 2, "REJECTED", strategy="zzz")])
    r = b.totals().rejects
    assert r == {("momentum", IDX["RISK_REJECTED"]): 1, ("pairs", IDX["REJECTED"]): 1,
                 ("other", IDX["REJECTED"]): 2}


def test_stuck_by_status_threshold():
    # SUBMITTED threshold 5 s, CANCEL_PENDING 10 s, OPEN has none
    b = book(now=T0.timestamp() + 100.0)
    feed(b, [ev("old", 1, "SUBMITTED", 0.0),  # 100 s in SUBMITTED: stuck
             ev("new", 1, "SUBMITTED", 97.0),  # 3 s: not stuck
             ev("cp", 1, "SUBMITTED", 0), ev("cp", 2, "OPEN", 1), ev("cp", 3, "CANCEL_PENDING", 89.0),
             ev("op", 1, "SUBMITTED", 0), ev("op", 2, "OPEN", 1)])  # OPEN: no threshold
    tot = b.totals()
    assert tot.stuck[IDX["SUBMITTED"]] == 1 and tot.stuck[IDX["CANCEL_PENDING"]] == 1
    assert sum(tot.stuck) == 2
    rows = b.orders_json(stuck_only=True)
    assert [(r["order_id"], r["status"], r["age_s"]) for r in rows] == [
        ("old", "SUBMITTED", 100.0), ("cp", "CANCEL_PENDING", 11.0)]
    assert {r["order_id"] for r in b.orders_json()} == {"old", "new", "cp", "op"}


def test_self_transition_keeps_the_age():
    b = book(now=T0.timestamp() + 50.0, stuck_after_s={"OPEN": 30.0})
    feed(b, [ev("a", 1, "SUBMITTED", 0), ev("a", 2, "OPEN", 1), ev("a", 3, "OPEN", 40)])
    assert b.totals().stuck[IDX["OPEN"]] == 1


def _day(n_orders: int, grace: float) -> OrderBook:
    b = book(terminal_grace_s=grace)
    pb = b.partition(0)
    for i in range(n_orders):
        t = i * 2.0
        for seq, st in enumerate(["CREATED", "RISK_APPROVED", "SUBMITTED", "OPEN", "FILLED"], 1):
            pb.apply(ev(f"o{i}", seq, st, t + seq * 0.1))
        pb.evict()
    # late and redelivered events for early orders, after they may have been evicted
    pb.apply(ev("o0", 5, "FILLED", 5000))  # duplicate
    pb.apply(ev("o1", 7, "CANCELLED", 5000))  # gap + terminal -> CANCELLED invalid
    pb.apply(ev("o1", 6, "OPEN", 5000))  # out of order
    pb.apply(ev("o1", 7, "CANCELLED", 5000))  # duplicate
    pb.evict()
    return b


def _metric_view(t) -> tuple:
    return (t.trans, t.invalid, t.rejects, t.orders, t.events, t.duplicates, t.out_of_order,
            t.gaps, t.last_ts, t.ack.counts, t.fill.counts, t.completed(IDX["FILLED"]))


def test_eviction_never_changes_a_metric():
    kept = _day(500, grace=1e9)
    evicted = _day(500, grace=10.0)
    assert len(kept.parts[0].orders) == 500 and not kept.parts[0].tombstones
    assert len(evicted.parts[0].orders) < 20 and len(evicted.parts[0].tombstones) > 480
    assert _metric_view(kept.totals()) == _metric_view(evicted.totals())
    t = evicted.totals()
    assert (t.duplicates, t.out_of_order, t.gaps) == (2, 1, 1)
    assert invalid_counter(t) == Counter({("FILLED", "CANCELLED"): 1})


def test_huge_seq_is_bounded_and_still_ordered():
    b = book()
    feed(b, [ev("a", 1, "SUBMITTED"), ev("a", 10**12, "OPEN"), ev("a", 10**12, "OPEN"),
             ev("a", 5, "FILLED")])
    tot = b.totals()
    assert (tot.gaps, tot.duplicates, tot.out_of_order) == (1, 1, 1)
    assert b.parts[0].orders["a"].seen.bit_length() <= ob.SEQ_BITS


def test_partitions_sum_and_rebuilding_ones_are_not_reported():
    b = book()
    feed(b, [ev("a", 1, "CREATED")], partition=0)
    feed(b, [ev("b", 1, "CREATED")], partition=1)
    b.add_partition(2, rebuild_until=10)
    feed(b, [ev("c", 1, "CREATED")], partition=2)
    t = b.totals()
    assert t.orders[IDX["CREATED"]] == 2
    assert (t.partitions_live, t.partitions_rebuilding) == (2, 1)
    assert not b.ready
    b.parts[2].live = True
    assert b.totals().orders[IDX["CREATED"]] == 3 and b.ready
    b.drop_partition(0)
    assert b.totals().orders[IDX["CREATED"]] == 2


def test_day_window_is_ist_midnight():
    day = ob.DayWindow("Asia/Kolkata")
    # 2026-12-03 20:00 UTC is 2026-12-04 01:30 IST
    start, end = day.bounds_ms(int(datetime(2026, 12, 3, 20, 0, tzinfo=UTC).timestamp() * 1000))
    assert datetime.fromtimestamp(start / 1000, UTC) == datetime(2026, 12, 3, 18, 30, tzinfo=UTC)
    assert end - start == 86_400_000


def test_roll_day_starts_from_zero():
    b = book()
    pb = b.partition(0)
    pb.apply(ev("a", 1, "CREATED"))
    pb.roll_day(pb.day_end_ms + 1000)
    t = b.totals()
    assert t.events == 0 and sum(t.trans) == 0 and not pb.orders
    assert pb.day_start_ms < pb.day_end_ms


def test_bad_stuck_config_names_the_status():
    with pytest.raises(ValueError, match="'FILLED' is not a non-terminal status"):
        conf(stuck_after_s={"FILLED": 1.0})


def test_epoch_seconds_equals_timestamp():
    from datetime import timezone
    from zoneinfo import ZoneInfo

    rnd = __import__("random").Random(5)
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-4)),
             ZoneInfo("Europe/London")]  # the last one: not fixed-offset -> fallback
    for _ in range(2000):
        tz = rnd.choice(zones)
        d = datetime(2026, 1, 1, tzinfo=tz) + timedelta(seconds=rnd.uniform(0, 365 * 86400))
        assert ob.epoch_seconds(d) == pytest.approx(d.timestamp(), abs=1e-6)
