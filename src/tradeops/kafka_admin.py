"""Kafka client settings from config, and `tradeops kafka ensure-topics`."""

from __future__ import annotations

import click
import msgspec
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from .config import Config, read_secret
from .errors import UserError


def client_conf(cfg: Config, **extra) -> dict:
    """librdkafka settings shared by every consumer, producer and admin client."""
    k = cfg.kafka
    conf = {
        "bootstrap.servers": k.bootstrap_servers,
        "client.id": k.client_id,
        "security.protocol": k.security_protocol,
        "socket.timeout.ms": int(k.request_timeout_s * 1000),
        # keep librdkafka's own log lines (broker down, ...) short and rate-limited
        "log.connection.close": False,
    }
    if k.security_protocol.startswith("SASL"):
        conf["sasl.mechanism"] = k.sasl_mechanism
        conf["sasl.username"] = k.sasl_username
        conf["sasl.password"] = read_secret(cfg, "[kafka].sasl_password_file", k.sasl_password_file)
    conf.update(extra)
    return conf


def topic_names(cfg: Config) -> dict[str, str]:
    """Contract topic key -> configured name (excludes the `partitions` setting)."""
    data = msgspec.to_builtins(cfg.topics)
    data.pop("partitions", None)
    return data


def ensure_topics(cfg: Config, partitions: int | None = None, timeout: float = 15.0) -> list[str]:
    """Create the contract's topics that do not exist yet; return the names created."""
    admin = AdminClient(client_conf(cfg))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as e:
        raise UserError(f"Kafka {cfg.kafka.bootstrap_servers}: not reachable: {e.args[0].str()}") from None
    n = partitions or cfg.topics.partitions
    todo = [t for t in topic_names(cfg).values() if t not in existing]
    if not todo:
        return []
    futures = admin.create_topics([NewTopic(t, num_partitions=n, replication_factor=1) for t in todo])
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as e:
            err = e.args[0]
            if err.name() != "TOPIC_ALREADY_EXISTS":
                raise UserError(f"Kafka: cannot create topic {name}: {err.str()}") from None
    return created


@click.group("kafka")
def kafka_group() -> None:
    """Kafka topics of the contract."""


@kafka_group.command("ensure-topics")
@click.option("--partitions", type=click.IntRange(1, 1000), default=None)
@click.pass_obj
def ensure_topics_cmd(obj, partitions: int | None) -> None:
    """Create missing contract topics (idempotent)."""
    created = ensure_topics(obj.cfg, partitions)
    click.echo("created: " + ", ".join(created) if created else "topics: all present")
