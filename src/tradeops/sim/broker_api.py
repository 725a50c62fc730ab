"""A Kite Connect v3 compatible broker server serving the simulator's broker-side bars.

``tradeops sim broker-api`` listens on ``[sim].broker_api_listen`` (127.0.0.1) and serves,
exactly in Kite's shapes (docs/simulator.md, /work/shared/notes/reference.md):

- ``GET /instruments`` and ``GET /instruments/NSE``: the instruments CSV dump;
- ``GET /instruments/historical/{token}/minute?from=YYYY-MM-DD+HH:MM:SS&to=...``:
  ``{"status":"success","data":{"candles":[["2026-12-03T09:15:00+0530",o,h,l,c,v],...]}}``
  from ``Market(date).broker_bars`` for every day in [from, to] (``oi=1`` adds a 0 column).

Every Kite endpoint checks ``X-Kite-Version: 3`` (400 InputException otherwise) and
``Authorization: token <api_key>:<access_token>`` against the ``[broker]`` secret files
(403 TokenException otherwise). Historical requests are limited to
``[sim].broker_rate_limit_per_s`` in any sliding 1 s window, other endpoints to 10/s,
with HTTP 429 and Kite's error JSON. Bad parameters get 400 InputException.

Test hooks (never under a Kite path):

- ``POST /_control/force?status=429&count=N``: the next N Kite responses are that error
  (429, 500, 502, 503 or 504);
- ``POST /_control/bad_candle?symbol=NSE:INFY&kind=string``: responses for that symbol
  carry one malformed candle row (kinds: ``string``, ``short``, ``inconsistent``,
  ``bad_ts``, ``negative``) until ``POST /_control/reset``;
- ``GET /_stats``: ``max_requests_in_1s`` (historical requests received in any 1 s
  window), ``rate_limited_total`` (429s served), totals; ``POST /_stats/reset``.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import threading
import time
from collections import deque
from datetime import date as Date
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from ..config import Config, read_secret
from ..errors import UserError
from .market import IST, Market, exchange_token_of, instrument_token_of, symbols_for

log = logging.getLogger("tradeops.sim.broker_api")

INSTRUMENT_COLUMNS = ("instrument_token", "exchange_token", "tradingsymbol", "name",
                      "last_price", "expiry", "strike", "tick_size", "lot_size",
                      "instrument_type", "segment", "exchange")
MAX_MINUTE_SPAN_DAYS = 60
OTHER_LIMIT_PER_S = 10.0
BAD_CANDLE_KINDS = ("string", "short", "inconsistent", "bad_ts", "negative")
_ERROR_TYPES = {400: "InputException", 403: "TokenException", 429: "NetworkException",
                500: "GeneralException", 502: "NetworkException", 503: "NetworkException",
                504: "NetworkException"}
_ERROR_MESSAGES = {429: "Too many requests", 500: "Something went wrong",
                   502: "Gateway error", 503: "Service unavailable", 504: "Gateway timeout"}


class _Window:
    """Timestamps of the last second, and the maximum ever seen in any 1 s window."""

    def __init__(self) -> None:
        self.ts: deque[float] = deque()
        self.max = 0

    def count(self, now: float) -> int:
        while self.ts and self.ts[0] <= now - 1.0:
            self.ts.popleft()
        return len(self.ts)

    def add(self, now: float) -> None:
        self.count(now)
        self.ts.append(now)
        self.max = max(self.max, len(self.ts))


class BrokerState:
    """Shared by the handler threads; every field is guarded by ``lock``."""

    def __init__(self, cfg: Config, seed: int, n_symbols: int, rate_limit: float,
                 api_key: str, access_token: str):
        from .runner import session_of

        self.cfg = cfg
        self.lock = threading.Lock()
        self.rate_limit = rate_limit
        self.expected_auth = f"token {api_key}:{access_token}"
        self.symbols = symbols_for(n_symbols)
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self.forced: deque[int] = deque()
        self.bad_candles: dict[str, str] = {}
        self.reset_stats()

        @functools.lru_cache(maxsize=8)
        def market_for(day: Date) -> Market:
            return Market(day, seed=seed, n_symbols=n_symbols, session=session_of(cfg, day),
                          discrepancy_rate=cfg.sim.discrepancy_rate)

        self.market_for = market_for
        self._market_lock = threading.Lock()

    def reset_stats(self) -> None:
        self.hist_received = _Window()
        self.hist_served = _Window()
        self.other_served = _Window()
        self.requests_total = 0
        self.served_total = 0
        self.rate_limited_total = 0
        self.forced_total = 0
        self.errors_total = 0

    def symbol_of_token(self, token: int) -> str | None:
        if token % 256 != 1:
            return None
        idx = token // 256 - 10_000
        return self.symbols[idx] if 0 <= idx < len(self.symbols) else None

    def broker_bars(self, day: Date, symbol: str):
        with self._market_lock:  # one thread builds a day's market, the others reuse it
            market = self.market_for(day)
        return market.broker_bars(symbol)

    def stats(self) -> dict:
        now = time.monotonic()
        return {
            "max_requests_in_1s": self.hist_received.max,
            "max_served_in_1s": self.hist_served.max,
            "requests_in_last_1s": self.hist_received.count(now),
            "rate_limit_per_s": self.rate_limit,
            "requests_total": self.requests_total,
            "served_total": self.served_total,
            "rate_limited_total": self.rate_limited_total,
            "forced_total": self.forced_total,
            "errors_total": self.errors_total,
            "forced_pending": list(self.forced),
            "bad_candles": dict(self.bad_candles),
        }


def instruments_csv(symbols: list[str], market: Market | None = None) -> bytes:
    """Kite's instruments dump (NSE equities) for ``symbols``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(INSTRUMENT_COLUMNS)
    for i, sym in enumerate(symbols):
        name = sym.split(":", 1)[1]
        last = market.base_price(sym) if market is not None else 0.0
        w.writerow([instrument_token_of(i), exchange_token_of(i), name, name, last, "", 0.0,
                    0.05, 1, "EQ", "NSE", "NSE"])
    return buf.getvalue().encode()


