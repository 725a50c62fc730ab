"""The one TOML config file: schema, validation, one-line errors, secrets from files.

Every section is a msgspec Struct with ``forbid_unknown_fields``; validation happens once
at start-up in :func:`load`. A bad file never gives a traceback: :class:`ConfigError`
carries one line such as::

    tradeops.toml: [recon].price_tolerance: expected a number, got "x"

Secrets are only ever read from files named by ``*_file`` keys (relative paths are
resolved against the config file's folder) and are redacted by :func:`redacted`.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from .errors import UserError

DEFAULT_PATH = "/etc/tradeops/tradeops.toml"
ENV_VAR = "TRADEOPS_CONFIG"


class ConfigError(UserError):
    """A one-line, user-facing configuration error (exit code 2)."""


class _S(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class KafkaConfig(_S):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "tradeops"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password_file: str = ""
    request_timeout_s: float = 5.0
    # consumer-group session of the exporters' consumers: a member that stops
    # heartbeating (killed, SIGSTOPped) is dropped after this long, so its restarted
    # replacement gets the partitions within about this time (librdkafka's 45 s default
    # made a watchdog restart take ~54 s). Must lie within the broker's
    # group.min/max.session.timeout.ms (6 s .. 30 min by default); heartbeats every third
    consumer_session_timeout_s: float = 10.0


class PostgresConfig(_S):
    host: str = "127.0.0.1"
    port: int = 5432
    dbname: str = "tradeops"
    user: str = "tradeops"
    password_file: str = ""
    sslmode: str = "prefer"
    connect_timeout_s: float = 5.0
    schema: str = "public"


class TopicsConfig(_S):
    order_events: str = "oms.order_events"
    gateway_events: str = "gateway.events"
    heartbeats: str = "ops.heartbeats"
    positions: str = "risk.positions"
    bars_1m: str = "marketdata.bars_1m"
    bars_1m_replay: str = "marketdata.bars_1m.replay"
    partitions: int = 6


class TablesConfig(_S):
    bars_1m: str = "bars_1m"
    broker_bars_1m: str = "broker_bars_1m"
    bars_1m_recon: str = "bars_1m_recon"
    recon_runs: str = "recon_runs"
    bars_1m_audit: str = "bars_1m_audit"
    risk_peaks: str = "risk_peaks"
    risk_positions: str = "risk_positions"
    risk_offsets: str = "risk_offsets"
    pairs_kalman_state: str = "pairs_kalman_state"
    instruments: str = "broker_instruments"
    broker_fetches: str = "broker_fetches"
    recon_heal_actions: str = "recon_heal_actions"


class GatewayOmsConfig(_S):
    listen: str = "127.0.0.1:9811"
    group_id: str = "tradeops-gateway-oms"
    lag_groups: list[str] = []
    # process name -> heartbeat timeout in seconds
    critical_processes: dict[str, float] = {}
    lag_window: int = 10
    scrape_budget_s: float = 2.0
    # lag observations closer together than this (seconds) are not added to the window
    lag_min_interval_s: float = 5.0
    # gateway label values kept as they are; others fold into "other" (empty: the first
    # 10 names seen are kept)
    gateways: list[str] = []
    # broker endpoints kept as `endpoint` label (longest matching path prefix); others "other"
    endpoints: list[str] = msgspec.field(
        default_factory=lambda: [
            "/orders/regular", "/orders/amo", "/orders/co", "/orders/iceberg", "/orders/auction",
            "/orders", "/trades", "/quote/ltp", "/quote/ohlc", "/quote",
            "/instruments/historical", "/instruments", "/portfolio/positions",
            "/portfolio/holdings", "/user/margins", "/session/token",
        ]
    )


class OmsLifecycleConfig(_S):
    listen: str = "127.0.0.1:9812"
    group_id: str = "tradeops-oms-lifecycle"
    strategies: list[str] = []
    stuck_after_s: dict[str, float] = msgspec.field(
        default_factory=lambda: {
            "CREATED": 5.0,
            "RISK_APPROVED": 5.0,
            "SUBMITTED": 5.0,
            "MODIFY_PENDING": 10.0,
            "CANCEL_PENDING": 10.0,
        }
    )
    terminal_grace_s: float = 300.0


class RiskBucketConfig(_S):
    type: Literal["strategy", "sector", "underlying", "total"]
    name: str
    capital: float | None = None


class RiskConfig(_S):
    listen: str = "127.0.0.1:9813"
    group_id: str = "tradeops-risk-drawdown"
    bucket_types: list[Literal["strategy", "sector", "underlying", "total"]] = msgspec.field(
        default_factory=lambda: ["strategy", "sector", "underlying", "total"]
    )
    # symbol -> sector / underlying
    sectors: dict[str, str] = {}
    underlyings: dict[str, str] = {}
    buckets: list[RiskBucketConfig] = []
    # bucket type -> drawdown limit in INR
    drawdown_limits: dict[str, float] = {}
    reset_time: str = ""  # HH:MM IST; empty = calendar session open
    flush_interval_s: float = 1.0


class PairConfig(_S):
    name: str
    leg_a: str
    leg_b: str
    hedge: Literal["static", "rolling_ols", "kalman"] = "rolling_ols"
    window: int = 120
    beta: float | None = None
    zscore_band: float = 2.0
    stale_after_s: float = 180.0
    # hedge = "kalman": process noise delta (random walk of beta, alpha) and observation
    # variance of ln a around beta ln b + alpha (log-price units)
    kalman_delta: float = 1e-4
    kalman_obs_var: float = 1e-6


class PairsExporterConfig(_S):
    listen: str = "127.0.0.1:9814"
    group_id: str = "tradeops-pairs"
    # after the warm-up from bars_1m, Kafka is read from this long before the warm-up's
    # query (bars not yet in PostgreSQL); bars seen twice are counted as duplicates
    warmup_overlap_s: float = 300.0
    # Kalman pairs replay this many windows of bars at start (its state has no window)
    kalman_warmup_windows: int = 10


class ReconConfig(_S):
    # a price differs when |internal - broker| > price_tolerance + price_rel_tolerance * |broker|
    price_tolerance: float = 0.05
    price_rel_tolerance: float = 0.0
    # a volume differs when |internal - broker| > volume_rel_tolerance * broker
    volume_rel_tolerance: float = 0.0
    max_heal_rows: int = 5000
    sample_rows: int = 20
    top_symbols: int = 10
    # concurrent comparison statements over disjoint symbol slices (days of >= 100 symbols)
    compare_workers: int = 2
    # symbols reconciled by default; empty = every symbol in bars_1m or the broker cache that day
    symbols: list[str] = []
    pushgateway_url: str = "http://127.0.0.1:9091"  # empty = do not push metrics
    job: str = "tradeops_recon"


class BrokerConfig(_S):
    kind: Literal["kite", "csv"] = "kite"
    base_url: str = "https://api.kite.trade"
    api_key_file: str = ""
    access_token_file: str = ""
    csv_dir: str = ""
    exchange: str = "NSE"
    rate_limit_per_s: float = 3.0
    workers: int = 4
    timeout_s: float = 10.0
    max_retries: int = 6
    # the client paces itself at rate_limit_per_s * (1 - rate_headroom) so that network
    # jitter never puts rate_limit_per_s + 1 requests into one second at the broker
    rate_headroom: float = 0.03
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0


class SpecialSession(_S):
    date: str
    open: str
    close: str


class CalendarConfig(_S):
    timezone: str = "Asia/Kolkata"
    session_open: str = "09:15"
    session_close: str = "15:30"
    holidays: list[str] = []
    special_sessions: list[SpecialSession] = []


class HeartbeatConfig(_S):
    source: Literal["kafka", "file", "http", "systemd", "none"] = "none"
    timeout_s: float = 10.0
    process: str = ""  # kafka: process name in ops.heartbeats (default: program name)
    path: str = ""  # file: path whose mtime is the heartbeat
    url: str = ""  # http: health URL (2xx = alive)
    unit: str = ""  # systemd: unit name


class ProgramConfig(_S):
    name: str
    # spawn: start and own the child; systemd: `systemctl restart unit`; watch: observe only
    mode: Literal["spawn", "systemd", "watch"] = "spawn"
    command: list[str] = []
    unit: str = ""
    cwd: str = ""
    env: dict[str, str] = {}
    log_file: str = ""
    heartbeat: HeartbeatConfig = msgspec.field(default_factory=HeartbeatConfig)
    startsecs: float = 1.0
    backoff_initial_s: float = 0.5
    backoff_factor: float = 2.0
    backoff_max_s: float = 30.0
    restart_budget: int = 5
    budget_window_s: float = 300.0
    stop_grace_s: float = 5.0
    # the first restart after a failure-free stretch is immediate; later ones back off
    first_restart_immediate: bool = True
    # a run that lasted this long resets the backoff streak
    backoff_reset_s: float = 60.0


class SupervisorConfig(_S):
    listen: str = "127.0.0.1:9815"
    poll_interval_s: float = 0.2
    status_file: str = "/run/tradeops/supervisor.json"
    # how often HTTP and systemd heartbeat sources are probed (each in its own thread)
    probe_interval_s: float = 1.0
    # Kafka consumer group of the ops.heartbeats reader (it never commits offsets)
    group_id: str = "tradeops-supervisor"
    programs: list[ProgramConfig] = []


class DoctorConfig(_S):
    check_timeout_s: float = 3.0
    # check family -> its own timeout in seconds (e.g. { kafka = 2.0 }); others use check_timeout_s
    timeouts: dict[str, float] = {}
    units: list[str] = []
    supervisord_url: str = ""
    prometheus_url: str = "http://127.0.0.1:9090"
    pushgateway_url: str = "http://127.0.0.1:9091"
    # name -> base URL of an exporter (its /healthz and /metrics)
    exporters: dict[str, str] = {}
    kafka_data_dir: str = ""
    postgres_data_dir: str = ""
    disk_warn_ratio: float = 0.85
    disk_crit_ratio: float = 0.95
    # consumer groups whose lag is checked (empty: [gateway_oms].lag_groups)
    lag_groups: list[str] = []
    # lag of a group in seconds (age of its oldest unconsumed record) -> WARN / CRIT
    lag_warn_s: float = 60.0
    lag_crit_s: float = 300.0
    # consumer group or program -> systemd unit that runs it (named in the advice)
    group_units: dict[str, str] = {}
    # during the session, the latest bars_1m row older than this is WARN (3x: CRIT)
    bars_stale_s: float = 180.0
    # the recon of a trading day is expected this long after its session close
    recon_grace_s: float = 3600.0
    # folder of local service logs NAME.log (the TUI's log pane; dev stack: .state/log)
    log_dir: str = ""


class SimConfig(_S):
    seed: int = 42
    symbols: int = 300
    strategies: list[str] = msgspec.field(
        default_factory=lambda: ["momentum", "meanrev", "pairs", "breakout"]
    )
    metrics_listen: str = "127.0.0.1:9816"
    broker_api_listen: str = "127.0.0.1:9817"
    broker_rate_limit_per_s: float = 3.0
    # share of (symbol, minute) bars with an injected internal/broker discrepancy
    discrepancy_rate: float = 0.002
    # orders per minute over all strategies, and the shares of each order path
    orders_per_minute: float = 12.0
    risk_reject_share: float = 0.06
    broker_reject_share: float = 0.03
    cancel_share: float = 0.12
    partial_fill_share: float = 0.2
    expire_share: float = 0.01
    stuck_share: float = 0.01
    invalid_share: float = 0.01
    duplicate_share: float = 0.01
    out_of_order_share: float = 0.01
    kite_status_share: float = 0.25
    rate_limited_share: float = 0.02


class Config(_S):
    kafka: KafkaConfig = msgspec.field(default_factory=KafkaConfig)
    postgres: PostgresConfig = msgspec.field(default_factory=PostgresConfig)
    topics: TopicsConfig = msgspec.field(default_factory=TopicsConfig)
    tables: TablesConfig = msgspec.field(default_factory=TablesConfig)
    gateway_oms: GatewayOmsConfig = msgspec.field(default_factory=GatewayOmsConfig)
    oms_lifecycle: OmsLifecycleConfig = msgspec.field(default_factory=OmsLifecycleConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    pairs_exporter: PairsExporterConfig = msgspec.field(default_factory=PairsExporterConfig)
    pairs: list[PairConfig] = []
    recon: ReconConfig = msgspec.field(default_factory=ReconConfig)
    broker: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    calendar: CalendarConfig = msgspec.field(default_factory=CalendarConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    doctor: DoctorConfig = msgspec.field(default_factory=DoctorConfig)
    sim: SimConfig = msgspec.field(default_factory=SimConfig)
    # set by load(): where the file was, for relative *_file paths and error messages
    source: str = ""


_TYPE_WORDS = {
    "float": "a number",
    "int": "an integer",
    "str": "a string",
    "bool": "a boolean",
    "array": "a list",
    "object": "a table",
}
_EXPECTED_RE = re.compile(r"Expected `(?P<exp>[^`]+)`, got `(?P<got>[^`]+)`(?: - at `(?P<path>[^`]+)`)?")
_UNKNOWN_RE = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`(?: - at `(?P<path>[^`]+)`)?")
_MISSING_RE = re.compile(r"Object missing required field `(?P<field>[^`]+)`(?: - at `(?P<path>[^`]+)`)?")
_INVALID_RE = re.compile(r"Invalid enum value (?P<val>.+?)(?: - at `(?P<path>[^`]+)`)?$")


def _split_path(path: str | None) -> list[str | int]:
    """`$.pairs[0].window` -> ["pairs", 0, "window"]."""
    if not path or path == "$":
        return []
    parts: list[str | int] = []
    for m in re.finditer(r"\.([^.\[]+)|\[(\d+)\]|\[\"?([^\]\"]+)\"?\]", path[1:]):
        if m.group(1) is not None:
            parts.append(m.group(1))
        elif m.group(2) is not None:
            parts.append(int(m.group(2)))
        else:
            parts.append(m.group(3))
    return parts


def _render_path(parts: list[str | int]) -> str:
    if not parts:
        return "(top level)"
    out = f"[{parts[0]}]"
    for p in parts[1:]:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _lookup(raw: Any, parts: list[str | int]) -> Any:
    cur = raw
    for p in parts:
        try:
            cur = cur[p]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def _show(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _expected_words(exp: str) -> str:
    words = [_TYPE_WORDS.get(t.strip(), t.strip()) for t in exp.split("|")]
    words = [w for w in words if w != "null"]
    return " or ".join(dict.fromkeys(words))


def describe_validation_error(err: msgspec.ValidationError, raw: Any, name: str) -> str:
    """Turn a msgspec error into the project's one-line config error."""
    msg = str(err)
    if m := _EXPECTED_RE.match(msg):
        parts = _split_path(m.group("path"))
        got = _lookup(raw, parts)
        return f"{name}: {_render_path(parts)}: expected {_expected_words(m.group('exp'))}, got {_show(got)}"
    if m := _UNKNOWN_RE.match(msg):
        parts = [*_split_path(m.group("path")), m.group("field")]
        return f"{name}: {_render_path(parts)}: unknown key"
    if m := _MISSING_RE.match(msg):
        parts = [*_split_path(m.group("path")), m.group("field")]
        return f"{name}: {_render_path(parts)}: missing required value"
    if m := _INVALID_RE.match(msg):
        parts = _split_path(m.group("path"))
        return f"{name}: {_render_path(parts)}: invalid value {m.group('val')}"
    return f"{name}: {msg}"


