"""`tradeops sim`: run the simulated trading stack, and the Kite-compatible broker server."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

import click

from ..config import listen_addr
from ..errors import UserError

log = logging.getLogger("tradeops.sim")


def _listen(value: str) -> tuple[str, int]:
    """HOST:PORT from --listen, or a one-line error."""
    try:
        host, port = listen_addr(value)
    except ValueError:
        host, port = "", -1
    if not host or not 0 <= port <= 65535:
        raise UserError(f"--listen: expected HOST:PORT, got {value!r}")
    return host, port


@click.group("sim")
def sim_group() -> None:
    """Simulated trading stack (orders, gateway, heartbeats, positions, bars) and broker API."""


@sim_group.command("run")
@click.option("--mode", type=click.Choice(["live", "fast"]), default="live", show_default=True,
              help="live: real-time pace until SIGTERM; fast: one whole session, then a JSON "
                   "ground-truth summary.")
@click.option("--date", "date_s", metavar="YYYY-MM-DD",
              help="Day to simulate (fast mode; default today IST).")
@click.option("--seed", type=int, default=None, help="Random seed (default [sim].seed).")
@click.option("--symbols", type=click.IntRange(1, 20_000), default=None,
              help="Number of symbols (default [sim].symbols).")
@click.option("--no-postgres", is_flag=True, help="Do not write bars_1m.")
@click.option("--no-kafka", is_flag=True,
              help="Fast mode: only load the day's internal bars into bars_1m (no Kafka).")
@click.option("--no-groups", is_flag=True, help="Do not run the oms-core/gateway-zerodha groups.")
@click.option("--listen", metavar="HOST:PORT",
              help="Live mode: metrics/control address (default [sim].metrics_listen).")
@click.pass_obj
def run_cmd(obj, mode: str, date_s: str | None, seed: int | None, symbols: int | None,
            no_postgres: bool, no_kafka: bool, no_groups: bool, listen: str | None) -> None:
    """Run the simulator (see docs/simulator.md)."""
    from . import runner

    cfg = obj.cfg
    seed = cfg.sim.seed if seed is None else seed
    n = cfg.sim.symbols if symbols is None else symbols
    if mode == "fast":
        # stdout carries the JSON summary: log lines (librdkafka warnings...) go to stderr
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler) and h.stream is sys.stdout:
                h.setStream(sys.stderr)
        day = runner.parse_date(date_s) if date_s else runner.today_ist()
        if no_kafka and no_postgres:
            raise UserError("--no-kafka and --no-postgres: nothing left to write to")
        summary = runner.run_fast(cfg, day, seed, n, postgres=not no_postgres,
                                  groups=not no_groups, kafka=not no_kafka)
        click.echo(json.dumps(summary, indent=2, sort_keys=False))
        return
    if date_s:
        raise UserError("--date: only for --mode fast (live mode follows the wall clock)")
    if no_kafka:
        raise UserError("--no-kafka: only for --mode fast")
    if listen is not None:
        _listen(listen)
    live = runner.LiveRunner(cfg, seed, n, postgres=not no_postgres, listen=listen,
                             groups=not no_groups)
    truth = live.run()
    log.info("sim live: stopped; %s", json.dumps(truth["messages"]))


@sim_group.command("broker-api")
@click.option("--listen", metavar="HOST:PORT", help="Default [sim].broker_api_listen.")
@click.option("--seed", type=int, default=None, help="Random seed (default [sim].seed).")
@click.option("--symbols", type=click.IntRange(1, 20_000), default=None,
              help="Number of symbols (default [sim].symbols).")
@click.option("--rate-limit", type=click.FloatRange(min=0.1), default=None,
              help="Historical requests per sliding second (default [sim].broker_rate_limit_per_s).")
@click.option("--force-status", type=click.Choice(["429", "500", "502", "503", "504"]),
              help="Answer the first --force-count Kite requests with this error.")
@click.option("--force-count", type=click.IntRange(0, 10_000), default=0)
@click.option("--bad-candle", "bad_candles", multiple=True, metavar="SYMBOL[=KIND]",
              help="Serve one malformed candle row for SYMBOL (kinds: string, short, "
                   "inconsistent, bad_ts, negative).")
@click.pass_obj
def broker_api_cmd(obj, listen, seed, symbols, rate_limit, force_status, force_count,
                   bad_candles) -> None:
    """Kite Connect v3 compatible instruments/historical server over the simulator's bars."""
    from .broker_api import BAD_CANDLE_KINDS, broker_state_from_config, make_broker_server

    cfg = obj.cfg
    host, port = _listen(listen or cfg.sim.broker_api_listen)
    state = broker_state_from_config(cfg, seed, symbols, rate_limit)
    if force_status and force_count:
        state.forced.extend([int(force_status)] * force_count)
    for spec in bad_candles:
        sym, _, kind = spec.partition("=")
        kind = kind or "string"
        if sym not in state.symbols:
            raise UserError(f"--bad-candle: unknown symbol {sym!r}")
        if kind not in BAD_CANDLE_KINDS:
            raise UserError(f"--bad-candle: kind must be one of {', '.join(BAD_CANDLE_KINDS)}")
        state.bad_candles[sym] = kind
    try:
        server = make_broker_server(host, port, state)
    except OSError as e:
        raise UserError(f"broker API {host}:{port}: cannot listen: {e.strerror}") from None
    stop = threading.Event()

    def _stop(*_):
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    t = threading.Thread(target=server.serve_forever, name="kite-sim", daemon=True)
    t.start()
    log.info("broker API (Kite v3) on http://%s:%d, %d symbols, %.3g historical req/s",
             host, server.server_address[1], len(state.symbols), state.rate_limit)
    sys.stdout.flush()
    stop.wait()
    server.shutdown()
    server.server_close()
    log.info("broker API stopped")
