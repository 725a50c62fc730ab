"""Pure logic of the recon: token bucket pacing, candle validation, symbols, metrics registry."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from tradeops.recon import broker_client as bc
from tradeops.recon import metrics

DAY = dt.date(2026, 12, 3)


class FakeClock:
    """A virtual clock: sleep advances it. Only the pacing arithmetic is under test here;
    the real-time behaviour against the real server is tested in test_recon_broker.py."""

    def __init__(self):
        self.t = 100.0
        self.lock = threading.Lock()

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        with self.lock:
            self.t = max(self.t, self.t + s)


def test_token_bucket_spaces_slots_and_never_exceeds_rate_in_any_second():
    clock = FakeClock()
    b = bc.TokenBucket(3.0, clock=clock.now, sleep=lambda s: None)
    slots = [b.acquire() for _ in range(30)]
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert all(abs(g - 1 / 3) < 1e-9 for g in gaps)
    for i, s in enumerate(slots):  # any window [s, s + 1) holds at most 3
        assert sum(1 for x in slots[i:] if x < s + 1.0 - 1e-9) <= 3


def test_token_bucket_is_shared_by_threads():
    b = bc.TokenBucket(50.0)
    slots: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(5):
            s = b.acquire()
            with lock:
                slots.append(s)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    assert len(slots) == 20
    assert min(y - x for x, y in zip(slots, slots[1:], strict=False)) >= 1 / 50 - 1e-9


def test_token_bucket_idle_time_is_not_saved_up_as_a_burst():
    clock = FakeClock()
    b = bc.TokenBucket(2.0, clock=clock.now, sleep=lambda s: None)
    b.acquire()
    clock.t += 10  # idle
    first = b.acquire()
    second = b.acquire()
    assert second - first == pytest.approx(0.5)


GOOD = ["2026-12-03T09:15:00+0530", 1386.4, 1388, 1381.05, 1385.1, 788]


def test_parse_candles_accepts_kite_rows():
    rows = bc.parse_candles([GOOD, ["2026-12-03T09:16:00+0530", 1385.1, 1386, 1384, 1385, 10, 0]],
                            "NSE:INFY", DAY, "broker x")
    assert rows[0][0] == dt.datetime(2026, 12, 3, 9, 15, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    assert rows[0][1:] == (1386.4, 1388.0, 1381.05, 1385.1, 788)
    assert len(rows) == 2


@pytest.mark.parametrize(
    "row,why",
    [
        (["2026-12-03T09:15:00+0530", 1, 2, 1], "expected [ts, open, high, low, close, volume]"),
        ([1, 1, 2, 1, 1, 5], "timestamp 1 is not a string"),
        (["09:15", 1, 2, 1, 1, 5], "timestamp '09:15' is not like 2026-12-03T09:15:00+0530"),
        (["2026-12-03T09:15:00", 1, 2, 1, 1, 5], "has no UTC offset"),
        (["2026-12-03T09:15:00+0530", "x", 2, 1, 1, 5], 'open "x" is not a positive number'),
        (["2026-12-03T09:15:00+0530", 1, 2, 0, 1, 5], "low 0 is not a positive number"),
        (["2026-12-03T09:15:00+0530", 1, 2, 1, 1, -5], "volume -5 is not a non-negative integer"),
        (["2026-12-03T09:15:00+0530", 1, 2, 1, 1, 1.5], "volume 1.5 is not a non-negative integer"),
        (["2026-12-03T09:15:00+0530", 3, 2, 1, 1, 5], "inconsistent prices"),
        (["2026-12-03T09:15:30+0530", 1, 2, 1, 1, 5], "not on a minute boundary"),
    ],
)
def test_parse_candles_bad_row_is_one_line_naming_symbol_date_row(row, why):
    with pytest.raises(bc.BrokerError) as e:
        bc.parse_candles([GOOD, row], "NSE:INFY", DAY, "broker http://b")
    msg = str(e.value)
    assert msg.startswith("broker http://b: NSE:INFY 2026-12-03: bad candle row 1: ")
    assert why in msg and "\n" not in msg


def test_parse_candles_no_list():
    with pytest.raises(bc.BrokerError, match="NSE:INFY 2026-12-03: response has no candle list"):
        bc.parse_candles(None, "NSE:INFY", DAY, "broker b")


def test_split_symbol():
    assert bc.split_symbol("NSE:M&M") == ("NSE", "M&M")
    with pytest.raises(bc.UnknownSymbol, match="symbol 'INFY': expected EXCHANGE:TRADINGSYMBOL"):
        bc.split_symbol("INFY")


def test_metrics_registry_exposition():
    reg = metrics.build_registry(
        "tradeops_recon", ok=True, exit_code=1, stages={"fetch": 1.5, "compare": 0.25},
        stage_names=metrics.STAGES, rows={"internal": 10, "broker": 9},
        counts={"missing_internal": 1}, now=1000.0,
    )
    g = reg.get_sample_value
    assert g("tradeops_recon_last_success_timestamp_seconds") == 1000.0
    assert g("tradeops_recon_last_completion_timestamp_seconds") == 1000.0
    assert g("tradeops_recon_last_exit_code") == 1
    assert g("tradeops_recon_stage_duration_seconds", {"stage": "fetch"}) == 1.5
    assert g("tradeops_recon_stage_duration_seconds", {"stage": "report"}) == 0.0
    assert g("tradeops_recon_rows_compared", {"side": "broker"}) == 9
    assert g("tradeops_recon_discrepancies", {"kind": "missing_internal"}) == 1
    assert g("tradeops_recon_discrepancies", {"kind": "outside_session"}) == 0  # pre-initialised
    failed = metrics.build_registry("tradeops_recon", ok=False, exit_code=2, stages={},
                                    stage_names=metrics.STAGES, now=5.0)
    assert failed.get_sample_value("tradeops_recon_last_success_timestamp_seconds") is None
    assert failed.get_sample_value("tradeops_recon_last_completion_timestamp_seconds") == 5.0
