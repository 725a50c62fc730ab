"""Autoheal against the real PostgreSQL and Kafka, on the simulator's day.

The broker side is preloaded into the ``broker_bars_1m`` cache (as a recon run leaves it);
fetching it from the Kite-compatible server is covered in test_recon_broker.py.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import msgspec
import pytest

import reconlib
from tradeops import contracts
from tradeops.recon import compare
from tradeops.recon.cli import run_recon
from tradeops.sim.market import Market

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 12, 3)
N_SYMBOLS = 12
RATE = 0.01


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(DAY, n_symbols=N_SYMBOLS, discrepancy_rate=RATE)


@pytest.fixture
def healday(stack_cfg, market, tmp_path):
    """A recon'd day: internal bars + cached broker bars, one recon run done."""
    cfg = msgspec.structs.replace(stack_cfg, recon=msgspec.structs.replace(stack_cfg.recon, pushgateway_url=""))
    reconlib.load_internal(cfg, market)
    reconlib.load_broker_cache(cfg, market)
    out = run_recon(cfg, DAY)
    assert out.exit_code == 1
    return cfg, reconlib.write_config(cfg, tmp_path / "tradeops.toml")


def healable(market):
    return {(i.symbol, i.ts) for i in market.injected() if i.kind in compare.HEALABLE}


def assert_final_state(cfg, market: Market) -> None:
    """What an uninterrupted autoheal leaves behind (the same for every crashed + rerun one)."""
    inj = market.injected()
    heal_keys = healable(market)
    broker = {(s, b.ts): b for s in market.symbols for b in market.broker_bars(s)}
    internal = {(s, b.ts): b for s in market.symbols for b in market.internal_bars(s)}
    # recon rows: healable ones healed, the others unhealable, nothing open
    statuses = Counter(
        (k, st) for k, st in reconlib.table_rows(cfg, "bars_1m_recon", "kind, status", "trading_day = %s", (DAY,))
    )
    want = Counter((i.kind, "healed" if i.kind in compare.HEALABLE else "unhealable") for i in inj)
    assert statuses == want
    # bars_1m: healed bars equal the broker's, source broker-backfill; nothing else touched
    rows = reconlib.table_rows(cfg, "bars_1m", "symbol, ts, open, high, low, close, volume, source")
    got = {(r[0], r[1]): r for r in rows}
    assert len(got) == len(internal) + sum(1 for i in inj if i.kind == "missing_internal")
    for key in heal_keys:
        b = broker[key]
        assert got[key][2:] == (b.open, b.high, b.low, b.close, b.volume, "broker-backfill"), key
    for key, b in internal.items():
        if key not in heal_keys:
            assert got[key][2:] == (b.open, b.high, b.low, b.close, b.volume, "sim"), key
    # audit: one row per written bar, with the replaced values (or none for an insert)
    audit = reconlib.table_rows(
        cfg, "bars_1m_audit", "symbol, ts, action, old_open, old_high, old_low, old_close, old_volume, new_volume"
    )
    assert len(audit) == len(heal_keys)
    for s, ts, action, oo, oh, ol, oc, ov, nv in audit:
        assert (s, ts) in heal_keys
        if (s, ts) in internal:
            i = internal[(s, ts)]
            assert (action, oo, oh, ol, oc, ov) == ("overwrite", i.open, i.high, i.low, i.close, i.volume)
        else:
            assert action == "insert" and oo is None
        assert nv == broker[(s, ts)].volume
    # replay topic: exactly the healed bars, once each, with the broker's values
    msgs = reconlib.read_topic(cfg, cfg.topics.bars_1m_replay)
    bars = [contracts.decode("bars_1m_replay", m.value()) for m in msgs]
    keys = Counter((b.symbol, b.ts) for b in bars)
    assert set(keys) == heal_keys
    assert max(keys.values()) == 1, "a bar was replayed twice"
    for b, m in zip(bars, msgs, strict=True):
        assert b.replay is True and b.recon_run_id.startswith("heal-")
        assert m.key().decode() == b.symbol
        exp = broker[(b.symbol, b.ts)]
        assert (b.open, b.high, b.low, b.close, b.volume) == (exp.open, exp.high, exp.low, exp.close, exp.volume)
        assert b.ts.utcoffset() == dt.timedelta(hours=5, minutes=30)


