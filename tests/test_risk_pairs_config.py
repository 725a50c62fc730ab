"""[risk], [pairs_exporter] and [[pairs]] validation: one line naming file and key."""

from __future__ import annotations

import pytest

from tradeops.config import ConfigError, loads

PAIR = '[[pairs]]\nname = "P"\nleg_a = "NSE:INFY"\nleg_b = "NSE:TCS"\n'


@pytest.mark.parametrize("text, message", [
    ("[risk]\nflush_interval_s = 0\n",
     "tradeops.toml: [risk].flush_interval_s: expected a number > 0, got 0.0"),
    ("[risk]\ndrawdown_limits = { desk = 5.0 }\n",
     'tradeops.toml: [risk].drawdown_limits.desk: expected a bucket type (strategy, sector, '
     'underlying, total), got "desk"'),
    ("[risk]\ndrawdown_limits = { total = -1.0 }\n",
     "tradeops.toml: [risk].drawdown_limits.total: expected a number >= 0, got -1.0"),
    ('[[risk.buckets]]\ntype = "total"\nname = "total"\ncapital = 0.0\n',
     "tradeops.toml: [risk].buckets[0].capital: expected a number > 0, got 0.0"),
    ('[[risk.buckets]]\ntype = "desk"\nname = "x"\n',
     "tradeops.toml: [risk].buckets[0].type: invalid value 'desk'"),
    ("[pairs_exporter]\nwarmup_overlap_s = -1.0\n",
     "tradeops.toml: [pairs_exporter].warmup_overlap_s: expected a number >= 0, got -1.0"),
    ("[pairs_exporter]\nkalman_warmup_windows = 0\n",
     "tradeops.toml: [pairs_exporter].kalman_warmup_windows: expected an integer >= 1, got 0"),
    (PAIR.replace("NSE:TCS", "NSE:INFY"),
     'tradeops.toml: [pairs][0].leg_b: expected a symbol other than leg_a, got "NSE:INFY"'),
    (PAIR.replace("NSE:TCS", "tcs"),
     'tradeops.toml: [pairs][0].leg_b: expected EXCHANGE:SYMBOL, got "tcs"'),
    (PAIR + "kalman_delta = 1.0\n",
     "tradeops.toml: [pairs][0].kalman_delta: expected a number in (0, 1), got 1.0"),
    (PAIR + "kalman_obs_var = 0.0\n",
     "tradeops.toml: [pairs][0].kalman_obs_var: expected a number > 0, got 0.0"),
    (PAIR + "stale_after_s = 0.0\n",
     "tradeops.toml: [pairs][0].stale_after_s: expected a number > 0, got 0.0"),
    (PAIR + 'hedge = "static"\n',
     'tradeops.toml: [pairs][0].beta: required when hedge = "static"'),
    (PAIR + "window = 2\n", "tradeops.toml: [pairs][0].window: expected an integer >= 3, got 2"),
    (PAIR + 'hedge = "ewma"\n', "tradeops.toml: [pairs][0].hedge: invalid value 'ewma'"),
])
def test_bad_values_one_line(text, message):
    with pytest.raises(ConfigError) as e:
        loads(text)
    assert str(e.value) == message


def test_valid_sections_load():
    cfg = loads(PAIR + 'hedge = "kalman"\nkalman_delta = 0.001\n'
                "[risk]\ndrawdown_limits = { total = 1000000.0 }\nreset_time = \"09:00\"\n"
                '[[risk.buckets]]\ntype = "strategy"\nname = "pairs"\ncapital = 2000000.0\n')
    assert cfg.pairs[0].kalman_delta == 0.001 and cfg.risk.buckets[0].capital == 2e6
