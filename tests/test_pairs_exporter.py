"""pairs exporter against the real Kafka and PostgreSQL (stack_cfg: fresh topics and
database per test): warm-up from bars_1m equals an exporter that saw every bar live, a
restart mid-day continues, bad/late/duplicate bars are counted and skipped, a stale leg is
flagged. The expected values come from a PairsState fed every bar in order (no services)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from contextlib import contextmanager

import msgspec
import numpy as np
import pytest
from confluent_kafka import Producer

from tradeops import db
from tradeops.config import PairConfig
from tradeops.exporters.pairs import PairsState, build
from tradeops.kafka_admin import client_conf
from waiting import wait_for

pytestmark = pytest.mark.integration
replace = msgspec.structs.replace
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))

PAIRS = [
    PairConfig(name="INFY_TCS", leg_a="NSE:INFY", leg_b="NSE:TCS", hedge="rolling_ols", window=20),
    PairConfig(name="HDFC_ICICI", leg_a="NSE:HDFCBANK", leg_b="NSE:ICICIBANK", hedge="kalman",
               window=20),
    PairConfig(name="SBIN_BOB", leg_a="NSE:SBIN", leg_b="NSE:BANKBARODA", hedge="static",
               beta=1.0, window=10),
    PairConfig(name="REL_ONGC", leg_a="NSE:RELIANCE", leg_b="NSE:ONGC", hedge="rolling_ols",
               window=15),
]
LEGS = [s for p in PAIRS for s in (p.leg_a, p.leg_b)]
OTHERS = ["NSE:WIPRO", "NSE:ITC"]


def make_cfg(cfg):
    return replace(cfg, pairs=PAIRS, pairs_exporter=replace(
        cfg.pairs_exporter, group_id=f"t-pairs-{uuid.uuid4().hex[:8]}"))


def gen_bars(seed: int, minutes: int, t0: dt.datetime, skip=None) -> list[dict]:
    """Cointegrated closes per pair, one bar per symbol per minute (``skip``: (symbol, from
    minute) pairs that stop publishing)."""
    rng = np.random.default_rng(seed)
    out = []
    lx = {s: np.log(rng.uniform(100, 3000)) for s in LEGS + OTHERS}
    ou = dict.fromkeys(LEGS, 0.0)
    for m in range(minutes):
        ts = t0 + dt.timedelta(minutes=m)
        for p in PAIRS:
            lx[p.leg_b] += rng.normal(0, 1e-3)
            ou[p.leg_a] = 0.9 * ou[p.leg_a] + rng.normal(0, 5e-4)
            lx[p.leg_a] = 0.8 * lx[p.leg_b] + 2.0 + ou[p.leg_a]
        for s in OTHERS:
            lx[s] += rng.normal(0, 1e-3)
        for s in LEGS + OTHERS:
            if skip and s == skip[0] and m >= skip[1]:
                continue
            c = round(float(np.exp(lx[s])), 2)
            out.append({"symbol": s, "ts": ts.isoformat(), "open": c, "high": c, "low": c,
                        "close": c, "volume": int(rng.integers(100, 10000))})
    return out


def insert_db(cfg, bars):
    with db.connect(cfg) as conn, conn.cursor() as cur:
        with cur.copy("COPY bars_1m (symbol, ts, open, high, low, close, volume) FROM STDIN") as cp:
            for b in bars:
                cp.write_row((b["symbol"], b["ts"], b["open"], b["high"], b["low"], b["close"],
                              b["volume"]))
        conn.commit()


def produce(cfg, items):
    p = Producer(client_conf(cfg, **{"linger.ms": 5}))
    for it in items:
        if isinstance(it, dict):
            p.produce(cfg.topics.bars_1m, json.dumps(it).encode(), key=it["symbol"].encode())
        else:
            p.produce(cfg.topics.bars_1m, it, key=b"NSE:INFY")
        p.poll(0)
    assert p.flush(15) == 0


def reference(bars) -> PairsState:
    st = PairsState(PAIRS)
    for b in bars:
        st.on_bar(b["symbol"], int(dt.datetime.fromisoformat(b["ts"]).timestamp()), b["close"])
    st.flush()
    return st


@contextmanager
def running(cfg):
    app, loop, state = build(cfg, listen="127.0.0.1:0", env={})
    t = threading.Thread(target=app.serve, args=(loop,), kwargs={"signals": False}, daemon=True)
    t.start()
    try:
        wait_for(lambda: app.state.name == "RUNNING", 40, "READY")
        yield app, loop, state
    finally:
        app.stop_event.set()
        t.join(20)
        assert not t.is_alive()


def assert_same(state: PairsState, ref: PairsState, rel=1e-9):
    for name in ("zscore", "spread", "beta", "half_life_bars"):
        got, want = getattr(state.engine, name), getattr(ref.engine, name)
        assert (np.isnan(got) == np.isnan(want)).all(), name
        m = ~np.isnan(want)
        err = np.abs(got[m] - want[m]) / np.maximum(np.abs(want[m]), 1.0)
        assert err.max(initial=0.0) <= rel, (name, err.max())
    assert (state.pair_last == ref.pair_last).all()


def caught_up(state, ts_last):
    return lambda: (state.pair_last >= ts_last).all() and not state.pending


def test_warmup_equals_live_and_restart_continues(stack_cfg):
    cfg = make_cfg(stack_cfg)
    t0 = dt.datetime.now(IST).replace(second=0, microsecond=0) - dt.timedelta(minutes=200)
    yesterday = gen_bars(1, 100, t0)
    today1 = gen_bars(2, 40, t0 + dt.timedelta(minutes=100))
    today2 = gen_bars(3, 40, t0 + dt.timedelta(minutes=140),
                      skip=("NSE:ONGC", 30))  # leg b of REL_ONGC stops for the last 10 min
    last1 = int(dt.datetime.fromisoformat(today1[-1]["ts"]).timestamp())
    insert_db(cfg, yesterday)

    # A: warmed from yesterday, then sees today's first part live from Kafka
    with running(cfg) as (app, loop, a):
        assert loop.warmup_updates > 0
        insert_db(cfg, today1)
        produce(cfg, today1)
        wait_for(caught_up(a, last1), 60, "A caught up")
        assert_same(a, reference(yesterday + today1))

    with db.connect(cfg) as conn:
        n_states = conn.execute("SELECT count(*) FROM pairs_kalman_state").fetchone()[0]
    assert n_states == 140  # the Kalman pair's state after each of its 100 + 40 updates

    # B: a restart mid-day; warm-up alone (everything is in bars_1m) gives the same state.
    # B reads fewer bars for its Kalman pair (3 windows = 60 < 140 bars of history): only
    # the persisted filter state makes it equal to A
    cfg = replace(cfg, pairs_exporter=replace(cfg.pairs_exporter, kalman_warmup_windows=3))
    bad = [b"{oops", json.dumps({**today2[0], "close": -1.0, "low": -1.0}).encode(),
           json.dumps({**today2[0], "close": "NaN"}).encode()]
    with running(cfg) as (app, loop, b):
        assert_same(b, reference(yesterday + today1))
        # Kafka re-read from before the warm-up: every bar already applied is a duplicate
        wait_for(lambda: b.duplicates == len([x for x in today1 if x["symbol"] in LEGS]), 60,
                 "overlap re-read")
        assert_same(b, reference(yesterday + today1))
        c1 = today1[0]["close"] + 1.0
        late = {**today1[0], "close": c1, "high": c1}  # an older minute, corrected
        insert_db(cfg, today2)
        again = [x for x in today2 if x["symbol"] == "NSE:INFY"][-1]  # delivered twice
        produce(cfg, bad + [late] + today2 + [again])
        last2 = int(dt.datetime.fromisoformat(today2[-1]["ts"]).timestamp())
        ts_rel = int(dt.datetime.fromisoformat(
            [x for x in today2 if x["symbol"] == "NSE:ONGC"][-1]["ts"]).timestamp())
        wait_for(lambda: (b.pair_last[:3] >= last2).all() and b.pair_last[3] >= ts_rel
                 and not b.pending and b.accepted >= len([x for x in today2 if x["symbol"] in LEGS]),
                 60, "B caught up")
        wait_for(lambda: b.duplicates == len([x for x in today1 if x["symbol"] in LEGS]) + 1, 10,
                 "duplicate of the last bar")
        ref = reference(yesterday + today1 + today2)
        assert_same(b, ref)
        get = app.registry.get_sample_value
        assert get("pairs_decode_errors_total", {"topic": cfg.topics.bars_1m}) == 3
        assert get("pairs_bars_late_total") == 1
        assert get("pairs_bars_not_a_leg_total") > 0
        assert get("pairs_leg_stale", {"pair": "REL_ONGC", "leg": "b"}) == 1
        assert get("pairs_leg_stale", {"pair": "REL_ONGC", "leg": "a"}) == 0
        assert get("pairs_leg_stale", {"pair": "INFY_TCS", "leg": "b"}) == 0
        for i, p in enumerate(PAIRS):
            z = get("pairs_spread_zscore", {"pair": p.name})
            assert z == pytest.approx(float(ref.engine.zscore[i]), rel=1e-9, abs=1e-9)
            assert get("pairs_hedge_ratio", {"pair": p.name}) is not None
            assert get("pairs_last_update_timestamp_seconds", {"pair": p.name}) == ref.pair_last[i]
        hl = ref.engine.half_life_bars
        for i, p in enumerate(PAIRS):
            v = get("pairs_half_life_seconds", {"pair": p.name})
            assert (v is None) == bool(np.isnan(hl[i]))


def test_flat_pair_has_no_zscore_series(stack_cfg):
    cfg = make_cfg(stack_cfg)
    cfg = replace(cfg, pairs=[PairConfig(name="FLAT", leg_a="NSE:INFY", leg_b="NSE:TCS",
                                         hedge="static", beta=1.0, window=5)])
    t0 = dt.datetime.now(IST).replace(second=0, microsecond=0) - dt.timedelta(minutes=30)
    bars = []
    for m in range(20):
        ts = (t0 + dt.timedelta(minutes=m)).isoformat()
        for s, c in (("NSE:INFY", 1500.0), ("NSE:TCS", 3500.0)):
            bars.append({"symbol": s, "ts": ts, "open": c, "high": c, "low": c, "close": c,
                         "volume": 1})
    with running(cfg) as (app, loop, st):
        produce(cfg, bars)
        wait_for(lambda: st.engine.updates[0] == 20 and not st.pending, 30, "bars")
        body = app.registry.get_sample_value("pairs_spread_zscore", {"pair": "FLAT"})
        assert body is None
        assert app.registry.get_sample_value("pairs_spread", {"pair": "FLAT"}) is not None
