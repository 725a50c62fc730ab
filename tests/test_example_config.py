"""packaging/tradeops.toml.example (the Debian package's conffile) stays in sync with the
schema in tradeops.config: it loads through the real loader, and every key of every
section (including the keys of array-of-tables entries) is written in it, either set or,
for keys whose default is "unset" (None), as a commented `# key = ...` line."""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path

import msgspec
import pytest

from tradeops import config as config_mod

EXAMPLE = Path(__file__).resolve().parents[1] / "packaging" / "tradeops.toml.example"


def _struct_of(tp: typing.Any) -> tuple[type | None, bool]:
    """(Struct type, is_list) for a field type; (None, False) for a leaf."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp, False
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
            return inner, True
    return None, False


def schema_keys(struct: type, prefix: str = "") -> list[tuple[str, type, bool]]:
    """Every key path of the schema: ("recon.price_tolerance", type, optional)."""
    out = []
    for f in msgspec.structs.fields(struct):
        if struct is config_mod.Config and f.name == "source":
            continue  # set by load(), not a config key
        path = f"{prefix}{f.name}"
        sub, is_list = _struct_of(f.type)
        optional = f.default is None
        out.append((path, f.type, optional))
        if sub is not None:
            out.extend(schema_keys(sub, path + ("[]." if is_list else ".")))
    return out


def lookup(raw: dict, path: str) -> list:
    """Values at a key path; `[]` descends into every entry of an array of tables."""
    nodes = [raw]
    for part in path.split("."):
        name, is_list = (part[:-2], True) if part.endswith("[]") else (part, False)
        nxt = []
        for n in nodes:
            if isinstance(n, dict) and name in n:
                v = n[name]
                nxt.extend(v if is_list else [v])
        nodes = nxt
    return nodes


def test_example_loads_with_the_real_loader():
    cfg = config_mod.load(str(EXAMPLE))
    assert cfg.source.endswith("tradeops.toml.example")
    # the production-facing defaults the units rely on
    assert cfg.supervisor.status_file == "/run/tradeops/supervisor.json"
    assert cfg.calendar.timezone == "Asia/Kolkata"


def test_every_schema_key_is_in_the_example():
    text = EXAMPLE.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    keys = schema_keys(config_mod.Config)
    assert len(keys) > 100  # the walk really covered the schema
    missing = []
    for path, _tp, optional in keys:
        if lookup(raw, path):
            continue
        leaf = path.rsplit(".", 1)[-1].removesuffix("[]")
        if optional and re.search(rf"^#\s*{re.escape(leaf)}\s*=", text, re.M):
            continue  # an unset-by-default key, shown commented out
        missing.append(path)
    assert not missing, f"keys of tradeops.config missing from {EXAMPLE.name}: {missing}"


def test_example_values_are_the_defaults_of_their_sections():
    """Scalars set in the example equal the schema defaults, except in the example entries
    of arrays of tables (which have no defaults for their required keys)."""
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    defaults = msgspec.to_builtins(config_mod.Config())
    differing = []
    for section, values in raw.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                continue  # an example array of tables
            if isinstance(value, dict) and key in ("sectors", "underlyings", "heartbeat"):
                continue
            if defaults[section].get(key) != value:
                differing.append(f"[{section}].{key}")
    assert not differing, f"example values differ from config.py defaults: {differing}"


@pytest.mark.parametrize("bad", ["[recon]\nprice_tolerance = \"x\"\n", "[kafka]\nbootstrapservers = \"h:1\"\n"])
def test_loader_still_rejects_bad_input(tmp_path, bad):
    """Guards the test above: a wrong example would be caught by the same loader."""
    p = tmp_path / "tradeops.toml"
    p.write_text(bad)
    with pytest.raises(config_mod.ConfigError, match=r"^tradeops\.toml: \[(recon|kafka)\]"):
        config_mod.load(str(p))
