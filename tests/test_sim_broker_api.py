"""The Kite-compatible broker server: real HTTP on 127.0.0.1 (in a thread, and once as the
`tradeops sim broker-api` command), checked against Kite's documented shapes."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from tradeops import config as config_mod
from tradeops.sim.broker_api import (
    INSTRUMENT_COLUMNS,
    broker_state_from_config,
    serve_in_thread,
)
from tradeops.sim.market import Market

DAY = date(2026, 12, 3)
N = 20
replace = msgspec.structs.replace


@pytest.fixture(scope="module")
def secrets_cfg(tmp_path_factory):
    d = tmp_path_factory.mktemp("kite")
    (d / "api_key").write_text("simkey\n")
    (d / "access_token").write_text("simtoken\n")
    cfg = config_mod.loads(
        '[broker]\napi_key_file = "api_key"\naccess_token_file = "access_token"\n'
        f"[sim]\nsymbols = {N}\nseed = 5\n",
        name="tradeops.toml", base_dir=str(d))
    return cfg


@pytest.fixture(scope="module")
def _server(secrets_cfg):
    state = broker_state_from_config(secrets_cfg, rate_limit=1000)
    srv, url = serve_in_thread(state)
    yield state, url
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def server(_server):
    post(_server[1] + "/_control/reset")  # one server for the module, clean for each test
    return _server


AUTH = {"X-Kite-Version": "3", "Authorization": "token simkey:simtoken"}


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, headers=AUTH if headers is None else headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def post(url: str) -> dict:
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def hist(base: str, token: int, frm: str, to: str, extra: str = "") -> str:
    return (f"{base}/instruments/historical/{token}/minute?from={frm.replace(' ', '+')}"
            f"&to={to.replace(' ', '+')}{extra}")


def test_instruments_csv_parses(server):
    _, url = server
    market = Market(DAY, seed=5, n_symbols=N)
    for path in ("/instruments", "/instruments/NSE"):
        code, body, ctype = get(url + path)
        assert code == 200 and ctype.startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert tuple(rows[0].keys()) == INSTRUMENT_COLUMNS
        assert len(rows) == N
        for r in rows:
            sym = "NSE:" + r["tradingsymbol"]
            assert int(r["instrument_token"]) == market.instrument_token(sym)
            assert int(r["instrument_token"]) == int(r["exchange_token"]) * 256 + 1
            assert r["exchange"] == "NSE" and r["segment"] == "NSE"
            assert r["instrument_type"] == "EQ" and float(r["tick_size"]) == 0.05
            assert float(r["last_price"]) > 0


def test_historical_candles_are_the_broker_bars_in_kite_shape(server):
    _, url = server
    market = Market(DAY, seed=5, n_symbols=N)
    whole = 0
    for sym in market.symbols:
        tok = market.instrument_token(sym)
        code, body, ctype = get(hist(url, tok, "2026-12-03 09:15:00", "2026-12-03 15:30:00"))
        assert code == 200 and ctype == "application/json"
        doc = json.loads(body)
        assert doc["status"] == "success"
        candles = doc["data"]["candles"]
        expected = [[b.ts.strftime("%Y-%m-%dT%H:%M:%S+0530"), b.open, b.high, b.low, b.close,
                     b.volume] for b in market.broker_bars(sym)]
        assert candles == expected
        # Kite writes whole prices without a fraction: 1388, not 1388.0
        prices = [v for c in candles for v in c[1:5]]
        assert not [v for v in prices if isinstance(v, float) and v.is_integer()]
        whole += sum(isinstance(v, int) for v in prices)
    assert whole > 0
    assert candles[0][0] == "2026-12-03T09:15:00+0530"
    # a sub-range is inclusive at both ends; oi=1 adds the open-interest column
    tok = market.instrument_token("NSE:TCS")
    _, body, _ = get(hist(url, tok, "2026-12-03 10:00:00", "2026-12-03 10:04:00", "&oi=1"))
    rows = json.loads(body)["data"]["candles"]
    times = [r[0][11:16] for r in rows]
    assert times[0] >= "10:00" and times[-1] <= "10:04" and len(rows) <= 5 and len(rows[0]) == 7
    # a date range spanning a day off gives both sessions; a plain date is the whole day
    _, body, _ = get(hist(url, tok, "2026-12-03", "2026-12-04"))
    days = {r[0][:10] for r in json.loads(body)["data"]["candles"]}
    assert days == {"2026-12-03", "2026-12-04"}


def test_auth_and_version_errors(server):
    _, url = server
    path = hist(url, 10000 * 256 + 1, "2026-12-03 09:15:00", "2026-12-03 09:20:00")
    for headers in ({"X-Kite-Version": "3"},
                    {"X-Kite-Version": "3", "Authorization": "token simkey:wrong"},
                    {"X-Kite-Version": "3", "Authorization": "simkey:simtoken"}):
        code, body, _ = get(path, headers)
        doc = json.loads(body)
        assert code == 403 and doc["status"] == "error"
        assert doc["error_type"] == "TokenException" and doc["message"]
    code, body, _ = get(path, {"Authorization": "token simkey:simtoken"})
    assert code == 400 and json.loads(body)["error_type"] == "InputException"
    code, _, _ = get(url + "/instruments", {"X-Kite-Version": "3"})
    assert code == 403


@pytest.mark.parametrize(("path", "needle"), [
    ("/instruments/historical/123/minute?from=2026-12-03+09:15:00&to=2026-12-03+09:20:00",
     "invalid instrument token"),
    ("/instruments/historical/2560257/day?from=2026-12-03+09:15:00&to=2026-12-03+09:20:00",
     "invalid interval"),
    ("/instruments/historical/2560257/minute?from=2026-12-03+09:15:00", "required"),
    ("/instruments/historical/2560257/minute?from=2026-13-03+09:15:00&to=2026-12-03",
     "invalid from date"),
    ("/instruments/historical/2560257/minute?from=2026-12-04&to=2026-12-03", "after"),
    ("/instruments/historical/2560257/minute?from=2026-01-01&to=2026-12-03", "60 days"),
])
def test_bad_parameters_are_input_exceptions(server, path, needle):
    _, url = server
    code, body, _ = get(url + path)
    doc = json.loads(body)
    assert code == 400 and doc["error_type"] == "InputException", doc
    assert needle in doc["message"]


def test_rate_limit_429_and_stats(secrets_cfg):
    state = broker_state_from_config(secrets_cfg, rate_limit=3)
    srv, url = serve_in_thread(state)
    try:
        path = hist(url, 10000 * 256 + 1, "2026-12-03 09:15:00", "2026-12-03 09:16:00")
        t0 = time.monotonic()
        replies = [get(path) for _ in range(6)]
        codes = [r[0] for r in replies]
        if time.monotonic() - t0 < 0.9:  # the usual case: all six inside one second
            assert codes == [200, 200, 200, 429, 429, 429]
        assert codes[:3] == [200, 200, 200] and 429 in codes
        doc = json.loads(replies[codes.index(429)][1])
        assert doc == {"status": "error", "message": "Too many requests", "data": None,
                       "error_type": "NetworkException"}
        stats = json.loads(get(url + "/_stats", {})[1])
        assert stats["max_served_in_1s"] == 3
        assert stats["rate_limited_total"] == codes.count(429)
        assert stats["max_requests_in_1s"] >= 4
        # the instruments dump has its own (10/s) limit
        assert get(url + "/instruments")[0] == 200
        time.sleep(1.05)
        assert get(path)[0] == 200  # the window slid
        # paced at the limit, nothing is refused
        post(url + "/_stats/reset")
        time.sleep(1.05)
        for _ in range(6):
            t = time.monotonic()
            assert get(path)[0] == 200
            time.sleep(max(0.0, 0.45 - (time.monotonic() - t)))  # slack for a loaded CI box
        stats = json.loads(get(url + "/_stats", {})[1])
        assert stats["rate_limited_total"] == 0 and stats["max_requests_in_1s"] <= 3
    finally:
        srv.shutdown()
        srv.server_close()


def test_forced_errors_and_bad_candles(server):
    state, url = server
    path = hist(url, 10000 * 256 + 1, "2026-12-03 09:15:00", "2026-12-03 15:29:00")
    assert post(url + "/_control/force?status=500&count=2") == {"forced_pending": 2}
    post(url + "/_control/force?status=429&count=1")
    codes = [get(path)[0] for _ in range(4)]
    assert codes == [500, 500, 429, 200]
    stats = json.loads(get(url + "/_stats", {})[1])
    assert stats["forced_total"] == 3 and stats["rate_limited_total"] == 1
    for kind in ("string", "short", "inconsistent", "bad_ts", "negative"):
        post(url + f"/_control/bad_candle?symbol=NSE:INFY&kind={kind}")
        candles = json.loads(get(path)[1])["data"]["candles"]
        bad = [c for c in candles if len(c) != 6 or not isinstance(c[1], float | int)
               or c[1] <= 0 or c[2] < c[3] or "T" not in c[0]]
        assert len(bad) == 1, kind
    other = 10001 * 256 + 1
    candles = json.loads(get(hist(url, other, "2026-12-03 09:15:00", "2026-12-03 15:29:00"))[1])
    assert all(len(c) == 6 for c in candles["data"]["candles"])
    post(url + "/_control/reset")
    assert json.loads(get(url + "/_stats", {})[1])["bad_candles"] == {}
    with pytest.raises(urllib.error.HTTPError) as e:
        post(url + "/_control/bad_candle?symbol=NSE:NOPE")
    assert e.value.code == 400
    with pytest.raises(urllib.error.HTTPError):
        post(url + "/_control/force?status=200&count=1")


def test_missing_secret_files_is_a_one_line_error(tmp_path):
    cfg = config_mod.loads('[broker]\napi_key_file = "nope"\naccess_token_file = "nope2"\n',
                           name="tradeops.toml", base_dir=str(tmp_path))
    with pytest.raises(config_mod.ConfigError, match=r"\[broker\].api_key_file: cannot read"):
        broker_state_from_config(cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_broker_api_command_serves_and_stops_on_sigterm(secrets_cfg, tmp_path):
    src = Path(secrets_cfg.source).parent
    conf = tmp_path / "tradeops.toml"
    conf.write_text(f'[broker]\napi_key_file = "{src}/api_key"\n'
                    f'access_token_file = "{src}/access_token"\n')
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeops.cli", "--config", str(conf), "sim", "broker-api",
         "--listen", f"127.0.0.1:{port}", "--symbols", "5", "--force-status", "503",
         "--force-count", "1", "--bad-candle", "NSE:TCS=short"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                get(url + "/_stats", {})
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert get(url + "/instruments")[0] == 503
        tok = 10001 * 256 + 1
        candles = json.loads(get(hist(url, tok, "2026-12-03", "2026-12-03"))[1])["data"]["candles"]
        assert sum(len(c) == 5 for c in candles) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert b"Traceback" not in out


def test_broker_api_command_errors_are_one_line(tmp_path):
    conf = tmp_path / "tradeops.toml"
    conf.write_text('[broker]\napi_key_file = "k"\naccess_token_file = "t"\n')
    (tmp_path / "k").write_text("a")
    (tmp_path / "t").write_text("b")
    r = subprocess.run([sys.executable, "-m", "tradeops.cli", "--config", str(conf), "sim",
                        "broker-api", "--bad-candle", "NSE:NOPE"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and r.stderr.strip() == "tradeops: --bad-candle: unknown symbol 'NSE:NOPE'"
    r = subprocess.run([sys.executable, "-m", "tradeops.cli", "--config", str(conf), "sim",
                        "broker-api", "--listen", "127.0.0.1:99999"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip() == "tradeops: --listen: expected HOST:PORT, got '127.0.0.1:99999'"
    r = subprocess.run([sys.executable, "-m", "tradeops.cli", "--config", str(conf), "sim", "run",
                        "--mode", "fast", "--date", "2026-02-30"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip() == "tradeops: --date: expected YYYY-MM-DD, got '2026-02-30'"


def test_timestamps_are_ist_minute_starts():
    m = Market(DAY, n_symbols=3)
    b = m.broker_bars("NSE:INFY")[0]
    assert b.ts == datetime(2026, 12, 3, 9, 15, tzinfo=b.ts.tzinfo)
    assert b.ts.utcoffset() == timedelta(hours=5, minutes=30)
