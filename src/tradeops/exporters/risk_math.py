"""Risk buckets from position snapshots: equity, running peak, drawdown, exposure.

Pure logic (no Kafka, no database): :class:`RiskBook` keeps the latest snapshot of every
(strategy, symbol) position and, per bucket, compensated running sums of

- equity   = sum(realized_pnl + quantity * (last_price - average_price) * multiplier)
- gross    = sum(|quantity * last_price * multiplier|)
- net      = sum(quantity * last_price * multiplier)

A new snapshot replaces the old one: its old contribution is subtracted and the new one
added (Neumaier-compensated, so a long day of add/subtract keeps the sums exact to
~1 ulp of the result instead of drifting). After every message the touched buckets update

- peak          = running max of {0} and every equity seen since the reset (the session's
                  starting capital counts as the first peak, so losing from the open is
                  already a drawdown)
- drawdown      = peak - equity (>= 0, INR)
- max_drawdown  = running max of drawdown since the reset
- ratios        = drawdown / (capital + peak); gross / capital; net / capital, only where
                  the bucket has a capital figure.

Buckets: ``strategy`` (from the message), ``sector`` and ``underlying`` (symbol maps in
config; a cash-segment symbol like ``NSE:INFY`` is its own underlying when not mapped;
anything unmapped goes to the bucket ``unmapped`` and is counted), and ``total``.
The session of a timestamp is its date in the calendar timezone, starting at the reset
time (default the session open): a snapshot before it belongs to the previous session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo

UNMAPPED = "unmapped"
TOTAL = "total"
CASH_EXCHANGES = ("NSE", "BSE")

# indices into a bucket's state list (a list is the fastest mutable record in CPython)
EQ_S, EQ_C, GR_S, GR_C, NET_S, NET_C, PEAK, MAXDD = range(8)


def _nadd(b: list, i: int, x: float) -> None:
    """Neumaier-compensated b[i] += x (b[i+1] holds the running compensation)."""
    s = b[i]
    t = s + x
    if abs(s) >= abs(x):
        b[i + 1] += (s - t) + x
    else:
        b[i + 1] += (x - t) + s
    b[i] = t


def session_day(ts: dt.datetime, tz: dt.tzinfo, reset: dt.time) -> dt.date:
    """The trading session a timestamp belongs to (resets at ``reset`` local time)."""
    local = ts.astimezone(tz)
    d = local.date()
    if local.time() < reset:
        d -= dt.timedelta(days=1)
    return d


class RiskBook:
    def __init__(
        self,
        bucket_types: Iterable[str] = ("strategy", "sector", "underlying", "total"),
        sectors: dict[str, str] | None = None,
        underlyings: dict[str, str] | None = None,
        capital: dict[tuple[str, str], float] | None = None,
        timezone: str = "Asia/Kolkata",
        reset_time: str = "09:15",
    ):
        self.bucket_types = tuple(dict.fromkeys(bucket_types))
        self.sectors = dict(sectors or {})
        self.underlyings = dict(underlyings or {})
        self.capital = dict(capital or {})
        self.tz = ZoneInfo(timezone)
        h, m = reset_time.split(":")
        self.reset = dt.time(int(h), int(m))
        self.day: dt.date | None = None
        # (strategy, symbol) -> (equity, gross, net, bucket keys, snapshot tuple)
        self.positions: dict[tuple[str, str], tuple] = {}
        self.buckets: dict[tuple[str, str], list] = {}
        self.dirty_buckets: set[tuple[str, str]] = set()
        self.dirty_positions: set[tuple[str, str]] = set()
        self.unmapped: dict[str, int] = {t: 0 for t in ("sector", "underlying")}
        self.unmapped_symbols: set[tuple[str, str]] = set()
        self.messages = 0
        self._keys_cache: dict[tuple[str, str], tuple] = {}
        # pre-initialise the buckets known from config: they are exported from the start
        for bt, name in self.capital:
            if bt in self.bucket_types:
                self._bucket((bt, name))
        if "total" in self.bucket_types:
            self._bucket(("total", TOTAL))
        if "sector" in self.bucket_types:
            for s in set(self.sectors.values()):
                self._bucket(("sector", s))

    # ------------------------------------------------------------------ buckets
    def _bucket(self, key: tuple[str, str]) -> list:
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        return b

    def bucket_keys(self, strategy: str, symbol: str) -> tuple:
        """The buckets a position belongs to; records unmapped symbols."""
        ck = (strategy, symbol)
        keys = self._keys_cache.get(ck)
        if keys is not None:
            return keys
        out = []
        for bt in self.bucket_types:
            if bt == "strategy":
                out.append(("strategy", strategy))
            elif bt == "total":
                out.append(("total", TOTAL))
            elif bt == "sector":
                out.append(("sector", self._map("sector", self.sectors, symbol)))
            elif bt == "underlying":
                u = self.underlyings.get(symbol)
                if u is None:
                    exch, _, tsym = symbol.partition(":")
                    u = tsym if exch in CASH_EXCHANGES else self._map("underlying", {}, symbol)
                out.append(("underlying", u))
        keys = tuple(out)
        self._keys_cache[ck] = keys
        return keys

    def _map(self, bt: str, mapping: dict[str, str], symbol: str) -> str:
        v = mapping.get(symbol)
        if v is None:
            if (bt, symbol) not in self.unmapped_symbols:
                self.unmapped_symbols.add((bt, symbol))
                self.unmapped[bt] += 1
            return UNMAPPED
        return v

    def session_of(self, ts: dt.datetime) -> dt.date:
        return session_day(ts, self.tz, self.reset)

    # ------------------------------------------------------------------- update
    def roll(self, day: dt.date) -> None:
        """Start a new session: peaks restart from max(0, equity), drawdowns from there."""
        self.day = day
        for key, b in self.buckets.items():
            eq = b[EQ_S] + b[EQ_C]
            b[PEAK] = eq if eq > 0.0 else 0.0
            b[MAXDD] = b[PEAK] - eq
            self.dirty_buckets.add(key)

    def apply(self, ts: dt.datetime, strategy: str, symbol: str, quantity: int,
              average_price: float, last_price: float, realized_pnl: float,
              multiplier: float = 1.0) -> None:
        """Replace the (strategy, symbol) snapshot and update its buckets."""
        day = self.session_of(ts)
        if self.day is None or day > self.day:
            # a later session: peaks and max drawdowns restart
            self.roll(day)
        value = quantity * last_price * multiplier
        equity = realized_pnl + quantity * (last_price - average_price) * multiplier
        gross = abs(value)
        pkey = (strategy, symbol)
        old = self.positions.get(pkey)
        keys = self.bucket_keys(strategy, symbol)
        self.positions[pkey] = (equity, gross, value, keys,
                                (ts, quantity, average_price, last_price, realized_pnl, multiplier))
        self.dirty_positions.add(pkey)
        buckets = self.buckets
        for key in keys:
            b = buckets.get(key)
            if b is None:
                b = self._bucket(key)
            if old is not None:
                _nadd(b, EQ_S, -old[0])
                _nadd(b, GR_S, -old[1])
                _nadd(b, NET_S, -old[2])
            _nadd(b, EQ_S, equity)
            _nadd(b, GR_S, gross)
            _nadd(b, NET_S, value)
            eq = b[EQ_S] + b[EQ_C]
            if eq > b[PEAK]:
                b[PEAK] = eq
            dd = b[PEAK] - eq
            if dd > b[MAXDD]:
                b[MAXDD] = dd
            self.dirty_buckets.add(key)
        self.messages += 1  # last: a reader that sees the count sees the whole update

    def load_position(self, ts: dt.datetime, strategy: str, symbol: str, quantity: int,
                      average_price: float, last_price: float, realized_pnl: float,
                      multiplier: float = 1.0) -> None:
        """Restore a persisted snapshot: sums only (peaks come from :meth:`restore_peak`)."""
        value = quantity * last_price * multiplier
        equity = realized_pnl + quantity * (last_price - average_price) * multiplier
        keys = self.bucket_keys(strategy, symbol)
        pkey = (strategy, symbol)
        old = self.positions.get(pkey)
        self.positions[pkey] = (equity, abs(value), value, keys,
                                (ts, quantity, average_price, last_price, realized_pnl, multiplier))
        for key in keys:
            b = self._bucket(key)
            if old is not None:
                _nadd(b, EQ_S, -old[0])
                _nadd(b, GR_S, -old[1])
                _nadd(b, NET_S, -old[2])
            _nadd(b, EQ_S, equity)
            _nadd(b, GR_S, abs(value))
            _nadd(b, NET_S, value)

    def restore_peak(self, day: dt.date, key: tuple[str, str], peak: float,
                     max_drawdown: float) -> None:
        """Merge a persisted peak of session ``day`` (max-merge: replaying what was
        persisted is harmless). Peaks of an older session than the book's are ignored."""
        if self.day is None:
            self.day = day
        if day != self.day:
            return
        b = self._bucket(key)
        b[PEAK] = max(b[PEAK], peak)
        b[MAXDD] = max(b[MAXDD], max_drawdown)

    # ------------------------------------------------------------------- output
    def values(self, key: tuple[str, str]) -> dict[str, float | None]:
        b = self.buckets[key]
        eq = b[EQ_S] + b[EQ_C]
        gross = b[GR_S] + b[GR_C]
        net = b[NET_S] + b[NET_C]
        dd = b[PEAK] - eq
        cap = self.capital.get(key)
        out: dict[str, float | None] = {
            "equity": eq, "peak": b[PEAK], "drawdown": dd, "max_drawdown": b[MAXDD],
            "gross": gross, "net": net, "capital": cap,
            "drawdown_ratio": None, "gross_ratio": None, "net_ratio": None,
        }
        if cap:
            base = cap + b[PEAK]
            out["drawdown_ratio"] = dd / base if base > 0 else None
            out["gross_ratio"] = gross / cap
            out["net_ratio"] = net / cap
        return out
