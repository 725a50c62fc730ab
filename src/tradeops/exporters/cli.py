"""`tradeops exporter <name>` and the `tradeops-exporter-<name>` console scripts.

Each exporter's module is imported only when its command runs; each has ``run(cfg)``.
"""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import UserError

EXPORTERS: dict[str, str] = {
    "gateway-oms": "tradeops.exporters.gateway_oms:run",
    "oms-lifecycle": "tradeops.exporters.oms_lifecycle:run",
    "risk-drawdown": "tradeops.exporters.risk_drawdown:run",
    "pairs": "tradeops.exporters.pairs:run",
}


def _run(name: str, cfg) -> None:
    module, _, attr = EXPORTERS[name].partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise UserError(f"exporter {name!r} is not available in this build") from None
    fn(cfg)


@click.group("exporter")
def exporter_group() -> None:
    """Run one Prometheus exporter (listen address from the config)."""


def _make(name: str, help_text: str) -> click.Command:
    @exporter_group.command(name, help=help_text)
    @click.pass_obj
    def cmd(obj) -> None:
        _run(name, obj.cfg)

    return cmd


_make("gateway-oms", "Gateway/OMS health, heartbeats and Kafka consumer lag (port 9811).")
_make("oms-lifecycle", "Order lifecycle state transitions from oms.order_events (port 9812).")
_make("risk-drawdown", "Drawdown and exposure per risk bucket (port 9813).")
_make("pairs", "Pairs spread z-scores and hedge ratios (port 9814).")


def _console(name: str) -> None:
    """Entry point of `tradeops-exporter-<name>`: takes the top-level options of `tradeops`
    (``--config FILE``, ``--log-level``) and runs `tradeops [options] exporter <name>`."""
    from ..cli import main

    main([*sys.argv[1:], "exporter", name])


def gateway_oms_main() -> None:
    _console("gateway-oms")


def oms_lifecycle_main() -> None:
    _console("oms-lifecycle")


def risk_drawdown_main() -> None:
    _console("risk-drawdown")


def pairs_main() -> None:
    _console("pairs")
