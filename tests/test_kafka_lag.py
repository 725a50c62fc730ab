"""Kafka lag: pure logic (lag in messages/seconds, Burrow-style status, windows)."""

from __future__ import annotations

from tradeops.exporters.kafka_lag import (
    LagTracker,
    Observation,
    Status,
    evaluate,
    lag_seconds,
    partition_lag,
)


def test_partition_lag_clamped_and_absent_without_commit():
    assert partition_lag(100, 40) == 60
    assert partition_lag(100, 100) == 0
    assert partition_lag(100, 120) == 0  # committed beyond high watermark (truncation)
    assert partition_lag(100, None) is None
    assert partition_lag(100, -1001) is None  # OFFSET_INVALID


def test_lag_seconds_from_record_time():
    assert lag_seconds(0, None, 1000.0) == 0.0
    assert lag_seconds(5, 990.5, 1000.0) == 9.5
    assert lag_seconds(5, 1001.0, 1000.0) == 0.0  # producer clock ahead: never negative
    assert lag_seconds(5, None, 1000.0) is None


def obs(*rows):
    return [Observation(float(i), c, lag) for i, (c, lag) in enumerate(rows)]


def test_ok_when_lag_reaches_zero_once():
    # even with an unchanged offset (idle topic): no false STOP
    assert evaluate(obs((10, 0), (10, 0), (10, 0)), 3, active=False) is Status.OK
    assert evaluate(obs((10, 5), (12, 0), (12, 9)), 3, active=False) is Status.OK


def test_stop_and_stall_when_offsets_do_not_move_with_lag():
    w = obs((10, 5), (10, 8), (10, 12))
    assert evaluate(w, 3, active=False) is Status.STOP
    assert evaluate(w, 3, active=True) is Status.STALL
    # not a full window yet: no verdict
    assert evaluate(w[:2], 3, active=False) is Status.OK


def test_rewind_when_committed_goes_backwards():
    assert evaluate(obs((10, 5), (8, 7)), 3, active=True) is Status.REWIND
    assert evaluate(obs((10, 5), (12, 3), (9, 6)), 3, active=True) is Status.REWIND


def test_warn_when_lag_never_decreases_while_moving():
    assert evaluate(obs((10, 5), (12, 6), (15, 6)), 3, active=True) is Status.WARN
    assert evaluate(obs((10, 5), (12, 4), (15, 6)), 3, active=True) is Status.OK


def test_tracker_windows_min_interval_and_forgetting():
    tr = LagTracker(size=3, min_interval_s=5)
    tp = ("t", 0)
    tr.observe("g", {tp: (10, 4)}, now=0)
    tr.observe("g", {tp: (10, 6)}, now=2)  # too soon: ignored
    tr.observe("g", {tp: (10, 6)}, now=5)
    assert tr.status("g", active=False) is Status.OK  # window not full
    tr.observe("g", {tp: (10, 9)}, now=10)
    assert tr.status("g", active=False) is Status.STOP
    assert tr.status("g", active=True) is Status.STALL
    # catches up: lag 0 within the window -> OK
    tr.observe("g", {tp: (19, 0)}, now=15)
    assert tr.status("g", active=True) is Status.OK
    # group status is the worst partition's
    tr2 = LagTracker(size=2)
    tr2.observe("g", {("t", 0): (1, 0), ("t", 1): (5, 3)}, now=0)
    tr2.observe("g", {("t", 0): (2, 0), ("t", 1): (4, 3)}, now=1)
    assert tr2.partition_status("g", True) == {("t", 0): Status.OK, ("t", 1): Status.REWIND}
    assert tr2.status("g", True) is Status.REWIND
    # a partition that vanished is dropped; a forgotten group has no status
    tr2.observe("g", {("t", 0): (3, 0)}, now=2)
    assert list(tr2.partition_status("g", True)) == [("t", 0)]
    tr2.forget("g")
    assert tr2.status("g", True) is None and tr2.groups() == []
