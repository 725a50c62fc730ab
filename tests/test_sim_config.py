"""The [sim] section: defaults and one-line errors for bad values."""

from __future__ import annotations

import pytest

from tradeops import config as config_mod


def test_defaults_are_valid():
    cfg = config_mod.loads("")
    assert cfg.sim.discrepancy_rate == 0.002 and cfg.sim.orders_per_minute == 12.0
    assert 0 < cfg.sim.stuck_share < cfg.sim.cancel_share < 1


@pytest.mark.parametrize(("text", "message"), [
    ("[sim]\ncancel_share = 1.5\n",
     "tradeops.toml: [sim].cancel_share: expected a share between 0 and 1, got 1.5"),
    ("[sim]\ndiscrepancy_rate = 0.5\n",
     "tradeops.toml: [sim].discrepancy_rate: expected a share between 0 and 0.2, got 0.5"),
    ("[sim]\norders_per_minute = -1\n",
     "tradeops.toml: [sim].orders_per_minute: expected a number >= 0, got -1.0"),
    ("[sim]\nsymbols = 0\n", "tradeops.toml: [sim].symbols: expected an integer 1..20000, got 0"),
    ("[sim]\nbroker_rate_limit_per_s = 0\n",
     "tradeops.toml: [sim].broker_rate_limit_per_s: expected a number > 0, got 0.0"),
    ('[sim]\nstuck_share = "x"\n', 'tradeops.toml: [sim].stuck_share: expected a number, got "x"'),
    ("[sim]\nstuck_shares = 0.1\n", "tradeops.toml: [sim].stuck_shares: unknown key"),
    ('[sim]\nstrategies = ["a", "a"]\n', 'tradeops.toml: [sim].strategies[1]: expected a unique '
     'name of letters, digits, _ . -, got "a"'),
    ('[sim]\nstrategies = [""]\n', 'tradeops.toml: [sim].strategies[0]: expected a unique '
     'name of letters, digits, _ . -, got ""'),
])
def test_bad_values_give_one_line_errors(text, message):
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.loads(text)
    assert str(e.value) == message
