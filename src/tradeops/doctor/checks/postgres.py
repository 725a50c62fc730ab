"""PostgreSQL: connect, migrations current, bars_1m freshness, the last trading day's recon.

- ``postgres``: connect within the timeout (password from ``[postgres].password_file``).
- ``postgres.migrations``: :func:`tradeops.db.pending` is empty.
- ``postgres.bars_1m``: during the session (calendar), the latest bar is younger than
  ``[doctor].bars_stale_s`` (WARN) / 3x that (CRIT); outside the session it is informative.
- ``recon``: the latest recon run (kind ``recon``) for the last trading day whose recon is
  due (its session close + ``[doctor].recon_grace_s``), and its open discrepancies in
  ``bars_1m_recon``.
"""

from __future__ import annotations

import datetime as dt
import time

import msgspec
import psycopg
from psycopg import sql

from ... import db
from ...calendar import TradingCalendar
from ..result import Result, age_text, crit, ok, one_line, warn
from ..runner import Check, CheckContext

PG_DOWN = ("PostgreSQL is down or refuses us: `systemctl status postgresql` (dev: "
           "`scripts/stack.sh status`), its log, [postgres] host/port/user and the password file")


def recon_day(cal: TradingCalendar, now: dt.datetime, grace_s: float) -> dt.date:
    """The last trading day whose recon is due at ``now`` (tz-aware)."""
    today = now.astimezone(cal.tz).date()
    s = cal.session(today)
    if s is not None and now >= s.close + dt.timedelta(seconds=grace_s):
        return today
    return cal.previous_trading_day(today)


def bars_result(cfg, cal: TradingCalendar, latest: dt.datetime | None, now: dt.datetime) -> Result:
    name = "postgres.bars_1m"
    table = cfg.tables.bars_1m
    s = cal.session(now.astimezone(cal.tz).date())
    # bars end one minute after their start: judge from the open + one bar to the close + one bar
    in_session = (s is not None
                  and s.open + dt.timedelta(minutes=1) <= now <= s.close + dt.timedelta(minutes=2))
    age = None if latest is None else (now - latest).total_seconds()
    details = {"latest": latest.isoformat() if latest else None, "age_s": age, "in_session": in_session}
    if not in_session:
        when = latest.astimezone(cal.tz).strftime("%Y-%m-%d %H:%M %Z") if latest else "none"
        return ok(name, f"market closed; latest bar {when}", details=details)
    stale = cfg.doctor.bars_stale_s
    advice = ("bars stopped arriving during the session: check the bar writer (market data "
              f"feed -> {cfg.topics.bars_1m} -> {table}) and its consumer lag")
    if age is None or age > 3 * stale:
        return crit(name, f"latest bar {age_text(age)} old during the session", advice, details=details)
    if age > stale:
        return warn(name, f"latest bar {age_text(age)} old during the session", advice, details=details)
    return ok(name, f"latest bar {age_text(age)} old", details=details)


def recon_result(cfg, day: dt.date, run: tuple | None, open_rows: int, now: dt.datetime) -> Result:
    name = "recon"
    show = f"`tradeops recon show --date {day} --status open`"
    rerun = f"`tradeops recon run --date {day}`"
    if run is None:
        return crit(name, f"no recon run for {day}",
                    f"the recon did not run: `systemctl status tradeops-recon.timer tradeops-recon` and "
                    f"`journalctl -u tradeops-recon`; run it now: {rerun}")
    run_id, status, started, finished, disc, message = run
    details = {"trading_day": str(day), "run_id": run_id, "status": status, "open": open_rows,
               "discrepancies": disc, "message": message}
    base = f"{day}: run {run_id} {status}"
    if status == "failed":
        return crit(name, f"{base}: {message}".rstrip(": "),
                    f"read `journalctl -u tradeops-recon` and rerun: {rerun}", details=details)
    if status == "running":
        age = (now - started).total_seconds()
        if age > 3600:
            return crit(name, f"{base} for {age_text(age)}",
                        f"it looks dead (killed?): rerun it, {rerun} (reruns are idempotent)",
                        details=details)
        return warn(name, f"{base} for {age_text(age)}", "still running; check again later", details=details)
    if open_rows:
        return warn(name, f"{base}, {open_rows} open discrepancies",
                    f"look at them, {show}, then heal: `tradeops recon autoheal --date {day}`",
                    details=details)
    if status == "partial":
        return warn(name, f"{base}", f"some symbols were not reconciled: {rerun}", details=details)
    return ok(name, f"{base}, no open discrepancy", details=details)


def run(ctx: CheckContext) -> list[Result]:
    cfg = ctx.cfg
    pg = cfg.postgres
    where = f"{pg.host}:{pg.port}/{pg.dbname}"
    t0 = time.monotonic()
    cfg_t = msgspec.structs.replace(cfg, postgres=msgspec.structs.replace(
        pg, connect_timeout_s=max(1.0, min(pg.connect_timeout_s, ctx.left(0.2)))))
    try:
        conn = db.connect(cfg_t, autocommit=True)
    except db.DatabaseError as e:
        out = [crit("postgres", str(e), PG_DOWN)]
        for n in ("postgres.migrations", "postgres.bars_1m", "recon"):
            out.append(crit(n, "not checked: PostgreSQL unreachable", PG_DOWN))
        return out
    out: list[Result] = []
    cal = TradingCalendar.from_config(cfg)
    ids = db.table_identifiers(cfg)
    with conn:
        ms = max(100, int(ctx.left(0.1) * 1000))
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(ms)))
        version = conn.info.server_version
        out.append(ok("postgres", f"connected to {where} (server {version // 10000}.{version % 10000}) "
                                  f"in {(time.monotonic() - t0) * 1000:.0f} ms"))
        try:
            todo = db.pending(conn)
        except psycopg.Error as e:
            todo = None
            out.append(crit("postgres.migrations", f"cannot read migrations: {one_line(e)}",
                            "check the database and `tradeops db status`"))
        if todo:
            out.append(crit("postgres.migrations", f"pending: {', '.join(todo)}",
                            "apply them: `tradeops db migrate` (idempotent)"))
            return out
        if todo is not None:
            out.append(ok("postgres.migrations", "up to date"))
        now = dt.datetime.now(dt.UTC)
        try:
            latest = conn.execute(sql.SQL("SELECT max(ts) FROM {}").format(ids["bars_1m"])).fetchone()[0]
            out.append(bars_result(cfg, cal, latest, now))
        except psycopg.Error as e:
            out.append(crit("postgres.bars_1m", f"query failed: {one_line(e)}",
                            "check the table and the database"))
        day = recon_day(cal, now, cfg.doctor.recon_grace_s)
        try:
            run_row = conn.execute(sql.SQL(
                "SELECT run_id, status, started_at, finished_at, discrepancies, message FROM {} "
                "WHERE trading_day = %s AND kind = 'recon' ORDER BY started_at DESC LIMIT 1"
            ).format(ids["recon_runs"]), (day,)).fetchone()
            open_rows = conn.execute(sql.SQL(
                "SELECT count(*) FROM {} WHERE trading_day = %s AND status = 'open'"
            ).format(ids["bars_1m_recon"]), (day,)).fetchone()[0]
            out.append(recon_result(cfg, day, run_row, open_rows, now))
        except psycopg.Error as e:
            out.append(crit("recon", f"query failed: {one_line(e)}", "check the recon tables"))
    return out


CHECKS = [Check("postgres", run, "PostgreSQL: connect, migrations, bars_1m freshness, last recon",
                aliases=("recon",))]
