"""`tradeops recon autoheal`: settle what the broker can settle, losing nothing.

Per bar (symbol, minute) the heal moves through explicit states, recorded in
``recon_heal_actions`` so that a crash at any point and a rerun end in the same state as
an uninterrupted run:

    (open recon rows) --plan--> PLANNED --write--> WRITTEN --replay--> REPLAYED --recompare--> healed

- plan (one transaction): the run row, one action per bar with the broker's values (from
  the ``broker_bars_1m`` cache), and open ``missing_broker``/``outside_session`` rows marked
  ``unhealable`` (the broker cannot settle them; internal data is left untouched).
- write (one transaction): the replaced row, or its absence, is copied into
  ``bars_1m_audit`` (old and new values, run id; UNIQUE(run_id, symbol, ts)) *before* the
  upsert into ``bars_1m`` (source ``broker-backfill``) in the same transaction: both or
  neither.
- replay: the end offsets of the replay topic are recorded before the first publish; the
  bars are published with an idempotent producer (acks=all) and only delivery-confirmed
  ones are marked REPLAYED with their offset. A resumed run first reads the topic from the
  recorded offsets and marks what it already published, so nothing is published twice.
- recompare: the comparison runs again for the affected symbols (same SQL as the recon);
  rows are marked ``healed`` only if their discrepancy is gone.

A run left ``running`` (crash, lost database) is resumed by the next autoheal of the date.
Guards: ``--dry-run`` changes nothing; more than ``--max-rows`` bars to change is refused
unless ``--force``.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from psycopg import sql
from psycopg.types.json import Jsonb

from .. import contracts
from ..calendar import TradingCalendar
from ..config import Config
from ..db import table_identifiers
from ..errors import UserError
from ..kafka_admin import client_conf
from . import compare, metrics
from .cli import NotTradingDay, lock_day, open_db, pg_error_line

SOURCE = "broker-backfill"
UNHEALABLE = ("missing_broker", "outside_session")
# test hook: exit abruptly right after the named step (plan, write, produce, replay)
CRASH_ENV = "TRADEOPS_AUTOHEAL_CRASH_AFTER"


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os._exit(137)


@dataclass
class HealOutcome:
    exit_code: int
    report: dict[str, Any] = field(default_factory=dict)
    warning: str = ""


def _plan_rows(conn, cfg: Config, day: dt.date, run_id: str | None) -> list[tuple]:
    """Bars an autoheal would write now: open healable rows not already in ``run_id``'s plan."""
    t = table_identifiers(cfg)
    return conn.execute(
        sql.SQL(
            """
SELECT r.symbol, r.ts, array_agg(DISTINCT r.kind ORDER BY r.kind) AS kinds,
       b.open, b.high, b.low, b.close, b.volume, (b.symbol IS NOT NULL) AS has_b,
       (i.symbol IS NOT NULL) AS has_i
FROM {r} r
LEFT JOIN {b} b ON b.symbol = r.symbol AND b.ts = r.ts
LEFT JOIN {i} i ON i.symbol = r.symbol AND i.ts = r.ts
WHERE r.trading_day = %(day)s AND r.status = 'open' AND r.kind = ANY(%(healable)s)
  AND NOT EXISTS (SELECT 1 FROM {a} a WHERE a.run_id = %(run)s AND a.symbol = r.symbol AND a.ts = r.ts)
GROUP BY r.symbol, r.ts, b.symbol, b.open, b.high, b.low, b.close, b.volume, i.symbol
ORDER BY r.symbol, r.ts
"""
        ).format(r=t["bars_1m_recon"], b=t["broker_bars_1m"], i=t["bars_1m"], a=t["recon_heal_actions"]),
        {"day": day, "healable": list(compare.HEALABLE), "run": run_id or ""},
    ).fetchall()


def _count(conn, q: sql.Composable, params) -> int:
    return int(conn.execute(q, params).fetchone()[0])


