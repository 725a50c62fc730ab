"""The comparison, pushed down to PostgreSQL: one set-based statement over the date's rows.

Internal bars (``bars_1m``) and broker bars (``broker_bars_1m``) of one calendar day are
joined with a FULL OUTER JOIN on (symbol, ts). A joined row is a discrepancy when:

- its minute is not a bar start inside the session -> ``outside_session`` (either side);
- only the broker has it -> ``missing_internal``; only we have it -> ``missing_broker``;
- both have it and one of open/high/low/close differs by more than
  ``price_tolerance + price_rel_tolerance * |broker|`` -> ``price_mismatch`` (``columns``
  names which, ``max_abs_diff`` the largest difference);
- both have it and ``|volume_i - volume_b| > volume_rel_tolerance * volume_b`` ->
  ``volume_mismatch``. A minute can be both a price and a volume mismatch (two rows).

Only the discrepancies leave the server: the join, the tolerance tests and the insert into
``bars_1m_recon`` are one INSERT ... SELECT, in the same transaction as the removal of the
date's previous ``open`` rows, so a rerun replaces them atomically (never duplicated,
never half-written).
"""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import psycopg
from psycopg import sql

from .. import db
from ..config import Config
from ..db import table_identifiers

KINDS = ("missing_internal", "missing_broker", "price_mismatch", "volume_mismatch", "outside_session")
HEALABLE = ("missing_internal", "price_mismatch", "volume_mismatch")
PRICE_COLUMNS = ("open", "high", "low", "close")
# Session settings for the comparison transaction (SET LOCAL): one day of 2,000 symbols
# hashes ~750k rows per side; with the default 4 MB work_mem the join spills to disk in
# batches, and JIT compilation costs more than it saves on a query this size.
SESSION_SETTINGS = {"work_mem": "256MB", "jit": "off"}
# floating point slack so that a difference of exactly the tolerance is not a mismatch
EPSILON = 1e-9


@dataclass(frozen=True)
class Scope:
    """What one comparison covers: a calendar day (tz-aware bounds) and its session."""

    day: dt.date
    start: dt.datetime
    end: dt.datetime
    session_open: dt.datetime
    session_close: dt.datetime
    symbols: tuple[str, ...] | None = None  # None = every symbol present that day
    # a slice of the symbol space, [lo, hi) in byte order (None = open end): one worker's part
    lo: str | None = None
    hi: str | None = None

    def params(self, cfg: Config) -> dict:
        return {
            "lo": self.lo,
            "hi": self.hi,
            "day": self.day,
            "start": self.start,
            "end": self.end,
            "sopen": self.session_open,
            "sclose": self.session_close,
            "symbols": list(self.symbols) if self.symbols is not None else None,
            "ptol": cfg.recon.price_tolerance + EPSILON,
            "prel": cfg.recon.price_rel_tolerance,
            "vrel": cfg.recon.volume_rel_tolerance,
        }


def _side(table: sql.Identifier, scope: Scope) -> sql.Composed:
    cond = sql.SQL("ts >= %(start)s AND ts < %(end)s")
    if scope.symbols is not None:
        cond = cond + sql.SQL(" AND symbol = ANY(%(symbols)s)")
    if scope.lo is not None:
        cond = cond + sql.SQL(' AND symbol COLLATE "C" >= %(lo)s')
    if scope.hi is not None:
        cond = cond + sql.SQL(' AND symbol COLLATE "C" < %(hi)s')
    return sql.SQL("SELECT symbol, ts, open, high, low, close, volume FROM {} WHERE ").format(table) + cond


