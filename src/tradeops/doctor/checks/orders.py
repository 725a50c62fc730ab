"""Stuck orders from the oms-lifecycle exporter's ``/orders/stuck`` (``tradeops oms orders``).

Enabled when ``[doctor].exporters`` names ``oms-lifecycle``. Any stuck order is WARN;
one stuck for more than 10x its status threshold is CRIT (an order the broker may have
executed while the OMS does not know). The exporter being down is UNKNOWN here (its own
``exporter:oms-lifecycle`` result is CRIT).
"""

from __future__ import annotations

from ...errors import UserError
from ...exporters.oms_cli import fetch_orders
from ..result import Result, age_text, crit, ok, unknown, warn
from ..runner import Check, CheckContext


def judge(cfg, orders: list[dict]) -> Result:
    name = "oms.stuck_orders"
    if not orders:
        return ok(name, "no stuck order")
    limits = cfg.oms_lifecycle.stuck_after_s
    oldest = max(orders, key=lambda o: float(o.get("age_s", 0)))
    by_status: dict[str, int] = {}
    for o in orders:
        by_status[o["status"]] = by_status.get(o["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
    finding = (f"{len(orders)} stuck ({summary}); oldest {oldest['order_id']} {oldest['symbol']} "
               f"{oldest['status']} for {age_text(float(oldest['age_s']))}")
    advice = ("look at them with `tradeops oms orders --stuck`; check the gateway and the OMS "
              "(`tradeops doctor --only kafka`) and the broker's order book for these order ids")
    details = {"orders": orders[:50]}
    very = [o for o in orders if float(o["age_s"]) > 10 * limits.get(o["status"], 60.0)]
    if very:
        return crit(name, finding, advice, details=details)
    return warn(name, finding, advice, details=details)


def run(ctx: CheckContext) -> Result:
    url = ctx.cfg.doctor.exporters["oms-lifecycle"]
    try:
        orders = fetch_orders(url, stuck=True, timeout=ctx.left(0.1))
    except UserError as e:
        return unknown("oms.stuck_orders", f"cannot tell: {e}", "see the exporter:oms-lifecycle result")
    return judge(ctx.cfg, orders)


CHECKS = [Check("oms", run, "stuck orders from the oms-lifecycle exporter",
                lambda cfg: "oms-lifecycle" in cfg.doctor.exporters)]
