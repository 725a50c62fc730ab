"""`tradeops recon run` end to end: the real Kite-compatible server (`tradeops sim broker-api`,
started by the test as a subprocess), the real PostgreSQL, the CLI as a user runs it."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import msgspec
import pytest

import reconlib
from tradeops.sim.market import Market

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 12, 3)
N_SYMBOLS = 12
RATE = 0.01
replace = msgspec.structs.replace


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerServer:
    """`tradeops sim broker-api` in its own process (the real server, not a fake)."""

    def __init__(self, cfg, tmp_path, rate_limit: float):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        path = reconlib.write_config(cfg, tmp_path / f"broker-{self.port}.toml")
        self.log = open(tmp_path / f"broker-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tradeops.cli", "--config", path, "sim", "broker-api",
             "--listen", f"127.0.0.1:{self.port}", "--symbols", str(N_SYMBOLS),
             "--rate-limit", str(rate_limit)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                self.stats()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"broker-api did not start: {Path(self.log.name).read_text()}") from None
                time.sleep(0.1)

    def post(self, path: str) -> dict:
        req = urllib.request.Request(self.url + path, method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/_stats", timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _cfg(pg_cfg, url: str, client_rate: float, workers: int = 4, backoff: float = 0.05):
    return replace(
        pg_cfg,
        sim=replace(pg_cfg.sim, discrepancy_rate=RATE),
        recon=replace(pg_cfg.recon, pushgateway_url=""),
        broker=replace(pg_cfg.broker, base_url=url, rate_limit_per_s=client_rate, workers=workers,
                       backoff_initial_s=backoff, backoff_max_s=0.5, timeout_s=5.0),
    )


@pytest.fixture(scope="module")
def fast_server(base_cfg, tmp_path_factory):
    cfg = replace(base_cfg, sim=replace(base_cfg.sim, discrepancy_rate=RATE))
    srv = BrokerServer(cfg, tmp_path_factory.mktemp("kite"), rate_limit=60)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def market(base_cfg) -> Market:
    # the same day the server serves: same seed, symbols, rate, session
    return Market(DAY, seed=base_cfg.sim.seed, n_symbols=N_SYMBOLS, discrepancy_rate=RATE)


@pytest.fixture
def day(pg_cfg, fast_server, market, tmp_path):
    fast_server.post("/_control/reset")
    cfg = _cfg(pg_cfg, fast_server.url, client_rate=50)
    reconlib.load_internal(cfg, market)
    return cfg, reconlib.write_config(cfg, tmp_path / "tradeops.toml")


def test_fetch_compare_finds_exactly_the_injected_set_and_rerun_is_idempotent(day, market):
    cfg, path = day
    r = reconlib.cli(path, "recon", "run", "--date", str(DAY), "--json")
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    truth = reconlib.truth(market)
    assert reconlib.found(cfg, DAY) == truth  # kind by kind, with the differing columns
    assert rep["counts"] == dict(Counter(k for _, _, k, _ in truth)) | {
        k: 0 for k in rep["counts"] if k not in {k for _, _, k, _ in truth}}
    assert rep["fetch"]["fetched"] == N_SYMBOLS
    assert rep["fetch"]["requests"] == N_SYMBOLS + 1  # + the instruments dump
    price_cols = Counter(c for _, _, k, cols in truth if k == "price_mismatch" for c in cols)
    assert {c: v["mismatches"] for c, v in rep["columns"].items() if c != "volume"} == {
        c: price_cols.get(c, 0) for c in ("open", "high", "low", "close")}
    assert rep["rows"]["expected"] == N_SYMBOLS * 375
    assert len(rep["sample"]) <= cfg.recon.sample_rows
    # the instruments dump is cached in PostgreSQL
    assert len(reconlib.table_rows(cfg, "instruments", "exchange, tradingsymbol")) == N_SYMBOLS
    # rerun: served from the cache, same rows, replaced not duplicated
    r2 = reconlib.cli(path, "recon", "run", "--date", str(DAY), "--json")
    assert r2.returncode == 1
    rep2 = json.loads(r2.stdout)
    assert rep2["fetch"]["cached"] == N_SYMBOLS and rep2["fetch"]["requests"] == 0
    rows = reconlib.table_rows(cfg, "bars_1m_recon", "symbol, ts, kind, run_id")
    assert len(rows) == len(truth) and {r[3] for r in rows} == {rep2["run_id"]}
    # --refetch goes to the broker again and finds the same
    r3 = reconlib.cli(path, "recon", "run", "--date", str(DAY), "--refetch", "--json")
    assert r3.returncode == 1 and json.loads(r3.stdout)["fetch"]["fetched"] == N_SYMBOLS
    assert reconlib.found(cfg, DAY) == truth
    runs = reconlib.table_rows(cfg, "recon_runs", "run_id, status")
    assert [s for _, s in runs] == ["discrepancies"] * 3
    # text report and --symbols subset
    r4 = reconlib.cli(path, "recon", "run", "--date", str(DAY), "--symbols", "NSE:INFY,NSE:TCS")
    assert r4.returncode in (0, 1) and "symbols 2," in r4.stdout
    assert reconlib.found(cfg, DAY) == truth


def test_forced_429_and_500_are_retried_and_the_run_completes(day, market, fast_server):
    cfg, path = day
    fast_server.post("/_control/force?status=429&count=3")
    fast_server.post("/_control/force?status=500&count=2")
    r = reconlib.cli(path, "recon", "run", "--date", str(DAY), "--json")
    assert r.returncode == 1, r.stderr
    f = json.loads(r.stdout)["fetch"]
    assert f["http_429"] >= 3 and f["http_5xx"] >= 2 and f["retries"] >= 5
    assert reconlib.found(cfg, DAY) == reconlib.truth(market)


def test_bad_input_gives_one_line_errors(day, fast_server):
    cfg, path = day
    bad = [
        (["--date", "2026-12-3"], 2, "tradeops: --date '2026-12-3': expected YYYY-MM-DD"),
        (["--date", "2026-12-03", "--symbols", "INFY"],
         2, "tradeops: symbol 'INFY': expected EXCHANGE:TRADINGSYMBOL, e.g. NSE:INFY"),
        (["--date", "2026-12-03", "--symbols", "NSE:NOSUCH"],
         2, "tradeops: unknown symbol NSE:NOSUCH: not in the broker's NSE instruments dump"),
        (["--date", "2026-12-05"], 0, "tradeops: 2026-12-05 is not a trading day (a Saturday): nothing to reconcile"),
        (["--date", "2026-11-03"], 2, "tradeops: recon 2026-11-03: no bars in bars_1m that day and no "
         "[recon].symbols: nothing to compare (wrong date, or pass --symbols)"),
    ]
    for args, code, line in bad:
        r = reconlib.cli(path, "recon", "run", *args)
        assert (r.returncode, (r.stderr + r.stdout).strip()) == (code, line)
    fast_server.post("/_control/bad_candle?symbol=NSE:INFY&kind=string")
    r = reconlib.cli(path, "recon", "run", "--date", str(DAY))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"tradeops: broker {fast_server.url}: NSE:INFY 2026-12-03: bad candle row ")
    assert 'open "abc" is not a positive number' in r.stderr
    runs = reconlib.table_rows(cfg, "recon_runs", "status, message", "status = 'failed'")
    assert any("bad candle row 187" in m for _, m in runs)
    fast_server.post("/_control/reset")
    wrong = tmp_token_cfg(cfg, path)
    r = reconlib.cli(wrong, "recon", "run", "--date", str(DAY), "--refetch")
    assert r.returncode == 2
    assert "HTTP 403 TokenException" in r.stderr and "(check [broker].api_key_file" in r.stderr


def tmp_token_cfg(cfg, path: str) -> str:
    import pathlib

    tok = pathlib.Path(path).parent / "wrong_token"
    tok.write_text("not-the-token\n")
    c = replace(cfg, broker=replace(cfg.broker, access_token_file=str(tok)))
    return reconlib.write_config(c, pathlib.Path(path).parent / "wrong.toml")


def test_rate_limit_3_per_second_is_never_exceeded(pg_cfg, base_cfg, market, tmp_path):
    """12 requests at the default 3 req/s with 4 workers: the server sees at most 3 in any
    sliding second and serves no 429 (the sustained rate is measured in bench/)."""
    srv = BrokerServer(replace(base_cfg, sim=replace(base_cfg.sim, discrepancy_rate=RATE)), tmp_path, 3.0)
    try:
        cfg = _cfg(pg_cfg, srv.url, client_rate=3.0, workers=4)
        cfg = replace(cfg, broker=replace(cfg.broker, rate_headroom=base_cfg.broker.rate_headroom))
        reconlib.load_internal(cfg, market)
        path = reconlib.write_config(cfg, tmp_path / "tradeops.toml")
        srv.post("/_stats/reset")
        r = reconlib.cli(path, "recon", "run", "--date", str(DAY), "--json")
        assert r.returncode == 1, r.stderr
        st = srv.stats()
        assert st["requests_total"] >= N_SYMBOLS
        assert st["max_requests_in_1s"] <= 3
        assert st["rate_limited_total"] == 0
        assert json.loads(r.stdout)["fetch"]["retries"] == 0
    finally:
        srv.stop()
