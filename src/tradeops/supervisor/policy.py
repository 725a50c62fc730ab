"""Restart policy of one program: exponential backoff and a restart budget per window.

Backoff: the n-th consecutive failure waits ``initial * factor**(n-2)`` (capped at
``max``) with the first one immediate (``first_restart_immediate``, the default), or
``initial * factor**(n-1)`` without it. A run that lasted ``backoff_reset_s`` resets the
streak. Budget: at most ``restart_budget`` restarts in any ``budget_window_s``; the
failure that would need one more makes the program FATAL, where it stays (no storm).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RestartPolicy:
    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    budget: int = 5
    window_s: float = 300.0
    first_immediate: bool = True
    reset_after_s: float = 60.0
    streak: int = 0  # consecutive failures (runs shorter than reset_after_s)
    restarts: deque[float] = field(default_factory=deque)  # monotonic times of restarts

    @classmethod
    def from_program(cls, prog) -> RestartPolicy:
        return cls(
            initial_s=prog.backoff_initial_s,
            factor=prog.backoff_factor,
            max_s=prog.backoff_max_s,
            budget=prog.restart_budget,
            window_s=prog.budget_window_s,
            first_immediate=prog.first_restart_immediate,
            reset_after_s=prog.backoff_reset_s,
        )

    def delay(self, streak: int) -> float:
        """Backoff before the restart that follows the ``streak``-th consecutive failure."""
        n = streak - 1 if self.first_immediate else streak
        if n <= 0:
            return 0.0
        return min(self.initial_s * self.factor ** (n - 1), self.max_s)

    def schedule(self, count: int) -> list[float]:
        """The first ``count`` delays of a crash loop (for docs and status)."""
        return [self.delay(i) for i in range(1, count + 1)]

    def in_window(self, now: float) -> int:
        while self.restarts and self.restarts[0] <= now - self.window_s:
            self.restarts.popleft()
        return len(self.restarts)

    def on_failure(self, now: float, run_lasted_s: float) -> float | None:
        """Record a failure; return the backoff delay, or None when the budget is spent."""
        self.streak = 1 if run_lasted_s >= self.reset_after_s else self.streak + 1
        if self.in_window(now) >= self.budget:
            return None
        return self.delay(self.streak)

    def on_restart(self, now: float) -> None:
        self.restarts.append(now)

    def reset(self) -> None:
        """Operator restart out of FATAL: a fresh budget and streak."""
        self.streak = 0
        self.restarts.clear()
