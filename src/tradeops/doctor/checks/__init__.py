"""Check families, one module each; :func:`registry` lists them in report order."""

from __future__ import annotations

from ..runner import Check


def registry() -> list[Check]:
    from . import disk, exporters, kafka, orders, postgres, prometheus, supervisor, supervisord, systemd

    return [
        *systemd.CHECKS,
        *supervisord.CHECKS,
        *supervisor.CHECKS,
        *kafka.CHECKS,
        *postgres.CHECKS,
        *exporters.CHECKS,
        *prometheus.CHECKS,
        *orders.CHECKS,
        *disk.CHECKS,
    ]
