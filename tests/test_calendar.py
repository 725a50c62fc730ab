"""Trading calendar: pure logic, plus the CLI exit codes a systemd ExecCondition relies on."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from tradeops import config
from tradeops.calendar import BadDate, TradingCalendar, parse_date

TOML = """
[calendar]
holidays = ["2026-12-25", "2026-10-02"]
special_sessions = [
  { date = "2026-11-08", open = "18:00", close = "19:00" },  # Muhurat, a Sunday
  { date = "2026-02-01", open = "09:15", close = "15:30" },  # budget day, a Sunday
]
"""


@pytest.fixture
def cal():
    return TradingCalendar.from_config(config.loads(TOML))


def test_weekdays_weekends_and_holidays(cal):
    assert cal.is_trading_day(dt.date(2026, 12, 3))  # Thursday
    assert not cal.is_trading_day(dt.date(2026, 12, 5))  # Saturday
    assert not cal.is_trading_day(dt.date(2026, 12, 6))  # Sunday
    assert not cal.is_trading_day(dt.date(2026, 12, 25))  # holiday on a Friday
    assert cal.why_not(dt.date(2026, 12, 25)) == "an exchange holiday"
    assert cal.why_not(dt.date(2026, 12, 5)) == "a Saturday"
    assert cal.why_not(dt.date(2026, 12, 3)) == ""


def test_regular_session_has_375_bars_0915_to_1529(cal):
    s = cal.session(dt.date(2026, 12, 3))
    bars = s.bar_starts()
    assert len(bars) == 375 == cal.expected_bars(dt.date(2026, 12, 3))
    assert bars[0] == dt.datetime(2026, 12, 3, 9, 15, tzinfo=cal.tz)
    assert bars[-1] == dt.datetime(2026, 12, 3, 15, 29, tzinfo=cal.tz)
    assert bars[0].utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert not s.special


def test_special_sessions_win_over_weekends(cal):
    muhurat = cal.session(dt.date(2026, 11, 8))
    assert muhurat.special and muhurat.minutes == 60
    assert muhurat.open.time() == dt.time(18, 0)
    assert cal.expected_bars(dt.date(2026, 2, 1)) == 375
    assert cal.session(dt.date(2026, 12, 5)) is None
    assert cal.expected_bars(dt.date(2026, 12, 25)) == 0


def test_configurable_session_and_previous_trading_day():
    c = TradingCalendar.from_config(
        config.loads('[calendar]\nsession_open = "10:00"\nsession_close = "11:00"\n')
    )
    assert c.expected_bars(dt.date(2026, 12, 7)) == 60
    assert c.previous_trading_day(dt.date(2026, 12, 7)) == dt.date(2026, 12, 4)  # Monday -> Friday


def test_parse_date_errors_name_the_value(cal):
    assert parse_date("2026-12-03") == dt.date(2026, 12, 3)
    assert parse_date("today", cal) == cal.today()
    assert parse_date("yesterday", cal) == cal.today() - dt.timedelta(days=1)
    for bad in ("2026-13-01", "03-12-2026", "2026-12-3", "today"):
        with pytest.raises(BadDate, match="expected YYYY-MM-DD"):
            parse_date(bad, None if bad == "today" else cal)


def test_bad_calendar_config_is_one_line():
    with pytest.raises(config.ConfigError) as e:
        TradingCalendar.from_config(config.loads('[calendar]\ntimezone = "Asia/Nowhere"\n'))
    assert str(e.value) == 'tradeops.toml: [calendar].timezone: unknown time zone, got "Asia/Nowhere"'
    with pytest.raises(config.ConfigError, match=r"\[calendar\].special_sessions\[0\].open: expected HH:MM"):
        config.loads(
            '[calendar]\nspecial_sessions = [{date = "2026-11-08", open = "6pm", close = "19:00"}]\n'
        )
    with pytest.raises(config.ConfigError, match=r"\[calendar\].holidays\[0\]: expected YYYY-MM-DD"):
        config.loads('[calendar]\nholidays = ["25/12/2026"]\n')


@pytest.mark.parametrize(
    "arg,code,out",
    [
        ("2026-12-03", 0, "2026-12-03: trading day"),
        ("2026-12-25", 1, "not a trading day (an exchange holiday)"),
        ("2026-11-08", 0, "trading day"),
        ("2026-12-32", 2, "tradeops: date '2026-12-32': expected YYYY-MM-DD"),
    ],
)
def test_cli_exit_codes(tmp_path, arg, code, out):
    cfgfile = tmp_path / "tradeops.toml"
    cfgfile.write_text(TOML)
    r = subprocess.run(
        [sys.executable, "-m", "tradeops.cli", "--config", str(cfgfile), "calendar", "is-trading-day", arg],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == code
    assert out in (r.stdout + r.stderr)
    assert "Traceback" not in r.stderr


def test_cli_previous_trading_day(tmp_path):
    cfgfile = tmp_path / "tradeops.toml"
    cfgfile.write_text(TOML)
    r = subprocess.run(
        [sys.executable, "-m", "tradeops.cli", "--config", str(cfgfile), "calendar", "previous", "2026-12-28"],
        capture_output=True, text=True, timeout=60,
    )
    assert (r.returncode, r.stdout.strip()) == (0, "2026-12-24")  # skips the weekend and Christmas
