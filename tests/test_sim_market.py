"""Unit tests of the synthetic market (pure logic, no services)."""

from __future__ import annotations

import math
import tomllib
from collections import Counter
from datetime import date, datetime, time, timedelta

import pytest

from tradeops.contracts import Bar
from tradeops.sim.market import IST, KINDS, PAIRS, Market

DAY = date(2026, 12, 3)
REPO_CFG = "infra/dev/tradeops.toml"


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(DAY, seed=42, n_symbols=300)


def test_deterministic_for_date_seed_and_size(market):
    again = Market(DAY, seed=42, n_symbols=300)
    for sym in ("NSE:INFY", market.symbols[123], market.symbols[-1]):
        assert again.true_bars(sym) == market.true_bars(sym)
        assert again.internal_bars(sym) == market.internal_bars(sym)
        assert again.broker_bars(sym) == market.broker_bars(sym)
    assert again.injected() == market.injected()
    other_seed = Market(DAY, seed=43, n_symbols=300)
    assert other_seed.true_bars("NSE:INFY") != market.true_bars("NSE:INFY")
    other_day = Market(DAY + timedelta(days=1), seed=42, n_symbols=300)
    assert other_day.true_bars("NSE:INFY") != market.true_bars("NSE:INFY")


def test_symbols_tokens_and_counts(market):
    assert len(market.symbols) == 300 == len(set(market.symbols))
    assert market.symbols[0] == "NSE:INFY"
    tokens = {market.instrument_token(s) for s in market.symbols}
    assert len(tokens) == 300
    for s in market.symbols[:5] + market.symbols[-5:]:
        assert market.symbol_of_token(market.instrument_token(s)) == s
    # tokens are stable per symbol, whatever the size of the market
    small = Market(DAY, n_symbols=40)
    assert small.instrument_token(market.symbols[39]) == market.instrument_token(market.symbols[39])
    for s in market.symbols[:40]:
        bars = market.true_bars(s)
        assert len(bars) == 375
        assert bars[0].ts == datetime(2026, 12, 3, 9, 15, tzinfo=IST)
        assert bars[-1].ts == datetime(2026, 12, 3, 15, 29, tzinfo=IST)


def test_config_names_exist(market):
    with open(REPO_CFG, "rb") as f:
        cfg = tomllib.load(f)
    for sym in cfg["risk"]["sectors"]:
        assert sym in market.symbols
    for pair in cfg["pairs"]:
        assert pair["leg_a"] in market.symbols and pair["leg_b"] in market.symbols


def test_bars_are_realistic_and_valid(market):
    for s in market.symbols[::7]:
        for b in market.true_bars(s) + market.internal_bars(s):
            for p in (b.open, b.high, b.low, b.close):
                assert 50 <= p <= 6000
                assert abs(p * 20 - round(p * 20)) < 1e-6, (s, b)  # 0.05 tick
            assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
            assert b.volume > 0
            # every bar passes the Kafka contract
            Bar(symbol=s, ts=b.ts, open=b.open, high=b.high, low=b.low, close=b.close,
                volume=b.volume)


def _diff(market: Market):
    """Recompute every discrepancy by comparing internal and broker bars."""
    found = set()
    cols = ("open", "high", "low", "close")
    start, end = market.minutes[0], market.minutes[-1]
    for s in market.symbols:
        internal = {b.ts: b for b in market.internal_bars(s)}
        broker = {b.ts: b for b in market.broker_bars(s)}
        for ts in market.minutes:
            i, b = internal.get(ts), broker.get(ts)
            if i is None and b is None:
                found.add((s, ts, "both_missing", ()))
            elif i is None:
                found.add((s, ts, "missing_internal", ()))
            elif b is None:
                found.add((s, ts, "missing_broker", ()))
            else:
                changed = tuple(c for c in cols if getattr(i, c) != getattr(b, c))
                if changed:
                    for c in changed:
                        assert abs(getattr(i, c) - getattr(b, c)) >= 10 * 0.05 - 1e-9
                    found.add((s, ts, "price_mismatch", changed))
                if i.volume != b.volume:
                    assert abs(i.volume - b.volume) >= 0.2 * b.volume
                    found.add((s, ts, "volume_mismatch", ("volume",)))
        for ts in internal:
            if not start <= ts <= end:
                found.add((s, ts, "outside_session", ()))
    return found


def test_injected_ground_truth_matches_the_bars(market):
    truth = {(i.symbol, i.ts, i.kind, i.columns) for i in market.injected()}
    assert len(truth) == len(market.injected())
    assert _diff(market) == truth
    kinds = Counter(i.kind for i in market.injected())
    assert set(kinds) == set(KINDS)
    assert min(kinds.values()) >= 3, kinds
    # at most one discrepancy per (symbol, minute)
    assert len({(i.symbol, i.ts) for i in market.injected()}) == len(truth)
    # outside-session bars sit before the open or after the close
    for i in market.injected():
        if i.kind == "outside_session":
            assert i.ts.timetz() < time(9, 15, tzinfo=IST) or i.ts.timetz() >= time(
                15, 30, tzinfo=IST)


def test_small_market_and_rate():
    m = Market(DAY, seed=7, n_symbols=40, discrepancy_rate=0.01)
    truth = {(i.symbol, i.ts, i.kind, i.columns) for i in m.injected()}
    assert _diff(m) == truth
    assert len(truth) == round(40 * 375 * 0.01)
    clean = Market(DAY, seed=7, n_symbols=40, discrepancy_rate=0.0)
    assert clean.injected() == []
    assert clean.internal_bars("NSE:INFY") == clean.broker_bars("NSE:INFY")


def _ols(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx, mx, my


def test_pairs_are_cointegrated(market):
    for leg_a, leg_b in PAIRS:
        la = [math.log(b.close) for b in market.true_bars(leg_a)]
        lb = [math.log(b.close) for b in market.true_bars(leg_b)]
        spread = [a - b for a, b in zip(la, lb)]
        mean = sum(spread) / len(spread)
        s = [v - mean for v in spread]
        # AR(1) of the spread: ds_t = lam * s_{t-1} + c with lam clearly negative
        lam, _, _ = _ols(s[:-1], [s[i + 1] - s[i] for i in range(len(s) - 1)])
        assert -0.3 < lam < -0.02, (leg_a, lam)
        half_life_min = -math.log(2) / lam
        assert 2 < half_life_min < 40
        # a random walk leg is not mean-reverting by comparison: spread std << leg std
        sd_spread = (sum(v * v for v in s) / len(s)) ** 0.5
        mb = sum(lb) / len(lb)
        sd_b = (sum((v - mb) ** 2 for v in lb) / len(lb)) ** 0.5
        assert sd_spread < sd_b


def test_scales_to_2000_symbols():
    m = Market(DAY, n_symbols=2000, discrepancy_rate=0.01)
    assert len(set(m.symbols)) == 2000
    assert len(m.injected()) == round(2000 * 375 * 0.01)
    assert len(m.broker_bars(m.symbols[-1])) <= 375


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_symbols"):
        Market(DAY, n_symbols=0)
    with pytest.raises(ValueError, match="discrepancy_rate"):
        Market(DAY, discrepancy_rate=0.9)