def autoheal(
    cfg: Config, day: dt.date, dry_run: bool = False, max_rows: int = 5000, force: bool = False
) -> HealOutcome:
    cal = TradingCalendar.from_config(cfg)
    if cal.session(day) is None:
        raise NotTradingDay(f"{day} is not a trading day ({cal.why_not(day)}): nothing to heal")
    t = table_identifiers(cfg)
    stages: dict[str, float] = {}
    conn = None
    run_id = ""
    stage = "connect"
    try:
        conn = open_db(cfg)
        lock_day(conn, day, "autoheal")
        stage = "plan"
        t0 = time.perf_counter()
        resumed = conn.execute(
            sql.SQL(
                "SELECT run_id FROM {} WHERE trading_day = %s AND kind = 'autoheal' AND status = 'running' "
                "ORDER BY started_at DESC LIMIT 1"
            ).format(t["recon_runs"]),
            (day,),
        ).fetchone()
        run_id = resumed[0] if resumed else f"heal-{day}-{uuid.uuid4().hex[:8]}"
        new = _plan_rows(conn, cfg, day, run_id)
        no_broker = [r for r in new if not r[8]]
        new = [r for r in new if r[8]]
        unfinished = _count(
            conn,
            sql.SQL("SELECT count(*) FROM {} WHERE run_id = %s AND state = 'planned'").format(
                t["recon_heal_actions"]
            ),
            (run_id,),
        )
        to_unheal = _count(
            conn,
            sql.SQL(
                "SELECT count(*) FROM {} WHERE trading_day = %s AND status = 'open' AND kind = ANY(%s)"
            ).format(t["bars_1m_recon"]),
            (day, list(UNHEALABLE)),
        )
        would_change = len(new) + unfinished
        plan = {
            "run_id": run_id,
            "resumed": bool(resumed),
            "date": str(day),
            "bars_to_write": would_change,
            "inserts": sum(1 for r in new if not r[9]),
            "overwrites": sum(1 for r in new if r[9]),
            "to_mark_unhealable": to_unheal,
            "not_in_broker_cache": len(no_broker),
            "max_rows": max_rows,
            "sample": [
                {
                    "symbol": r[0],
                    "ts": r[1].astimezone(cal.tz).isoformat(),
                    "kinds": list(r[2]),
                    "action": "overwrite" if r[9] else "insert",
                    "broker": {"open": r[3], "high": r[4], "low": r[5], "close": r[6], "volume": r[7]},
                }
                for r in new[: cfg.recon.sample_rows]
            ],
        }
        if would_change > max_rows and not force:
            msg = (
                f"autoheal {day}: {would_change} bars would change, more than --max-rows {max_rows} "
                "(a broker outage must not overwrite a day): check `tradeops recon show`, then rerun "
                "with --force or a higher --max-rows"
            )
            if dry_run:
                plan["refused"] = msg
                return HealOutcome(0, {"dry_run": True, **plan})
            raise UserError(msg)
        if dry_run:
            return HealOutcome(0, {"dry_run": True, **plan})
        if not resumed and not new and not to_unheal:
            return HealOutcome(
                0, {"dry_run": False, "nothing_to_do": True, **plan, "outcomes": {}, "stages": {}}
            )

        # plan: the run row, the actions and the unhealable marks, in one transaction
        with conn.transaction():
            if not resumed:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (run_id, trading_day, kind, args) VALUES (%s, %s, 'autoheal', %s)"
                    ).format(t["recon_runs"]),
                    (run_id, day, Jsonb({"max_rows": max_rows, "force": force})),
                )
            if new:
                with conn.cursor().copy(
                    sql.SQL(
                        "COPY {} (run_id, trading_day, symbol, ts, kinds, new_open, new_high, new_low, "
                        "new_close, new_volume) FROM STDIN"
                    ).format(t["recon_heal_actions"])
                ) as cp:
                    for r in new:
                        cp.write_row((run_id, day, r[0], r[1], list(r[2]), r[3], r[4], r[5], r[6], r[7]))
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET status = 'unhealable', healed_run_id = %s, updated_at = now() "
                    "WHERE trading_day = %s AND status = 'open' AND kind = ANY(%s)"
                ).format(t["bars_1m_recon"]),
                (run_id, day, list(UNHEALABLE)),
            )
        stages["plan"] = time.perf_counter() - t0
        _crash_point("plan")

        # write: audit copy first, then the upsert, then the state, in one transaction
        stage = "write"
        t0 = time.perf_counter()
        p = {"run": run_id, "src": SOURCE}
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    """
INSERT INTO {audit} (run_id, symbol, ts, action, old_open, old_high, old_low, old_close, old_volume,
    old_source, new_open, new_high, new_low, new_close, new_volume, new_source)
SELECT a.run_id, a.symbol, a.ts, CASE WHEN i.symbol IS NULL THEN 'insert' ELSE 'overwrite' END,
       i.open, i.high, i.low, i.close, i.volume, i.source,
       a.new_open, a.new_high, a.new_low, a.new_close, a.new_volume, %(src)s
FROM {a} a LEFT JOIN {i} i ON i.symbol = a.symbol AND i.ts = a.ts
WHERE a.run_id = %(run)s AND a.state = 'planned'
ON CONFLICT (run_id, symbol, ts) DO NOTHING
"""
                ).format(audit=t["bars_1m_audit"], a=t["recon_heal_actions"], i=t["bars_1m"]),
                p,
            )
            conn.execute(
                sql.SQL(
                    """
INSERT INTO {i} (symbol, ts, open, high, low, close, volume, source)
SELECT symbol, ts, new_open, new_high, new_low, new_close, new_volume, %(src)s
FROM {a} WHERE run_id = %(run)s AND state = 'planned'
ON CONFLICT (symbol, ts) DO UPDATE SET open = excluded.open, high = excluded.high,
    low = excluded.low, close = excluded.close, volume = excluded.volume, source = excluded.source
"""
                ).format(i=t["bars_1m"], a=t["recon_heal_actions"]),
                p,
            )
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET state = 'written', updated_at = now() WHERE run_id = %(run)s "
                    "AND state = 'planned'"
                ).format(t["recon_heal_actions"]),
                p,
            )
        stages["write"] = time.perf_counter() - t0
        _crash_point("write")

        stage = "replay"
        t0 = time.perf_counter()
        replayed = _replay(conn, cfg, cal, day, run_id)
        stages["replay"] = time.perf_counter() - t0

        stage = "recompare"
        t0 = time.perf_counter()
        outcomes = _recompare_and_finish(conn, cfg, cal, day, run_id)
        outcomes["replayed_now"] = replayed
        stages["recompare"] = time.perf_counter() - t0
        exit_code = 1 if outcomes["still_open"] else 0
        status = "partial" if outcomes["still_open"] else "healed"
        stage_r = {k: round(v, 4) for k, v in stages.items()}
        conn.execute(
            sql.SQL(
                "UPDATE {} SET status = %s, finished_at = now(), counts = %s, stage_seconds = %s, "
                "discrepancies = %s, message = %s WHERE run_id = %s"
            ).format(t["recon_runs"]),
            (
                status,
                Jsonb(outcomes),
                Jsonb(stage_r),
                outcomes["still_open"],
                f"healed {outcomes['healed']}, unhealable {outcomes['unhealable']}, "
                f"still open {outcomes['still_open']}",
                run_id,
            ),
        )
    except (UserError, psycopg.Error, KafkaException) as e:
        if isinstance(e, NotTradingDay):
            raise
        if isinstance(e, psycopg.Error):
            msg = pg_error_line(cfg, e, stage, day, "autoheal")
        elif isinstance(e, KafkaException):
            err = e.args[0] if e.args else e
            why = err.str() if hasattr(err, "str") else str(err)
            msg = (
                f"Kafka {cfg.kafka.bootstrap_servers}: {stage} of {day} failed ({why}); the bars are "
                f"written and audited: rerun `tradeops recon autoheal --date {day}` to replay them"
            )
        else:
            msg = str(e)
        if run_id and stage not in ("connect", "plan"):
            # leave the run 'running' so that the next autoheal resumes it; only note why
            _note(cfg, conn, run_id, msg)
        metrics.push_autoheal(cfg, ok=False, exit_code=2, stages=stages)
        raise UserError(msg, exit_code=2) from None
    finally:
        if conn is not None:
            conn.close()
    rep = {
        "dry_run": False,
        **plan,
        "status": status,
        "exit_code": exit_code,
        "outcomes": outcomes,
        "stages": stage_r,
    }
    warn = metrics.push_autoheal(cfg, ok=True, exit_code=exit_code, stages=stages, outcomes=outcomes)
    return HealOutcome(exit_code, rep, warn)


