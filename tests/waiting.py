"""Polling helper shared by the integration tests (one definition, not one per file)."""

from __future__ import annotations

import time


def wait_for(pred, timeout: float = 30.0, what: str = "condition", interval: float = 0.05):
    """Poll ``pred`` until it returns something truthy and return that value; fail with an
    AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
