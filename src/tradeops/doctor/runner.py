"""Run checks: all start at once, each bounded by its own timeout; never a traceback.

Every check family is a :class:`Check` (``checks/*.py``); its function gets a
:class:`CheckContext` (the config, its deadline) and returns its results. Each check runs
in its own daemon thread. The runner waits for each one until its deadline plus a short
grace; a check that is still running then becomes one UNKNOWN result ("did not finish
within 3.0s") and is abandoned (a daemon thread does not keep the process alive). A check
that raises becomes an UNKNOWN result carrying the exception's one-line message. The
whole run therefore takes at most the largest timeout plus the grace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..config import Config
from ..errors import UserError
from .result import Result, Status, one_line, unknown

GRACE_S = 0.3


@dataclass
class CheckContext:
    cfg: Config
    timeout: float
    started: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float:
        return self.started + self.timeout

    def left(self, reserve: float = 0.0) -> float:
        """Seconds left before the deadline, minus ``reserve`` (at least 0.05)."""
        return max(0.05, self.deadline - time.monotonic() - reserve)


@dataclass
class Check:
    family: str  # "kafka", "postgres", ... (what --only names)
    fn: Callable[[CheckContext], Sequence[Result] | Result]
    description: str
    enabled: Callable[[Config], bool] = lambda cfg: True
    # other result-name prefixes this family produces ("recon" from postgres), for --only
    aliases: tuple[str, ...] = ()


def timeout_for(cfg: Config, family: str) -> float:
    return float(cfg.doctor.timeouts.get(family, cfg.doctor.check_timeout_s))


def select(checks: Sequence[Check], only: Iterable[str]) -> tuple[list[Check], Callable[[Result], bool]]:
    """Checks to run for ``--only NAME...`` and a filter for their results.

    NAME is a family (``kafka``) or a result name (``kafka.topics``, ``exporter:pairs``)
    or a prefix of one up to a ``.`` or ``:``. An unknown NAME is a user error (exit 3).
    """
    only = [n.strip() for n in only if n.strip()]
    if not only:
        return list(checks), lambda r: True
    families = {c.family: c.family for c in checks}
    families |= {a: c.family for c in checks for a in c.aliases}
    chosen: set[str] = set()
    for n in only:
        head = n.split(".", 1)[0].split(":", 1)[0]
        if head not in families:
            raise UserError(f"--only {n}: unknown check; known: {', '.join(sorted(families))}",
                            exit_code=3)
        chosen.add(families[head])

    def keep(r: Result) -> bool:
        return any(r.family == n or r.name == n or r.name.startswith((n + ".", n + ":"))
                   for n in only)

    return [c for c in checks if c.family in chosen], keep


class Runner:
    """Runs a set of checks; reusable (the TUI runs it again on every refresh)."""

    def __init__(self, cfg: Config, checks: Sequence[Check], grace_s: float = GRACE_S):
        self.cfg = cfg
        self.checks = [c for c in checks if c.enabled(cfg)]
        self.grace_s = grace_s

    def run(self) -> list[Result]:
        started = time.monotonic()
        slots: list[list[Result] | None] = [None] * len(self.checks)
        done = [threading.Event() for _ in self.checks]
        ctxs = [CheckContext(self.cfg, timeout_for(self.cfg, c.family), started) for c in self.checks]
        for i, check in enumerate(self.checks):
            t = threading.Thread(target=self._one, args=(check, ctxs[i], slots, i, done[i]),
                                 name=f"doctor-{check.family}", daemon=True)
            t.start()
        out: list[Result] = []
        for i, check in enumerate(self.checks):
            limit = ctxs[i].deadline + self.grace_s
            done[i].wait(max(0.0, limit - time.monotonic()))
            res = slots[i]
            if res is None:
                res = [unknown(check.family, f"check did not finish within {ctxs[i].timeout:.1f}s",
                               f"run `tradeops doctor --check --only {check.family}` again; if it "
                               "keeps timing out, the component it asks is hanging",
                               family=check.family, duration_s=time.monotonic() - started)]
            out.extend(res)
        return out

    @staticmethod
    def _one(check: Check, ctx: CheckContext, slots: list, i: int, done: threading.Event) -> None:
        t0 = time.monotonic()
        try:
            got = check.fn(ctx)
            results = [got] if isinstance(got, Result) else list(got)
        except UserError as e:
            results = [unknown(check.family, str(e), family=check.family)]
        except Exception as e:  # noqa: BLE001 - a crashing check is a result, never a traceback
            results = [unknown(check.family, f"check failed: {one_line(e)}",
                               "a doctor bug or an unexpected answer from the component; "
                               f"run `tradeops doctor --check --only {check.family} --json`",
                               family=check.family)]
        took = time.monotonic() - t0
        for r in results:
            r.family = r.family or check.family
            r.duration_s = took
        slots[i] = results
        done.set()


def exit_code(results: Iterable[Result]) -> int:
    from .result import overall

    return int(overall(r.status for r in results))


def all_checks() -> list[Check]:
    from .checks import registry

    return registry()


def run_all(cfg: Config, only: Iterable[str] = ()) -> list[Result]:
    only = list(only)
    checks, keep = select(all_checks(), only)
    results = [r for r in Runner(cfg, checks).run() if keep(r)]
    if only:  # asked for by name but switched off in the config: say so
        results += [unknown(c.family, f"not configured: {c.description}",
                            "see [doctor] in the config (docs/operations.md, Doctor)", family=c.family)
                    for c in checks if not c.enabled(cfg)]
    return results


__all__ = ["Check", "CheckContext", "Runner", "Status", "exit_code", "run_all", "select"]
