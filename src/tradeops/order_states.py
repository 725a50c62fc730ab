"""The OMS order lifecycle: canonical statuses, the Kite status map, the transition table.

This is the one place the contract's state machine lives (docs/contracts.md renders it).
Everything that reasons about order states imports from here.
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    CREATED = "CREATED"
    RISK_APPROVED = "RISK_APPROVED"
    RISK_REJECTED = "RISK_REJECTED"
    SUBMITTED = "SUBMITTED"
    OPEN = "OPEN"
    TRIGGER_PENDING = "TRIGGER_PENDING"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    MODIFY_PENDING = "MODIFY_PENDING"
    CANCEL_PENDING = "CANCEL_PENDING"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


S = OrderStatus

# The state an order is in before its first event is seen.
NEW = "NEW"

TERMINAL: frozenset[OrderStatus] = frozenset(
    {S.RISK_REJECTED, S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED}
)
NON_TERMINAL: tuple[OrderStatus, ...] = tuple(s for s in S if s not in TERMINAL)

# Kite order status strings -> canonical. OPEN is special-cased: OPEN with
# filled_quantity > 0 is PARTIALLY_FILLED (Kite has no partial-fill status).
KITE_STATUS_MAP: dict[str, OrderStatus] = {
    "PUT ORDER REQ RECEIVED": S.SUBMITTED,
    "AMO REQ RECEIVED": S.SUBMITTED,
    "VALIDATION PENDING": S.SUBMITTED,
    "OPEN PENDING": S.SUBMITTED,
    "OPEN": S.OPEN,
    "TRIGGER PENDING": S.TRIGGER_PENDING,
    "MODIFY VALIDATION PENDING": S.MODIFY_PENDING,
    "MODIFY PENDING": S.MODIFY_PENDING,
    "CANCEL PENDING": S.CANCEL_PENDING,
    "COMPLETE": S.FILLED,
    "CANCELLED": S.CANCELLED,
    "REJECTED": S.REJECTED,
}

_WORKING = (S.OPEN, S.TRIGGER_PENDING, S.PARTIALLY_FILLED)

# from -> allowed to. Anything not listed is an invalid transition.
# Terminal statuses have no way out: a fill after CANCELLED is reported as invalid,
# because an operator must see it (nautilus_trader tolerates it; we flag it).
TRANSITIONS: dict[str, frozenset[OrderStatus]] = {
    # NEW -> first event: normally CREATED; orders placed outside the strategy path
    # (manual, Kite web) first appear as SUBMITTED.
    NEW: frozenset({S.CREATED, S.SUBMITTED}),
    S.CREATED: frozenset({S.RISK_APPROVED, S.RISK_REJECTED, S.CANCELLED}),
    S.RISK_APPROVED: frozenset({S.SUBMITTED, S.CANCELLED, S.REJECTED}),
    S.SUBMITTED: frozenset(
        {*_WORKING, S.FILLED, S.REJECTED, S.CANCEL_PENDING, S.CANCELLED, S.EXPIRED}
    ),
    S.OPEN: frozenset(
        {S.OPEN, S.TRIGGER_PENDING, S.PARTIALLY_FILLED, S.FILLED, S.MODIFY_PENDING,
         S.CANCEL_PENDING, S.CANCELLED, S.REJECTED, S.EXPIRED}
    ),
    S.TRIGGER_PENDING: frozenset(
        {S.TRIGGER_PENDING, S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.MODIFY_PENDING,
         S.CANCEL_PENDING, S.CANCELLED, S.REJECTED, S.EXPIRED}
    ),
    S.PARTIALLY_FILLED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.MODIFY_PENDING, S.CANCEL_PENDING, S.CANCELLED,
         S.EXPIRED}
    ),
    # a modification resolves back to a working state (accepted or refused)
    S.MODIFY_PENDING: frozenset(
        {*_WORKING, S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.REJECTED, S.EXPIRED}
    ),
    # a cancel can be refused (back to working) or raced by a fill
    S.CANCEL_PENDING: frozenset({*_WORKING, S.FILLED, S.CANCELLED, S.EXPIRED}),
    S.RISK_REJECTED: frozenset(),
    S.FILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}


class UnknownStatus(ValueError):
    pass


def canonical_status(status: str, filled_quantity: int = 0) -> OrderStatus:
    """Map a canonical or Kite status string to the canonical status.

    >>> canonical_status("OPEN", 10)
    <OrderStatus.PARTIALLY_FILLED: 'PARTIALLY_FILLED'>
    """
    if status == "OPEN" and filled_quantity > 0:
        return S.PARTIALLY_FILLED
    try:
        return OrderStatus(status)
    except ValueError:
        pass
    try:
        return KITE_STATUS_MAP[status]
    except KeyError:
        raise UnknownStatus(f"unknown order status {status!r}") from None


def is_allowed(from_status: str, to_status: str) -> bool:
    """True when the contract allows ``from_status -> to_status`` (from may be NEW)."""
    allowed = TRANSITIONS.get(from_status)
    return allowed is not None and to_status in allowed


def is_terminal(status: str) -> bool:
    return status in TERMINAL
