"""`tradeops doctor --check [--json] [--only NAME...]`; `tradeops doctor` runs the TUI.

Exit codes of --check (Nagios plugin): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; a config
that cannot be loaded, or an unknown --only name, is also 3 (one line on stderr).
"""

from __future__ import annotations

import sys
import time

import click


@click.command("doctor")
@click.option("--check", "check", is_flag=True, help="Run every check once, print, exit 0/1/2/3 (Nagios).")
@click.option("--json", "as_json", is_flag=True, help="With --check: print JSON for automation.")
@click.option("--only", "only", multiple=True, metavar="NAME",
              help="Only these checks (family like kafka, or a result like kafka.topics); repeatable.")
@click.option("--list", "list_", is_flag=True, help="List the check families and exit.")
@click.pass_obj
def doctor_command(obj, check: bool, as_json: bool, only: tuple[str, ...], list_: bool) -> None:
    """Say what is wrong with the stack and what to do; without --check: the TUI."""
    from ..config import ConfigError
    from ..errors import UserError
    from . import report
    from .runner import all_checks, exit_code, run_all

    try:
        cfg = obj.cfg
    except ConfigError as e:  # a plugin that cannot run is UNKNOWN (3) for Nagios, not CRITICAL
        raise UserError(str(e), exit_code=3) from None
    if list_:
        for c in all_checks():
            on = "on " if c.enabled(cfg) else "off"
            click.echo(f"{c.family:<12} {on} {c.description}")
        return
    if as_json and not check:
        check = True
    if not check:
        from .tui import run_tui

        run_tui(cfg, only)
        return
    t0 = time.monotonic()
    results = run_all(cfg, only)
    took = time.monotonic() - t0
    if as_json:
        click.echo(report.to_json(results, took))
    else:
        click.echo(report.text(results, took, colour=sys.stdout.isatty()))
    sys.exit(exit_code(results))
