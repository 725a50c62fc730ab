"""pairs exporter speed: 500 pairs updated on every bar (no services needed).

Measured in the same run, pinned to one CPU when possible:

1. anchor: a bare, numpy-free Welford update loop (n += 1; d = x - m; m += d / n;
   M2 += d * (x - m)) over as many values as there are bar updates;
2. engine: PairsEngine.update, one vectorised call per minute for all 500 pairs (each
   pair update consumes two bars: leg a and leg b) -> bar updates/s and cost per bar
   update as a ratio to 1.;
3. full path without Kafka: PairsState.on_bar for every bar (alignment, late/duplicate
   checks) plus one flush per minute -> bars/s and ratio to 1.

Targets (issue 4): >= 200,000 bar updates/s; per-update cost within 3x of the Welford
loop. Usage:

    .venv/bin/python bench/bench_pairs.py [--pairs 500] [--minutes 750] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import numpy as np

from tradeops.config import PairConfig
from tradeops.exporters.pairs import PairsState
from tradeops.exporters.pairs_math import PairsEngine

HEDGES = ["rolling_ols", "rolling_ols", "kalman", "static"]


def series(pairs: int, minutes: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    lb = np.log(rng.uniform(100, 3000, pairs))[:, None] + np.cumsum(
        rng.normal(0, 1e-3, (pairs, minutes)), axis=1)
    la = 0.8 * lb + 1.0 + rng.normal(0, 5e-4, (pairs, minutes))
    return np.exp(la), np.exp(lb)


def welford(values: list[float]) -> float:
    t0 = time.perf_counter()
    n, m, m2 = 0, 0.0, 0.0
    for x in values:
        n += 1  # noqa: SIM113 - the anchor is this exact loop
        d = x - m
        m += d / n
        m2 += d * (x - m)
    return time.perf_counter() - t0


def bench_engine(a, b, windows, hedges) -> float:
    eng = PairsEngine(windows, hedges, static_beta=[1.0] * len(windows))
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    t0 = time.perf_counter()
    for t in range(a.shape[1]):
        eng.update(None, at[t], bt[t])  # every pair, in order: the exporter's fast path
    return time.perf_counter() - t0


def bench_full(a, b, pairs_cfg) -> float:
    st = PairsState(pairs_cfg)
    legs = [(p.leg_a, p.leg_b) for p in pairs_cfg]
    al, bl = a.T.tolist(), b.T.tolist()
    t0 = time.perf_counter()
    on_bar = st.on_bar
    for t in range(a.shape[1]):
        ts = 1_700_000_000 + 60 * t
        ra, rb = al[t], bl[t]
        for i, (sa, sb) in enumerate(legs):
            on_bar(sa, ts, ra[i])
            on_bar(sb, ts, rb[i])
        st.flush()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--minutes", type=int, default=750)
    ap.add_argument("--window", type=int, default=120)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    P, M = args.pairs, args.minutes
    a, b = series(P, M)
    windows = [args.window] * P
    hedges = [HEDGES[i % 4] for i in range(P)]
    cfgs = [PairConfig(name=f"P{i}", leg_a=f"NSE:A{i}", leg_b=f"NSE:B{i}", hedge=hedges[i],
                       window=args.window, beta=1.0) for i in range(P)]
    bar_updates = 2 * P * M
    values = np.random.default_rng(2).normal(size=bar_updates).tolist()
    best = {"welford": 1e9, "engine": 1e9, "full": 1e9}
    for _ in range(args.runs):
        best["welford"] = min(best["welford"], welford(values))
        best["engine"] = min(best["engine"], bench_engine(a, b, windows, hedges))
        best["full"] = min(best["full"], bench_full(a, b, cfgs))
    w_ns = best["welford"] / bar_updates * 1e9
    print(f"pairs={P} minutes={M} window={args.window} bar updates={bar_updates:,} "
          f"(best of {args.runs})")
    print(f"anchor  bare Welford loop        {w_ns:8.1f} ns/value  "
          f"{bar_updates / best['welford']:12,.0f} values/s")
    for k, label in (("engine", "engine (vectorised update)"),
                     ("full", "full path on_bar + flush")):
        ns = best[k] / bar_updates * 1e9
        print(f"{k:7s} {label:26s} {ns:8.1f} ns/bar     {bar_updates / best[k]:12,.0f} bar "
              f"updates/s   ratio to anchor {ns / w_ns:5.2f}x")


if __name__ == "__main__":
    main()
