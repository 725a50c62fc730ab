"""Broker bars: the Kite Connect historical API (or a CSV folder) into ``broker_bars_1m``.

- :class:`KiteSource` speaks Kite Connect v3 exactly (``X-Kite-Version: 3``,
  ``Authorization: token api_key:access_token`` from the secret files, ``/instruments/{exchange}``
  CSV dump for instrument tokens, ``/instruments/historical/{token}/minute``), so it works
  unchanged against https://api.kite.trade and against ``tradeops sim broker-api``.
- One :class:`TokenBucket` is shared by all worker threads: requests (first tries and
  retries alike) never go faster than ``rate_limit_per_s * (1 - rate_headroom)``.
- 429, 5xx, timeouts and connection errors are retried with exponential backoff (and
  ``Retry-After`` when given), up to ``max_retries``; other errors end the run with one line.
- Every candle row is validated; a bad one ends the run naming symbol, date and row.
- :func:`fetch_into_cache` writes what it fetched per batch of symbols (COPY), and records
  each (day, symbol) in ``broker_fetches`` so a rerun or the autoheal does not refetch.
"""

from __future__ import annotations

import csv
import datetime as dt
import http.client
import io
import json
import logging
import math
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from ..config import Config, read_secret
from ..db import table_identifiers
from ..errors import UserError

log = logging.getLogger(__name__)

SYMBOL_RE = re.compile(r"^([A-Z][A-Z0-9]*):([A-Z0-9][A-Z0-9&_.\-]*)$")
KITE_TS = "%Y-%m-%dT%H:%M:%S%z"

# (ts, open, high, low, close, volume)
Candle = tuple[dt.datetime, float, float, float, float, int]


class BrokerError(UserError):
    """The broker failed or answered something unusable (exit code 2)."""


class UnknownSymbol(UserError):
    """A symbol that is malformed or not in the broker's instruments dump (exit code 2)."""


def split_symbol(symbol: str) -> tuple[str, str]:
    m = SYMBOL_RE.match(symbol)
    if not m:
        raise UnknownSymbol(f"symbol {symbol!r}: expected EXCHANGE:TRADINGSYMBOL, e.g. NSE:INFY")
    return m.group(1), m.group(2)


class TokenBucket:
    """A token bucket of capacity one (no bursts), shared by threads.

    Each caller reserves the next free slot under a lock and sleeps outside it, so the
    slots are exactly ``1/rate`` apart whatever the number of workers, and any one-second
    window holds at most ``rate`` acquisitions (given rate * interval spacing).
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until this caller may send; return the slot time (clock units)."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)
        return slot


@dataclass
class FetchStats:
    requests: int = 0
    retries: int = 0
    http_429: int = 0
    http_5xx: int = 0
    timeouts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("requests", "retries", "http_429", "http_5xx", "timeouts")}


def _num(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def parse_candles(raw: object, symbol: str, day: dt.date, where: str) -> list[Candle]:
    """Validate Kite's ``data.candles``; BrokerError naming symbol, date and row otherwise."""
    if not isinstance(raw, list):
        raise BrokerError(f"{where}: {symbol} {day}: response has no candle list")
    out: list[Candle] = []
    for i, row in enumerate(raw):

        def bad(why: str, i: int = i) -> BrokerError:
            return BrokerError(f"{where}: {symbol} {day}: bad candle row {i}: {why}")

        if not isinstance(row, list) or len(row) not in (6, 7):
            raise bad(f"expected [ts, open, high, low, close, volume], got {json.dumps(row)[:80]}")
        if not isinstance(row[0], str):
            raise bad(f"timestamp {json.dumps(row[0])[:40]} is not a string")
        try:
            ts = dt.datetime.strptime(row[0], KITE_TS)
        except ValueError:
            try:
                ts = dt.datetime.fromisoformat(row[0])
            except ValueError:
                raise bad(f"timestamp {row[0]!r} is not like 2026-12-03T09:15:00+0530") from None
        if ts.tzinfo is None:
            raise bad(f"timestamp {row[0]!r} has no UTC offset")
        prices = [_num(x) for x in row[1:5]]
        for name, p, r in zip(("open", "high", "low", "close"), prices, row[1:5], strict=True):
            if p is None or p <= 0:
                raise bad(f"{name} {json.dumps(r)[:40]} is not a positive number")
        vol = _num(row[5])
        if vol is None or vol < 0 or vol != int(vol):
            raise bad(f"volume {json.dumps(row[5])[:40]} is not a non-negative integer")
        o, h, low, c = prices  # type: ignore[misc]
        if low > min(o, c) or h < max(o, c):
            raise bad(f"inconsistent prices (need low <= open, close <= high): {row[1:5]}")
        if ts.second or ts.microsecond:
            raise bad(f"timestamp {row[0]!r} is not on a minute boundary")
        out.append((ts, o, h, low, c, int(vol)))
    return out