def _note(cfg: Config, conn, run_id: str, msg: str) -> None:
    t = table_identifiers(cfg)
    try:
        if conn is not None and not conn.closed and not conn.broken:
            conn.execute(
                sql.SQL("UPDATE {} SET message = %s WHERE run_id = %s").format(t["recon_runs"]),
                (("interrupted, rerun resumes it: " + msg)[:1000], run_id),
            )
    except psycopg.Error:
        pass


def _end_offsets(consumer: Consumer, topic: str, timeout: float) -> dict[int, int]:
    md = consumer.list_topics(topic, timeout=timeout)
    tmd = md.topics.get(topic)
    if tmd is None or tmd.error is not None:
        raise UserError(f"Kafka: replay topic {topic} does not exist (run `tradeops kafka ensure-topics`)")
    out = {}
    for p in tmd.partitions:
        _lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        out[p] = hi
    return out


def _already_published(
    consumer: Consumer, topic: str, start: dict[int, int], end: dict[int, int], run_id: str, timeout: float
) -> dict[tuple[str, str], tuple[int, int]]:
    """(symbol, ts iso) -> (partition, offset) of this run's bars in [start, end) per partition."""
    found: dict[tuple[str, str], tuple[int, int]] = {}
    todo = {p: end.get(p, 0) for p in end if end.get(p, 0) > start.get(p, 0)}
    if not todo:
        return found
    consumer.assign([TopicPartition(topic, p, start.get(p, 0)) for p in todo])
    deadline = time.monotonic() + max(30.0, timeout * 6)
    while todo and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            continue
        p, off = msg.partition(), msg.offset()
        try:
            bar = contracts.decode("bars_1m_replay", msg.value())
        except contracts.DecodeError:
            bar = None
        if bar is not None and bar.recon_run_id == run_id:
            found[(bar.symbol, bar.ts.astimezone(dt.UTC).isoformat())] = (p, off)
        if p in todo and off + 1 >= todo[p]:
            del todo[p]
    if todo:
        raise UserError(f"Kafka: could not read back replay topic {topic} partitions {sorted(todo)}")
    return found


