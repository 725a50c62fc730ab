"""The trading-stack simulator and the Kite-compatible broker server (docs/simulator.md).

- :mod:`tradeops.sim.market`: deterministic synthetic 1-minute bars per (date, seed,
  n_symbols), the broker's truth and our internal copy with injected discrepancies.
- :mod:`tradeops.sim.trading`: the day's orders, gateway events, heartbeats, positions
  and bars as contract messages, with the ground truth counted as they are generated.
- :mod:`tradeops.sim.runner`: fast and live modes (Kafka, PostgreSQL, consumer groups,
  upstream metrics and controls).
- :mod:`tradeops.sim.broker_api`: Kite Connect v3 instruments and historical candles.
"""