class KiteSource:
    """Kite Connect v3 historical candles (also the local Kite-compatible simulator)."""

    name = "kite"

    def __init__(self, cfg: Config, bucket: TokenBucket | None = None, stats: FetchStats | None = None):
        b = cfg.broker
        self.base = b.base_url.rstrip("/")
        self.timeout = b.timeout_s
        self.max_retries = b.max_retries
        self.backoff_initial = b.backoff_initial_s
        self.backoff_max = b.backoff_max_s
        self.bucket = bucket or TokenBucket(b.rate_limit_per_s * (1.0 - b.rate_headroom))
        self.stats = stats or FetchStats()
        # set when the run is failing anyway: workers stop retrying instead of backing off
        self.abort = threading.Event()
        api_key = read_secret(cfg, "[broker].api_key_file", b.api_key_file)
        token = read_secret(cfg, "[broker].access_token_file", b.access_token_file)
        if not api_key or not token:
            raise BrokerError(
                "broker: [broker].api_key_file and [broker].access_token_file must name the "
                "Kite API key and access token files"
            )
        self._headers = {
            "X-Kite-Version": "3",
            "Authorization": f"token {api_key}:{token}",
            "User-Agent": "tradeops-recon",
        }

    def where(self) -> str:
        return f"broker {self.base}"

    # -- HTTP with retries ------------------------------------------------------------
    def _get(self, path: str, what: str, paced: bool = True) -> bytes:
        url = self.base + path
        attempt = 0
        while True:
            if self.abort.is_set():
                raise BrokerError(f"{self.where()}: {what}: abandoned (another request failed)")
            if paced:
                self.bucket.acquire()
            self.stats.add(requests=1)
            retry_after: float | None = None
            try:
                req = urllib.request.Request(url, headers=self._headers)  # noqa: S310 - configured URL
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                    return resp.read()
            except urllib.error.HTTPError as e:
                body = e.read()[:2000]
                if e.code == 429 or e.code >= 500:
                    self.stats.add(http_429=int(e.code == 429), http_5xx=int(e.code >= 500))
                    reason = f"HTTP {e.code}"
                    ra = e.headers.get("Retry-After") if e.headers else None
                    if ra and ra.strip().replace(".", "", 1).isdigit():
                        retry_after = min(float(ra), self.backoff_max)
                else:
                    raise BrokerError(f"{self.where()}: {what}: {_kite_error(e.code, body)}") from None
            except TimeoutError:
                self.stats.add(timeouts=1)
                reason = f"timed out after {self.timeout:g} s"
            except urllib.error.URLError as e:
                reason = f"cannot connect: {getattr(e.reason, 'strerror', None) or e.reason}"
            except (ConnectionError, http.client.HTTPException) as e:
                reason = f"connection error: {type(e).__name__}"
            attempt += 1
            if attempt > self.max_retries:
                raise BrokerError(
                    f"{self.where()}: {what}: gave up after {self.max_retries} retries ({reason})"
                )
            self.stats.add(retries=1)
            delay = retry_after
            if delay is None:
                delay = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
                delay *= 0.5 + random.random() / 2  # jitter: workers do not retry in lockstep
            log.debug("%s: %s; retry %d in %.2f s", what, reason, attempt, delay)
            self.abort.wait(delay)

    # -- instruments -------------------------------------------------------------------
    def instruments(self, exchange: str) -> list[dict[str, str]]:
        body = self._get(
            f"/instruments/{urllib.parse.quote(exchange)}", f"instruments {exchange}", paced=False
        )
        text = body.decode("utf-8-sig", errors="replace")
        rows = list(csv.DictReader(io.StringIO(text)))
        need = {"instrument_token", "tradingsymbol", "exchange"}
        if rows and not need <= set(rows[0]):
            raise BrokerError(
                f"{self.where()}: instruments {exchange}: CSV lacks columns {sorted(need - set(rows[0]))}"
            )
        return rows

    # -- candles -----------------------------------------------------------------------
    def fetch_day(self, symbol: str, token: int, day: dt.date) -> list[Candle]:
        q = urllib.parse.urlencode(
            {"from": f"{day} 00:00:00", "to": f"{day} 23:59:59", "continuous": 0, "oi": 0}
        )
        what = f"{symbol} {day}"
        body = self._get(f"/instruments/historical/{token}/minute?{q}", what)
        try:
            doc = json.loads(body)
        except ValueError:
            raise BrokerError(f"{self.where()}: {what}: response is not JSON") from None
        if not isinstance(doc, dict) or doc.get("status") != "success":
            msg = doc.get("message") if isinstance(doc, dict) else None
            raise BrokerError(f"{self.where()}: {what}: broker error: {msg or 'status is not success'}")
        data = doc.get("data")
        return parse_candles(
            data.get("candles") if isinstance(data, dict) else None, symbol, day, self.where()
        )