def _replay(conn, cfg: Config, cal: TradingCalendar, day: dt.date, run_id: str) -> int:
    """Publish the WRITTEN bars exactly once; return how many were published by this call."""
    t = table_identifiers(cfg)
    topic = cfg.topics.bars_1m_replay
    rows = conn.execute(
        sql.SQL(
            "SELECT symbol, ts, kinds, new_open, new_high, new_low, new_close, new_volume FROM {} "
            "WHERE run_id = %s AND state = 'written' ORDER BY symbol, ts"
        ).format(t["recon_heal_actions"]),
        (run_id,),
    ).fetchall()
    if not rows:
        return 0
    timeout = cfg.kafka.request_timeout_s
    consumer = Consumer(
        client_conf(
            cfg,
            **{
                "group.id": f"tradeops-autoheal-{run_id}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                # librdkafka's own lines (one per reconnect attempt) would bury the one-line error
                "log_level": 2,
            },
        )
    )
    try:
        now_end = _end_offsets(consumer, topic, timeout)
        start = conn.execute(
            sql.SQL("SELECT replay_from FROM {} WHERE run_id = %s").format(t["recon_runs"]), (run_id,)
        ).fetchone()[0]
        if start is None:
            # before the first publish: remember where this run's messages can start
            conn.execute(
                sql.SQL("UPDATE {} SET replay_from = %s WHERE run_id = %s").format(t["recon_runs"]),
                (Jsonb({str(p): o for p, o in now_end.items()}), run_id),
            )
            seen: dict[tuple[str, str], tuple[int, int]] = {}
        else:
            seen = _already_published(
                consumer, topic, {int(p): int(o) for p, o in start.items()}, now_end, run_id, timeout
            )
    finally:
        consumer.close()
    done: list[tuple[str, dt.datetime, int, int]] = []
    todo = []
    for r in rows:
        key = (r[0], r[1].astimezone(dt.UTC).isoformat())
        if key in seen:
            done.append((r[0], r[1], *seen[key]))
        else:
            todo.append(r)
    if todo:
        producer = Producer(
            client_conf(
                cfg,
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "message.timeout.ms": int(max(10.0, timeout * 6) * 1000),
                    "log_level": 2,
                },
            )
        )
        results: list[tuple[str, dt.datetime, int, int]] = []
        errors: list[str] = []

        def on_delivery(err, msg, sym: str, ts: dt.datetime) -> None:
            if err is not None:
                errors.append(f"{sym} {ts}: {err.str()}")
            else:
                results.append((sym, ts, msg.partition(), msg.offset()))

        for r in todo:
            sym, ts = r[0], r[1]
            bar = contracts.BarReplay(
                symbol=sym,
                ts=ts.astimezone(cal.tz),
                open=r[3],
                high=r[4],
                low=r[5],
                close=r[6],
                volume=int(r[7]),
                replay=True,
                reason="recon autoheal: " + ",".join(r[2]),
                recon_run_id=run_id,
            )
            while True:
                try:
                    producer.produce(
                        topic,
                        key=sym.encode(),
                        value=contracts.encode(bar),
                        on_delivery=lambda err, msg, s=sym, x=ts: on_delivery(err, msg, s, x),
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        left = producer.flush(max(10.0, timeout * 6) + 5)
        _crash_point("produce")
        done.extend(results)
        if done:
            _mark_replayed(conn, cfg, run_id, done)
        if errors or left:
            raise UserError(
                f"Kafka {cfg.kafka.bootstrap_servers}: replay of {len(errors) + left} bars to {topic} "
                f"not confirmed ({(errors or ['delivery timed out'])[0]}); rerun autoheal for {day}"
            )
    elif done:
        _mark_replayed(conn, cfg, run_id, done)
    _crash_point("replay")
    return len(todo)


def _mark_replayed(conn, cfg: Config, run_id: str, done: list[tuple[str, dt.datetime, int, int]]) -> None:
    t = table_identifiers(cfg)
    conn.execute(
        sql.SQL(
            "UPDATE {} a SET state = 'replayed', replay_partition = u.p, replay_offset = u.o, "
            "updated_at = now() FROM unnest(%s::text[], %s::timestamptz[], %s::int[], %s::bigint[]) "
            "AS u(s, ts, p, o) WHERE a.run_id = %s AND a.symbol = u.s AND a.ts = u.ts "
            "AND a.state = 'written'"
        ).format(t["recon_heal_actions"]),
        ([d[0] for d in done], [d[1] for d in done], [d[2] for d in done], [d[3] for d in done], run_id),
    )


def _recompare_and_finish(conn, cfg: Config, cal: TradingCalendar, day: dt.date, run_id: str) -> dict:
    t = table_identifiers(cfg)
    syms = [
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT DISTINCT symbol FROM {} WHERE run_id = %s").format(t["recon_heal_actions"]),
            (run_id,),
        )
    ]
    session = cal.session(day)
    start, end = cal.day_bounds(day)
    with conn.transaction():
        compare._set_session(conn)
        if syms:
            scope = compare.Scope(day, start, end, session.open, session.close, tuple(syms))
            conn.execute(
                sql.SQL("CREATE TEMP TABLE now_disc ON COMMIT DROP AS {}").format(
                    compare.discrepancy_select(cfg, scope)
                ),
                scope.params(cfg),
            )
            conn.execute(
                sql.SQL(
                    """
UPDATE {r} r SET status = 'healed', healed_run_id = %(run)s, updated_at = now()
WHERE r.trading_day = %(day)s AND r.status = 'open' AND r.kind = ANY(%(healable)s)
  AND EXISTS (SELECT 1 FROM {a} a WHERE a.run_id = %(run)s AND a.symbol = r.symbol
              AND a.ts = r.ts AND a.state = 'replayed')
  AND NOT EXISTS (SELECT 1 FROM now_disc n WHERE n.symbol = r.symbol AND n.ts = r.ts
                  AND n.kind = r.kind)
"""
                ).format(r=t["bars_1m_recon"], a=t["recon_heal_actions"]),
                {"run": run_id, "day": day, "healable": list(compare.HEALABLE)},
            )
        row = conn.execute(
            sql.SQL(
                """
SELECT
  (SELECT count(*) FROM {r} WHERE trading_day = %(day)s AND healed_run_id = %(run)s AND status = 'healed'),
  (SELECT count(*) FROM {r} WHERE trading_day = %(day)s AND status = 'unhealable'),
  (SELECT count(*) FROM {r} WHERE trading_day = %(day)s AND status = 'open'),
  (SELECT count(*) FROM {au} WHERE run_id = %(run)s AND action = 'insert'),
  (SELECT count(*) FROM {au} WHERE run_id = %(run)s AND action = 'overwrite'),
  (SELECT count(*) FROM {a} WHERE run_id = %(run)s AND state = 'replayed')
"""
            ).format(r=t["bars_1m_recon"], au=t["bars_1m_audit"], a=t["recon_heal_actions"]),
            {"run": run_id, "day": day},
        ).fetchone()
    keys = ("healed", "unhealable", "still_open", "inserted", "overwritten", "replayed")
    return {k: int(v) for k, v in zip(keys, row, strict=True)}


