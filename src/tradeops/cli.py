"""The `tradeops` command: a click group whose subcommands load lazily from their modules.

Each subcommand lives in the module named after what it does (the map below), so the
command starts fast and a module that fails to import breaks only its own subcommand.
User errors (:class:`tradeops.errors.UserError`) end with one line and their exit code.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from . import __version__
from .config import Config, default_config_path, load, redacted, to_toml
from .errors import UserError

# subcommand -> "module:attribute"
SUBCOMMANDS: dict[str, str] = {
    "config": "tradeops.cli:config_group",
    "db": "tradeops.cli:db_group",
    "kafka": "tradeops.kafka_admin:kafka_group",
    "sim": "tradeops.sim.cli:sim_group",
    "exporter": "tradeops.exporters.cli:exporter_group",
    "oms": "tradeops.exporters.oms_cli:oms_group",
    "recon": "tradeops.recon.cli:recon_group",
    "calendar": "tradeops.calendar:calendar_group",
    "supervise": "tradeops.supervisor.cli:supervise_group",
    "doctor": "tradeops.doctor.cli:doctor_command",
}


class Context:
    """Carried in click's ctx.obj: loads the config once, on first use."""

    def __init__(self, config_path: str | None):
        self.config_path = default_config_path(config_path)
        self._cfg: Config | None = None

    @property
    def cfg(self) -> Config:
        if self._cfg is None:
            self._cfg = load(self.config_path)
        return self._cfg


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            if not (isinstance(e, ModuleNotFoundError) and e.name and e.name.startswith("tradeops")):
                raise

            @click.command(cmd_name, help=f"(not available in this build: {e})")
            def unavailable() -> None:
                raise UserError(f"'{cmd_name}' is not available in this build")

            return unavailable


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tradeops")
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    help=f"Config file (default ${'{'}TRADEOPS_CONFIG{'}'} or /etc/tradeops/tradeops.toml).",
)
@click.option(
    "--log-level",
    default=lambda: os.environ.get("TRADEOPS_LOG_LEVEL", "INFO"),
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level for daemons and jobs (logs go to stdout).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str) -> None:
    """tradeops: exporters, reconciliation, supervision and doctor for the trading stack."""
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stdout,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = Context(config_path)


@click.group("config")
def config_group() -> None:
    """Validate and show the config file."""


@config_group.command("check")
@click.option("--quiet", "-q", is_flag=True, help="Only validate; print nothing when valid.")
@click.pass_obj
def config_check(obj: Context, quiet: bool) -> None:
    """Validate the config and print the effective config (secrets are never printed)."""
    cfg = obj.cfg
    if not quiet:
        click.echo(f"# {cfg.source}: valid; effective config (secret files named, never read)")
        click.echo(to_toml(redacted(cfg)), nl=False)


@click.group("db")
def db_group() -> None:
    """PostgreSQL schema."""


@db_group.command("migrate")
@click.pass_obj
def db_migrate(obj: Context) -> None:
    """Apply pending SQL migrations (idempotent)."""
    from . import db

    with db.connect(obj.cfg) as conn:
        applied = db.migrate(conn, obj.cfg)
    click.echo("applied: " + ", ".join(applied) if applied else "migrations: up to date")


@db_group.command("status")
@click.pass_obj
def db_status(obj: Context) -> None:
    """List pending migrations; exit 1 when any are pending."""
    from . import db

    with db.connect(obj.cfg) as conn:
        todo = db.pending(conn)
    if todo:
        click.echo("pending: " + ", ".join(todo))
        sys.exit(1)
    click.echo("migrations: up to date")


def main(argv: list[str] | None = None) -> None:
    try:
        rv = cli.main(args=argv, prog_name="tradeops", standalone_mode=False)
    except UserError as e:
        click.echo(f"tradeops: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("tradeops: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
