"""Config validation: every bad file gets the exact one-line error, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tradeops import config
from tradeops.config import ConfigError

DEV = Path(__file__).resolve().parents[1] / "infra" / "dev" / "tradeops.toml"


def err(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        config.loads(text, name="tradeops.toml")
    return str(e.value)


def test_empty_file_gives_defaults():
    cfg = config.loads("")
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.topics.order_events == "oms.order_events"
    assert cfg.recon.price_tolerance == 0.05
    assert cfg.oms_lifecycle.stuck_after_s["SUBMITTED"] == 5.0


def test_dev_config_is_valid():
    cfg = config.load(str(DEV))
    assert cfg.postgres.port == 15432
    assert {p.name for p in cfg.pairs} >= {"INFY_TCS"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[recon]\nprice_tolerance = "x"\n',
         'tradeops.toml: [recon].price_tolerance: expected a number, got "x"'),
        ("[recon]\nprice_tolerence = 0.1\n",
         "tradeops.toml: [recon].price_tolerence: unknown key"),
        ("[reconn]\n", "tradeops.toml: [reconn]: unknown key"),
        ('[postgres]\nport = "5432"\n',
         'tradeops.toml: [postgres].port: expected an integer, got "5432"'),
        ("[[pairs]]\nleg_a = \"NSE:A\"\nleg_b = \"NSE:B\"\n",
         "tradeops.toml: [pairs][0].name: missing required value"),
        ('[[pairs]]\nname = "p"\nleg_a = "NSE:A"\nleg_b = "NSE:B"\nwindow = 2.5\n',
         "tradeops.toml: [pairs][0].window: expected an integer, got 2.5"),
        ("[kafka]\nbootstrap_servers = 9092\n",
         "tradeops.toml: [kafka].bootstrap_servers: expected a string, got 9092"),
        ("[doctor]\nunits = \"a\"\n",
         'tradeops.toml: [doctor].units: expected a list, got "a"'),
        ("[gateway_oms]\nlisten = \"localhost\"\n",
         'tradeops.toml: [gateway_oms].listen: expected HOST:PORT, got "localhost"'),
        ('[calendar]\nholidays = ["2026-13"]\n',
         'tradeops.toml: [calendar].holidays[0]: expected YYYY-MM-DD, got "2026-13"'),
        ("[recon]\nprice_tolerance = -1\n",
         "tradeops.toml: [recon].price_tolerance: expected a number >= 0, got -1.0"),
        ('[[pairs]]\nname = "p"\nleg_a = "NSE:A"\nleg_b = "NSE:B"\nhedge = "static"\n',
         'tradeops.toml: [pairs][0].beta: required when hedge = "static"'),
        ('[supervisor]\n[[supervisor.programs]]\nname = "x"\n',
         'tradeops.toml: [supervisor].programs[0].command: required when mode = "spawn"'),
    ],
)
def test_bad_values_name_file_and_key(text, expected):
    assert err(text) == expected


def test_bad_enum_names_key():
    msg = err('[broker]\nkind = "zerodha"\n')
    assert msg.startswith("tradeops.toml: [broker].kind: invalid value")
    assert "\n" not in msg


def test_not_toml():
    msg = err("[kafka\n")
    assert msg.startswith("tradeops.toml: not valid TOML:")
    assert "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found"):
        config.load(str(tmp_path / "nope.toml"))


def test_secret_relative_to_config_file(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pw").write_text("s3cret\n")
    f = tmp_path / "tradeops.toml"
    f.write_text('[postgres]\npassword_file = "secrets/pw"\n')
    cfg = config.load(str(f))
    assert config.read_secret(cfg, "[postgres].password_file", cfg.postgres.password_file) == "s3cret"


def test_unreadable_secret_is_one_line(tmp_path):
    f = tmp_path / "tradeops.toml"
    f.write_text('[postgres]\npassword_file = "missing"\n')
    cfg = config.load(str(f))
    with pytest.raises(ConfigError, match=r"^tradeops.toml: \[postgres\].password_file: cannot read secret file"):
        config.read_secret(cfg, "[postgres].password_file", cfg.postgres.password_file)


def test_to_toml_round_trips(tmp_path):
    cfg = config.load(str(DEV))
    text = config.to_toml(config.redacted(cfg))
    again = config.loads(text, name="roundtrip.toml", base_dir=str(DEV.parent))
    assert config.redacted(again) == config.redacted(cfg)


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "tradeops.cli", *args], capture_output=True, text=True, env=env
    )


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    f = tmp_path / "tradeops.toml"
    f.write_text('[recon]\nprice_tolerance = "x"\n')
    r = run_cli("--config", str(f), "config", "check")
    assert r.returncode == 2
    assert r.stderr == 'tradeops: tradeops.toml: [recon].price_tolerance: expected a number, got "x"\n'
    assert "Traceback" not in r.stderr + r.stdout


def test_cli_config_check_prints_effective_config_without_secrets(tmp_path):
    (tmp_path / "pw").write_text("hunter2")
    f = tmp_path / "tradeops.toml"
    f.write_text('[postgres]\npassword_file = "pw"\n')
    r = run_cli("--config", str(f), "config", "check")
    assert r.returncode == 0, r.stderr
    assert 'password_file = "pw"' in r.stdout
    assert "hunter2" not in r.stdout
    assert "[recon]" in r.stdout


def test_env_var_selects_config(tmp_path):
    import os

    f = tmp_path / "x.toml"
    f.write_text("[recon]\nbogus = 1\n")
    r = run_cli("config", "check", env={**os.environ, "TRADEOPS_CONFIG": str(f)})
    assert r.returncode == 2
    assert "x.toml: [recon].bogus: unknown key" in r.stderr