def test_autoheal_heals_exactly_the_healable_and_second_recon_is_clean_but_unhealable(healday, market):
    cfg, path = healday
    r = reconlib.cli(path, "recon", "autoheal", "--date", str(DAY))
    assert r.returncode == 0, r.stderr
    n_heal = sum(1 for i in market.injected() if i.kind in compare.HEALABLE)
    assert f"healed {n_heal}, unhealable" in r.stdout
    assert_final_state(cfg, market)
    # second recon: only the unhealable kinds remain, still marked unhealable
    out = run_recon(cfg, DAY)
    left = {k: v for k, v in out.report["counts"].items() if v}
    want = Counter(i.kind for i in market.injected() if i.kind not in compare.HEALABLE)
    assert left == dict(want)
    assert reconlib.found(cfg, DAY, "open") == set()
    # autoheal again: nothing to do, nothing replayed twice
    r = reconlib.cli(path, "recon", "autoheal", "--date", str(DAY))
    assert r.returncode == 0 and "nothing to heal" in r.stdout
    assert_final_state(cfg, market)
    # show: the operator's view, exit 0 now that nothing is open
    r = reconlib.cli(path, "recon", "show", "--date", str(DAY), "--json")
    assert r.returncode == 0, r.stderr
    shown = msgspec.json.decode(r.stdout)
    assert shown["by_status"] == {"healed": n_heal, "unhealable": len(market.injected()) - n_heal}
    r = reconlib.cli(path, "recon", "show", "--date", str(DAY), "--status", "healed", "--limit", "3")
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("  NSE:")]
    assert r.returncode == 0 and len(rows) == 3 and all(ln[3] == "healed" for ln in rows), r.stdout
    assert any(ln.split()[:3] == ["autoheal", ln.split()[1], "healed"] for ln in r.stdout.splitlines()
               if ln.strip().startswith("autoheal")), r.stdout


def test_dry_run_changes_nothing_and_max_rows_refuses_without_force(healday, market):
    cfg, path = healday
    before = (reconlib.table_rows(cfg, "bars_1m", "symbol, ts, open, volume, source"),
              reconlib.table_rows(cfg, "bars_1m_recon", "symbol, ts, kind, status"))
    r = reconlib.cli(path, "recon", "autoheal", "--date", str(DAY), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    plan = msgspec.json.decode(r.stdout)
    n = len(healable(market))
    assert plan["dry_run"] is True and plan["bars_to_write"] == n
    assert plan["inserts"] == sum(1 for i in market.injected() if i.kind == "missing_internal")
    r = reconlib.cli(path, "recon", "autoheal", "--date", str(DAY), "--max-rows", str(n - 1))
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"tradeops: autoheal {DAY}: {n} bars would change, more than --max-rows {n - 1} (a broker "
        "outage must not overwrite a day): check `tradeops recon show`, then rerun with --force "
        "or a higher --max-rows"
    )
    after = (reconlib.table_rows(cfg, "bars_1m", "symbol, ts, open, volume, source"),
             reconlib.table_rows(cfg, "bars_1m_recon", "symbol, ts, kind, status"))
    assert after == before
    assert reconlib.table_rows(cfg, "bars_1m_audit", "symbol, ts") == []
    r = reconlib.cli(path, "recon", "autoheal", "--date", str(DAY), "--max-rows", str(n - 1), "--force")
    assert r.returncode == 0, r.stderr
    assert_final_state(cfg, market)


@pytest.mark.parametrize("step", ["plan", "write", "produce", "replay"])
def test_killed_between_steps_then_rerun_gives_the_same_final_state(healday, market, step):
    cfg, path = healday
    r = reconlib.cli(path, "recon", "autoheal", "--date", str(DAY),
                     env={"TRADEOPS_AUTOHEAL_CRASH_AFTER": step})
    assert r.returncode == 137, (r.returncode, r.stderr)
    r = reconlib.cli(path, "recon", "autoheal", "--date", str(DAY))
    assert r.returncode == 0, r.stderr
    assert "resumed an interrupted run" in r.stdout
    assert_final_state(cfg, market)
    runs = reconlib.table_rows(cfg, "recon_runs", "kind, status")
    assert sorted(runs) == [("autoheal", "healed"), ("recon", "discrepancies")]


def test_kafka_unreachable_during_replay_exits_2_then_rerun_completes(healday, market, tmp_path):
    cfg, path = healday
    dead = replace_kafka(cfg, "127.0.0.1:9")  # nothing listens on the discard port
    dead_path = reconlib.write_config(dead, tmp_path / "dead-kafka.toml")
    r = reconlib.cli(dead_path, "recon", "autoheal", "--date", str(DAY), timeout=180)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("tradeops: Kafka 127.0.0.1:9: replay of 2026-12-03 failed ("), r.stderr
    assert r.stderr.rstrip().endswith("rerun `tradeops recon autoheal --date 2026-12-03` to replay them")
    # the bars are written (audited) but not replayed: the run stays open for the rerun
    assert {s for s, _ in reconlib.table_rows(cfg, "recon_heal_actions", "state, count(*)",
                                              "TRUE GROUP BY state")} == {"written"}
    r = reconlib.cli(path, "recon", "autoheal", "--date", str(DAY))
    assert r.returncode == 0, r.stderr
    assert "resumed an interrupted run" in r.stdout
    assert_final_state(cfg, market)


def replace_kafka(cfg, bootstrap: str):
    return msgspec.structs.replace(
        cfg, kafka=msgspec.structs.replace(cfg.kafka, bootstrap_servers=bootstrap, request_timeout_s=2.0)
    )
