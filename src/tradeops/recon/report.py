"""The recon report: counts per kind, per-column mismatch counts and max difference, the
symbols with most discrepancies and a bounded sample, as text for people and JSON (same
content) for machines. All aggregation runs in PostgreSQL over this run's rows."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg
from psycopg import sql

from ..config import Config
from ..db import table_identifiers
from .compare import KINDS

COLUMN_DIFF = {
    "open": "abs(internal_open - broker_open)",
    "high": "abs(internal_high - broker_high)",
    "low": "abs(internal_low - broker_low)",
    "close": "abs(internal_close - broker_close)",
    "volume": "abs(internal_volume - broker_volume)::float8",
}


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, dt.datetime | dt.date) else v


def details(conn: psycopg.Connection, cfg: Config, day: dt.date, run_id: str, tz) -> dict[str, Any]:
    """Per-column stats, top symbols and a sample for the rows of ``run_id``."""
    t = table_identifiers(cfg)["bars_1m_recon"]
    p = {"day": day, "run": run_id}
    case = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(c), sql.SQL(e)) for c, e in COLUMN_DIFF.items()
    )
    columns = {c: {"mismatches": 0, "max_abs_diff": 0.0} for c in COLUMN_DIFF}
    for col, n, mx in conn.execute(
        sql.SQL(
            "SELECT c, count(*), max(CASE c {case} END) FROM {t}, unnest(columns) AS c "
            "WHERE trading_day = %(day)s AND run_id = %(run)s "
            "AND kind IN ('price_mismatch', 'volume_mismatch') GROUP BY c"
        ).format(case=case, t=t),
        p,
    ):
        columns[col] = {"mismatches": int(n), "max_abs_diff": float(mx or 0.0)}
    top = [
        {"symbol": s, "discrepancies": int(n), "by_kind": {k: int(v) for k, v in bk.items()}}
        for s, n, bk in conn.execute(
            sql.SQL(
                "SELECT symbol, sum(n), jsonb_object_agg(kind, n) FROM (SELECT symbol, kind, "
                "count(*) AS n FROM {t} WHERE trading_day = %(day)s AND run_id = %(run)s "
                "GROUP BY symbol, kind) x GROUP BY symbol ORDER BY 2 DESC, symbol LIMIT %(lim)s"
            ).format(t=t),
            p | {"lim": cfg.recon.top_symbols},
        )
    ]
    per_kind = max(1, -(-cfg.recon.sample_rows // len(KINDS)))
    sample = []
    for r in conn.execute(
        sql.SQL(
            "SELECT symbol, ts, kind, columns, status, internal_open, internal_high, internal_low, "
            "internal_close, internal_volume, broker_open, broker_high, broker_low, broker_close, "
            "broker_volume, max_abs_diff FROM (SELECT *, row_number() OVER (PARTITION BY kind "
            "ORDER BY symbol, ts) AS rn FROM {t} WHERE trading_day = %(day)s AND run_id = %(run)s) x "
            "WHERE rn <= %(per)s ORDER BY symbol, ts, kind LIMIT %(lim)s"
        ).format(t=t),
        p | {"per": per_kind, "lim": cfg.recon.sample_rows},
    ):
        sample.append(row_dict(r, tz))
    return {"columns": columns, "top_symbols": top, "sample": sample}


def row_dict(r, tz) -> dict[str, Any]:
    (symbol, ts, kind, cols, status, io, ih, il, ic, iv, bo, bh, bl, bc, bv, diff) = r
    def side(o, h, lo, c, v):
        return None if o is None else {"open": o, "high": h, "low": lo, "close": c, "volume": v}

    return {
        "symbol": symbol,
        "ts": ts.astimezone(tz).isoformat(),
        "kind": kind,
        "columns": list(cols),
        "status": status,
        "internal": side(io, ih, il, ic, iv),
        "broker": side(bo, bh, bl, bc, bv),
        "max_abs_diff": diff,
    }


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, default=_iso, indent=2, sort_keys=False)


def _fmt_side(s: dict | None) -> str:
    if s is None:
        return "-"
    return f"{s['open']:g}/{s['high']:g}/{s['low']:g}/{s['close']:g} v{s['volume']}"


def render_text(rep: dict[str, Any]) -> str:
    out: list[str] = []
    rows = rep["rows"]
    out.append(
        f"recon {rep['date']} run {rep['run_id']}: {rep['status'].upper()} "
        f"({rep['total']} discrepancies, exit {rep['exit_code']})"
    )
    out.append(
        f"  symbols {rep['symbols']}, bars internal {rows['internal']}, broker {rows['broker']}, "
        f"expected {rows['expected']} ({rep['expected_per_symbol']} per symbol)"
    )
    fetch = rep.get("fetch") or {}
    if fetch:
        out.append(
            f"  broker {fetch.get('source', '')}: fetched {fetch.get('fetched', 0)} symbols, "
            f"cached {fetch.get('cached', 0)}, requests {fetch.get('requests', 0)}, "
            f"retries {fetch.get('retries', 0)} (429: {fetch.get('http_429', 0)}, "
            f"5xx: {fetch.get('http_5xx', 0)})"
        )
    st = rep.get("stages") or {}
    out.append("  stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in st.items()))
    out.append("")
    out.append("  kind               count")
    for k in KINDS:
        out.append(f"  {k:<18} {rep['counts'].get(k, 0):>5}")
    cols = {c: v for c, v in rep["columns"].items() if v["mismatches"]}
    if cols:
        out.append("")
        out.append("  column   mismatches  max |diff|")
        for c, v in cols.items():
            out.append(f"  {c:<8} {v['mismatches']:>10}  {v['max_abs_diff']:>10g}")
    if rep["top_symbols"]:
        out.append("")
        out.append("  symbols with most discrepancies:")
        for s in rep["top_symbols"]:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(s["by_kind"].items()))
            out.append(f"  {s['symbol']:<20} {s['discrepancies']:>5}  ({kinds})")
    if rep["sample"]:
        out.append("")
        out.append(f"  sample ({len(rep['sample'])} of {rep['total']}): internal vs broker o/h/l/c v")
        for r in rep["sample"]:
            cols_s = ",".join(r["columns"])
            out.append(
                f"  {r['symbol']:<16} {r['ts'][11:16]} {r['kind']:<16} {cols_s:<20} "
                f"{_fmt_side(r['internal'])}  |  {_fmt_side(r['broker'])}"
            )
    return "\n".join(out)
