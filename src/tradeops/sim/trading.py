"""The simulated trading stack: orders, gateway events, heartbeats, positions and bars.

:class:`Generator` is pure logic (no I/O): ``advance(t)`` returns, in time order, every
contract message due up to ``t`` seconds after ``start`` as ``(kind, key, struct)``, where
``kind`` is a key of ``contracts.MESSAGE_TYPES``. The same generator drives the fast mode
(a whole session as fast as possible) and the live mode (``t`` = wall clock).

The ground truth (:class:`GroundTruth`) is counted here, as messages are generated:
messages per topic, order events per canonical status, final status per order, stuck
orders, injected invalid transitions, duplicates and out-of-order events, gateway events
per kind, risk approvals and rejections per strategy (the upstream metrics), bars.

Order paths (probabilities from ``[sim]``): risk reject; broker reject; fill (sometimes
via TRIGGER_PENDING, a modification, or partial fills); cancel (sometimes after partial
fills); expiry; stuck in SUBMITTED or CANCEL_PENDING. On top: Kite status strings in
``status``, duplicated events, swapped (out-of-order) events and invalid transitions
(an event after a terminal status). Every generated transition is checked against
``order_states.TRANSITIONS``; only the deliberately invalid ones are counted invalid.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime, timedelta
from random import Random

from ..config import SimConfig
from ..contracts import Bar, GatewayEvent, Heartbeat, OrderEvent, Position
from ..order_states import NEW, S, canonical_status, is_allowed
from .market import IST, PAIRS, Market, _stable_int

PROCESSES: tuple[str, ...] = ("oms-core", "gateway-zerodha", "risk-manager", "strategy-runner")
GATEWAY = "zerodha"
RISK_REASONS: tuple[str, ...] = (
    "max_position", "max_order_value", "drawdown_limit", "price_band", "blocked_symbol")
BROKER_REJECTS: tuple[str, ...] = (
    "Insufficient funds. Required margin is higher than available margin",
    "Order price is outside the circuit limits",
    "RMS: blocked for the instrument",
    "Markets are closed right now",
)
ENDPOINTS: tuple[str, ...] = (
    "/orders/regular", "/orders/regular/:order_id", "/quote", "/portfolio/positions")
# canonical -> Kite status string (EXPIRED and the pre-broker states have none)
KITE_OF: dict[str, str] = {
    S.SUBMITTED: "OPEN PENDING",
    S.OPEN: "OPEN",
    S.PARTIALLY_FILLED: "OPEN",  # with filled_quantity > 0
    S.TRIGGER_PENDING: "TRIGGER PENDING",
    S.MODIFY_PENDING: "MODIFY PENDING",
    S.CANCEL_PENDING: "CANCEL PENDING",
    S.FILLED: "COMPLETE",
    S.CANCELLED: "CANCELLED",
    S.REJECTED: "REJECTED",
}


@dataclass
class GroundTruth:
    """Counts computed while generating; ``as_dict()`` is the fast mode's JSON summary."""

    messages: Counter = field(default_factory=Counter)  # contract kind -> messages
    by_status: Counter = field(default_factory=Counter)  # canonical status of each event
    kite_status_events: int = 0
    final_status: Counter = field(default_factory=Counter)
    stuck: Counter = field(default_factory=Counter)
    invalid_transitions: Counter = field(default_factory=Counter)  # "FROM->TO"
    duplicates: int = 0
    out_of_order: int = 0
    orders_by_strategy: Counter = field(default_factory=Counter)
    emitted: Counter = field(default_factory=Counter)  # strategy -> orders (CREATED)
    approved: Counter = field(default_factory=Counter)  # strategy
    rejected: Counter = field(default_factory=Counter)  # (strategy, reason)
    gateway: Counter = field(default_factory=Counter)  # event kind
    rate_limited: Counter = field(default_factory=Counter)  # endpoint
    heartbeats: Counter = field(default_factory=Counter)  # process
    bars_kafka: int = 0
    bars_pg: int = 0
    positions: int = 0

    def as_dict(self) -> dict:
        rejected: dict[str, dict[str, int]] = defaultdict(dict)
        for (strategy, reason), n in sorted(self.rejected.items()):
            rejected[strategy][reason] = n
        return {
            "messages": dict(sorted(self.messages.items())),
            "order_events": {
                "by_status": dict(sorted(self.by_status.items())),
                "kite_status_strings": self.kite_status_events,
                "duplicates": self.duplicates,
                "out_of_order": self.out_of_order,
                "invalid_transitions": dict(sorted(self.invalid_transitions.items())),
            },
            "orders": {
                "total": sum(self.orders_by_strategy.values()),
                "by_strategy": dict(sorted(self.orders_by_strategy.items())),
                "by_final_status": dict(sorted(self.final_status.items())),
                "stuck": dict(sorted(self.stuck.items())),
            },
            "upstream_metrics": {
                "orders_emitted_total": dict(sorted(self.emitted.items())),
                "risk_orders_approved_total": dict(sorted(self.approved.items())),
                "risk_orders_rejected_total": dict(rejected),
            },
            "gateway_events": {
                "by_event": dict(sorted(self.gateway.items())),
                "rate_limited_by_endpoint": dict(sorted(self.rate_limited.items())),
            },
            "heartbeats": dict(sorted(self.heartbeats.items())),
            "positions": self.positions,
            "bars": {"kafka": self.bars_kafka, "postgres_rows": self.bars_pg},
        }


