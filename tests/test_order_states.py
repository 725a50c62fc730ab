"""The contract's transition table (pure logic)."""

from tradeops.order_states import (
    NEW,
    NON_TERMINAL,
    TERMINAL,
    TRANSITIONS,
    OrderStatus,
    canonical_status,
    is_allowed,
)


def test_every_status_has_a_row():
    assert set(TRANSITIONS) == {NEW, *OrderStatus}


def test_terminal_statuses_are_final():
    assert {s.value for s in TERMINAL} == {"RISK_REJECTED", "FILLED", "CANCELLED", "REJECTED", "EXPIRED"}
    for s in TERMINAL:
        assert TRANSITIONS[s] == frozenset()
    assert not is_allowed("CANCELLED", "FILLED")  # a late fill is flagged, not absorbed


def test_every_non_terminal_can_finish():
    # from every non-terminal status some path reaches a terminal one
    for start in NON_TERMINAL:
        seen, todo = set(), [start]
        while todo:
            s = todo.pop()
            if s in seen:
                continue
            seen.add(s)
            todo.extend(TRANSITIONS[s])
        assert seen & TERMINAL, start


def test_typical_paths():
    path = ["NEW", "CREATED", "RISK_APPROVED", "SUBMITTED", "OPEN", "PARTIALLY_FILLED", "FILLED"]
    assert all(is_allowed(a, b) for a, b in zip(path, path[1:]))
    assert is_allowed("CREATED", "RISK_REJECTED")
    assert is_allowed("CANCEL_PENDING", "FILLED")  # fill races a cancel
    assert not is_allowed("NEW", "FILLED")
    assert not is_allowed("CREATED", "FILLED")
    assert not is_allowed("OPEN", "CREATED")


def test_canonical_status_passthrough():
    assert canonical_status("FILLED") is OrderStatus.FILLED