def _kite_error(code: int, body: bytes) -> str:
    try:
        doc = json.loads(body)
        msg = f"{doc.get('error_type', 'error')}: {doc.get('message', '')}".strip()
    except (ValueError, AttributeError):
        msg = body.decode("utf-8", errors="replace").strip().splitlines()[0][:200] if body else ""
    hint = " (check [broker].api_key_file and access_token_file)" if code == 403 else ""
    return f"HTTP {code} {msg}{hint}"


class CsvSource:
    """Broker bars from a folder: ``{csv_dir}/{YYYY-MM-DD}/{EXCHANGE}_{SYMBOL}.csv`` with a
    header ``date,open,high,low,close,volume`` and Kite-style timestamps. A missing file
    means the broker has no bar for that symbol that day."""

    name = "csv"

    def __init__(self, cfg: Config):
        if not cfg.broker.csv_dir:
            raise BrokerError('broker: [broker].csv_dir is required when [broker].kind = "csv"')
        from ..config import secret_path

        self.root = secret_path(cfg, cfg.broker.csv_dir)
        self.stats = FetchStats()

    def where(self) -> str:
        return f"broker csv {self.root}"

    def instruments(self, exchange: str) -> list[dict[str, str]]:
        return []  # a CSV folder needs no tokens

    def fetch_day(self, symbol: str, token: int, day: dt.date) -> list[Candle]:
        exch, ts = split_symbol(symbol)
        path = Path(self.root) / str(day) / f"{exch}_{ts}.csv"
        self.stats.add(requests=1)
        if not path.exists():
            return []
        rows: list[list[object]] = []
        with path.open(encoding="utf-8") as f:
            for i, rec in enumerate(csv.DictReader(f)):
                try:
                    rows.append(
                        [
                            rec["date"],
                            float(rec["open"]),
                            float(rec["high"]),
                            float(rec["low"]),
                            float(rec["close"]),
                            float(rec["volume"]),
                        ]
                    )
                except (KeyError, TypeError, ValueError):
                    raise BrokerError(
                        f"{path}: row {i + 2}: expected date,open,high,low,close,volume numbers"
                    ) from None
        return parse_candles(rows, symbol, day, str(path))


def make_source(cfg: Config):
    return CsvSource(cfg) if cfg.broker.kind == "csv" else KiteSource(cfg)


# -- instrument tokens, cached in PostgreSQL -----------------------------------------------
def resolve_tokens(conn: psycopg.Connection, cfg: Config, source, symbols: Iterable[str]) -> dict[str, int]:
    """symbol -> instrument token; refreshes the cached dump (COPY) when a symbol is missing
    or the cache predates today (Kite regenerates the dump daily)."""
    symbols = list(symbols)
    parsed = {s: split_symbol(s) for s in symbols}
    if source.name != "kite":
        return dict.fromkeys(symbols, 0)
    t = table_identifiers(cfg)["instruments"]
    exchanges = sorted({e for e, _ in parsed.values()})

    def cached() -> tuple[dict[tuple[str, str], int], dict[str, dt.datetime]]:
        rows = conn.execute(
            sql.SQL(
                "SELECT exchange, tradingsymbol, instrument_token, fetched_at FROM {} "
                "WHERE exchange = ANY(%s)"
            ).format(t),
            (exchanges,),
        ).fetchall()
        conn.commit()
        toks = {(r[0], r[1]): int(r[2]) for r in rows}
        fresh: dict[str, dt.datetime] = {}
        for r in rows:
            fresh[r[0]] = max(fresh.get(r[0], r[3]), r[3])
        return toks, fresh

    toks, fetched = cached()
    # Kite regenerates the dump every morning: a cache older than 20 hours is refreshed
    stale_before = dt.datetime.now(dt.UTC) - dt.timedelta(hours=20)
    stale = [
        e
        for e in exchanges
        if e not in fetched
        or fetched[e] < stale_before
        or any(parsed[s] not in toks for s in symbols if parsed[s][0] == e)
    ]
    for exch in stale:
        rows = source.instruments(exch)
        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE exchange = %s").format(t), (exch,))
            cols = (
                "exchange",
                "tradingsymbol",
                "instrument_token",
                "exchange_token",
                "name",
                "segment",
                "instrument_type",
                "lot_size",
                "tick_size",
            )
            with conn.cursor().copy(
                sql.SQL("COPY {} ({}) FROM STDIN").format(t, sql.SQL(", ").join(map(sql.Identifier, cols)))
            ) as cp:
                seen: set[str] = set()
                for r in rows:
                    if r.get("exchange") != exch or r["tradingsymbol"] in seen:
                        continue
                    seen.add(r["tradingsymbol"])
                    cp.write_row(
                        (
                            exch,
                            r["tradingsymbol"],
                            int(r["instrument_token"]),
                            _int_or_none(r.get("exchange_token")),
                            r.get("name") or None,
                            r.get("segment") or None,
                            r.get("instrument_type") or None,
                            _int_or_none(r.get("lot_size")),
                            _float_or_none(r.get("tick_size")),
                        )
                    )
        toks, fetched = cached()
    out: dict[str, int] = {}
    for s in symbols:
        if parsed[s] not in toks:
            raise UnknownSymbol(f"unknown symbol {s}: not in the broker's {parsed[s][0]} instruments dump")
        out[s] = toks[parsed[s]]
    return out


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v not in (None, "") else None
    except ValueError:
        return None


