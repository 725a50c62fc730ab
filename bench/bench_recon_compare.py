"""Recon compare + write speed, against two anchors measured in the same run.

2,000 symbols x 375 bars per side (the simulator's day, 1 % discrepancies), loaded into a
throwaway database on the local PostgreSQL (127.0.0.1:15432, `make up`). Measures, best of
--repeat runs each:

- ours:      compare.compare_and_write (delete the day's open rows, the set-based compare,
             insert the discrepancies, count per kind), one transaction for the write; the
             compare runs as [recon].compare_workers (2) concurrent statements over symbol
             slices (``--workers 1``: a single INSERT ... SELECT);
- floor:     PostgreSQL's own bare ``SELECT count(*) FROM i FULL JOIN b USING (symbol, ts)``
             over the same rows, with the same session settings;
- datacompy: datacompy.PolarsCompare on both sides loaded from PostgreSQL (COPY into
             polars) with the same tolerance, plus its mismatch and only-in-one-side frames.

Prints the times and the ratios (targets: ours < 3 s, datacompy/ours >= 3, ours/floor <= 1.5).

    .venv/bin/python bench/bench_recon_compare.py [--symbols 2000] [--rate 0.01] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import sys
import time
import uuid
from pathlib import Path

import msgspec
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tradeops import config, db  # noqa: E402
from tradeops.calendar import TradingCalendar  # noqa: E402
from tradeops.recon import compare  # noqa: E402
from tradeops.sim.market import Market  # noqa: E402

DAY = dt.date(2026, 12, 3)
replace = msgspec.structs.replace


def make_db(base):
    name = f"bench_recon_{uuid.uuid4().hex[:8]}"
    admin = replace(base, postgres=replace(base.postgres, dbname="postgres"))
    with db.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    cfg = replace(base, postgres=replace(base.postgres, dbname=name))
    with db.connect(cfg) as c:
        db.migrate(c, cfg)
    return cfg, admin


def load(cfg, market: Market) -> None:
    with db.connect(cfg) as conn:
        for table, side in (("bars_1m", market.internal_bars), ("broker_bars_1m", market.broker_bars)):
            with conn.cursor().copy(
                f"COPY {table} (symbol, ts, open, high, low, close, volume) FROM STDIN"  # noqa: S608
            ) as cp:
                for s in market.symbols:
                    for b in side(s):
                        cp.write_row((s, b.ts, b.open, b.high, b.low, b.close, b.volume))
        # the fetch log a recon's broker fetch leaves (the compare slices the day by it)
        conn.execute(
            "INSERT INTO broker_fetches (trading_day, symbol, source, rows) "
            "SELECT %s, s, 'kite', 375 FROM unnest(%s::text[]) s",
            (market.date, list(market.symbols)),
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE bars_1m")
        conn.execute("VACUUM ANALYZE broker_bars_1m")


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=0.01)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--config", default=os.environ.get("TRADEOPS_CONFIG", str(REPO / "infra/dev/tradeops.toml")))
    ap.add_argument("--skip-datacompy", action="store_true")
    ap.add_argument("--workers", type=int, default=None, help="[recon].compare_workers for ours")
    a = ap.parse_args()
    base = config.load(a.config)
    if a.workers is not None:
        base = replace(base, recon=replace(base.recon, compare_workers=a.workers))
    cfg, admin = make_db(base)
    try:
        t0 = time.perf_counter()
        market = Market(DAY, n_symbols=a.symbols, discrepancy_rate=a.rate)
        load(cfg, market)
        print(f"loaded {a.symbols} symbols x 375 bars per side ({len(market.injected())} injected "
              f"discrepancies) in {time.perf_counter() - t0:.1f} s")
        cal = TradingCalendar.from_config(cfg)
        s = cal.session(DAY)
        start, end = cal.day_bounds(DAY)
        scope = compare.Scope(DAY, start, end, s.open, s.close)
        conn = db.connect(cfg, autocommit=True)

        def ours():
            return compare.compare_and_write(conn, cfg, scope, f"bench-{uuid.uuid4().hex[:6]}")

        floor_sql = (
            "SELECT count(*) FROM (SELECT symbol, ts FROM bars_1m WHERE ts >= %(start)s AND ts < %(end)s) i "
            "FULL JOIN (SELECT symbol, ts FROM broker_bars_1m WHERE ts >= %(start)s AND ts < %(end)s) b "
            "USING (symbol, ts)"
        )

        def floor():
            with conn.transaction():
                for k, v in compare.SESSION_SETTINGS.items():
                    conn.execute(f"SET LOCAL {k} = '{v}'")
                return conn.execute(floor_sql, {"start": start, "end": end}).fetchone()[0]

        ours()  # warm the cache
        floor()
        # interleaved rounds, so that both see the same load of a shared machine
        t_ours = t_floor = float("inf")
        ratios = []
        for _ in range(a.repeat):
            to, res = best(ours, 1)
            tf, n_join = best(floor, 1)
            ratios.append(to / tf)
            t_ours, t_floor = min(t_ours, to), min(t_floor, tf)
        assert res.discrepancies == len(market.injected()), (res.counts, len(market.injected()))
        print(f"ours (compare + write, {res.discrepancies} rows, compare_workers "
              f"{cfg.recon.compare_workers}): {t_ours:.3f} s")
        print(f"floor (bare full outer join count, {n_join} rows): {t_floor:.3f} s")
        print(f"ours / floor = {t_ours / t_floor:.2f} (best vs best; per round: "
              f"{', '.join(f'{r:.2f}' for r in ratios)}) (target <= 1.5); ours < 3 s: {t_ours < 3}")

        # the whole job on the same data (broker side already cached): symbols, fetch check,
        # compare + write, row counts, report; what `tradeops recon run` takes end to end
        from tradeops.recon.cli import run_recon

        job_cfg = replace(cfg, recon=replace(cfg.recon, pushgateway_url=""))
        t_job, out = best(lambda: run_recon(job_cfg, DAY), 1)
        print(f"whole `recon run` (cached broker bars, {out.report['total']} discrepancies): {t_job:.3f} s "
              f"(stages: {out.report['stages']})")

        if not a.skip_datacompy:
            import datacompy
            import polars as pl

            def load_pl(table: str) -> pl.DataFrame:
                buf = io.BytesIO()
                with conn.cursor().copy(
                    f"COPY (SELECT symbol, ts, open, high, low, close, volume FROM {table} "  # noqa: S608
                    f"WHERE ts >= '{start.isoformat()}' AND ts < '{end.isoformat()}') TO STDOUT "
                    "WITH (FORMAT csv, HEADER true)"
                ) as cp:
                    for chunk in cp:
                        buf.write(chunk)
                buf.seek(0)
                return pl.read_csv(buf, try_parse_dates=True)

            def dc():
                df1 = load_pl("bars_1m")
                df2 = load_pl("broker_bars_1m")
                cmp = datacompy.PolarsCompare(
                    df1, df2, join_columns=["symbol", "ts"], abs_tol=cfg.recon.price_tolerance + 1e-9,
                    rel_tol=0, df1_name="internal", df2_name="broker",
                )
                mism = cmp.all_mismatch()
                return len(mism) + len(cmp.df1_unq_rows) + len(cmp.df2_unq_rows)

            t_dc, n_dc = best(dc, max(1, a.repeat - 1))
            print(f"datacompy polars (load both sides from PostgreSQL + compare, {n_dc} rows): {t_dc:.3f} s")
            print(f"datacompy / ours = {t_dc / t_ours:.1f} (target >= 3)")
        conn.close()
    finally:
        with db.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{cfg.postgres.dbname}" WITH (FORCE)')


if __name__ == "__main__":
    try:
        main()
    except (psycopg.OperationalError, db.DatabaseError) as e:
        sys.exit(f"bench_recon_compare: PostgreSQL not reachable ({e}): run `make up`")
