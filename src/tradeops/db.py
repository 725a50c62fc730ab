"""PostgreSQL access: connection from config (password from a file) and migrations.

Migrations are the numbered SQL files in ``tradeops/migrations``; table names in braces
are the configured names, formatted through ``psycopg.sql.Identifier``. Each file is
applied once, in its own transaction, under an advisory lock, and recorded with its
checksum in ``tradeops_migrations``; applying twice is a no-op.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import msgspec
import psycopg
from psycopg import sql

from .config import Config, read_secret
from .errors import UserError

MIGRATIONS_TABLE = "tradeops_migrations"
_LOCK_KEY = 0x7261646570730001  # fixed advisory lock id for migrations


class DatabaseError(UserError):
    """One-line, user-facing database error (exit code 2)."""


def connect_kwargs(cfg: Config) -> dict:
    pg = cfg.postgres
    kw = {
        "host": pg.host,
        "port": pg.port,
        "dbname": pg.dbname,
        "user": pg.user,
        "sslmode": pg.sslmode,
        "connect_timeout": max(1, int(pg.connect_timeout_s)),
        "application_name": "tradeops",
        "options": f"-c search_path={pg.schema}",
    }
    password = read_secret(cfg, "[postgres].password_file", pg.password_file)
    if password:
        kw["password"] = password
    return kw


def connect(cfg: Config, autocommit: bool = False, **extra) -> psycopg.Connection:
    kw = connect_kwargs(cfg) | extra
    try:
        return psycopg.connect(autocommit=autocommit, **kw)
    except psycopg.OperationalError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatabaseError(
            f"PostgreSQL {cfg.postgres.host}:{cfg.postgres.port}/{cfg.postgres.dbname}: {first}"
        ) from None


def table_identifiers(cfg: Config) -> dict[str, sql.Identifier]:
    return {k: sql.Identifier(v) for k, v in msgspec.to_builtins(cfg.tables).items()}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def migrations() -> list[Migration]:
    out = []
    for f in resources.files("tradeops.migrations").iterdir():
        if f.name.endswith(".sql"):
            out.append(Migration(int(f.name.split("_", 1)[0]), f.name, f.read_text("utf-8")))
    return sorted(out, key=lambda m: m.version)


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    exists = conn.execute("SELECT to_regclass(%s)", (MIGRATIONS_TABLE,)).fetchone()[0]
    if exists is None:
        return {}
    return dict(conn.execute(f"SELECT version, checksum FROM {MIGRATIONS_TABLE}").fetchall())  # noqa: S608


def migrate(conn: psycopg.Connection, cfg: Config) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    ids = table_identifiers(cfg)
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(cfg.postgres.schema))
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
            "version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = applied_versions(conn)
        for m in migrations():
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise DatabaseError(
                        f"migration {m.name} was changed after it was applied "
                        "(add a new migration instead)"
                    )
                continue
            conn.execute(sql.SQL(m.text).format(**ids))
            conn.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum) VALUES (%s, %s, %s)",  # noqa: S608
                (m.version, m.name, m.checksum),
            )
            applied.append(m.name)
    return applied


def pending(conn: psycopg.Connection) -> list[str]:
    done = applied_versions(conn)
    return [m.name for m in migrations() if m.version not in done]