def _float_or_none(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


# -- fetch into the cache -------------------------------------------------------------
@dataclass
class FetchResult:
    fetched: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)


def cached_symbols(conn: psycopg.Connection, cfg: Config, day: dt.date, symbols: list[str]) -> set[str]:
    t = table_identifiers(cfg)["broker_fetches"]
    rows = conn.execute(
        sql.SQL("SELECT symbol FROM {} WHERE trading_day = %s AND symbol = ANY(%s)").format(t),
        (day, symbols),
    ).fetchall()
    conn.commit()
    return {r[0] for r in rows}


def _write_batch(
    conn,
    cfg,
    source_name: str,
    day: dt.date,
    batch: dict[str, list[Candle]],
    start: dt.datetime,
    end: dt.datetime,
) -> int:
    t = table_identifiers(cfg)
    n = 0
    with conn.transaction():
        syms = list(batch)
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE symbol = ANY(%s) AND ts >= %s AND ts < %s").format(
                t["broker_bars_1m"]
            ),
            (syms, start, end),
        )
        with conn.cursor().copy(
            sql.SQL("COPY {} (symbol, ts, open, high, low, close, volume, source) FROM STDIN").format(
                t["broker_bars_1m"]
            )
        ) as cp:
            for sym, candles in batch.items():
                seen: set[dt.datetime] = set()
                for c in candles:
                    if not (start <= c[0] < end) or c[0] in seen:
                        continue  # another day's candle, or a duplicate minute: keep the first
                    seen.add(c[0])
                    cp.write_row((sym, *c, source_name))
                    n += 1
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (trading_day, symbol, source, rows) SELECT %s, s, %s, r "
                "FROM unnest(%s::text[], %s::int[]) AS u(s, r) ON CONFLICT (trading_day, symbol) "
                "DO UPDATE SET source = excluded.source, rows = excluded.rows, fetched_at = now()"
            ).format(t["broker_fetches"]),
            (day, source_name, syms, [len(batch[s]) for s in syms]),
        )
    return n


def fetch_into_cache(
    conn: psycopg.Connection,
    cfg: Config,
    source,
    day: dt.date,
    symbols: list[str],
    start: dt.datetime,
    end: dt.datetime,
    refetch: bool = False,
    batch_symbols: int = 50,
) -> FetchResult:
    """Fetch the day's candles of ``symbols`` not cached yet (all with ``refetch``) with
    ``[broker].workers`` threads sharing one rate limiter; write them per batch."""
    t0 = time.perf_counter()
    res = FetchResult()
    have = set() if refetch else cached_symbols(conn, cfg, day, symbols)
    todo = [s for s in symbols if s not in have]
    res.cached = [s for s in symbols if s in have]
    if todo:
        tokens = resolve_tokens(conn, cfg, source, todo)
        batch: dict[str, list[Candle]] = {}
        workers = max(1, cfg.broker.workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="broker") as pool:
            pending = set()
            it = iter(todo)
            futs: dict = {}

            def submit_next() -> bool:
                s = next(it, None)
                if s is None:
                    return False
                f = pool.submit(source.fetch_day, s, tokens[s], day)
                futs[f] = s
                pending.add(f)
                return True

            for _ in range(workers * 2):
                if not submit_next():
                    break
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        pending.discard(f)
                        sym = futs.pop(f)
                        batch[sym] = f.result()  # BrokerError propagates
                        res.fetched.append(sym)
                        submit_next()
                    if len(batch) >= batch_symbols:
                        res.rows += _write_batch(conn, cfg, source.name, day, batch, start, end)
                        batch = {}
            except BaseException:
                abort = getattr(source, "abort", None)
                if abort is not None:
                    abort.set()  # running workers give up at their next retry
                for f in pending:
                    f.cancel()
                raise
        if batch:
            res.rows += _write_batch(conn, cfg, source.name, day, batch, start, end)
    res.seconds = time.perf_counter() - t0
    res.stats = source.stats.as_dict()
    return res
