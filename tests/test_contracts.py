"""Message decoding: every contract field, wrong types, missing fields, Kite statuses."""

from __future__ import annotations

import json

import pytest

from tradeops import contracts
from tradeops.contracts import DecodeError, decode

ORDER = {
    "order_id": "o-1", "seq": 1, "ts": "2026-12-03T09:15:01.250+05:30", "status": "CREATED",
    "strategy": "momentum", "symbol": "NSE:INFY", "side": "BUY", "quantity": 10,
    "filled_quantity": 0, "price": 1500.5, "average_price": None, "reason": "",
    "broker_order_id": "", "broker_status": "",
}
GATEWAY = {
    "ts": "2026-12-03T09:15:01+05:30", "gateway": "zerodha", "event": "order_ack",
    "order_id": "o-1", "latency_ms": 12.5, "endpoint": "/orders/regular", "quantity": 10,
    "price": 1500.5, "message": "",
}
HEARTBEAT = {"ts": "2026-12-03T09:15:01Z", "process": "oms-core", "host": "h1", "pid": 42,
             "status": "ok", "detail": ""}
POSITION = {"ts": "2026-12-03T09:15:01+05:30", "strategy": "pairs", "symbol": "NSE:TCS",
            "quantity": -25, "average_price": 3500.0, "last_price": 3490.0,
            "realized_pnl": -120.5, "multiplier": 1}
BAR = {"symbol": "NSE:INFY", "ts": "2026-12-03T09:15:00+05:30", "open": 1500.0, "high": 1502.0,
       "low": 1499.5, "close": 1501.0, "volume": 12000}


def enc(d) -> bytes:
    return json.dumps(d).encode()


def test_full_messages_decode():
    o = decode("order_events", enc(ORDER))
    assert (o.order_id, o.seq, o.status, o.side, o.quantity, o.price) == ("o-1", 1, "CREATED", "BUY", 10, 1500.5)
    assert o.ts.utcoffset().total_seconds() == 19800
    g = decode("gateway_events", enc(GATEWAY))
    assert g.event == "order_ack" and g.latency_ms == 12.5
    h = decode("heartbeats", enc(HEARTBEAT))
    assert h.process == "oms-core" and h.pid == 42
    p = decode("positions", enc(POSITION))
    assert p.quantity == -25 and p.multiplier == 1.0
    b = decode("bars_1m", enc(BAR))
    assert b.volume == 12000
    r = decode("bars_1m_replay", enc({**BAR, "replay": True, "reason": "price_mismatch", "recon_run_id": "r1"}))
    assert r.replay and r.recon_run_id == "r1"


def test_round_trip_encode():
    o = decode("order_events", enc(ORDER))
    assert decode("order_events", contracts.encode(o)) == o


def test_optional_fields_default():
    minimal = {k: ORDER[k] for k in ("order_id", "seq", "ts", "status", "strategy", "symbol", "side", "quantity")}
    o = decode("order_events", enc(minimal))
    assert o.filled_quantity == 0 and o.price is None and o.reason == ""


@pytest.mark.parametrize(
    ("kind", "msg", "fragment"),
    [
        ("order_events", {**ORDER, "seq": "1"}, "Expected `int`, got `str` - at `$.seq`"),
        ("order_events", {**ORDER, "seq": 0}, "at `$.seq`"),
        ("order_events", {k: v for k, v in ORDER.items() if k != "order_id"}, "missing required field `order_id`"),
        ("order_events", {**ORDER, "side": "HOLD"}, "at `$.side`"),
        ("order_events", {**ORDER, "status": "WHATEVER"}, "unknown order status 'WHATEVER'"),
        ("order_events", {**ORDER, "ts": "2026-12-03T09:15:01"}, "at `$.ts`"),  # no offset
        ("order_events", {**ORDER, "symbol": "INFY"}, "at `$.symbol`"),
        ("order_events", {**ORDER, "filled_quantity": 11}, "`filled_quantity` exceeds `quantity`"),
        ("order_events", {**ORDER, "quantity": -1}, "at `$.quantity`"),
        ("gateway_events", {**GATEWAY, "event": "teleport"}, "at `$.event`"),
        ("gateway_events", {**GATEWAY, "latency_ms": -3}, "at `$.latency_ms`"),
        ("heartbeats", {**HEARTBEAT, "status": "sleepy"}, "at `$.status`"),
        ("positions", {**POSITION, "last_price": -1.0}, "at `$.last_price`"),
        ("positions", {**POSITION, "multiplier": 0}, "at `$.multiplier`"),
        ("bars_1m", {**BAR, "low": 1503.0}, "bar is inconsistent"),
        ("bars_1m", {**BAR, "ts": "2026-12-03T09:15:30+05:30"}, "minute boundary"),
        ("bars_1m", {**BAR, "open": 0}, "at `$.open`"),
    ],
)
def test_bad_messages_give_one_line_reason(kind, msg, fragment):
    with pytest.raises(DecodeError) as e:
        decode(kind, enc(msg))
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("payload", [b"", b"{", b"[]", b"null", b"\xff\xfe", None])
def test_garbage_payloads(payload):
    with pytest.raises(DecodeError):
        decode("order_events", payload)


def test_nan_rejected():
    raw = enc(POSITION).replace(b"3490.0", b"NaN")
    with pytest.raises(DecodeError):
        decode("positions", raw)


@pytest.mark.parametrize(
    ("kite", "filled", "canonical"),
    [
        ("PUT ORDER REQ RECEIVED", 0, "SUBMITTED"),
        ("AMO REQ RECEIVED", 0, "SUBMITTED"),
        ("VALIDATION PENDING", 0, "SUBMITTED"),
        ("OPEN PENDING", 0, "SUBMITTED"),
        ("OPEN", 0, "OPEN"),
        ("OPEN", 4, "PARTIALLY_FILLED"),
        ("TRIGGER PENDING", 0, "TRIGGER_PENDING"),
        ("MODIFY VALIDATION PENDING", 0, "MODIFY_PENDING"),
        ("MODIFY PENDING", 0, "MODIFY_PENDING"),
        ("CANCEL PENDING", 0, "CANCEL_PENDING"),
        ("COMPLETE", 10, "FILLED"),
        ("CANCELLED", 0, "CANCELLED"),
        ("REJECTED", 0, "REJECTED"),
    ],
)
def test_kite_status_in_status_field_is_mapped(kite, filled, canonical):
    o = decode("order_events", enc({**ORDER, "status": kite, "filled_quantity": filled}))
    assert o.status == canonical
    assert o.broker_status == (kite if kite != canonical else "")
