"""docs/exporters.md lists every oms-lifecycle metric (no services needed)."""

from __future__ import annotations

import re
from pathlib import Path

from tradeops.exporters.oms_book import Totals
from tradeops.exporters.oms_lifecycle import build_families

DOC = Path(__file__).resolve().parents[1] / "docs" / "exporters.md"


def section() -> str:
    text = DOC.read_text()
    m = re.search(r"^## oms-lifecycle\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "docs/exporters.md has no oms-lifecycle section"
    return m.group(1)


def test_every_metric_is_documented_with_its_type():
    sec = section()
    rows = {m.group(1): m.group(2) for m in
            re.finditer(r"^\| `(oms_[a-z_]+)` \| (counter|gauge|histogram) \|", sec, re.M)}
    fams = build_families(Totals(), ("momentum",))
    for fam in fams:
        name = fam.name + ("_total" if fam.type == "counter" else "")
        assert rows.get(name) == fam.type, f"{name} ({fam.type}) missing from the docs table"
    assert set(rows) == {f.name + ("_total" if f.type == "counter" else "") for f in fams}


def test_documented_pair_counts_match_the_table():
    from tradeops.exporters.oms_book import ALLOWED_PAIRS, INVALID_PAIRS

    assert f"the {len(ALLOWED_PAIRS)} allowed and the {len(INVALID_PAIRS)} invalid" in \
        section().replace("\n", " ")
