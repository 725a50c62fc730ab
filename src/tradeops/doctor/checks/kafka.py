"""Kafka: metadata within the timeout, required topics, consumer-group lag and status.

- ``kafka``: one metadata request (``list_topics``) bounded by the check's timeout; a broker
  that does not answer makes every Kafka result CRIT within that timeout.
- ``kafka.topics``: every contract topic of ``[topics]`` exists.
- ``kafka.lag:GROUP`` for ``[doctor].lag_groups`` (default ``[gateway_oms].lag_groups``):
  lag in messages and seconds from one snapshot through the exporters' lag code
  (:class:`~tradeops.exporters.kafka_lag.IsolatedLagReader`: the admin calls run in a child
  process because librdkafka can abort the process when the coordinator connection drops,
  and :class:`RecordTimestamps`). The Burrow-style status needs a window of observations:
  it is read from the gateway-oms exporter's ``kafka_consumergroup_status`` (which keeps
  that window) when the group is one of its ``lag_groups``; the doctor does not evaluate a
  second window of its own. A group with lag and no active member is CRIT (nobody consumes).
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from ...exporters.kafka_lag import IsolatedLagReader, RecordTimestamps, lag_seconds, partition_lag
from ...kafka_admin import client_conf, topic_names
from ..http import HttpError, get
from ..result import Result, age_text, crit, ok, one_line, warn
from ..runner import Check, CheckContext

# how long the lag status may wait for the gateway-oms exporter's /metrics
STATUS_BUDGET_S = 0.5
STATUS_WORDS = {"STALL": "STALLED", "STOP": "STOPPED", "REWIND": "REWOUND (offset went back)",
                "WARN": "falling behind"}
_STATUS_RE = re.compile(
    r'^kafka_consumergroup_status\{consumergroup="([^"]*)",status="([A-Z]+)"\} (\S+)$', re.M)


def lag_groups(cfg) -> list[str]:
    return list(cfg.doctor.lag_groups or cfg.gateway_oms.lag_groups)


def exporter_statuses(cfg, timeout: float) -> tuple[dict[str, str], str]:
    """group -> status from the gateway-oms exporter's /metrics; ({}, why) when unavailable."""
    base = cfg.doctor.exporters.get("gateway-oms") or f"http://{cfg.gateway_oms.listen}"
    try:
        _, body = get(base.rstrip("/") + "/metrics", timeout)
    except HttpError as e:
        return {}, str(e)
    out = {}
    for g, st, v in _STATUS_RE.findall(body.decode("utf-8", "replace")):
        if float(v) == 1.0:
            out[g] = st
    return out, ""


def owner_hint(cfg, group: str) -> str:
    unit = cfg.doctor.group_units.get(group)
    if unit:
        return f"check the process behind {unit}, `journalctl -u {unit} -n 100`"
    if any(p.name == group for p in cfg.supervisor.programs):
        return f"check the {group} process, `tradeops supervise status` and its log"
    return (f"check the process consuming as group {group} and its log "
            f"(name its unit in [doctor].group_units to see it here)")


def judge_group(cfg, snap, ts: dict, status: str | None, now: float) -> Result:
    g = snap.group
    name = f"kafka.lag:{g}"
    if not snap.committed:
        return warn(name, "no committed offsets (group never consumed, or was deleted)",
                    f"start the consumer of group {g}, or remove it from the lag groups")
    parts = []
    for (t, p), off in snap.committed.items():
        n = partition_lag(snap.high[(t, p)], off) or 0
        parts.append((t, p, n, lag_seconds(n, ts.get((t, p, off)), now)))
    total = sum(n for _, _, n, _ in parts)
    worst = max(parts, key=lambda x: ((x[3] or 0.0), x[2]))
    t, p, n, secs = worst
    age = age_text(secs) if secs is not None else "?"
    details = {"lag_messages": total, "members": snap.members, "active": snap.active,
               "status": status, "worst": {"topic": t, "partition": p, "lag": n, "lag_seconds": secs},
               "partitions": [{"topic": a, "partition": b, "lag": c, "lag_seconds": d}
                              for a, b, c, d in sorted(parts)]}
    finding = (f"lag {total} messages, oldest unconsumed {age} ({t}[{p}]), "
               f"{snap.members} members, status {status or 'n/a'}")
    hint = owner_hint(cfg, g)
    if total > 0 and not snap.active:
        return crit(name, finding, f"consumer group {g} has no active member and lag on {t}[{p}] "
                    f"for {age}: {hint}", details=details)
    if status in ("STALL", "STOP", "REWIND"):
        return crit(name, finding, f"consumer group {g} is {STATUS_WORDS[status]} on {t}[{p}] for {age}: "
                    f"{hint}", details=details)
    d = cfg.doctor
    if secs is not None and secs > d.lag_crit_s:
        return crit(name, finding, f"consumer group {g} is {age} behind on {t}[{p}] "
                    f"(> {d.lag_crit_s:.0f}s): {hint}", details=details)
    if status == "WARN" or (secs is not None and secs > d.lag_warn_s):
        return warn(name, finding, f"consumer group {g} is falling behind on {t}[{p}] ({age}): {hint}",
                    details=details)
    return ok(name, finding, details=details)