def _kite_ts(ts: datetime) -> str:
    return ts.astimezone(IST).strftime("%Y-%m-%dT%H:%M:%S+0530")


def _num(x: float) -> float | int:
    """Kite writes whole prices without a fraction (``1388``, not ``1388.0``)."""
    return int(x) if x.is_integer() else x


def _parse_kite_time(value: str, end: bool) -> datetime:
    value = value.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            dt = datetime.strptime(value, fmt)  # noqa: DTZ007 - Kite times are IST
        except ValueError:
            continue
        if fmt == "%Y-%m-%d" and end:
            dt = dt.replace(hour=23, minute=59, second=59)
        return dt.replace(tzinfo=IST)
    raise ValueError(value)


def _bad_row(row: list, kind: str) -> list:
    if kind == "string":
        return [row[0], "abc", *row[2:]]
    if kind == "short":
        return row[:5]
    if kind == "inconsistent":
        return [row[0], row[1], row[4] - 1, row[3] + 1, row[4], row[5]]  # high < low
    if kind == "bad_ts":
        return [row[0].replace("T", " ")[:16], *row[1:]]
    return [row[0], -row[1], *row[2:]]  # negative


class _Reply(Exception):
    def __init__(self, code: int, message: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message or _ERROR_MESSAGES.get(code, "error")


def make_broker_server(host: str, port: int, state: BrokerState) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tradeops-kite-sim"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            log.debug("%s %s", self.address_string(), fmt % args)

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, code: int, message: str) -> None:
            body = {"status": "error", "message": message, "data": None,
                    "error_type": _ERROR_TYPES.get(code, "GeneralException")}
            self._send(code, json.dumps(body).encode())

        def do_GET(self):  # noqa: N802
            url = urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            if path == "/_stats":
                with state.lock:
                    body = state.stats()
                return self._send(200, json.dumps(body, sort_keys=True).encode())
            historical = path.startswith("/instruments/historical/")
            if not (historical or path in ("/instruments", "/instruments/NSE")):
                return self._error(404, f"Route not found: {path}")
            try:
                self._kite_checks(historical)
                if historical:
                    body = self._historical(path, parse_qs(url.query))
                    return self._send(200, body)
                with state._market_lock:
                    market = state.market_for(datetime.now(IST).date())
                return self._send(200, instruments_csv(state.symbols, market), "text/csv")
            except _Reply as r:
                return self._error(r.code, r.message)

        def _kite_checks(self, historical: bool) -> None:
            now = time.monotonic()
            with state.lock:
                state.requests_total += 1
                if historical:
                    state.hist_received.add(now)
                if self.headers.get("X-Kite-Version") != "3":
                    state.errors_total += 1
                    raise _Reply(400, "Missing or invalid X-Kite-Version header (expected 3)")
                if self.headers.get("Authorization", "") != state.expected_auth:
                    state.errors_total += 1
                    raise _Reply(403, "Incorrect `api_key` or `access_token`.")
                if state.forced:
                    code = state.forced.popleft()
                    state.forced_total += 1
                    if code == 429:
                        state.rate_limited_total += 1
                    raise _Reply(code)
                window = state.hist_served if historical else state.other_served
                limit = state.rate_limit if historical else OTHER_LIMIT_PER_S
                if window.count(now) + 1 > limit:
                    state.rate_limited_total += 1
                    raise _Reply(429)
                window.add(now)
                state.served_total += 1

        def _historical(self, path: str, query: dict[str, list[str]]) -> bytes:
            parts = path.split("/")  # "", instruments, historical, token, interval
            if len(parts) != 5:
                raise _Reply(400, "invalid URL: expected /instruments/historical/{token}/{interval}")
            token_s, interval = parts[3], parts[4]
            if not token_s.isdigit() or (symbol := state.symbol_of_token(int(token_s))) is None:
                raise _Reply(400, f"invalid instrument token: {token_s}")
            if interval != "minute":
                raise _Reply(400, f"invalid interval: {interval} (this server serves minute)")
            if "from" not in query or "to" not in query:
                raise _Reply(400, "`from` and `to` are required")
            try:
                start = _parse_kite_time(query["from"][0], end=False)
            except ValueError:
                raise _Reply(400, f"invalid from date: {query['from'][0]!r}") from None
            try:
                end = _parse_kite_time(query["to"][0], end=True)
            except ValueError:
                raise _Reply(400, f"invalid to date: {query['to'][0]!r}") from None
            if start > end:
                raise _Reply(400, "from date cannot be after to date")
            if (end - start) > timedelta(days=MAX_MINUTE_SPAN_DAYS):
                raise _Reply(400, f"interval exceeds max limit: {MAX_MINUTE_SPAN_DAYS} days")
            oi = query.get("oi", ["0"])[0] == "1"
            candles: list[list] = []
            day = start.date()
            while day <= end.date():
                for b in state.broker_bars(day, symbol):
                    if start <= b.ts <= end:
                        row = [_kite_ts(b.ts), _num(b.open), _num(b.high), _num(b.low),
                               _num(b.close), b.volume]
                        if oi:
                            row.append(0)
                        candles.append(row)
                day += timedelta(days=1)
            with state.lock:
                bad = state.bad_candles.get(symbol)
            if bad and candles:
                i = len(candles) // 2
                candles[i] = _bad_row(candles[i], bad)
            return json.dumps({"status": "success", "data": {"candles": candles}},
                              separators=(",", ":")).encode()

        def do_POST(self):  # noqa: N802
            url = urlsplit(self.path)
            q = parse_qs(url.query)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            path = url.path.rstrip("/")
            with state.lock:
                if path == "/_control/force":
                    try:
                        code = int(q.get("status", ["429"])[0])
                        count = int(q.get("count", ["1"])[0])
                    except ValueError:
                        return self._error(400, "status and count must be integers")
                    if code not in (429, 500, 502, 503, 504) or not 0 <= count <= 10_000:
                        return self._error(400, "status must be 429/500/502/503/504, "
                                                "count 0..10000")
                    state.forced.extend([code] * count)
                    body = {"forced_pending": len(state.forced)}
                elif path == "/_control/bad_candle":
                    sym = q.get("symbol", [""])[0]
                    kind = q.get("kind", ["string"])[0]
                    if sym not in state._index:
                        return self._error(400, f"unknown symbol {sym!r}")
                    if kind not in BAD_CANDLE_KINDS:
                        return self._error(400, f"kind must be one of {BAD_CANDLE_KINDS}")
                    state.bad_candles[sym] = kind
                    body = {"bad_candles": dict(state.bad_candles)}
                elif path == "/_control/reset":
                    state.forced.clear()
                    state.bad_candles.clear()
                    state.reset_stats()
                    body = {"reset": True}
                elif path == "/_stats/reset":
                    state.reset_stats()
                    body = {"reset": True}
                else:
                    return self._error(404, f"Route not found: {path}")
            return self._send(200, json.dumps(body).encode())

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def broker_state_from_config(cfg: Config, seed: int | None = None, n_symbols: int | None = None,
                             rate_limit: float | None = None) -> BrokerState:
    api_key = read_secret(cfg, "[broker].api_key_file", cfg.broker.api_key_file)
    token = read_secret(cfg, "[broker].access_token_file", cfg.broker.access_token_file)
    if not api_key or not token:
        raise UserError(f"{cfg.source}: [broker].api_key_file and [broker].access_token_file "
                        "must name non-empty secret files for the broker server")
    return BrokerState(cfg, cfg.sim.seed if seed is None else seed,
                       cfg.sim.symbols if n_symbols is None else n_symbols,
                       cfg.sim.broker_rate_limit_per_s if rate_limit is None else rate_limit,
                       api_key, token)


def serve_in_thread(state: BrokerState, host: str = "127.0.0.1", port: int = 0):
    """Start a server on a background thread (tests); returns (server, base_url)."""
    server = make_broker_server(host, port, state)
    threading.Thread(target=server.serve_forever, name="kite-sim", daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"
