"""Batch-job metrics pushed to the Pushgateway: a separate registry, no instance label.

A recon run pushes (job ``[recon].job``, default ``tradeops_recon``; POST, so that a failed
run does not wipe the last success)::

    # TYPE tradeops_recon_last_completion_timestamp_seconds gauge
    tradeops_recon_last_completion_timestamp_seconds 1.7647e+09
    # TYPE tradeops_recon_last_success_timestamp_seconds gauge      (only when it succeeded)
    tradeops_recon_last_success_timestamp_seconds 1.7647e+09
    # TYPE tradeops_recon_last_exit_code gauge
    tradeops_recon_last_exit_code 1
    # TYPE tradeops_recon_stage_duration_seconds gauge
    tradeops_recon_stage_duration_seconds{stage="fetch"} 1.9
    tradeops_recon_stage_duration_seconds{stage="compare"} 0.8
    # TYPE tradeops_recon_rows_compared gauge
    tradeops_recon_rows_compared{side="internal"} 112500
    tradeops_recon_rows_compared{side="broker"} 112480
    # TYPE tradeops_recon_discrepancies gauge
    tradeops_recon_discrepancies{kind="missing_internal"} 56      (all five kinds, 0 included)

The autoheal pushes under job ``<job>_autoheal`` with the prefix ``tradeops_recon_autoheal_``:
the same timestamps, exit code and stage durations, and ``tradeops_recon_autoheal_rows{outcome}``
(healed, unhealable, still_open, inserted, overwritten, replayed).
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

from ..config import Config
from .compare import KINDS

log = logging.getLogger(__name__)

STAGES = ("fetch", "compare", "report")
HEAL_STAGES = ("plan", "write", "replay", "recompare")
HEAL_OUTCOMES = ("healed", "unhealable", "still_open", "inserted", "overwritten", "replayed")


def build_registry(
    prefix: str,
    *,
    ok: bool,
    exit_code: int,
    stages: dict[str, float],
    stage_names: tuple[str, ...],
    rows: dict[str, int] | None = None,
    counts: dict[str, int] | None = None,
    outcomes: dict[str, int] | None = None,
    now: float | None = None,
) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=True)
    now = time.time() if now is None else now
    Gauge(
        f"{prefix}_last_completion_timestamp_seconds",
        "When the job last finished (any outcome).",
        registry=reg,
    ).set(now)
    if ok:
        Gauge(
            f"{prefix}_last_success_timestamp_seconds",
            "When the job last finished successfully.",
            registry=reg,
        ).set(now)
    Gauge(
        f"{prefix}_last_exit_code", "Exit code of the last run (0 clean, 1 findings, 2 error).", registry=reg
    ).set(exit_code)
    g = Gauge(
        f"{prefix}_stage_duration_seconds",
        "Wall time of each stage of the last run.",
        ["stage"],
        registry=reg,
    )
    for s in stage_names:
        g.labels(s).set(stages.get(s, 0.0))
    if rows is not None:
        r = Gauge(
            f"{prefix}_rows_compared", "Bars compared in the last run, per side.", ["side"], registry=reg
        )
        for side in ("internal", "broker"):
            r.labels(side).set(rows.get(side, 0))
    if counts is not None:
        d = Gauge(
            f"{prefix}_discrepancies",
            "Discrepancies found by the last run, per kind.",
            ["kind"],
            registry=reg,
        )
        for k in KINDS:
            d.labels(k).set(counts.get(k, 0))
    if outcomes is not None:
        o = Gauge(f"{prefix}_rows", "Rows by outcome in the last autoheal run.", ["outcome"], registry=reg)
        for k in HEAL_OUTCOMES:
            o.labels(k).set(outcomes.get(k, 0))
    return reg


def push(cfg: Config, job: str, reg: CollectorRegistry) -> str:
    """Push (POST: replaces only the metric names pushed); returns '' or a warning line."""
    url = cfg.recon.pushgateway_url
    if not url:
        return ""
    try:
        pushadd_to_gateway(url, job=job, registry=reg, timeout=5)
    except OSError as e:  # URLError, connection refused, timeout
        msg = f"warning: Pushgateway {url}: metrics not pushed: {getattr(e, 'reason', e)}"
        log.warning(msg)
        return msg
    return ""


def push_recon(cfg: Config, **kw) -> str:
    return push(cfg, cfg.recon.job, build_registry("tradeops_recon", stage_names=STAGES, **kw))


def push_autoheal(cfg: Config, **kw) -> str:
    return push(
        cfg,
        f"{cfg.recon.job}_autoheal",
        build_registry("tradeops_recon_autoheal", stage_names=HEAL_STAGES, **kw),
    )