def render_text(rep: dict[str, Any]) -> str:
    lines: list[str] = []
    if rep.get("dry_run"):
        lines.append(
            f"autoheal {rep['date']} (dry run, nothing changed): "
            + (f"plan to resume interrupted run {rep['run_id']}" if rep["resumed"] else "plan of a new run")
        )
    elif rep.get("nothing_to_do"):
        return f"autoheal {rep['date']}: nothing to heal (no open discrepancy the broker can settle)"
    else:
        o = rep["outcomes"]
        lines.append(
            f"autoheal {rep['date']} run {rep['run_id']}: {rep['status'].upper()} (exit {rep['exit_code']})"
            + (" (resumed an interrupted run)" if rep["resumed"] else "")
        )
        lines.append(
            f"  healed {o['healed']}, unhealable {o['unhealable']}, still open {o['still_open']}; "
            f"bars inserted {o['inserted']}, overwritten {o['overwritten']} (audited), "
            f"replayed {o['replayed']}"
        )
        lines.append("  stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in rep["stages"].items()))
    lines.append(
        f"  plan: {rep['bars_to_write']} bars to write ({rep['inserts']} inserts, {rep['overwrites']} "
        f"overwrites), {rep['to_mark_unhealable']} rows to mark unhealable, "
        f"{rep['not_in_broker_cache']} without a cached broker bar (rerun recon), max rows {rep['max_rows']}"
    )
    if rep.get("refused"):
        lines.append(f"  REFUSED: {rep['refused']}")
    if rep.get("dry_run"):
        for s in rep["sample"]:
            b = s["broker"]
            lines.append(
                f"  {s['action']:<9} {s['symbol']:<16} {s['ts'][11:16]} {','.join(s['kinds']):<32} "
                f"-> {b['open']:g}/{b['high']:g}/{b['low']:g}/{b['close']:g} v{b['volume']}"
            )
    return "\n".join(lines)
