"""Risk math against an independent oracle: after every message, each bucket's equity,
gross and net exposure are recomputed from scratch (math.fsum over the latest snapshot of
every position in the bucket), and peak / drawdown / max drawdown come from pandas
cummax over each bucket's equity series per session. No services needed.

Errors are |engine - oracle| / max(|oracle|, 1 INR); the largest seen is printed (-s) and
asserted <= 1e-9.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from tradeops.exporters.risk_math import RiskBook, session_day

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
TOL = 1e-9
LARGEST: dict[str, float] = {}

SYMS = [f"NSE:S{i:02d}" for i in range(24)] + ["NFO:NIFTY26DECFUT", "NFO:BANKNIFTY26DECFUT",
                                              "MCX:CRUDE26DEC"]
SECTORS = {s: ("IT" if i % 3 == 0 else "BANKS" if i % 3 == 1 else "ENERGY")
           for i, s in enumerate(SYMS[:18])}
UNDERLYINGS = {"NFO:NIFTY26DECFUT": "NIFTY", "NFO:BANKNIFTY26DECFUT": "BANKNIFTY"}
CAPITAL = {("strategy", "s0"): 5e6, ("total", "total"): 2e7, ("sector", "IT"): 3e6}


def oracle_keys(strategy, symbol):
    sector = SECTORS.get(symbol, "unmapped")
    und = UNDERLYINGS.get(symbol)
    if und is None:
        exch, _, t = symbol.partition(":")
        und = t if exch in ("NSE", "BSE") else "unmapped"
    return [("strategy", strategy), ("sector", sector), ("underlying", und), ("total", "total")]


def gen_messages(rng, n, start, extreme=False):
    strategies = [f"s{i}" for i in range(6)]
    msgs = []
    t = start
    for _ in range(n):
        t = t + dt.timedelta(seconds=float(rng.integers(1, 40)))
        sym = SYMS[int(rng.integers(len(SYMS)))]
        mult = 50.0 if sym.startswith("NFO") else 1.0
        scale = 10 ** rng.uniform(0, 6) if extreme else rng.uniform(50, 5000)
        avg = float(scale * rng.uniform(0.9, 1.1))
        last = float(avg * rng.uniform(0.95, 1.05))
        qty = int(rng.integers(-5000, 5000)) * (int(rng.integers(1, 100)) if extreme else 1)
        realized = float(rng.normal(0, 1e5 if extreme else 2e4))
        if rng.random() < 0.05:
            qty = 0  # flat position
        msgs.append((t, strategies[int(rng.integers(len(strategies)))], sym, qty, avg, last,
                     realized, mult))
    return msgs


def oracle(msgs, reset=dt.time(9, 15)):
    """Per message: values of every touched bucket, from scratch."""
    latest = {}
    rows = []
    day = None

    def bucket_value(key):
        members = [v for (s, sym), v in latest.items() if key in oracle_keys(s, sym)]
        eq = math.fsum(r + q * (lp - ap) * m for (q, ap, lp, r, m) in members)
        gross = math.fsum(abs(q * lp * m) for (q, ap, lp, r, m) in members)
        net = math.fsum(q * lp * m for (q, ap, lp, r, m) in members)
        return eq, gross, net

    for i, (ts, strat, sym, q, ap, lp, r, m) in enumerate(msgs):
        d = session_day(ts, IST, reset)
        if day is None or d > day:
            day = d
            seen = {k for (s, y) in latest for k in oracle_keys(s, y)}
            for key in seen:
                eq, _, _ = bucket_value(key)
                rows.append((i - 0.5, d, key, eq, np.nan, np.nan))

        latest[(strat, sym)] = (q, ap, lp, r, m)
        for key in oracle_keys(strat, sym):
            eq, gross, net = bucket_value(key)
            rows.append((i, d, key, eq, gross, net))
    df = pd.DataFrame(rows, columns=["step", "day", "key", "equity", "gross", "net"])
    df["peak"] = df.groupby(["day", "key"])["equity"].cummax().clip(lower=0.0)
    df["dd"] = df["peak"] - df["equity"]
    df["maxdd"] = df.groupby(["day", "key"])["dd"].cummax()
    return df[df["step"] == df["step"].round()]


def run_engine(msgs):
    book = RiskBook(sectors=SECTORS, underlyings=UNDERLYINGS, capital=CAPITAL,
                    timezone="Asia/Kolkata", reset_time="09:15")
    out = []
    for i, (ts, strat, sym, q, ap, lp, r, m) in enumerate(msgs):
        book.apply(ts, strat, sym, q, ap, lp, r, m)
        for key in book.bucket_keys(strat, sym):
            v = book.values(key)
            out.append((i, key, v["equity"], v["gross"], v["net"], v["peak"], v["drawdown"],
                        v["max_drawdown"], v["drawdown_ratio"], v["gross_ratio"], v["net_ratio"]))
    return book, pd.DataFrame(out, columns=["step", "key", "equity", "gross", "net", "peak", "dd",
                                            "maxdd", "dd_ratio", "gross_ratio", "net_ratio"])


def compare(msgs):
    want = oracle(msgs).reset_index(drop=True)
    book, got = run_engine(msgs)
    assert len(got) == len(want)
    assert list(got["key"]) == list(want["key"])
    for col in ("equity", "gross", "net", "peak", "dd", "maxdd"):
        g, w = got[col].to_numpy(), want[col].to_numpy()
        err = np.abs(g - w) / np.maximum(np.abs(w), 1.0)
        worst = float(err.max())
        LARGEST[col] = max(LARGEST.get(col, 0.0), worst)
        assert worst <= TOL, f"{col}: largest relative error {worst:.3e} at row {err.argmax()}"
    # ratios only where capital is configured, computed from the oracle's numbers
    for i, key in enumerate(got["key"]):
        cap = CAPITAL.get(key)
        if cap is None:
            assert got["dd_ratio"][i] is None or np.isnan(got["dd_ratio"][i])
            continue
        w_dd = want["dd"][i] / (cap + want["peak"][i])
        assert abs(got["dd_ratio"][i] - w_dd) <= TOL * max(abs(w_dd), 1e-6)
        assert abs(got["gross_ratio"][i] - want["gross"][i] / cap) <= TOL * max(abs(want["gross"][i] / cap), 1e-6)
    return book, got


def test_long_random_stream_two_sessions():
    rng = np.random.default_rng(1)
    # starts before the 09:15 reset (belongs to the previous session) and runs into the
    # next day's session: peaks restart at the reset
    msgs = gen_messages(rng, 4000, dt.datetime(2026, 12, 2, 9, 0, tzinfo=IST))
    msgs += gen_messages(rng, 1500, dt.datetime(2026, 12, 3, 9, 16, tzinfo=IST))
    book, got = compare(msgs)
    assert book.day == dt.date(2026, 12, 3)
    assert (got["dd"] >= -1e-6).all() and (got["maxdd"] >= got["dd"] - 1e-6).all()
    assert book.unmapped["sector"] == 9  # 6 NSE symbols without sector + 3 derivatives
    assert ("underlying", "unmapped") in book.buckets  # MCX:CRUDE26DEC
    assert ("underlying", "S03") in book.buckets  # cash symbol is its own underlying


def test_extreme_values_and_cancellation():
    rng = np.random.default_rng(2)
    msgs = gen_messages(rng, 3000, dt.datetime(2026, 12, 3, 9, 15, tzinfo=IST), extreme=True)
    compare(msgs)


def test_drawdown_from_the_open_and_ratio():
    book = RiskBook(bucket_types=["strategy", "total"], capital={("strategy", "a"): 1e6})
    t = dt.datetime(2026, 12, 3, 9, 20, tzinfo=IST)
    book.apply(t, "a", "NSE:INFY", 10, 100.0, 90.0, 0.0)  # -100 from the start
    v = book.values(("strategy", "a"))
    assert v["peak"] == 0.0 and v["drawdown"] == 100.0 and v["max_drawdown"] == 100.0
    assert v["drawdown_ratio"] == pytest.approx(100.0 / 1e6, rel=1e-12)
    book.apply(t, "a", "NSE:INFY", 10, 100.0, 130.0, 0.0)  # +300: new peak
    book.apply(t, "a", "NSE:INFY", 10, 100.0, 110.0, 0.0)  # +100: drawdown 200
    v = book.values(("strategy", "a"))
    assert (v["peak"], v["drawdown"], v["max_drawdown"]) == (300.0, 200.0, 200.0)
    assert v["drawdown_ratio"] == pytest.approx(200.0 / (1e6 + 300.0), rel=1e-12)
    assert book.values(("total", "total"))["drawdown_ratio"] is None  # no capital
    # the next session: peak restarts from the carried equity
    book.apply(t + dt.timedelta(days=1), "a", "NSE:INFY", 10, 100.0, 105.0, 0.0)
    v = book.values(("strategy", "a"))
    assert (v["peak"], v["drawdown"], v["max_drawdown"]) == (100.0, 50.0, 50.0)


def test_restore_peak_is_max_merge():
    book = RiskBook(bucket_types=["strategy"])
    t = dt.datetime(2026, 12, 3, 10, 0, tzinfo=IST)
    book.restore_peak(t.date(), ("strategy", "a"), 500.0, 120.0)
    book.apply(t, "a", "NSE:INFY", 1, 100.0, 101.0, 0.0)
    v = book.values(("strategy", "a"))
    assert (v["peak"], v["drawdown"], v["max_drawdown"]) == (500.0, 499.0, 499.0)
    book.restore_peak(t.date(), ("strategy", "a"), 10.0, 5.0)  # lower values never win
    assert book.values(("strategy", "a"))["peak"] == 500.0


def test_report_largest_error(capsys):
    with capsys.disabled():
        print("\nrisk oracle largest relative errors:", {k: f"{v:.2e}" for k, v in LARGEST.items()})
    assert LARGEST and max(LARGEST.values()) <= TOL
