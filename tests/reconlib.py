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


def write_config(cfg, path) -> str:
    """Write ``cfg`` as a TOML file (secret paths made absolute) for `tradeops --config`."""
    import msgspec

    from tradeops import config as config_mod

    abs_ = lambda v: str(config_mod.secret_path(cfg, v)) if v else v  # noqa: E731
    c = msgspec.structs.replace(
        cfg,
        postgres=msgspec.structs.replace(cfg.postgres, password_file=abs_(cfg.postgres.password_file)),
        broker=msgspec.structs.replace(
            cfg.broker,
            api_key_file=abs_(cfg.broker.api_key_file),
            access_token_file=abs_(cfg.broker.access_token_file),
        ),
        doctor=msgspec.structs.replace(cfg.doctor, kafka_data_dir="", postgres_data_dir=""),
        supervisor=msgspec.structs.replace(cfg.supervisor, status_file="/tmp/tradeops-test-supervisor.json"),
    )
    text = config_mod.to_toml(config_mod.redacted(c))
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def cli(config_path: str, *args: str, env: dict | None = None, timeout: float = 120):
    """Run `tradeops --config FILE ARGS...` as a user would; returns CompletedProcess."""
    import os
    import subprocess
    import sys

    e = dict(os.environ)
    e.pop("TRADEOPS_AUTOHEAL_CRASH_AFTER", None)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tradeops.cli", "--config", config_path, *args],
        capture_output=True, text=True, timeout=timeout, env=e,
    )


def read_topic(cfg, topic: str, timeout: float = 20.0) -> list:
    """Every message of ``topic`` from the beginning (all partitions, until their end)."""
    import time

    from confluent_kafka import Consumer, TopicPartition

    from tradeops.kafka_admin import client_conf

    c = Consumer(client_conf(cfg, **{"group.id": "recon-test-reader", "enable.auto.commit": False,
                                     "enable.partition.eof": True}))
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        parts = list(md.partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        todo = {p for p in parts if ends[p] > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        out = []
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    todo.discard(m.partition())
                continue
            out.append(m)
            if m.offset() + 1 >= ends[m.partition()]:
                todo.discard(m.partition())
        assert not todo, f"could not read {topic} partitions {todo}"
        return out
    finally:
        c.close()


def table_rows(cfg, table_key: str, cols: str, where: str = "TRUE", params=()) -> list[tuple]:
    t = table_identifiers(cfg)[table_key]
    with db.connect(cfg) as conn:
        return conn.execute(
            sql.SQL("SELECT " + cols + " FROM {} WHERE " + where + " ORDER BY 1, 2").format(t), params
        ).fetchall()


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def cli_argv(config_path: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "tradeops.cli", "--config", config_path]


def day_bounds(cfg, day):
    """(start, end, session open, session close) of ``day`` per the config's calendar."""
    from tradeops.calendar import TradingCalendar

    cal = TradingCalendar.from_config(cfg)
    s = cal.session(day)
    return (*cal.day_bounds(day), s.open, s.close)
