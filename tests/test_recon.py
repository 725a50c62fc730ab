"""Recon as a batch job on the real stack: metrics in the real Pushgateway, and PostgreSQL
restarted under a running recon (one short test: the database is shared)."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid

import msgspec
import pytest

import reconlib
from test_recon_broker import N_SYMBOLS, RATE, BrokerServer, _cfg
from tradeops.recon.cli import run_recon
from tradeops.sim.market import Market

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 12, 3)
replace = msgspec.structs.replace


def _pushed(url: str, job: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or f'job="{job}"' not in line:
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def test_metrics_are_pushed_without_instance_label_and_failure_keeps_last_success(pg_cfg):
    job = f"tradeops_recon_t{uuid.uuid4().hex[:8]}"
    cfg = replace(pg_cfg, recon=replace(pg_cfg.recon, job=job))
    url = cfg.recon.pushgateway_url
    m = Market(DAY, n_symbols=6, discrepancy_rate=0.01)
    reconlib.load_internal(cfg, m)
    reconlib.load_broker_cache(cfg, m)
    try:
        t0 = time.time()
        out = run_recon(cfg, DAY)
        assert out.exit_code == 1 and out.warning == ""
        got = _pushed(url, job)
        ok = got[f'tradeops_recon_last_success_timestamp_seconds{{instance="",job="{job}"}}']
        assert t0 <= ok <= time.time()
        assert got[f'tradeops_recon_last_exit_code{{instance="",job="{job}"}}'] == 1
        for kind, n in out.report["counts"].items():
            assert got[f'tradeops_recon_discrepancies{{instance="",job="{job}",kind="{kind}"}}'] == n
        assert got[f'tradeops_recon_rows_compared{{instance="",job="{job}",side="internal"}}'] == len(
            reconlib.table_rows(cfg, "bars_1m", "symbol, ts"))
        assert f'tradeops_recon_stage_duration_seconds{{instance="",job="{job}",stage="compare"}}' in got
        assert not any(re.search(r'instance="[^"]', k) for k in got)
        # a failed run updates completion and exit code, keeps the last success
        with pytest.raises(Exception, match="nothing to compare"):
            run_recon(cfg, dt.date(2026, 11, 3))
        got2 = _pushed(url, job)
        assert got2[f'tradeops_recon_last_success_timestamp_seconds{{instance="",job="{job}"}}'] == ok
        assert got2[f'tradeops_recon_last_completion_timestamp_seconds{{instance="",job="{job}"}}'] >= ok
        assert got2[f'tradeops_recon_last_exit_code{{instance="",job="{job}"}}'] == 2
    finally:
        req = urllib.request.Request(f"{url}/metrics/job/{job}", method="DELETE")
        urllib.request.urlopen(req, timeout=5).close()


def _backends(cfg) -> int:
    from tradeops import db

    admin = replace(cfg, postgres=replace(cfg.postgres, dbname="postgres"))
    with db.connect(admin, autocommit=True) as c:
        return c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'tradeops'",
            (cfg.postgres.dbname,),
        ).fetchone()[0]


def test_postgres_restarted_mid_run_exits_2_then_rerun_equals_clean_run(pg_cfg, base_cfg, tmp_path):
    """The broker server is paused (SIGSTOP) so that the recon sits in its fetch stage, with
    its database connection open, for as long as `scripts/stack.sh restart postgres` takes
    (it may wait for the stack lock of other users of the shared stack)."""
    srv = BrokerServer(replace(base_cfg, sim=replace(base_cfg.sim, discrepancy_rate=RATE)), tmp_path, 60.0)
    proc = None
    try:
        cfg = _cfg(pg_cfg, srv.url, client_rate=30.0, workers=2)
        cfg = replace(cfg, broker=replace(cfg.broker, timeout_s=400.0))
        market = Market(DAY, seed=cfg.sim.seed, n_symbols=N_SYMBOLS, discrepancy_rate=RATE)
        reconlib.load_internal(cfg, market)
        path = reconlib.write_config(cfg, tmp_path / "tradeops.toml")
        os.kill(srv.proc.pid, signal.SIGSTOP)
        proc = subprocess.Popen(
            [*reconlib.cli_argv(path), "recon", "run", "--date", str(DAY)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 30
        while _backends(cfg) == 0:  # the recon is connected and waiting on the broker
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        time.sleep(0.5)
        subprocess.run([str(reconlib.REPO / "scripts" / "stack.sh"), "restart", "postgres"],
                       check=True, capture_output=True, timeout=360)
        os.kill(srv.proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (out, err)
        assert err.count("\n") == 1 and "Traceback" not in err
        assert re.match(
            r"tradeops: PostgreSQL 127\.0\.0\.1:15432: connection lost during fetch of "
            r"2026-12-03 \(.*\); nothing half-written: rerun `tradeops recon run --date 2026-12-03`$",
            err.strip(),
        ), err
        r = reconlib.cli(path, "recon", "run", "--date", str(DAY))
        assert r.returncode == 1, r.stderr
        assert reconlib.found(cfg, DAY) == reconlib.truth(market)
        statuses = sorted(s for _, s in reconlib.table_rows(cfg, "recon_runs", "run_id, status"))
        assert statuses == ["discrepancies", "failed"]
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)
        if proc is not None and proc.poll() is None:
            proc.kill()
        srv.stop()


def test_parallel_compare_over_symbol_slices_equals_the_single_statement(pg_cfg):
    """A day big enough to be cut into symbol slices compared concurrently: the same rows
    as one INSERT ... SELECT, and exactly the injected set."""
    m = Market(DAY, n_symbols=130, discrepancy_rate=0.003)
    reconlib.load_internal(pg_cfg, m)
    reconlib.load_broker_cache(pg_cfg, m)
    results = {}
    for workers in (2, 1):
        cfg = replace(pg_cfg, recon=replace(pg_cfg.recon, pushgateway_url="", compare_workers=workers))
        out = run_recon(cfg, DAY)
        assert out.exit_code == 1
        results[workers] = reconlib.table_rows(
            cfg, "bars_1m_recon",
            "symbol, ts, kind, columns, internal_open, internal_volume, broker_close, broker_volume, "
            "max_abs_diff, status",
        )
    assert results[2] == results[1]
    assert reconlib.found(pg_cfg, DAY) == reconlib.truth(m)
    from tradeops import db
    from tradeops.recon import compare

    with db.connect(pg_cfg) as conn:
        scope = compare.Scope(DAY, *reconlib.day_bounds(pg_cfg, DAY))
        cuts = compare.split_points(conn, pg_cfg, scope, 2)
    assert len(cuts) == 1  # so the workers=2 run above did take the parallel path


def test_csv_directory_source_behind_the_same_interface(pg_cfg, tmp_path):
    """[broker].kind = "csv": broker bars from {csv_dir}/{day}/{EXCH}_{SYMBOL}.csv."""
    m = Market(DAY, n_symbols=6, discrepancy_rate=0.01)
    reconlib.load_internal(pg_cfg, m)
    folder = tmp_path / "broker" / str(DAY)
    folder.mkdir(parents=True)
    for sym in m.symbols[:-1]:  # the last symbol has no file: the broker has nothing for it
        exch, name = sym.split(":")
        with open(folder / f"{exch}_{name}.csv", "w") as f:
            f.write("date,open,high,low,close,volume\n")
            for b in m.broker_bars(sym):
                f.write(f"{b.ts.strftime('%Y-%m-%dT%H:%M:%S%z')},{b.open},{b.high},{b.low},{b.close},{b.volume}\n")
    cfg = replace(pg_cfg, recon=replace(pg_cfg.recon, pushgateway_url=""),
                  broker=replace(pg_cfg.broker, kind="csv", csv_dir=str(tmp_path / "broker")))
    out = run_recon(cfg, DAY)
    assert out.exit_code == 1 and out.report["fetch"]["source"] == "csv"
    last = m.symbols[-1]
    want = {x for x in reconlib.truth(m) if x[0] != last}
    got = reconlib.found(cfg, DAY)
    assert {x for x in got if x[0] != last} == want
    # every in-session bar of the symbol without a file is missing at the broker
    assert sum(1 for x in got if x[0] == last and x[2] == "missing_broker") == sum(
        1 for b in m.internal_bars(last) if b.ts in set(m.minutes))
    # a malformed file is a one-line error naming file and row
    exch, name = m.symbols[0].split(":")
    (folder / f"{exch}_{name}.csv").write_text("date,open,high,low,close,volume\n2026-12-03T09:15:00+0530,x,1,1,1,1\n")
    with pytest.raises(Exception) as e:
        run_recon(cfg, DAY, refetch=True)
    assert str(e.value) == (f"{folder / (exch + '_' + name + '.csv')}: row 2: expected "
                            "date,open,high,low,close,volume numbers")


def test_configured_universe_limits_fetch_and_compare(pg_cfg):
    m = Market(DAY, n_symbols=8, discrepancy_rate=0.01)
    reconlib.load_internal(pg_cfg, m)
    reconlib.load_broker_cache(pg_cfg, m)
    universe = m.symbols[:3]
    cfg = replace(pg_cfg, recon=replace(pg_cfg.recon, pushgateway_url="", symbols=universe))
    out = run_recon(cfg, DAY)
    assert out.report["symbols"] == 3
    assert reconlib.found(cfg, DAY) == reconlib.truth(m, universe)


def test_recon_and_autoheal_of_one_date_exclude_each_other(pg_cfg):
    from tradeops import db
    from tradeops.errors import UserError
    from tradeops.recon import autoheal

    m = Market(DAY, n_symbols=4, discrepancy_rate=0.01)
    reconlib.load_internal(pg_cfg, m)
    reconlib.load_broker_cache(pg_cfg, m)
    cfg = replace(pg_cfg, recon=replace(pg_cfg.recon, pushgateway_url=""))
    with db.connect(cfg, autocommit=True) as holder:  # as a running recon of that date holds it
        holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"tradeops-recon:{DAY}",))
        with pytest.raises(UserError, match=f"^recon {DAY}: another recon or autoheal for this date is running$"):
            run_recon(cfg, DAY)
        with pytest.raises(UserError, match=f"^autoheal {DAY}: another recon or autoheal for this date is running$"):
            autoheal.autoheal(cfg, DAY)
        with pytest.raises(UserError, match="no bars in bars_1m that day"):  # past the lock
            run_recon(cfg, dt.date(2026, 12, 4))
    assert run_recon(cfg, DAY).exit_code == 1