@dataclass
class _Pos:
    qty: int = 0
    avg: float = 0.0
    realized: float = 0.0

    def apply(self, side: str, qty: int, price: float) -> None:
        """Average-price accounting of one fill."""
        signed = qty if side == "BUY" else -qty
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            total = abs(self.qty) + qty
            self.avg = (self.avg * abs(self.qty) + price * qty) / total
            self.qty += signed
            return
        closed = min(abs(self.qty), qty)
        direction = 1 if self.qty > 0 else -1
        self.realized += closed * (price - self.avg) * direction
        self.qty += signed
        if self.qty == 0:
            self.avg = 0.0
        elif (self.qty > 0) != (direction > 0):  # flipped: the rest opens at this price
            self.avg = price


def _tick(x: float) -> float:
    return round(x * 20) / 20


class Generator:
    """Deterministic (for a seed) source of the stack's messages; see the module docstring.

    ``start`` is the wall time of t = 0. In fast mode it is the session open of the
    market's date; in live mode it is now and bars follow the wall clock.
    """

    def __init__(
        self,
        market_for: Callable[[Date], Market],
        sim: SimConfig,
        start: datetime,
        *,
        live: bool = False,
        run_tag: str = "",
    ):
        self.sim = sim
        self.live = live
        self.start = start.astimezone(IST)
        self._market_for = market_for
        self.market = market_for(self.start.date())
        self.truth = GroundTruth()
        self.rng = Random(_stable_int("trading", self.market.date, sim.seed))
        self.heartbeat_enabled: dict[str, bool] = dict.fromkeys(PROCESSES, True)
        self.pg_rows: list[tuple] = []  # internal bars due for PostgreSQL, drained by the runner
        self._heap: list[tuple[float, int, str, object]] = []
        self._n = 0
        self._next_s = 0
        self._order_no = 0
        self._tag = run_tag or f"F{sim.seed}"
        self._pos: dict[tuple[str, str], _Pos] = {}
        self._pids = {p: 1000 + 17 * i for i, p in enumerate(PROCESSES)}
        self.session_s = self.market.n_minutes * 60
        self._universe = {s: self._pick_universe(s) for s in sim.strategies}
        self._fast_bars: dict[int, list] = self._plan_fast_bars() if not live else {}
        self.horizon_s = (max(self._fast_bars) + 1) if self._fast_bars else self.session_s

    # ------------------------------------------------------------------ set-up
    def _pick_universe(self, strategy: str) -> list[str]:
        syms = self.market.symbols
        if strategy == "pairs":
            legs = [s for p in PAIRS for s in p if s in syms]
            if legs:
                return legs
        rng = Random(_stable_int("universe", strategy, self.sim.seed))
        return rng.sample(syms, min(30, len(syms)))

    def _plan_fast_bars(self) -> dict[int, list]:
        """Emission second -> internal bars: each bar one minute after its start."""
        out: dict[int, list] = defaultdict(list)
        open_ts = self.market.minutes[0]
        for sym in self.market.symbols:
            for b in self.market.internal_bars(sym):
                k = int((b.ts - open_ts).total_seconds() // 60)
                out[max(0, (k + 1) * 60)].append((sym, b))
        return dict(out)

    # ------------------------------------------------------------------ driving
    def advance(self, until_s: float) -> list[tuple[str, str, object]]:
        """Every message due at or before ``until_s`` (seconds after start), in time order."""
        out: list[tuple[str, str, object]] = []
        while self._next_s <= until_s:
            s = self._next_s
            self._drain(s, out, inclusive=False)
            self._second(s, out)
            self._next_s += 1
        self._drain(until_s, out, inclusive=True)
        return out

    def finish(self) -> list[tuple[str, str, object]]:
        """Fast mode: the rest of the day, up to the last scheduled event."""
        out = self.advance(self.horizon_s)
        self._drain(math.inf, out, inclusive=True)
        return out

    def _push(self, t: float, kind: str, payload: object) -> None:
        self._n += 1
        heapq.heappush(self._heap, (t, self._n, kind, payload))

    def _drain(self, until: float, out: list, inclusive: bool) -> None:
        h = self._heap
        while h and (h[0][0] <= until if inclusive else h[0][0] < until):
            t, _, kind, payload = heapq.heappop(h)
            if kind == "order":
                self._emit_order(payload, out)  # type: ignore[arg-type]
            elif kind == "gw":
                self._emit(out, "gateway_events", GATEWAY, payload)
                ev: GatewayEvent = payload  # type: ignore[assignment]
                self.truth.gateway[ev.event] += 1
                if ev.event == "rate_limited":
                    self.truth.rate_limited[ev.endpoint] += 1
            elif kind == "fill":
                strategy, symbol, side, qty, price = payload  # type: ignore[misc]
                pos = self._pos.setdefault((strategy, symbol), _Pos())
                pos.apply(side, qty, price)
                self._emit_position(t, strategy, symbol, pos, price, out)

    def ts(self, t: float) -> datetime:
        return self.start + timedelta(seconds=t)

    def _emit(self, out: list, kind: str, key: str, msg: object) -> None:
        out.append((kind, key, msg))
        self.truth.messages[kind] += 1

    # ------------------------------------------------------------------ each second
    def _second(self, s: int, out: list) -> None:
        now = self.ts(s)
        if self.live and now.date() != self.market.date:
            self.market = self._market_for(now.date())  # a new day
        for p in PROCESSES:
            if self.heartbeat_enabled.get(p, True):
                degraded = p == "gateway-zerodha" and self.rng.random() < 0.002
                self._emit(out, "heartbeats", p, Heartbeat(
                    ts=now, process=p, host="sim-host", pid=self._pids[p],
                    status="degraded" if degraded else "ok",
                    detail="rate limited by broker" if degraded else ""))
                self.truth.heartbeats[p] += 1
        if self.live or s < self.session_s - 120:
            p_order = self.sim.orders_per_minute / 60.0 / max(1, len(self.sim.strategies))
            for strategy in self.sim.strategies:
                if self.rng.random() < p_order:
                    self._new_order(s + self.rng.random(), strategy)
            if self.rng.random() < 1 / 1800:  # a websocket reconnect every ~30 min
                self._push(s + 0.5, "gw", GatewayEvent(
                    ts=self.ts(s + 0.5), gateway=GATEWAY, event="reconnect",
                    message="websocket reconnected"))
            if self.rng.random() < 1 / 600:  # quote/positions polling hits the rate limit
                self._push(s + 0.3, "gw", GatewayEvent(
                    ts=self.ts(s + 0.3), gateway=GATEWAY, event="rate_limited",
                    endpoint=self.rng.choice(ENDPOINTS[1:]), message="Too many requests"))
            if self.rng.random() < 1 / 900:
                self._push(s + 0.7, "gw", GatewayEvent(
                    ts=self.ts(s + 0.7), gateway=GATEWAY, event="error", endpoint="/quote",
                    message="read timeout after 7s"))
        if self.live:
            if now.second == 0:
                self._live_bars(now - timedelta(minutes=1), out)
                self._snapshots(s, out)
        else:
            bars = self._fast_bars.get(s)
            if bars:
                self._bars(bars, out, to_pg=True)
            if s % 60 == 0 and 0 < s <= self.session_s:
                self._snapshots(s, out)

    # ------------------------------------------------------------------ bars
    def _bars(self, bars: list, out: list, to_pg: bool) -> None:
        for sym, b in bars:
            self._emit(out, "bars_1m", sym, Bar(symbol=sym, ts=b.ts, open=b.open, high=b.high,
                                               low=b.low, close=b.close, volume=b.volume))
            if to_pg:
                self.pg_rows.append((sym, b.ts, b.open, b.high, b.low, b.close, b.volume))
        self.truth.bars_kafka += len(bars)
        if to_pg:
            self.truth.bars_pg += len(bars)

    def _live_bars(self, minute: datetime, out: list) -> None:
        """Live: the bars of the minute that just ended (real IST wall clock)."""
        m = self.market
        if m.date != minute.date():
            m = self._market_for(minute.date())
        k = m.minute_index(minute)
        if k is not None or minute < m.minutes[0] or minute > m.minutes[-1]:
            # in the session: exactly the day's internal bars of that minute (PostgreSQL
            # too, so a recon of today sees the injected discrepancies); the outside-session
            # injected bars go out at their own minute the same way.
            rows = [(s, b) for s in m.symbols for b in m.internal_bars(s) if b.ts == minute]
            if k is not None or rows:
                self._bars(rows, out, to_pg=True)
                return
        # outside the session: keep bars flowing (Kafka only) by replaying the day
        idx = self._index_at(minute)
        rows = []
        for s in m.symbols:
            b = m.true_bars(s)[idx]
            rows.append((s, type(b)(minute, b.open, b.high, b.low, b.close, b.volume)))
        self._bars(rows, out, to_pg=False)

    def _index_at(self, when: datetime) -> int:
        """Which minute of the day's bars prices come from at ``when``."""
        m = self.market
        if not self.live:
            return min(m.n_minutes - 1, max(0, int((when - m.minutes[0]).total_seconds() // 60)))
        # live: the session minute itself; outside the session the day plays forward then
        # backward (ping-pong), so prices never jump at a wrap
        n = m.n_minutes
        k = int((when - m.minutes[0]).total_seconds() // 60) % (2 * n)
        return k if k < n else 2 * n - 1 - k

    def price(self, symbol: str, t: float) -> float:
        """The traded price at t: interpolated inside that minute's bar, on the tick."""
        when = self.ts(t)
        b = self.market.true_bars(symbol)[self._index_at(when)]
        frac = (when.second + when.microsecond / 1e6) / 60.0
        return _tick(b.open + (b.close - b.open) * frac)

    # ------------------------------------------------------------------ positions
    def _emit_position(self, t: float, strategy: str, symbol: str, pos: _Pos, last: float,
                       out: list) -> None:
        self._emit(out, "positions", strategy, Position(
            ts=self.ts(t), strategy=strategy, symbol=symbol, quantity=pos.qty,
            average_price=round(pos.avg, 4), last_price=last,
            realized_pnl=round(pos.realized, 2)))
        self.truth.positions += 1

    def _snapshots(self, s: int, out: list) -> None:
        for (strategy, symbol), pos in sorted(self._pos.items()):
            if pos.qty:
                self._emit_position(s, strategy, symbol, pos, self.price(symbol, s), out)

    # ------------------------------------------------------------------ orders
    def _new_order(self, t: float, strategy: str) -> None:
        """Plan one order's whole life at creation; its events go on the schedule."""
        rng, sim = self.rng, self.sim
        self._order_no += 1
        oid = f"SIM-{self.market.date:%Y%m%d}-{self._tag}-{self._order_no:06d}"
        symbol = rng.choice(self._universe[strategy])
        px = self.price(symbol, t)
        pos = self._pos.get((strategy, symbol))
        qty = max(1, int(rng.uniform(50_000, 500_000) / px))
        if pos and abs(pos.qty) * px > 1_500_000:
            side = "SELL" if pos.qty > 0 else "BUY"  # reduce a large position
        else:
            side = rng.choice(("BUY", "SELL"))
        limit = _tick(px * (1.001 if side == "BUY" else 0.999))
        self.truth.orders_by_strategy[strategy] += 1
        plan = _Plan(self, oid, symbol, side, qty, t)

        plan.step(0.0, S.CREATED)
        if rng.random() < sim.risk_reject_share:
            # CREATED -> RISK_REJECTED
            plan.step(rng.uniform(0.002, 0.02), S.RISK_REJECTED, reason=rng.choice(RISK_REASONS))
        else:
            # CREATED -> RISK_APPROVED -> SUBMITTED
            plan.step(rng.uniform(0.002, 0.02), S.RISK_APPROVED)
            sent = plan.t + rng.uniform(0.001, 0.01)
            if rng.random() < sim.rate_limited_share:
                plan.gw(sent, "rate_limited", endpoint="/orders/regular",
                        message="Too many requests")
                sent += rng.uniform(0.2, 1.0)  # the gateway backs off and retries
            plan.gw(sent, "order_sent", endpoint="/orders/regular", quantity=qty, price=limit)
            plan.step(sent - plan.t, S.SUBMITTED)
            self._working_path(rng, plan)
        final = plan.steps[-1][1]
        self.truth.final_status[final] += 1
        if final in (S.SUBMITTED, S.CANCEL_PENDING):
            self.truth.stuck[final] += 1
        invalid_at = -1
        if final in (S.FILLED, S.CANCELLED, S.REJECTED) and rng.random() < sim.invalid_share:
            # deliberately invalid: a late broker update after the terminal status
            bad = S.CANCELLED if final == S.FILLED else S.FILLED
            plan.step(rng.uniform(0.5, 3.0), bad, reason="late broker update")
            if bad == S.FILLED:
                plan.steps[-1][2] = qty
                plan.steps[-1][3] = plan.steps[-1][3] or px
            invalid_at = len(plan.steps) - 1

        kite = rng.random() < sim.kite_status_share
        prev = NEW
        events: list[tuple[float, OrderEvent, str]] = []
        broker_oid = ""
        for i, (at, status, filled, avg, reason) in enumerate(plan.steps):
            if status == S.SUBMITTED:
                broker_oid = f"{self.market.date:%y%m%d}{rng.randrange(10**9):09d}"
            kite_str = KITE_OF.get(status, "") if broker_oid else ""
            shown = kite_str if (kite and kite_str) else status
            ev = OrderEvent(order_id=oid, seq=i + 1, ts=self.ts(at), status=shown,
                            strategy=strategy, symbol=symbol, side=side, quantity=qty,
                            filled_quantity=filled, price=limit,
                            average_price=round(avg, 4) if avg else None, reason=reason,
                            broker_order_id=broker_oid, broker_status=kite_str)
            # the contract canonicalises on construction; the wire carries the Kite string
            ev.status = shown
            canon = canonical_status(shown, filled)
            invalid = f"{prev}->{canon.value}" if i == invalid_at else ""
            if is_allowed(prev, canon) == bool(invalid):  # the generator's own guard
                raise AssertionError(f"sim generator bug: {oid} {prev}->{canon}")
            if not invalid:
                prev = canon.value
            events.append((at, ev, invalid))
        emit_t = [e[0] for e in events]
        if len(events) >= 4 and rng.random() < sim.out_of_order_share:
            # out-of-order: seq n+1 reaches Kafka before seq n
            i = rng.randrange(2, len(events) - 1)
            emit_t[i], emit_t[i + 1] = emit_t[i + 1] + 1e-6, emit_t[i]
            self.truth.out_of_order += 1
        for at, (_, ev, invalid) in zip(emit_t, events, strict=True):
            self._push(at, "order", (ev, invalid, False))
        if rng.random() < sim.duplicate_share:
            at, ev, invalid = events[rng.randrange(len(events))]
            self._push(at + rng.uniform(0.05, 2.0), "order", (ev, invalid, True))
        for g in plan.gateway:
            self._push((g.ts - self.start).total_seconds(), "gw", g)
        for at, n, fpx in plan.fills:
            self._push(at + 1e-6, "fill", (strategy, symbol, side, n, fpx))

    def _working_path(self, rng: Random, plan: _Plan) -> None:
        """From SUBMITTED on: the broker's part of the lifecycle."""
        sim = self.sim
        submitted = plan.t
        r = rng.random()
        if r < sim.stuck_share / 2:
            return  # stuck in SUBMITTED: no broker update ever arrives
        if r < sim.stuck_share / 2 + sim.broker_reject_share:
            # SUBMITTED -> REJECTED
            reason = rng.choice(BROKER_REJECTS)
            at = plan.step(rng.uniform(0.05, 0.4), S.REJECTED, reason=reason)
            plan.gw(at, "reject", message=reason, latency_ms=round((at - submitted) * 1000, 3))
            return
        # SUBMITTED -> OPEN, or TRIGGER_PENDING for a stop-loss order; acked with latency
        latency = rng.lognormvariate(math.log(0.08), 0.6)
        trigger = rng.random() < 0.1
        at = plan.step(latency, S.TRIGGER_PENDING if trigger else S.OPEN)
        plan.gw(at, "order_ack", endpoint="/orders/regular", latency_ms=round(latency * 1000, 3))
        if trigger:
            plan.step(rng.uniform(2, 60), S.OPEN)  # TRIGGER_PENDING -> OPEN (triggered)
        if rng.random() < 0.05:
            # OPEN -> MODIFY_PENDING -> OPEN (price modified)
            plan.step(rng.uniform(1, 10), S.MODIFY_PENDING)
            plan.step(rng.uniform(0.1, 0.8), S.OPEN)
        r = rng.random()
        if r < sim.stuck_share / 2:
            # OPEN -> CANCEL_PENDING, and the broker never confirms
            plan.step(rng.uniform(1, 30), S.CANCEL_PENDING)
            return
        if r < sim.stuck_share / 2 + sim.expire_share:
            plan.step(rng.uniform(60, 600), S.EXPIRED)  # OPEN -> EXPIRED (validity ended)
            return
        if rng.random() < sim.partial_fill_share:
            for _ in range(rng.randint(1, 3)):
                n = max(1, int(plan.qty * rng.uniform(0.1, 0.3)))
                if plan.filled + n >= plan.qty:
                    break
                plan.fill(rng.uniform(0.2, 20), n)  # -> PARTIALLY_FILLED
        if rng.random() < sim.cancel_share:
            # (OPEN|PARTIALLY_FILLED) -> CANCEL_PENDING -> CANCELLED
            plan.step(rng.uniform(1, 30), S.CANCEL_PENDING)
            plan.step(rng.uniform(0.1, 1.0), S.CANCELLED)
            return
        plan.fill(rng.uniform(0.05, 30), plan.qty - plan.filled)  # -> FILLED

    def _emit_order(self, payload: tuple, out: list) -> None:
        ev, invalid, duplicate = payload
        self._emit(out, "order_events", ev.order_id, ev)
        canon = canonical_status(ev.status, ev.filled_quantity).value
        self.truth.by_status[canon] += 1
        if ev.status != canon:
            self.truth.kite_status_events += 1
        if duplicate:
            self.truth.duplicates += 1
        elif invalid:
            self.truth.invalid_transitions[invalid] += 1
        elif canon == S.CREATED:
            self.truth.emitted[ev.strategy] += 1
        elif canon == S.RISK_APPROVED:
            self.truth.approved[ev.strategy] += 1
        elif canon == S.RISK_REJECTED:
            self.truth.rejected[(ev.strategy, ev.reason)] += 1


class _Plan:
    """The planned life of one order: steps [t, status, filled, avg, reason], fills, gateway."""

    def __init__(self, gen: Generator, oid: str, symbol: str, side: str, qty: int, t: float):
        self.gen, self.oid, self.symbol, self.side, self.qty, self.t = gen, oid, symbol, side, qty, t
        self.steps: list[list] = []
        self.gateway: list[GatewayEvent] = []
        self.fills: list[tuple[float, int, float]] = []
        self.filled = 0
        self.value = 0.0

    def step(self, dt: float, status: str, reason: str = "") -> float:
        self.t += dt
        avg = self.value / self.filled if self.filled else None
        self.steps.append([self.t, status, self.filled, avg, reason])
        return self.t

    def gw(self, at: float, event: str, **kw) -> None:
        self.gateway.append(GatewayEvent(ts=self.gen.ts(at), gateway=GATEWAY, event=event,
                                         order_id=self.oid, **kw))

    def fill(self, dt: float, n: int) -> None:
        """A fill of n at the market (a tick of slippage half the time)."""
        px = self.gen.price(self.symbol, self.t + dt)
        if self.gen.rng.random() < 0.5:
            px = _tick(px + 0.05) if self.side == "BUY" else max(0.05, _tick(px - 0.05))
        self.filled += n
        self.value += n * px
        status = S.FILLED if self.filled >= self.qty else S.PARTIALLY_FILLED
        at = self.step(dt, status)
        self.fills.append((at, n, px))
        self.gw(at, "fill", quantity=n, price=px)