def run(ctx: CheckContext) -> list[Result]:
    cfg = ctx.cfg
    bs = cfg.kafka.bootstrap_servers
    conf = client_conf(cfg)
    groups = lag_groups(cfg)
    wanted = topic_names(cfg)
    t0 = time.monotonic()
    try:
        md = AdminClient({**conf, "log_level": 2}).list_topics(timeout=ctx.left(0.15))
        if not md.brokers:
            raise KafkaException("no broker in the metadata")
    except KafkaException as e:
        err = e.args[0]
        why = err.str() if hasattr(err, "str") else str(err)
        advice = (f"Kafka at {bs} is down or unreachable: `systemctl status kafka` "
                  "(dev: `scripts/stack.sh status`), its log, and the network/listeners")
        out = [crit("kafka", f"no metadata from {bs} within {time.monotonic() - t0:.1f}s: {why}", advice)]
        out.append(crit("kafka.topics", "not checked: broker unreachable", advice))
        out += [crit(f"kafka.lag:{g}", "not checked: broker unreachable", advice) for g in groups]
        return out
    out = [ok("kafka", f"{len(md.brokers)} broker(s) at {bs}, {len(md.topics)} topics, "
                       f"metadata in {(time.monotonic() - t0) * 1000:.0f} ms",
              details={"brokers": len(md.brokers), "topics": len(md.topics)})]
    missing = [f"{k}={v}" for k, v in wanted.items() if v not in md.topics]
    if missing:
        out.append(crit("kafka.topics", f"missing topics: {', '.join(missing)}",
                        "create them: `tradeops kafka ensure-topics` (or check [topics] names)",
                        details={"missing": missing}))
    else:
        out.append(ok("kafka.topics", f"all {len(wanted)} contract topics exist",
                      details={"topics": list(wanted.values())}))
    if groups:
        out += _lag(ctx, conf, groups)
    return out


def _lag(ctx: CheckContext, conf: dict, groups: list[str]) -> list[Result]:
    cfg = ctx.cfg
    pool = ThreadPoolExecutor(max_workers=1)
    # the exporter's /metrics runs its own lag scrape (up to its scrape budget): ask it
    # while the doctor reads the offsets, and do not wait for it beyond STATUS_BUDGET_S
    statuses_f = (pool.submit(exporter_statuses, cfg, min(STATUS_BUDGET_S, ctx.left(0.1)))
                  if set(groups) & set(cfg.gateway_oms.lag_groups) else None)
    pool.shutdown(wait=False)
    reader = IsolatedLagReader(conf)
    try:
        snaps = reader.snapshot(groups, time.monotonic() + ctx.left(0.3))
    except Exception as e:  # noqa: BLE001 - the lag worker reports broker errors as exceptions
        return [crit(f"kafka.lag:{g}", f"lag not read: {one_line(e)}",
                     "the broker answered metadata but not group offsets: check the group "
                     "coordinator in the broker log") for g in groups]
    finally:
        reader.close()
    now = time.time()
    wanted = [(t, p, off) for s in snaps for (t, p), off in s.committed.items()
              if (partition_lag(s.high[(t, p)], off) or 0) > 0]
    ts: dict = {}
    if wanted:
        rt = RecordTimestamps(conf)
        try:
            ts = rt.get(wanted, time.monotonic() + ctx.left(0.25))
        finally:
            rt.close()
    statuses, why = {}, ""
    if statuses_f is not None:
        try:
            statuses, why = statuses_f.result(timeout=max(0.0, min(STATUS_BUDGET_S, ctx.left(0.05))))
        except FutureTimeout:
            why = f"gateway-oms exporter /metrics slower than {STATUS_BUDGET_S}s"
    out = []
    for s in snaps:
        r = judge_group(cfg, s, ts, statuses.get(s.group), now)
        if why and s.group in cfg.gateway_oms.lag_groups:
            r.details["status_unavailable"] = why
        out.append(r)
    return out


CHECKS = [Check("kafka", run, "Kafka metadata, contract topics, consumer-group lag and status")]
