"""`tradeops recon run|autoheal|show`: the daily reconciliation job and its operator views.

Exit codes: 0 clean, 1 discrepancies found (``run``) / some left open (``autoheal``,
``show``), 2 error (config, database, broker, bad input, a refused autoheal).
"""

from __future__ import annotations

import datetime as dt
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import click
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .. import db
from ..calendar import TradingCalendar, parse_date
from ..config import Config
from ..db import table_identifiers
from ..errors import UserError
from . import broker_client, compare, metrics, report

LOCK_PREFIX = "tradeops-recon:"


class NotTradingDay(UserError):
    exit_code = 0


def lock_day(conn: psycopg.Connection, day: dt.date, what: str) -> None:
    """Session advisory lock per day shared by recon and autoheal (released on disconnect)."""
    got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"{LOCK_PREFIX}{day}",)).fetchone()[0]
    if not got:
        raise UserError(f"{what} {day}: another recon or autoheal for this date is running")


def open_db(cfg: Config) -> psycopg.Connection:
    conn = db.connect(cfg, autocommit=True)
    todo = db.pending(conn)
    if todo:
        conn.close()
        raise UserError(
            f"PostgreSQL {cfg.postgres.dbname}: migrations pending ({', '.join(todo)}): "
            "run `tradeops db migrate`"
        )
    return conn


def pg_error_line(cfg: Config, e: psycopg.Error, stage: str, day: dt.date, cmd: str) -> str:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if isinstance(e, psycopg.OperationalError):
        return (
            f"PostgreSQL {cfg.postgres.host}:{cfg.postgres.port}: connection lost during {stage} "
            f"of {day} ({first}); nothing half-written: rerun `tradeops recon {cmd} --date {day}`"
        )
    return f"PostgreSQL: {stage} of {day} failed: {first}"


def parse_symbols(values: tuple[str, ...]) -> list[str] | None:
    out: list[str] = []
    for v in values:
        for s in v.split(","):
            s = s.strip().upper()
            if s:
                broker_client.split_symbol(s)
                if s not in out:
                    out.append(s)
    return out or None


@dataclass
class RunOutcome:
    exit_code: int
    report: dict[str, Any] = field(default_factory=dict)
    warning: str = ""


def _internal_symbols(conn, cfg: Config, start: dt.datetime, end: dt.datetime) -> list[str]:
    t = table_identifiers(cfg)
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT symbol FROM {} WHERE ts >= %s AND ts < %s ORDER BY symbol").format(
            t["bars_1m"]
        ),
        (start, end),
    ).fetchall()
    return [r[0] for r in rows]


def _symbols_compared(conn, cfg: Config, day: dt.date, wanted: list[str], scope) -> int:
    """Symbols in the comparison: the requested ones, or (whole day) ours and those the
    broker cache holds bars of (from the fetch log: no scan of the bars)."""
    if scope.symbols is not None:
        return len(set(scope.symbols))
    t = table_identifiers(cfg)
    broker = conn.execute(
        sql.SQL("SELECT symbol FROM {} WHERE trading_day = %s AND rows > 0").format(t["broker_fetches"]),
        (day,),
    ).fetchall()
    return len(set(wanted) | {r[0] for r in broker})


