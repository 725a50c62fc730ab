"""Heartbeat supervisor: `tradeops supervise` (see docs/operations.md, section Supervisor)."""