def discrepancy_select(cfg: Config, scope: Scope) -> sql.Composed:
    """SELECT symbol, ts, kind, columns, internal_*, broker_*, max_abs_diff for the scope.

    The join's WHERE is a cheap exact-equality test, so the tolerance arithmetic only runs
    on the ~1 % of rows that differ at all (or sit outside the session)."""
    t = table_identifiers(cfg)
    price_bad = {
        c: sql.SQL("abs(j.{i} - j.{b}) > %(ptol)s::float8 + %(prel)s::float8 * abs(j.{b})").format(
            i=sql.Identifier(f"i_{c}"), b=sql.Identifier(f"b_{c}")
        )
        for c in PRICE_COLUMNS
    }
    return sql.SQL(
        """
SELECT f.symbol, f.ts, k.kind, k.cols AS columns,
       f.i_open, f.i_high, f.i_low, f.i_close, f.i_volume,
       f.b_open, f.b_high, f.b_low, f.b_close, f.b_volume, k.diff AS max_abs_diff
FROM (
    SELECT j.*,
           (j.ts >= %(sopen)s AND j.ts < %(sclose)s AND date_trunc('minute', j.ts) = j.ts) AS ins,
           {po} AS po, {ph} AS ph, {pl} AS pl, {pc} AS pc,
           abs(j.i_volume - j.b_volume) > %(vrel)s::float8 * j.b_volume AS vb
    FROM (
        SELECT coalesce(i.symbol, b.symbol) AS symbol, coalesce(i.ts, b.ts) AS ts,
               i.open AS i_open, i.high AS i_high, i.low AS i_low, i.close AS i_close,
               i.volume AS i_volume,
               b.open AS b_open, b.high AS b_high, b.low AS b_low, b.close AS b_close,
               b.volume AS b_volume,
               i.symbol IS NOT NULL AS has_i, b.symbol IS NOT NULL AS has_b
        FROM ({internal}) i FULL JOIN ({broker}) b ON i.symbol = b.symbol AND i.ts = b.ts
        WHERE i.symbol IS NULL OR b.symbol IS NULL
           OR i.open <> b.open OR i.high <> b.high OR i.low <> b.low OR i.close <> b.close
           OR i.volume <> b.volume
           OR i.ts < %(sopen)s OR i.ts >= %(sclose)s OR date_trunc('minute', i.ts) <> i.ts
    ) j
) f
CROSS JOIN LATERAL (VALUES
    ('outside_session', NOT f.ins, '{{}}'::text[], NULL::float8),
    ('missing_internal', f.ins AND NOT f.has_i, '{{}}'::text[], NULL::float8),
    ('missing_broker', f.ins AND NOT f.has_b, '{{}}'::text[], NULL::float8),
    ('price_mismatch', f.ins AND (f.po OR f.ph OR f.pl OR f.pc),
        array_remove(ARRAY[CASE WHEN f.po THEN 'open' END, CASE WHEN f.ph THEN 'high' END,
                           CASE WHEN f.pl THEN 'low' END, CASE WHEN f.pc THEN 'close' END], NULL),
        greatest(CASE WHEN f.po THEN abs(f.i_open - f.b_open) END,
                 CASE WHEN f.ph THEN abs(f.i_high - f.b_high) END,
                 CASE WHEN f.pl THEN abs(f.i_low - f.b_low) END,
                 CASE WHEN f.pc THEN abs(f.i_close - f.b_close) END)),
    ('volume_mismatch', f.ins AND f.vb, ARRAY['volume'], abs(f.i_volume - f.b_volume)::float8)
) AS k(kind, hit, cols, diff)
WHERE k.hit
"""
    ).format(
        internal=_side(t["bars_1m"], scope),
        broker=_side(t["broker_bars_1m"], scope),
        po=price_bad["open"],
        ph=price_bad["high"],
        pl=price_bad["low"],
        pc=price_bad["close"],
    )


@dataclass
class CompareResult:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    compare_seconds: float = 0.0

    @property
    def discrepancies(self) -> int:
        return sum(self.counts.values())


def side_counts(conn: psycopg.Connection, cfg: Config, scope: Scope) -> tuple[int, int]:
    """(internal rows, broker rows) in the scope: two plain counts (no per-symbol hashing)."""
    t = table_identifiers(cfg)
    q = sql.SQL("SELECT (SELECT count(*) FROM ({i}) x), (SELECT count(*) FROM ({b}) y)").format(
        i=_side(t["bars_1m"], scope), b=_side(t["broker_bars_1m"], scope)
    )
    row = conn.execute(q, scope.params(cfg)).fetchone()
    return int(row[0]), int(row[1])


_UPSERT = """
INSERT INTO {r} AS r (trading_day, run_id, symbol, ts, kind, columns,
    internal_open, internal_high, internal_low, internal_close, internal_volume,
    broker_open, broker_high, broker_low, broker_close, broker_volume, max_abs_diff)
SELECT %(day)s, %(run_id)s, d.* FROM ({select}) d
ON CONFLICT (trading_day, symbol, ts, kind) DO UPDATE SET
    run_id = excluded.run_id, columns = excluded.columns,
    internal_open = excluded.internal_open, internal_high = excluded.internal_high,
    internal_low = excluded.internal_low, internal_close = excluded.internal_close,
    internal_volume = excluded.internal_volume,
    broker_open = excluded.broker_open, broker_high = excluded.broker_high,
    broker_low = excluded.broker_low, broker_close = excluded.broker_close,
    broker_volume = excluded.broker_volume, max_abs_diff = excluded.max_abs_diff,
    status = CASE WHEN r.status = 'unhealable' THEN 'unhealable' ELSE 'open' END,
    healed_run_id = CASE WHEN r.status = 'unhealable' THEN r.healed_run_id END,
    updated_at = now()
"""
_STAGE_COLUMNS = (
    "symbol text, ts timestamptz, kind text, columns text[], internal_open float8, "
    "internal_high float8, internal_low float8, internal_close float8, internal_volume bigint, "
    "broker_open float8, broker_high float8, broker_low float8, broker_close float8, "
    "broker_volume bigint, max_abs_diff float8"
)