def run_recon(
    cfg: Config,
    day: dt.date,
    symbols: list[str] | None = None,
    refetch: bool = False,
    source=None,
) -> RunOutcome:
    """One reconciliation of ``day``; raises UserError (exit 2) on any failure."""
    cal = TradingCalendar.from_config(cfg)
    session = cal.session(day)
    if session is None:
        raise NotTradingDay(f"{day} is not a trading day ({cal.why_not(day)}): nothing to reconcile")
    start, end = cal.day_bounds(day)
    stages: dict[str, float] = {}
    run_id = f"recon-{day}-{uuid.uuid4().hex[:8]}"
    t = table_identifiers(cfg)
    conn = None
    stage = "connect"
    try:
        conn = open_db(cfg)
        lock_day(conn, day, "recon")
        # runs of this date left 'running' by a crash: their session (and lock) is gone
        conn.execute(
            sql.SQL(
                "UPDATE {} SET status = 'failed', finished_at = now(), message = 'did not finish "
                "(crashed or lost its database)' WHERE trading_day = %s AND kind = 'recon' "
                "AND status = 'running'"
            ).format(t["recon_runs"]),
            (day,),
        )
        conn.execute(
            sql.SQL("INSERT INTO {} (run_id, trading_day, kind, args) VALUES (%s, %s, 'recon', %s)").format(
                t["recon_runs"]
            ),
            (run_id, day, Jsonb({"symbols": symbols, "refetch": refetch})),
        )
        stage = "fetch"
        t0 = time.perf_counter()
        wanted = symbols or list(cfg.recon.symbols) or _internal_symbols(conn, cfg, start, end)
        if not wanted:
            raise UserError(
                f"recon {day}: no bars in {cfg.tables.bars_1m} that day and no [recon].symbols: "
                "nothing to compare (wrong date, or pass --symbols)"
            )
        src = source or broker_client.make_source(cfg)
        fetched = broker_client.fetch_into_cache(conn, cfg, src, day, wanted, start, end, refetch=refetch)
        stages["fetch"] = time.perf_counter() - t0
        stage = "compare"
        t0 = time.perf_counter()
        scope = compare.Scope(
            day,
            start,
            end,
            session.open,
            session.close,
            # --symbols, else the configured universe, else everything present that day
            tuple(symbols or cfg.recon.symbols) or None,
        )
        res = compare.compare_and_write(conn, cfg, scope, run_id)
        n_int, n_brk = compare.side_counts(conn, cfg, scope)
        n_sym = _symbols_compared(conn, cfg, day, wanted, scope)
        stages["compare"] = time.perf_counter() - t0
        stage = "report"
        t0 = time.perf_counter()
        exit_code = 1 if res.discrepancies else 0
        status = "discrepancies" if res.discrepancies else "clean"
        rep: dict[str, Any] = {
            "run_id": run_id,
            "date": str(day),
            "status": status,
            "exit_code": exit_code,
            "symbols": n_sym,
            "expected_per_symbol": session.minutes,
            "rows": {"internal": n_int, "broker": n_brk, "expected": n_sym * session.minutes},
            "counts": res.counts,
            "total": res.discrepancies,
            "fetch": {
                "source": src.name,
                "fetched": len(fetched.fetched),
                "cached": len(fetched.cached),
                "rows": fetched.rows,
                **fetched.stats,
            },
        }
        rep.update(report.details(conn, cfg, day, run_id, cal.tz))
        stages["report"] = time.perf_counter() - t0
        rep["stages"] = {k: round(v, 4) for k, v in stages.items()}
        conn.execute(
            sql.SQL(
                "UPDATE {} SET finished_at = now(), status = %s, symbols = %s, internal_rows = %s, "
                "broker_rows = %s, expected_rows = %s, counts = %s, discrepancies = %s, "
                "stage_seconds = %s, message = %s WHERE run_id = %s"
            ).format(t["recon_runs"]),
            (
                status,
                n_sym,
                n_int,
                n_brk,
                n_sym * session.minutes,
                Jsonb(res.counts),
                res.discrepancies,
                Jsonb(rep["stages"]),
                f"{res.discrepancies} discrepancies",
                run_id,
            ),
        )
    except (UserError, psycopg.Error) as e:
        if isinstance(e, NotTradingDay):
            raise
        msg = pg_error_line(cfg, e, stage, day, "run") if isinstance(e, psycopg.Error) else str(e)
        _mark_failed(cfg, conn, run_id, msg)
        metrics.push_recon(cfg, ok=False, exit_code=2, stages=stages)
        raise UserError(msg, exit_code=2) from None
    finally:
        if conn is not None:
            conn.close()
    warn = metrics.push_recon(
        cfg,
        ok=True,
        exit_code=exit_code,
        stages=stages,
        rows={"internal": n_int, "broker": n_brk},
        counts=res.counts,
    )
    return RunOutcome(exit_code, rep, warn)


