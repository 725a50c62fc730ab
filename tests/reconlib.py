"""Helpers for the recon tests and bench: put the simulator's day (src/tradeops/sim/market.py,
the project's one simulator) into PostgreSQL and read its ground truth."""

from __future__ import annotations

import datetime as dt

from psycopg import sql

from tradeops import db
from tradeops.db import table_identifiers
from tradeops.sim.market import Market


def copy_bars(conn, cfg, table_key: str, rows, source: str) -> int:
    t = table_identifiers(cfg)[table_key]
    n = 0
    with conn.cursor().copy(
        sql.SQL("COPY {} (symbol, ts, open, high, low, close, volume, source) FROM STDIN").format(t)
    ) as cp:
        for sym, b in rows:
            cp.write_row((sym, b.ts, b.open, b.high, b.low, b.close, b.volume, source))
            n += 1
    return n


def load_internal(cfg, market: Market, symbols=None) -> int:
    """Our side: the market's internal bars into bars_1m (as the simulator writes them)."""
    symbols = symbols or market.symbols
    with db.connect(cfg) as conn:
        n = copy_bars(conn, cfg, "bars_1m", ((s, b) for s in symbols for b in market.internal_bars(s)), "sim")
        conn.commit()
    return n


def load_broker_cache(cfg, market: Market, symbols=None) -> int:
    """Broker side already cached (as a previous fetch leaves it), with its fetch log."""
    symbols = symbols or market.symbols
    t = table_identifiers(cfg)
    with db.connect(cfg) as conn:
        n = copy_bars(conn, cfg, "broker_bars_1m", ((s, b) for s in symbols for b in market.broker_bars(s)), "kite")
        conn.execute(
            sql.SQL("INSERT INTO {} (trading_day, symbol, source, rows) SELECT %s, s, 'kite', 375 FROM unnest(%s::text[]) s").format(
                t["broker_fetches"]
            ),
            (market.date, list(symbols)),
        )
        conn.commit()
    return n


def truth(market: Market, symbols=None) -> set[tuple[str, dt.datetime, str, tuple[str, ...]]]:
    keep = set(symbols or market.symbols)
    return {(i.symbol, i.ts, i.kind, tuple(i.columns)) for i in market.injected() if i.symbol in keep}


def found(cfg, day: dt.date, status: str | None = None) -> set[tuple[str, dt.datetime, str, tuple[str, ...]]]:
    t = table_identifiers(cfg)
    q = sql.SQL("SELECT symbol, ts, kind, columns FROM {} WHERE trading_day = %s").format(t["bars_1m_recon"])
    params: tuple = (day,)
    if status:
        q += sql.SQL(" AND status = %s")
        params = (day, status)
    with db.connect(cfg) as conn:
        return {(r[0], r[1], r[2], tuple(r[3])) for r in conn.execute(q, params)}