def _set_session(conn: psycopg.Connection) -> None:
    for k, v in SESSION_SETTINGS.items():
        conn.execute(sql.SQL("SELECT set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v)))


def split_points(conn: psycopg.Connection, cfg: Config, scope: Scope, parts: int) -> list[str]:
    """Symbol boundaries cutting the scope into ``parts`` slices of about equal size, from
    the requested symbols or the day's broker fetch log (small tables, no scan of bars)."""
    if parts < 2:
        return []
    if scope.symbols is not None:
        syms = sorted(set(scope.symbols))
    else:
        syms = sorted(
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT symbol FROM {} WHERE trading_day = %s").format(
                    table_identifiers(cfg)["broker_fetches"]
                ),
                (scope.day,),
            )
        )
    if len(syms) < parts * 50:  # small days: one statement is faster than the round trips
        return []
    return [syms[len(syms) * i // parts] for i in range(1, parts)]


def _select_part(cfg: Config, scope: Scope) -> list[tuple]:
    """One worker: the discrepancies of its symbol slice."""
    with db.connect(cfg) as c, c.transaction():
        _set_session(c)
        return c.execute(discrepancy_select(cfg, scope), scope.params(cfg)).fetchall()


def compare_and_write(conn: psycopg.Connection, cfg: Config, scope: Scope, run_id: str) -> CompareResult:
    """Replace the scope's open rows in ``bars_1m_recon`` with this run's findings, atomically.

    With ``[recon].compare_workers`` > 1 and a big enough day, the comparison runs as that
    many concurrent statements over disjoint symbol slices (PostgreSQL 15 cannot run a full
    hash join in parallel by itself); only their discrepancy rows come back, and are written
    in the same single transaction as the removal of the old open rows. Otherwise it is one
    INSERT ... SELECT.

    Rows an operator or the autoheal settled keep their status: a finding that matches an
    ``unhealable`` row stays ``unhealable``; one that matches a ``healed`` row is reopened
    (it is a discrepancy again).
    """
    t = table_identifiers(cfg)
    params = scope.params(cfg) | {"run_id": run_id}
    sym_cond = sql.SQL(" AND symbol = ANY(%(symbols)s)") if scope.symbols is not None else sql.SQL("")
    res = CompareResult()
    t0 = time.perf_counter()
    cuts = split_points(conn, cfg, scope, cfg.recon.compare_workers)
    staged: list[tuple] | None = None
    if cuts:
        bounds = [None, *cuts, None]
        parts = [replace(scope, lo=bounds[i], hi=bounds[i + 1]) for i in range(len(bounds) - 1)]
        with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="compare") as pool:
            staged = [row for rows in pool.map(lambda sc: _select_part(cfg, sc), parts) for row in rows]
    with conn.transaction():
        _set_session(conn)
        conn.execute(
            sql.SQL("DELETE FROM {r} WHERE trading_day = %(day)s AND status = 'open'").format(
                r=t["bars_1m_recon"]
            )
            + sym_cond,
            params,
        )
        if staged is None:
            select: sql.Composable = discrepancy_select(cfg, scope)
        else:
            conn.execute(
                sql.SQL("CREATE TEMP TABLE recon_stage (" + _STAGE_COLUMNS + ") ON COMMIT DROP")
            )
            with conn.cursor().copy("COPY recon_stage FROM STDIN") as cp:
                for row in staged:
                    cp.write_row(row)
            select = sql.SQL("SELECT * FROM recon_stage")
        conn.execute(sql.SQL(_UPSERT).format(r=t["bars_1m_recon"], select=select), params)
        for kind, n in conn.execute(
            sql.SQL(
                "SELECT kind, count(*) FROM {r} WHERE trading_day = %(day)s AND run_id = %(run_id)s "
                "GROUP BY kind"
            ).format(r=t["bars_1m_recon"]),
            params,
        ):
            res.counts[kind] = int(n)
    res.compare_seconds = time.perf_counter() - t0
    return res