def _mark_failed(cfg: Config, conn, run_id: str, msg: str) -> None:
    """Best effort: record the failure on the run row (the database may be what failed)."""
    t = table_identifiers(cfg)
    try:
        c = (
            conn
            if conn is not None and not conn.closed and not conn.broken
            else db.connect(cfg, autocommit=True)
        )
        try:
            c.execute(
                sql.SQL(
                    "UPDATE {} SET status = 'failed', finished_at = now(), message = %s "
                    "WHERE run_id = %s AND status = 'running'"
                ).format(t["recon_runs"]),
                (msg[:1000], run_id),
            )
        finally:
            if c is not conn:
                c.close()
    except (UserError, psycopg.Error):
        pass


# -- click ------------------------------------------------------------------------------
@click.group("recon")
def recon_group() -> None:
    """Daily reconciliation of broker vs internal 1-minute bars, and autoheal."""


def _day(obj, value: str) -> tuple[Config, dt.date]:
    cfg = obj.cfg
    return cfg, parse_date(value, TradingCalendar.from_config(cfg), what="--date")


@recon_group.command("run")
@click.option("--date", "date_", required=True, metavar="YYYY-MM-DD", help="Trading day (or today).")
@click.option("--symbols", multiple=True, metavar="SYM[,SYM]", help="Only these symbols (EXCH:SYMBOL).")
@click.option("--refetch", is_flag=True, help="Fetch broker bars again even if cached.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def run_cmd(obj, date_: str, symbols: tuple[str, ...], refetch: bool, as_json: bool) -> None:
    """Compare the day's internal bars with the broker's; exit 0 clean, 1 differences, 2 error."""
    cfg, day = _day(obj, date_)
    try:
        out = run_recon(cfg, day, parse_symbols(symbols), refetch)
    except NotTradingDay as e:
        click.echo(
            f"tradeops: {e}"
            if not as_json
            else report.to_json(
                {"date": str(day), "status": "not_trading_day", "message": str(e), "exit_code": 0}
            )
        )
        sys.exit(0)
    click.echo(report.to_json(out.report) if as_json else report.render_text(out.report))
    if out.warning:
        click.echo(f"tradeops: {out.warning}", err=True)
    sys.exit(out.exit_code)


@recon_group.command("autoheal")
@click.option("--date", "date_", required=True, metavar="YYYY-MM-DD")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--max-rows",
    type=click.IntRange(0),
    default=None,
    help="Refuse if more bars would change (default [recon].max_heal_rows).",
)
@click.option("--force", is_flag=True, help="Heal even beyond --max-rows.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def autoheal_cmd(obj, date_: str, dry_run: bool, max_rows: int | None, force: bool, as_json: bool) -> None:
    """Backfill from the broker what it can settle, audited and replayed; exit 0 all healed,
    1 some left open, 2 error or refused."""
    from . import autoheal

    cfg, day = _day(obj, date_)
    out = autoheal.autoheal(
        cfg,
        day,
        dry_run=dry_run,
        max_rows=cfg.recon.max_heal_rows if max_rows is None else max_rows,
        force=force,
    )
    click.echo(report.to_json(out.report) if as_json else autoheal.render_text(out.report))
    if out.warning:
        click.echo(f"tradeops: {out.warning}", err=True)
    sys.exit(out.exit_code)


@recon_group.command("show")
@click.option("--date", "date_", required=True, metavar="YYYY-MM-DD")
@click.option("--status", type=click.Choice(["open", "healed", "unhealable", "all"]), default="all")
@click.option("--kind", type=click.Choice(list(compare.KINDS)), default=None)
@click.option("--symbol", default=None, metavar="EXCH:SYMBOL")
@click.option("--limit", type=click.IntRange(1), default=50)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show_cmd(
    obj, date_: str, status: str, kind: str | None, symbol: str | None, limit: int, as_json: bool
) -> None:
    """List the date's discrepancies and their status; exit 1 when some are open."""
    cfg, day = _day(obj, date_)
    cal = TradingCalendar.from_config(cfg)
    if symbol:
        broker_client.split_symbol(symbol.upper())
    try:
        with open_db(cfg) as conn:
            out = show(conn, cfg, cal, day, status, kind, symbol.upper() if symbol else None, limit)
    except psycopg.Error as e:
        raise UserError(pg_error_line(cfg, e, "show", day, "show")) from None
    if as_json:
        click.echo(report.to_json(out))
    else:
        click.echo(render_show(out))
    sys.exit(1 if out["by_status"].get("open", 0) else 0)


def show(
    conn,
    cfg: Config,
    cal: TradingCalendar,
    day: dt.date,
    status: str,
    kind: str | None,
    symbol: str | None,
    limit: int,
) -> dict[str, Any]:
    t = table_identifiers(cfg)
    runs = conn.execute(
        sql.SQL(
            "SELECT run_id, kind, status, started_at, finished_at, counts, message FROM {} "
            "WHERE trading_day = %s ORDER BY started_at DESC LIMIT 5"
        ).format(t["recon_runs"]),
        (day,),
    ).fetchall()
    conds = [sql.SQL("trading_day = %(day)s")]
    if status != "all":
        conds.append(sql.SQL("status = %(status)s"))
    if kind:
        conds.append(sql.SQL("kind = %(kind)s"))
    if symbol:
        conds.append(sql.SQL("symbol = %(symbol)s"))
    where = sql.SQL(" AND ").join(conds)
    p = {"day": day, "status": status, "kind": kind, "symbol": symbol, "limit": limit}
    summary: dict[str, dict[str, int]] = {}
    by_status: dict[str, int] = {}
    for k, s, n in conn.execute(
        sql.SQL("SELECT kind, status, count(*) FROM {} WHERE trading_day = %(day)s GROUP BY 1, 2").format(
            t["bars_1m_recon"]
        ),
        p,
    ):
        summary.setdefault(k, {})[s] = int(n)
        by_status[s] = by_status.get(s, 0) + int(n)
    rows = conn.execute(
        sql.SQL(
            "SELECT symbol, ts, kind, columns, status, internal_open, internal_high, internal_low, "
            "internal_close, internal_volume, broker_open, broker_high, broker_low, broker_close, "
            "broker_volume, max_abs_diff FROM {} WHERE {} ORDER BY symbol, ts, kind LIMIT %(limit)s"
        ).format(t["bars_1m_recon"], where),
        p,
    ).fetchall()
    return {
        "date": str(day),
        "runs": [
            {
                "run_id": r[0],
                "kind": r[1],
                "status": r[2],
                "started_at": r[3].astimezone(cal.tz),
                "finished_at": r[4].astimezone(cal.tz) if r[4] else None,
                "counts": r[5],
                "message": r[6],
            }
            for r in runs
        ],
        "by_kind": summary,
        "by_status": by_status,
        "rows": [report.row_dict(r, cal.tz) for r in rows],
        "limit": limit,
    }


def render_show(out: dict[str, Any]) -> str:
    lines = [f"recon {out['date']}:"]
    if not out["runs"]:
        lines.append("  no recon run recorded for this date")
    for r in out["runs"]:
        fin = r["finished_at"].strftime("%H:%M:%S") if r["finished_at"] else "-"
        lines.append(
            f"  {r['kind']:<8} {r['run_id']:<32} {r['status']:<13} "
            f"{r['started_at']:%Y-%m-%d %H:%M:%S} -> {fin}  {r['message']}"
        )
    lines.append("")
    lines.append("  kind               open  healed  unhealable")
    for k in compare.KINDS:
        s = out["by_kind"].get(k, {})
        lines.append(
            f"  {k:<18} {s.get('open', 0):>4}  {s.get('healed', 0):>6}  {s.get('unhealable', 0):>10}"
        )
    if out["rows"]:
        lines.append("")
        lines.append(f"  rows (first {out['limit']}): internal vs broker o/h/l/c v")
        for r in out["rows"]:
            lines.append(
                f"  {r['symbol']:<16} {r['ts'][11:16]} {r['kind']:<16} {r['status']:<10} "
                f"{','.join(r['columns']):<18} {report._fmt_side(r['internal'])}  |  "
                f"{report._fmt_side(r['broker'])}"
            )
    return "\n".join(lines)
