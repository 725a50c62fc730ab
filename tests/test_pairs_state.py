"""PairsState (bar alignment, late/duplicate bars, stale legs) without services."""

from __future__ import annotations

import numpy as np

from tradeops.config import PairConfig
from tradeops.exporters.pairs import PairsState

P1 = PairConfig(name="AB", leg_a="NSE:A", leg_b="NSE:B", hedge="static", beta=1.0, window=3,
                stale_after_s=180.0)
P2 = PairConfig(name="AC", leg_a="NSE:A", leg_b="NSE:C", hedge="static", beta=1.0, window=3)
T0 = 1_764_734_100  # a minute boundary


def test_legs_consumed_at_different_speeds_pair_minute_by_minute():
    st = PairsState([P1])
    # leg A is 5 minutes ahead (another partition, consumed first), then B catches up
    for m in range(5):
        assert st.on_bar("NSE:A", T0 + 60 * m, 100.0 + m) == "accepted"
    assert st.engine.updates[0] == 0 and not st.pending
    for m in range(5):
        st.on_bar("NSE:B", T0 + 60 * m, 50.0 + m)
        st.flush()
    assert st.engine.updates[0] == 5
    assert st.pair_last[0] == T0 + 240
    # spread of the last update: ln(104) - ln(54)
    assert st.engine.spread[0] == np.log(104.0) - np.log(54.0)


def test_missing_bar_of_one_leg_skips_that_minute():
    st = PairsState([P1])
    st.on_bar("NSE:A", T0, 100.0)
    st.on_bar("NSE:B", T0, 50.0)
    st.on_bar("NSE:A", T0 + 60, 101.0)  # B has no bar at +60
    st.on_bar("NSE:A", T0 + 120, 102.0)
    st.on_bar("NSE:B", T0 + 120, 52.0)
    st.flush()
    assert st.engine.updates[0] == 2 and st.pair_last[0] == T0 + 120


def test_duplicate_and_late_bars_are_counted_and_not_applied():
    st = PairsState([P1])
    st.on_bar("NSE:A", T0, 100.0)
    st.on_bar("NSE:B", T0, 50.0)
    st.on_bar("NSE:A", T0 + 60, 101.0)
    st.on_bar("NSE:B", T0 + 60, 51.0)
    st.flush()
    before = st.engine.spread.copy()
    assert st.on_bar("NSE:B", T0 + 60, 51.0) == "duplicate"  # redelivered
    assert st.on_bar("NSE:A", T0, 100.0) == "duplicate"  # an older one, redelivered
    assert st.on_bar("NSE:A", T0, 99.0) == "late"  # an older minute, different close
    assert st.on_bar("NSE:B", T0 + 60, 51.5) == "late"  # same minute, corrected close
    assert st.on_bar("NSE:X", T0, 1.0) == "not_a_leg"
    st.flush()
    assert (st.duplicates, st.late, st.not_a_leg, st.accepted) == (2, 2, 1, 4)
    assert st.engine.updates[0] == 2
    assert np.array_equal(st.engine.spread, before)


def test_one_symbol_in_two_pairs_and_one_update_per_pair_per_call():
    st = PairsState([P1, P2])
    for m in range(4):
        st.on_bar("NSE:B", T0 + 60 * m, 50.0 + m)
        st.on_bar("NSE:C", T0 + 60 * m, 20.0 + m)
    for m in range(4):  # A arrives last: each bar completes both pairs; no flush between
        st.on_bar("NSE:A", T0 + 60 * m, 100.0 + m)
    st.flush()
    assert list(st.engine.updates) == [4, 4]
    assert st.engine.spread[1] == np.log(103.0) - np.log(23.0)


def test_stale_leg():
    st = PairsState([P1])
    st.on_bar("NSE:A", T0, 100.0)
    assert st.stale(0) == (False, True)  # B never seen while A publishes
    st.on_bar("NSE:B", T0, 50.0)
    for m in range(1, 5):
        st.on_bar("NSE:A", T0 + 60 * m, 100.0)
    assert st.stale(0) == (False, True)  # B 240 s behind A > 180 s
    st.on_bar("NSE:B", T0 + 240, 50.0)
    assert st.stale(0) == (False, False)
