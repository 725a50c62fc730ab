"""`tradeops oms orders [--stuck] [--url URL ...] [--json]`: orders from the oms-lifecycle
exporter's `/orders` endpoint (for operators and for the doctor).

Several ``--url`` (one per instance of a scaled-out exporter) are merged: each instance
reports only the partitions it owns, so together they list every order once.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import click

from ..errors import UserError


def fetch_orders(url: str, stuck: bool, timeout: float = 5.0) -> list[dict]:
    """The orders of one exporter instance; UserError naming the URL when unreachable."""
    endpoint = url.rstrip("/") + ("/orders/stuck" if stuck else "/orders")
    where = f"oms-lifecycle exporter at {url}"
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout) as resp:  # noqa: S310 - http(s) URL from config/flag
            body = resp.read()
    except urllib.error.HTTPError as e:
        raise UserError(f"{where}: {endpoint} answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"{where}: not reachable: {reason}") from None
    try:
        data = json.loads(body)
        orders = data["orders"]
        if not isinstance(orders, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{where}: {endpoint} did not return the orders JSON") from None
    return orders


def _default_url(obj) -> str:
    return "http://" + obj.cfg.oms_lifecycle.listen


@click.group("oms")
def oms_group() -> None:
    """OMS orders as the oms-lifecycle exporter sees them."""


@oms_group.command("orders")
@click.option("--stuck", is_flag=True, help="Only orders in a status longer than its threshold.")
@click.option("--url", "urls", multiple=True, metavar="URL",
              help="Exporter base URL (repeatable; default from [oms_lifecycle].listen).")
@click.option("--json", "as_json", is_flag=True, help="Print the orders as a JSON list.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=5.0, show_default=True,
              help="HTTP timeout per exporter (seconds).")
@click.pass_obj
def orders_cmd(obj, stuck: bool, urls: tuple[str, ...], as_json: bool, timeout: float) -> None:
    """List non-terminal (or only stuck) orders: id, strategy, symbol, status, age."""
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise UserError(f"--url {u}: expected an http:// or https:// URL")
    orders: list[dict] = []
    for u in urls or (_default_url(obj),):
        orders.extend(fetch_orders(u, stuck, timeout))
    orders.sort(key=lambda o: -float(o.get("age_s", 0)))
    if as_json:
        click.echo(json.dumps(orders, indent=2))
        return
    if not orders:
        click.echo("no stuck orders" if stuck else "no open orders")
        return
    rows = [(str(o["order_id"]), str(o["strategy"]), str(o["symbol"]), str(o["status"]),
             f"{float(o['age_s']):.1f}") for o in orders]
    head = ("ORDER_ID", "STRATEGY", "SYMBOL", "STATUS", "AGE_S")
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(5)]
    for r in (head, *rows):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
