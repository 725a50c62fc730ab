"""A deterministic synthetic market: 1-minute bars for one trading day, broker and internal side.

``Market(date, seed, n_symbols)`` is a pure function of its arguments (pure Python, no
numpy). Bars are computed lazily per symbol and cached, so building a ``Market`` is cheap
and a broker server can serve any date on demand.

Model
-----
- A market factor (one Gaussian return per minute, shared by every symbol of the day) plus
  an idiosyncratic random walk per symbol: ``ln close_t = ln close_{t-1} + b*m_t + e_t``.
- Pair legs A of :data:`PAIRS` are cointegrated with their leg B:
  ``ln A_t = c + ln B_t + s_t`` with ``s_t`` an AR(1) (Ornstein-Uhlenbeck) spread, so
  ``ln A - ln B`` is mean-reverting and a pairs exporter sees meaningful z-scores.
- open = previous close, high/low extend beyond max/min(open, close); all prices are on the
  0.05 tick (computed in integer ticks); volumes follow an intraday U-shape.

Discrepancies (the ground truth a reconciliation must find): the broker is the truth.
``broker_bars`` = true bars minus ``missing_broker`` minutes; ``internal_bars`` = true bars
minus ``missing_internal`` minutes, with ``price_mismatch`` (>= 10 ticks on the listed
columns, bar kept consistent) and ``volume_mismatch`` (>= 20 %) applied, plus
``outside_session`` bars stamped before the open or after the close. A (symbol, minute)
carries at most one discrepancy. :meth:`Market.injected` lists them all.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import date as Date
from datetime import datetime, time, timedelta, timezone
from random import Random
from statistics import NormalDist

IST = timezone(timedelta(hours=5, minutes=30), "IST")
TICK = 0.05
TICKS_PER_RUPEE = 20

KINDS = ("missing_internal", "missing_broker", "price_mismatch", "volume_mismatch",
         "outside_session")

# Real NSE names first (the pairs and the sector map of infra/dev/tradeops.toml lead),
# with a plausible price level (INR) and average daily volume (shares).
REAL: tuple[tuple[str, float, int], ...] = (
    ("INFY", 1520.0, 6_000_000), ("TCS", 3480.0, 2_500_000),
    ("HDFCBANK", 1680.0, 12_000_000), ("ICICIBANK", 1250.0, 14_000_000),
    ("SBIN", 810.0, 15_000_000), ("BANKBARODA", 245.0, 18_000_000),
    ("RELIANCE", 1290.0, 10_000_000), ("ONGC", 262.0, 16_000_000),
    ("WIPRO", 295.0, 9_000_000), ("HCLTECH", 1710.0, 3_000_000),
    ("KOTAKBANK", 1790.0, 4_000_000), ("AXISBANK", 1160.0, 8_000_000),
    ("ITC", 470.0, 13_000_000), ("LT", 3550.0, 2_000_000),
    ("HINDUNILVR", 2420.0, 1_500_000), ("BHARTIARTL", 1620.0, 6_000_000),
    ("MARUTI", 3900.0, 600_000), ("SUNPHARMA", 1780.0, 2_500_000),
    ("TATAMOTORS", 720.0, 11_000_000), ("TATASTEEL", 148.0, 30_000_000),
    ("TECHM", 1590.0, 2_000_000), ("ASIANPAINT", 2380.0, 1_200_000),
    ("BAJFINANCE", 3300.0, 2_200_000), ("TITAN", 3420.0, 900_000),
    ("ULTRACEMCO", 3890.0, 300_000), ("NTPC", 335.0, 12_000_000),
    ("POWERGRID", 290.0, 10_000_000), ("COALINDIA", 385.0, 8_000_000),
    ("JSWSTEEL", 1010.0, 3_000_000), ("HINDALCO", 660.0, 6_000_000),
    ("ADANIENT", 2350.0, 2_000_000), ("ADANIPORTS", 1380.0, 3_000_000),
    ("NESTLEIND", 2250.0, 800_000), ("BRITANNIA", 3010.0, 400_000),
    ("CIPLA", 1490.0, 2_000_000), ("DRREDDY", 1270.0, 1_500_000),
    ("DIVISLAB", 3700.0, 500_000), ("EICHERMOT", 3600.0, 500_000),
    ("HEROMOTOCO", 3450.0, 600_000), ("BAJAJ-AUTO", 3900.0, 400_000),
    ("INDUSINDBK", 980.0, 5_000_000), ("GRASIM", 2600.0, 600_000),
    ("BPCL", 305.0, 9_000_000), ("IOC", 140.0, 20_000_000),
    ("GAIL", 190.0, 12_000_000), ("M&M", 3050.0, 2_500_000),
    ("PNB", 104.0, 40_000_000), ("CANBK", 102.0, 30_000_000),
    ("VEDL", 450.0, 10_000_000), ("DLF", 780.0, 4_000_000),
)

# (leg A, leg B): leg A is built cointegrated with leg B (hedge ratio 1 in log prices).
PAIRS: tuple[tuple[str, str], ...] = (
    ("NSE:INFY", "NSE:TCS"),
    ("NSE:HDFCBANK", "NSE:ICICIBANK"),
    ("NSE:SBIN", "NSE:BANKBARODA"),
    ("NSE:RELIANCE", "NSE:ONGC"),
)
_LEG_A = {a: b for a, b in PAIRS}

_PREFIX = ("ADI", "BHA", "CHE", "DEV", "GAN", "HIN", "JAY", "KAL", "MAH", "NAV", "PRA",
           "RAJ", "SHR", "SUN", "TRI", "VIK", "AMB", "DHA", "GOD", "KES", "LAK", "NIR",
           "PAR", "SAR")
_SUFFIX = ("TECH", "PHARMA", "CHEM", "INFRA", "STEEL", "POWER", "FIN", "AUTO", "TEX", "AGRO",
           "LABS", "CEM", "SOFT", "MOTORS", "FOODS", "GAS", "BANK", "PAPER", "GLASS", "CAP",
           "LOGI", "METAL", "RETAIL", "ENERGY")


# standard normal quantiles: rng.choices(_NORM, k=n) draws n normals ~6x faster than gauss()
_NORM = [NormalDist().inv_cdf((k + 0.5) / 8192) for k in range(8192)]


@dataclass(frozen=True, slots=True)
class BarRow:
    """One 1-minute bar; ``ts`` is the tz-aware IST bar start."""

    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int


@dataclass(frozen=True, slots=True)
class Injected:
    """One injected discrepancy; ``columns`` lists the changed columns (price/volume)."""

    symbol: str
    ts: datetime
    kind: str
    columns: tuple[str, ...]


def _synthetic_names() -> list[str]:
    real = {n for n, _, _ in REAL}
    out: list[str] = []
    block = len(_PREFIX) * len(_SUFFIX)
    i = 0
    while len(out) < 20_000:
        name = _PREFIX[i % len(_PREFIX)] + _SUFFIX[(i // len(_PREFIX)) % len(_SUFFIX)]
        if i >= block:
            name += str(i // block + 1)
        if name not in real:
            out.append(name)
        i += 1
    return out


_SYNTHETIC = _synthetic_names()
MAX_SYMBOLS = len(REAL) + len(_SYNTHETIC)


def symbols_for(n_symbols: int) -> list[str]:
    """The first ``n_symbols`` symbols: real NSE names, then synthetic NSE-style ones."""
    if not 1 <= n_symbols <= MAX_SYMBOLS:
        raise ValueError(f"n_symbols must be 1..{MAX_SYMBOLS}, got {n_symbols}")
    names = [n for n, _, _ in REAL] + _SYNTHETIC
    return ["NSE:" + n for n in names[:n_symbols]]


def _stable_int(*parts: object) -> int:
    h = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def instrument_token_of(index: int) -> int:
    """Kite-style token: exchange_token * 256 + segment (1 = NSE equity)."""
    return exchange_token_of(index) * 256 + 1


def exchange_token_of(index: int) -> int:
    return 10_000 + index


def _profile(n: int) -> list[float]:
    """Intraday volume U-shape, mean ~1."""
    out = []
    for i in range(n):
        x = i / max(1, n - 1)
        out.append(0.55 + 1.6 * (x - 0.5) ** 2 * 4 * 0.5 + (0.9 if i < 15 else 0.0))
    mean = sum(out) / n
    return [v / mean for v in out]


class Market:
    """One synthetic trading day; see the module docstring."""

    def __init__(
        self,
        date: Date,
        seed: int = 42,
        n_symbols: int = 300,
        session: tuple[time, time] = (time(9, 15), time(15, 30)),
        discrepancy_rate: float = 0.002,
    ):
        if not 0 <= discrepancy_rate <= 0.2:
            raise ValueError(f"discrepancy_rate must be 0..0.2, got {discrepancy_rate}")
        self.date = date
        self.seed = seed
        self.n_symbols = n_symbols
        self.session = session
        self.discrepancy_rate = discrepancy_rate
        self.symbols: list[str] = symbols_for(n_symbols)
        self._index = {s: i for i, s in enumerate(self.symbols)}
        start = datetime.combine(date, session[0], IST)
        end = datetime.combine(date, session[1], IST)
        n = int((end - start).total_seconds() // 60)
        if n <= 0:
            raise ValueError(f"empty session {session[0]}-{session[1]}")
        self.n_minutes = n
        self.minutes: list[datetime] = [start + timedelta(minutes=i) for i in range(n)]
        self._minute_index = {ts: i for i, ts in enumerate(self.minutes)}
        rng = Random(_stable_int("market", date, seed))
        self._factor = [0.00035 * z for z in rng.choices(_NORM, k=n)]
        self._profile = _profile(n)
        self._ticks: dict[str, tuple[list[int], list[int], list[int], list[int], list[int]]] = {}
        self._true: dict[str, list[BarRow]] = {}
        self._plan()

    # ---------------------------------------------------------------- instruments
    def instrument_token(self, symbol: str) -> int:
        return instrument_token_of(self._index[symbol])

    def exchange_token(self, symbol: str) -> int:
        return exchange_token_of(self._index[symbol])

    def symbol_of_token(self, token: int) -> str | None:
        if token % 256 != 1:
            return None
        idx = token // 256 - 10_000
        return self.symbols[idx] if 0 <= idx < len(self.symbols) else None

    def index_of(self, symbol: str) -> int:
        return self._index[symbol]

    def minute_index(self, ts: datetime) -> int | None:
        return self._minute_index.get(ts)

    def base_price(self, symbol: str) -> float:
        return self._params(symbol)[0]

    # ---------------------------------------------------------------- the model
    def _params(self, symbol: str) -> tuple[float, int, float, float]:
        """(price level INR, daily volume, per-minute vol, market beta) for a symbol."""
        i = self._index[symbol]
        rng = Random(_stable_int("params", symbol))  # independent of date and seed
        if i < len(REAL):
            _, level, adv = REAL[i]
        else:
            level = round(math.exp(rng.uniform(math.log(100), math.log(4000))), 1)
            adv = int(math.exp(rng.uniform(math.log(200_000), math.log(8_000_000))))
        vol = rng.uniform(0.0005, 0.0012)
        beta = rng.uniform(0.6, 1.3)
        return level, adv, vol, beta

    def _log_closes(self, symbol: str) -> list[float]:
        level, _, vol, beta = self._params(symbol)
        rng = Random(_stable_int("path", self.date, self.seed, symbol))
        z = rng.choices(_NORM, k=self.n_minutes + 1)
        leg_b = _LEG_A.get(symbol)
        if leg_b is not None and leg_b in self._index:
            # leg A: ln A = c + ln B + s, s an AR(1) spread (half-life ~10 minutes)
            lb = self._log_closes(leg_b)
            c = math.log(level) - math.log(self._params(leg_b)[0])
            phi, sd = 0.93, 0.0009
            s = z[-1] * sd / math.sqrt(1 - phi * phi)
            out = []
            for x, e in zip(lb, z, strict=False):
                s = phi * s + sd * e
                out.append(c + x + s)
            return out
        x = math.log(level) + 0.004 * z[-1]  # the day's opening gap
        out = []
        for m, e in zip(self._factor, z, strict=False):
            x += beta * m + vol * e
            out.append(x)
        return out

    def _tick_arrays(self, symbol: str):
        got = self._ticks.get(symbol)
        if got is not None:
            return got
        _, adv, vol, _ = self._params(symbol)
        rng = Random(_stable_int("bars", self.date, self.seed, symbol))
        n = self.n_minutes
        zh = rng.choices(_NORM, k=n + 1)
        zl = rng.choices(_NORM, k=n)
        zv = rng.choices(_NORM, k=n)
        closes = self._log_closes(symbol)
        per_min = adv / n
        prof = self._profile
        o_t, h_t, l_t, c_t, v_t = [], [], [], [], []
        exp, floor, ceil = math.exp, math.floor, math.ceil
        wick = vol * 0.7
        t = TICKS_PER_RUPEE
        prev = exp(closes[0] - vol * zh[-1])
        for i, lc in enumerate(closes):
            c = exp(lc)
            ot = round(prev * t)
            ct = round(c * t)
            o_t.append(ot)
            c_t.append(ct)
            h_t.append(max(ceil(max(prev, c) * exp(abs(zh[i]) * wick) * t), ot, ct))
            l_t.append(min(floor(min(prev, c) * exp(-abs(zl[i]) * wick) * t), ot, ct))
            v_t.append(max(100, int(per_min * prof[i] * exp(0.45 * zv[i]))))
            prev = c
        got = (o_t, h_t, l_t, c_t, v_t)
        self._ticks[symbol] = got
        return got

    def true_bars(self, symbol: str) -> list[BarRow]:
        """Every session minute of the day (375 for 09:15-15:30), the real market."""
        bars = self._true.get(symbol)
        if bars is None:
            o, h, lo, c, v = self._tick_arrays(symbol)
            t = TICKS_PER_RUPEE
            bars = [BarRow(ts, o[i] / t, h[i] / t, lo[i] / t, c[i] / t, v[i])
                    for i, ts in enumerate(self.minutes)]
            self._true[symbol] = bars
        return bars

    # ---------------------------------------------------------------- discrepancies
    def _plan(self) -> None:
        """Choose the (symbol, minute, kind) of every injected discrepancy, up front."""
        rng = Random(_stable_int("inject", self.date, self.seed, self.n_symbols,
                                 self.discrepancy_rate))
        total = len(self.symbols) * self.n_minutes
        count = round(total * self.discrepancy_rate)
        if self.discrepancy_rate > 0:
            count = max(count, 10)
        count = min(count, total)
        n_out = max(2, round(count * 0.06)) if count else 0
        in_session = count - n_out
        positions = rng.sample(range(total), in_session)
        main_kinds = KINDS[:4]
        # per symbol: minute index -> (kind, detail)
        self._by_symbol: dict[str, dict[int, tuple[str, object]]] = {}
        self._outside: dict[str, list[tuple[datetime, int]]] = {}
        injected: list[Injected] = []
        for k, p in enumerate(positions):
            sym = self.symbols[p // self.n_minutes]
            minute = p % self.n_minutes
            kind = main_kinds[k % 4]
            detail: object = None
            if kind == "price_mismatch":
                detail = (rng.randrange(7), rng.randint(10, 40))
            elif kind == "volume_mismatch":
                detail = rng.choice((rng.uniform(1.25, 1.8), rng.uniform(0.35, 0.75)))
            self._by_symbol.setdefault(sym, {})[minute] = (kind, detail)
        start = self.minutes[0]
        end = self.minutes[-1] + timedelta(minutes=1)
        outside_ts = [start - timedelta(minutes=m) for m in (5, 3, 1)] + [
            end + timedelta(minutes=m) for m in (0, 1, 5)
        ]
        seen: set[tuple[str, datetime]] = set()
        while len(seen) < n_out:
            sym = self.symbols[rng.randrange(len(self.symbols))]
            ts = outside_ts[rng.randrange(len(outside_ts))]
            if (sym, ts) in seen:
                continue
            seen.add((sym, ts))
            src = 0 if ts < start else self.n_minutes - 1
            self._outside.setdefault(sym, []).append((ts, src))
        # ground truth, in (symbol, ts) order
        for sym in self.symbols:
            for minute, (kind, _detail) in sorted(self._by_symbol.get(sym, {}).items()):
                cols: tuple[str, ...] = ()
                if kind == "price_mismatch":
                    cols = _PRICE_VARIANTS[_detail[0]][0]  # type: ignore[index]
                elif kind == "volume_mismatch":
                    cols = ("volume",)
                injected.append(Injected(sym, self.minutes[minute], kind, cols))
            for ts, _src in sorted(self._outside.get(sym, [])):
                injected.append(Injected(sym, ts, "outside_session", ()))
        injected.sort(key=lambda x: (self._index[x.symbol], x.ts))
        self._injected = injected

    def injected(self) -> list[Injected]:
        """Ground truth: every discrepancy between internal and broker bars."""
        return list(self._injected)

    def broker_bars(self, symbol: str) -> list[BarRow]:
        """What the broker (Kite) returns: the truth minus ``missing_broker`` minutes."""
        plan = self._by_symbol.get(symbol)
        bars = self.true_bars(symbol)
        if not plan:
            return list(bars)
        return [b for i, b in enumerate(bars)
                if plan.get(i, ("",))[0] != "missing_broker"]

    def internal_bars(self, symbol: str) -> list[BarRow]:
        """What our ``bars_1m`` holds: the truth with the injected internal-side faults."""
        plan = self._by_symbol.get(symbol, {})
        outside = self._outside.get(symbol, [])
        bars = self.true_bars(symbol)
        if not plan and not outside:
            return list(bars)
        out: list[BarRow] = []
        for i, b in enumerate(bars):
            kind, detail = plan.get(i, ("", None))
            if kind == "missing_internal":
                continue
            if kind == "price_mismatch":
                variant, n_ticks = detail  # type: ignore[misc]
                b = _shift_prices(b, _PRICE_VARIANTS[variant][1], n_ticks)
            elif kind == "volume_mismatch":
                b = BarRow(b.ts, b.open, b.high, b.low, b.close,
                           max(1, round(b.volume * detail)))  # type: ignore[operator]
            out.append(b)
        for ts, src in outside:
            s = bars[src]
            out.append(BarRow(ts, s.open, s.high, s.low, s.close, max(1, s.volume // 3)))
        out.sort(key=lambda r: r.ts)
        return out


# price-mismatch variants: (changed columns, per-column tick shift). Every variant keeps the
# bar consistent (low <= open, close <= high) and moves each listed column by n ticks.
_PRICE_VARIANTS: tuple[tuple[tuple[str, ...], tuple[int, int, int, int]], ...] = (
    (("high",), (0, 1, 0, 0)),
    (("low",), (0, 0, -1, 0)),
    (("open", "high"), (1, 1, 0, 0)),
    (("high", "close"), (0, 1, 0, 1)),
    (("open", "low"), (-1, 0, -1, 0)),
    (("low", "close"), (0, 0, -1, -1)),
    (("open", "high", "low", "close"), (1, 1, 1, 1)),
)


def _shift_prices(b: BarRow, signs: tuple[int, int, int, int], n_ticks: int) -> BarRow:
    t = TICKS_PER_RUPEE
    o, h, lo, c = (round(x * t) + s * n_ticks for x, s in zip(
        (b.open, b.high, b.low, b.close), signs, strict=True))
    return BarRow(b.ts, o / t, h / t, lo / t, c / t, b.volume)
