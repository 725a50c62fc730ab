"""Shared fixtures. Integration tests run against the real local stack on 127.0.0.1
(Kafka from Maven Central jars, the project's own PostgreSQL cluster), started by
`make test` / `make up` through scripts/stack.sh. A missing stack is a failure, not a
skip: CI must never pass by skipping the integration tests.

Isolation, so that tests (and developers) can share one stack:
- `pg_cfg`: a fresh database per test (created, migrated, dropped afterwards);
- `kafka_cfg`: the contract's topics renamed with a unique suffix, created empty;
- `stack_cfg`: both.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import msgspec
import psycopg
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tradeops import config as config_mod
from tradeops import db
from tradeops.kafka_admin import client_conf, topic_names

REPO = Path(__file__).resolve().parents[1]
DEV_CONFIG = REPO / "infra" / "dev" / "tradeops.toml"
replace = msgspec.structs.replace


@pytest.fixture(scope="session")
def base_cfg() -> config_mod.Config:
    return config_mod.load(os.environ.get("TRADEOPS_TEST_CONFIG", str(DEV_CONFIG)))


@pytest.fixture(scope="session")
def kafka_ready(base_cfg):
    admin = AdminClient(client_conf(base_cfg))
    md = admin.list_topics(timeout=10)
    if not md.brokers:
        pytest.fail(f"Kafka not reachable at {base_cfg.kafka.bootstrap_servers}: run `make up`")
    return admin


@pytest.fixture(scope="session")
def pg_ready(base_cfg):
    try:
        with db.connect(base_cfg, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except db.DatabaseError as e:
        pytest.fail(f"{e}: run `make up`")
    return True


def _admin_conn(cfg) -> psycopg.Connection:
    return db.connect(replace(cfg, postgres=replace(cfg.postgres, dbname="postgres")), autocommit=True)


def make_db(cfg) -> config_mod.Config:
    """Create an empty, migrated database; return a config pointing at it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with _admin_conn(cfg) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    new = replace(cfg, postgres=replace(cfg.postgres, dbname=name))
    with db.connect(new) as conn:
        db.migrate(conn, new)
    return new


def drop_db(cfg) -> None:
    with _admin_conn(cfg) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{cfg.postgres.dbname}" WITH (FORCE)')


@pytest.fixture
def pg_cfg(base_cfg, pg_ready):
    cfg = make_db(base_cfg)
    yield cfg
    drop_db(cfg)


def make_topics(cfg, admin: AdminClient, partitions: int = 3) -> config_mod.Config:
    suffix = uuid.uuid4().hex[:8]
    renamed = {k: f"{v}.t{suffix}" for k, v in topic_names(cfg).items()}
    new = replace(cfg, topics=replace(cfg.topics, partitions=partitions, **renamed))
    futs = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in renamed.values()]
    )
    for f in futs.values():
        f.result(15)
    return new


def delete_topics(cfg, admin: AdminClient) -> None:
    futs = admin.delete_topics(list(topic_names(cfg).values()), operation_timeout=10)
    for f in futs.values():
        with contextlib.suppress(Exception):  # best-effort cleanup
            f.result(15)


@pytest.fixture
def kafka_cfg(base_cfg, kafka_ready):
    cfg = make_topics(base_cfg, kafka_ready)
    yield cfg
    delete_topics(cfg, kafka_ready)


@pytest.fixture
def stack_cfg(base_cfg, pg_ready, kafka_ready):
    cfg = make_topics(make_db(base_cfg), kafka_ready)
    yield cfg
    delete_topics(cfg, kafka_ready)
    drop_db(cfg)
