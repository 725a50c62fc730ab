"""Trading calendar from ``[calendar]``: weekends, holidays, special sessions, expected bars.

A date is a trading day when it has a special session (Muhurat, a budget Saturday: these
win over weekends and holidays) or when it is a weekday that is not a listed holiday.
The session is ``[session_open, session_close)`` in the calendar's timezone; the expected
1-minute bars are labelled by their start, so 09:15-15:30 gives 375 bars, 09:15 ... 15:29.

``tradeops calendar is-trading-day DATE`` exits 0 (trading day) or 1 (not), 2 for a bad
date; DATE is YYYY-MM-DD, ``today`` or ``yesterday`` (in the calendar's timezone), so a
systemd timer can use it as ``ExecCondition=``.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from .config import CalendarConfig, Config, ConfigError
from .errors import UserError


class BadDate(UserError):
    """A date argument that is not YYYY-MM-DD (exit code 2)."""


def _hhmm(value: str) -> dt.time:
    h, m = value.split(":")
    return dt.time(int(h), int(m))


@dataclass(frozen=True)
class Session:
    day: dt.date
    open: dt.datetime  # tz-aware, first bar's start
    close: dt.datetime  # tz-aware, end of the last bar
    special: bool = False

    @property
    def minutes(self) -> int:
        return int((self.close - self.open).total_seconds() // 60)

    def bar_starts(self) -> list[dt.datetime]:
        return [self.open + dt.timedelta(minutes=i) for i in range(self.minutes)]


class TradingCalendar:
    def __init__(self, cal: CalendarConfig, source: str = "tradeops.toml"):
        try:
            self.tz = ZoneInfo(cal.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f'{source}: [calendar].timezone: unknown time zone, got "{cal.timezone}"'
            ) from None
        self.open = _hhmm(cal.session_open)
        self.close = _hhmm(cal.session_close)
        self.holidays = {dt.date.fromisoformat(d) for d in cal.holidays}
        self.special = {
            dt.date.fromisoformat(s.date): (_hhmm(s.open), _hhmm(s.close)) for s in cal.special_sessions
        }

    @classmethod
    def from_config(cls, cfg: Config) -> TradingCalendar:
        name = cfg.source.rsplit("/", 1)[-1] if cfg.source else "tradeops.toml"
        return cls(cfg.calendar, source=name)

    def today(self) -> dt.date:
        return dt.datetime.now(self.tz).date()

    def is_trading_day(self, day: dt.date) -> bool:
        if day in self.special:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def why_not(self, day: dt.date) -> str:
        """Why ``day`` is not a trading day ('' when it is)."""
        if self.is_trading_day(day):
            return ""
        if day in self.holidays:
            return "an exchange holiday"
        return day.strftime("a %A")

    def session(self, day: dt.date) -> Session | None:
        if not self.is_trading_day(day):
            return None
        o, c = self.special.get(day, (self.open, self.close))
        return Session(
            day,
            dt.datetime.combine(day, o, self.tz),
            dt.datetime.combine(day, c, self.tz),
            special=day in self.special,
        )

    def day_bounds(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """The calendar day [00:00, next 00:00) in the calendar's timezone."""
        start = dt.datetime.combine(day, dt.time(0, 0), self.tz)
        return start, dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 0), self.tz)

    def expected_bars(self, day: dt.date) -> int:
        s = self.session(day)
        return s.minutes if s else 0

    def previous_trading_day(self, day: dt.date) -> dt.date:
        d = day - dt.timedelta(days=1)
        for _ in range(30):
            if self.is_trading_day(d):
                return d
            d -= dt.timedelta(days=1)
        raise UserError(f"no trading day in the 30 days before {day}")


def parse_date(value: str, cal: TradingCalendar | None = None, what: str = "date") -> dt.date:
    """YYYY-MM-DD (or today/yesterday in the calendar's timezone) -> date; BadDate otherwise."""
    v = value.strip()
    if cal is not None and v in ("today", "yesterday"):
        d = cal.today()
        return d if v == "today" else d - dt.timedelta(days=1)
    try:
        if len(v) != 10:
            raise ValueError
        return dt.date.fromisoformat(v)
    except ValueError:
        raise BadDate(f"{what} {value!r}: expected YYYY-MM-DD") from None


@click.group("calendar")
def calendar_group() -> None:
    """Trading calendar: trading days, sessions, expected bars."""


@calendar_group.command("is-trading-day")
@click.argument("date")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing; only the exit code.")
@click.pass_obj
def is_trading_day_cmd(obj, date: str, quiet: bool) -> None:
    """Exit 0 if DATE (YYYY-MM-DD, today, yesterday) is a trading day, 1 if not, 2 if bad."""
    cal = TradingCalendar.from_config(obj.cfg)
    day = parse_date(date, cal)
    why = cal.why_not(day)
    if not quiet:
        click.echo(f"{day}: trading day" if not why else f"{day}: not a trading day ({why})")
    sys.exit(1 if why else 0)


@calendar_group.command("session")
@click.argument("date")
@click.pass_obj
def session_cmd(obj, date: str) -> None:
    """Print DATE's session and expected bars per symbol; exit 1 if not a trading day."""
    cal = TradingCalendar.from_config(obj.cfg)
    day = parse_date(date, cal)
    s = cal.session(day)
    if s is None:
        click.echo(f"{day}: not a trading day ({cal.why_not(day)})")
        sys.exit(1)
    kind = "special session" if s.special else "regular session"
    click.echo(
        f"{day}: {kind} {s.open:%H:%M}-{s.close:%H:%M} {cal.tz.key}, "
        f"{s.minutes} bars per symbol ({s.open:%H:%M} ... "
        f"{s.close - dt.timedelta(minutes=1):%H:%M})"
    )


@calendar_group.command("previous")
@click.argument("date", default="today")
@click.pass_obj
def previous_cmd(obj, date: str) -> None:
    """Print the last trading day before DATE (default today)."""
    cal = TradingCalendar.from_config(obj.cfg)
    click.echo(cal.previous_trading_day(parse_date(date, cal)).isoformat())
