"""Kafka message contracts: one msgspec Struct per topic, decoded and validated in one step.

``decode(kind, payload)`` returns the struct or raises :class:`DecodeError` with a short
reason (the caller adds topic/partition/offset). docs/contracts.md documents the fields.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from .order_states import UnknownStatus, canonical_status

TzDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Symbol = Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z0-9]*:[A-Z0-9][A-Z0-9&_.\-]*$")]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
PosFloat = Annotated[float, msgspec.Meta(gt=0)]


class DecodeError(ValueError):
    """A message that does not satisfy its contract; str() is the one-line reason."""


def _finite(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number")


class OrderEvent(msgspec.Struct, kw_only=True):
    """`oms.order_events`, key order_id. ``status`` is canonical after decoding."""

    order_id: NonEmpty
    seq: Annotated[int, msgspec.Meta(ge=1)]
    ts: TzDatetime
    status: str
    strategy: NonEmpty
    symbol: Symbol
    side: Literal["BUY", "SELL"]
    quantity: NonNegInt
    filled_quantity: NonNegInt = 0
    price: NonNegFloat | None = None
    average_price: NonNegFloat | None = None
    reason: str = ""
    broker_order_id: str = ""
    broker_status: str = ""

    def __post_init__(self) -> None:
        try:
            canon = canonical_status(self.status, self.filled_quantity)
        except UnknownStatus as e:
            raise ValueError(f"{e} at `status`") from None
        if canon != self.status and not self.broker_status:
            self.broker_status = self.status
        self.status = canon.value
        if self.filled_quantity > self.quantity:
            raise ValueError("`filled_quantity` exceeds `quantity`")
        _finite("price", self.price)
        _finite("average_price", self.average_price)


GatewayEventKind = Literal[
    "order_sent", "order_ack", "fill", "rate_limited", "reject", "error", "reconnect"
]


class GatewayEvent(msgspec.Struct, kw_only=True):
    """`gateway.events`, key gateway."""

    ts: TzDatetime
    gateway: NonEmpty
    event: GatewayEventKind
    order_id: str = ""
    latency_ms: NonNegFloat | None = None
    endpoint: str = ""
    quantity: NonNegInt | None = None
    price: NonNegFloat | None = None
    message: str = ""

    def __post_init__(self) -> None:
        _finite("latency_ms", self.latency_ms)
        _finite("price", self.price)


class Heartbeat(msgspec.Struct, kw_only=True):
    """`ops.heartbeats`, key process."""

    ts: TzDatetime
    process: NonEmpty
    host: str = ""
    pid: NonNegInt = 0
    status: Literal["ok", "degraded", "stopping"] = "ok"
    detail: str = ""


class Position(msgspec.Struct, kw_only=True):
    """`risk.positions`, key strategy: the full state of one (strategy, symbol) position."""

    ts: TzDatetime
    strategy: NonEmpty
    symbol: Symbol
    quantity: int
    average_price: NonNegFloat
    last_price: NonNegFloat
    realized_pnl: float
    multiplier: PosFloat = 1.0

    def __post_init__(self) -> None:
        for name in ("average_price", "last_price", "realized_pnl", "multiplier"):
            _finite(name, getattr(self, name))


class Bar(msgspec.Struct, kw_only=True):
    """`marketdata.bars_1m`, key symbol. ``ts`` is the bar's start (IST offset)."""

    symbol: Symbol
    ts: TzDatetime
    open: PosFloat
    high: PosFloat
    low: PosFloat
    close: PosFloat
    volume: NonNegInt

    def __post_init__(self) -> None:
        for name in ("open", "high", "low", "close"):
            _finite(name, getattr(self, name))
        if self.low > min(self.open, self.close) or self.high < max(self.open, self.close):
            raise ValueError("bar is inconsistent: need low <= open, close <= high")
        if self.ts.second or self.ts.microsecond:
            raise ValueError("`ts` must be on a minute boundary")


class BarReplay(Bar, kw_only=True):
    """`marketdata.bars_1m.replay`: a healed bar re-published by the autoheal."""

    replay: bool = True
    reason: str = ""
    recon_run_id: str = ""


MESSAGE_TYPES: dict[str, type[msgspec.Struct]] = {
    "order_events": OrderEvent,
    "gateway_events": GatewayEvent,
    "heartbeats": Heartbeat,
    "positions": Position,
    "bars_1m": Bar,
    "bars_1m_replay": BarReplay,
}

_DECODERS = {k: msgspec.json.Decoder(t) for k, t in MESSAGE_TYPES.items()}
_encoder = msgspec.json.Encoder()


def decoder(kind: str) -> msgspec.json.Decoder:
    return _DECODERS[kind]


def decode(kind: str, payload: bytes | None):
    """Decode and validate one message of ``kind`` (a key of MESSAGE_TYPES)."""
    if payload is None:
        raise DecodeError("empty payload (tombstone)")
    try:
        return _DECODERS[kind].decode(payload)
    except msgspec.ValidationError as e:
        raise DecodeError(_clean(str(e))) from None
    except msgspec.DecodeError as e:
        raise DecodeError(f"not valid JSON: {_clean(str(e))}") from None


def _clean(msg: str) -> str:
    return msg.replace("\n", " ")[:300]


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)