def default_config_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH


def loads(text: str, name: str = "tradeops.toml", base_dir: str = ".") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name}: not valid TOML: {e}") from None
    try:
        cfg = msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:
        raise ConfigError(describe_validation_error(e, raw, name)) from None
    cfg.source = str(Path(base_dir) / name)
    _semantic_checks(cfg, name)
    return cfg


def load(path: str | None = None) -> Config:
    """Load and validate the config at ``path`` (or $TRADEOPS_CONFIG, or the default)."""
    p = Path(default_config_path(path))
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found (use --config or ${ENV_VAR})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
    return loads(text, name=p.name, base_dir=str(p.parent.resolve()))


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _listen_ok(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def _semantic_checks(cfg: Config, name: str) -> None:
    """Checks a type system cannot express; each raises with file and key."""

    def fail(key: str, what: str, value: Any = None) -> None:
        got = "" if value is None else f", got {_show(value)}"
        raise ConfigError(f"{name}: {key}: {what}{got}")

    for section in ("gateway_oms", "oms_lifecycle", "risk", "pairs_exporter", "supervisor"):
        listen = getattr(cfg, section).listen
        if not _listen_ok(listen):
            fail(f"[{section}].listen", "expected HOST:PORT", listen)
    for key in ("metrics_listen", "broker_api_listen"):
        if not _listen_ok(getattr(cfg.sim, key)):
            fail(f"[sim].{key}", "expected HOST:PORT", getattr(cfg.sim, key))
    for key in ("discrepancy_rate", "risk_reject_share", "broker_reject_share", "cancel_share",
                "partial_fill_share", "expire_share", "stuck_share", "invalid_share",
                "duplicate_share", "out_of_order_share", "kite_status_share",
                "rate_limited_share"):
        if not 0 <= getattr(cfg.sim, key) <= (0.2 if key == "discrepancy_rate" else 1):
            fail(f"[sim].{key}", "expected a share between 0 and "
                 + ("0.2" if key == "discrepancy_rate" else "1"), getattr(cfg.sim, key))
    for i, strategy in enumerate(cfg.sim.strategies):
        if (not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", strategy)
                or strategy in cfg.sim.strategies[:i]):
            fail(f"[sim].strategies[{i}]", "expected a unique name of letters, digits, _ . -",
                 strategy)
    if cfg.sim.orders_per_minute < 0:
        fail("[sim].orders_per_minute", "expected a number >= 0", cfg.sim.orders_per_minute)
    if not 1 <= cfg.sim.symbols <= 20_000:
        fail("[sim].symbols", "expected an integer 1..20000", cfg.sim.symbols)
    if cfg.sim.broker_rate_limit_per_s <= 0:
        fail("[sim].broker_rate_limit_per_s", "expected a number > 0",
             cfg.sim.broker_rate_limit_per_s)
    for key in ("session_open", "session_close"):
        if not _HHMM.match(getattr(cfg.calendar, key)):
            fail(f"[calendar].{key}", "expected HH:MM", getattr(cfg.calendar, key))
    for i, d in enumerate(cfg.calendar.holidays):
        if not _DATE.match(d):
            fail(f"[calendar].holidays[{i}]", "expected YYYY-MM-DD", d)
    if cfg.risk.reset_time and not _HHMM.match(cfg.risk.reset_time):
        fail("[risk].reset_time", "expected HH:MM", cfg.risk.reset_time)
    if cfg.risk.flush_interval_s <= 0:
        fail("[risk].flush_interval_s", "expected a number > 0", cfg.risk.flush_interval_s)
    for bt, limit in cfg.risk.drawdown_limits.items():
        if bt not in ("strategy", "sector", "underlying", "total"):
            fail(f"[risk].drawdown_limits.{bt}", "expected a bucket type (strategy, sector, "
                 "underlying, total)", bt)
        if limit < 0:
            fail(f"[risk].drawdown_limits.{bt}", "expected a number >= 0", limit)
    for i, b in enumerate(cfg.risk.buckets):
        if b.capital is not None and b.capital <= 0:
            fail(f"[risk].buckets[{i}].capital", "expected a number > 0", b.capital)
    if cfg.pairs_exporter.warmup_overlap_s < 0:
        fail("[pairs_exporter].warmup_overlap_s", "expected a number >= 0",
             cfg.pairs_exporter.warmup_overlap_s)
    if cfg.pairs_exporter.kalman_warmup_windows < 1:
        fail("[pairs_exporter].kalman_warmup_windows", "expected an integer >= 1",
             cfg.pairs_exporter.kalman_warmup_windows)
    for key in ("price_tolerance", "price_rel_tolerance", "volume_rel_tolerance"):
        if getattr(cfg.recon, key) < 0:
            fail(f"[recon].{key}", "expected a number >= 0", getattr(cfg.recon, key))
    if cfg.broker.rate_limit_per_s <= 0:
        fail("[broker].rate_limit_per_s", "expected a number > 0", cfg.broker.rate_limit_per_s)
    if cfg.broker.workers < 1:
        fail("[broker].workers", "expected an integer >= 1", cfg.broker.workers)
    if not 0 <= cfg.broker.rate_headroom < 0.5:
        fail("[broker].rate_headroom", "expected a number in [0, 0.5)", cfg.broker.rate_headroom)
    if not 1 <= cfg.recon.compare_workers <= 16:
        fail("[recon].compare_workers", "expected an integer 1-16", cfg.recon.compare_workers)
    if cfg.recon.max_heal_rows < 0:
        fail("[recon].max_heal_rows", "expected an integer >= 0", cfg.recon.max_heal_rows)
    for i, sym in enumerate(cfg.recon.symbols):
        if not re.fullmatch(r"[A-Z][A-Z0-9]*:[A-Z0-9][A-Z0-9&_.\-]*", sym):
            fail(f"[recon].symbols[{i}]", "expected EXCHANGE:SYMBOL", sym)
    for i, sp in enumerate(cfg.calendar.special_sessions):
        if not _DATE.match(sp.date):
            fail(f"[calendar].special_sessions[{i}].date", "expected YYYY-MM-DD", sp.date)
        for key in ("open", "close"):
            if not _HHMM.match(getattr(sp, key)):
                fail(f"[calendar].special_sessions[{i}].{key}", "expected HH:MM", getattr(sp, key))
        if sp.open >= sp.close:
            fail(f"[calendar].special_sessions[{i}].close", "expected later than open", sp.close)
    if cfg.calendar.session_open >= cfg.calendar.session_close:
        fail("[calendar].session_close", "expected later than session_open", cfg.calendar.session_close)
    if not 1 <= cfg.postgres.port <= 65535:
        fail("[postgres].port", "expected a port 1-65535", cfg.postgres.port)
    if not 1 <= cfg.kafka.consumer_session_timeout_s <= 3600:
        fail("[kafka].consumer_session_timeout_s", "expected a number of seconds in [1, 3600]",
             cfg.kafka.consumer_session_timeout_s)
    g = cfg.gateway_oms
    if g.lag_window < 2:
        fail("[gateway_oms].lag_window", "expected an integer >= 2", g.lag_window)
    if g.scrape_budget_s <= 0:
        fail("[gateway_oms].scrape_budget_s", "expected a number > 0", g.scrape_budget_s)
    if g.lag_min_interval_s < 0:
        fail("[gateway_oms].lag_min_interval_s", "expected a number >= 0", g.lag_min_interval_s)
    for proc, timeout in g.critical_processes.items():
        if timeout <= 0:
            fail(f"[gateway_oms].critical_processes.{proc}", "expected a timeout > 0", timeout)
    seen: set[str] = set()
    for i, pair in enumerate(cfg.pairs):
        if pair.name in seen:
            fail(f"[pairs][{i}].name", "duplicate pair name", pair.name)
        seen.add(pair.name)
        if pair.window < 3:
            fail(f"[pairs][{i}].window", "expected an integer >= 3", pair.window)
        if pair.hedge == "static" and pair.beta is None:
            fail(f"[pairs][{i}].beta", "required when hedge = \"static\"", None)
        for key in ("leg_a", "leg_b"):
            if not re.fullmatch(r"[A-Z][A-Z0-9]*:[A-Z0-9][A-Z0-9&_.\-]*", getattr(pair, key)):
                fail(f"[pairs][{i}].{key}", "expected EXCHANGE:SYMBOL", getattr(pair, key))
        if pair.leg_a == pair.leg_b:
            fail(f"[pairs][{i}].leg_b", "expected a symbol other than leg_a", pair.leg_b)
        if not 0 < pair.kalman_delta < 1:
            fail(f"[pairs][{i}].kalman_delta", "expected a number in (0, 1)", pair.kalman_delta)
        for key in ("kalman_obs_var", "zscore_band", "stale_after_s"):
            if getattr(pair, key) <= 0:
                fail(f"[pairs][{i}].{key}", "expected a number > 0", getattr(pair, key))
    names: set[str] = set()
    for i, prog in enumerate(cfg.supervisor.programs):
        if prog.name in names:
            fail(f"[supervisor].programs[{i}].name", "duplicate program name", prog.name)
        names.add(prog.name)
        if prog.mode == "spawn" and not prog.command:
            fail(f"[supervisor].programs[{i}].command", "required when mode = \"spawn\"", None)
        if prog.mode == "systemd" and not prog.unit:
            fail(f"[supervisor].programs[{i}].unit", "required when mode = \"systemd\"", None)
        _check_program(prog, f"[supervisor].programs[{i}]", fail)
    if cfg.supervisor.poll_interval_s <= 0 or cfg.supervisor.poll_interval_s > 5:
        fail("[supervisor].poll_interval_s", "expected a number in (0, 5]", cfg.supervisor.poll_interval_s)
    d = cfg.doctor
    for key in ("check_timeout_s", "lag_warn_s", "lag_crit_s", "bars_stale_s"):
        if getattr(d, key) <= 0:
            fail(f"[doctor].{key}", "expected a number > 0", getattr(d, key))
    for fam, t in d.timeouts.items():
        if t <= 0:
            fail(f"[doctor].timeouts.{fam}", "expected a number > 0", t)
    if d.lag_crit_s < d.lag_warn_s:
        fail("[doctor].lag_crit_s", "expected a number >= lag_warn_s", d.lag_crit_s)
    if not 0 < d.disk_warn_ratio <= d.disk_crit_ratio <= 1:
        fail("[doctor].disk_crit_ratio", "expected 0 < disk_warn_ratio <= disk_crit_ratio <= 1",
             d.disk_crit_ratio)
    if d.recon_grace_s < 0:
        fail("[doctor].recon_grace_s", "expected a number >= 0", d.recon_grace_s)
    for exp, url in d.exporters.items():
        if not url.startswith(("http://", "https://")):
            fail(f"[doctor].exporters.{exp}", "expected an http(s):// URL", url)
    for key in ("prometheus_url", "pushgateway_url"):
        url = getattr(d, key)
        if url and not url.startswith(("http://", "https://")):
            fail(f"[doctor].{key}", "expected an http(s):// URL", url)
    if d.supervisord_url and not d.supervisord_url.startswith(("http://", "https://", "unix://")):
        fail("[doctor].supervisord_url", "expected an http(s):// or unix:// URL", d.supervisord_url)
    if cfg.supervisor.probe_interval_s <= 0:
        fail("[supervisor].probe_interval_s", "expected a number > 0", cfg.supervisor.probe_interval_s)


def _check_program(prog: ProgramConfig, key: str, fail: Any) -> None:
    """[supervisor].programs[i]: values a type cannot express (part of the supervisor)."""
    hb = prog.heartbeat
    if prog.mode == "watch" and hb.source == "none":
        fail(f"{key}.heartbeat.source", "required when mode = \"watch\"", hb.source)
    if hb.source == "file" and not hb.path:
        fail(f"{key}.heartbeat.path", "required when heartbeat.source = \"file\"", None)
    if hb.source == "http" and not hb.url.startswith(("http://", "https://")):
        fail(f"{key}.heartbeat.url", "expected an http(s):// URL", hb.url or None)
    if hb.source == "systemd" and not (hb.unit or prog.unit):
        fail(f"{key}.heartbeat.unit", "required when heartbeat.source = \"systemd\"", None)
    positive = {
        "heartbeat.timeout_s": hb.timeout_s,
        "backoff_factor": prog.backoff_factor,
        "budget_window_s": prog.budget_window_s,
    }
    for k, v in positive.items():
        if v <= 0:
            fail(f"{key}.{k}", "expected a number > 0", v)
    non_negative = {
        "startsecs": prog.startsecs,
        "backoff_initial_s": prog.backoff_initial_s,
        "backoff_max_s": prog.backoff_max_s,
        "stop_grace_s": prog.stop_grace_s,
        "backoff_reset_s": prog.backoff_reset_s,
    }
    for k, v in non_negative.items():
        if v < 0:
            fail(f"{key}.{k}", "expected a number >= 0", v)
    if prog.backoff_factor < 1:
        fail(f"{key}.backoff_factor", "expected a number >= 1", prog.backoff_factor)
    if prog.restart_budget < 1:
        fail(f"{key}.restart_budget", "expected an integer >= 1", prog.restart_budget)


def secret_path(cfg: Config, value: str) -> Path:
    p = Path(value)
    if not p.is_absolute():
        p = Path(cfg.source).parent / p
    return p


def read_secret(cfg: Config, key: str, value: str) -> str:
    """Read a secret from the file a ``*_file`` key names; '' when the key is empty."""
    if not value:
        return ""
    p = secret_path(cfg, value)
    try:
        return p.read_text(encoding="utf-8").strip()
    except OSError as e:
        where = Path(cfg.source).name
        raise ConfigError(f"{where}: {key}: cannot read secret file {p}: {e.strerror}") from None


def redacted(cfg: Config) -> dict[str, Any]:
    """The effective config as plain data; secret file paths shown, contents never read."""
    data = msgspec.to_builtins(cfg)
    data.pop("source", None)
    return data


def listen_addr(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def to_toml(data: dict[str, Any]) -> str:
    """TOML for `config check`: top-level dicts are sections, lists of dicts arrays of tables."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            inner = ", ".join(f"{_key(k)} = {scalar(x)}" for k, x in v.items() if x is not None)
            return "{ " + inner + " }" if inner else "{}"
        return msgspec.json.encode("" if v is None else str(v)).decode()

    def body(table: dict[str, Any], prefix: str) -> None:
        for k, v in table.items():
            if v is not None and not _is_table_list(v):
                lines.append(f"{_key(k)} = {scalar(v)}")
        for k, v in table.items():
            if _is_table_list(v):
                for item in v:
                    lines.append(f"\n[[{prefix}{_key(k)}]]")
                    body(item, f"{prefix}{_key(k)}.")

    for section, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{_key(section)}]")
            body(value, f"{_key(section)}.")
        elif _is_table_list(value):
            for item in value:
                lines.append(f"\n[[{_key(section)}]]")
                body(item, f"{_key(section)}.")
        elif value is not None:
            lines.insert(0, f"{_key(section)} = {scalar(value)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else msgspec.json.encode(k).decode()


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
