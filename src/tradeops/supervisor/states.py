"""Process states of a supervised program and the one table of allowed transitions.

Modelled on Supervisor's ``states.py``/``process.py``: an explicit enum, a table of the
transitions that may happen, and a single :func:`check` that every state change goes
through (an illegal change is a bug and raises :class:`IllegalTransition`). Liveness is
judged by heartbeat, not by pid, hence HUNG::

    STOPPED --start--> STARTING --up (alive startsecs + fresh heartbeat)--> RUNNING
    STARTING/RUNNING --exit or hung--> HUNG (killing) --> BACKOFF --delay--> STARTING
    any failure with the restart budget spent --> FATAL (stays down until an operator)
    any --stop--> STOPPED

Mode ``watch`` never acts: HUNG goes back to RUNNING when heartbeats resume.
"""

from __future__ import annotations

import enum


class ProcessState(enum.Enum):
    STOPPED = "STOPPED"  # not running, not wanted (before start, after stop)
    STARTING = "STARTING"  # spawned (or restart requested); waiting for startsecs + heartbeat
    RUNNING = "RUNNING"  # alive and heartbeating
    HUNG = "HUNG"  # heartbeat older than its timeout (spawn: group being killed)
    BACKOFF = "BACKOFF"  # waiting for the backoff delay before the next start
    FATAL = "FATAL"  # restart budget spent: stays down, alerting, until an operator acts


S = ProcessState

# from-state -> states it may move to. Every edge is used by Supervisor.step() and
# commented there with its name (e.g. `# STARTING -> RUNNING`).
TRANSITIONS: dict[ProcessState, frozenset[ProcessState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.RUNNING, S.HUNG, S.BACKOFF, S.FATAL, S.STOPPED}),
    S.RUNNING: frozenset({S.HUNG, S.BACKOFF, S.FATAL, S.STOPPED}),
    # HUNG -> RUNNING only in watch mode (heartbeats resumed; nothing was killed)
    S.HUNG: frozenset({S.BACKOFF, S.FATAL, S.RUNNING, S.STOPPED}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPED}),
    # FATAL -> STARTING only through an operator's restart (`tradeops supervise restart`)
    S.FATAL: frozenset({S.STARTING, S.STOPPED}),
}

# states in which a spawned child may exist
HAS_CHILD = frozenset({S.STARTING, S.RUNNING, S.HUNG})


class IllegalTransition(RuntimeError):
    """A state change the table does not allow: a supervisor bug, never user input."""


def check(program: str, old: ProcessState, new: ProcessState) -> ProcessState:
    """Return ``new`` if ``old -> new`` is in the table, else raise."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{program}: illegal transition {old.value} -> {new.value}")
    return new
