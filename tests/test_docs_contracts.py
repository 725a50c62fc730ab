"""docs/contracts.md must show the transition table the code enforces."""

from pathlib import Path

from tradeops.order_states import NEW, TRANSITIONS, OrderStatus

DOC = Path(__file__).resolve().parents[1] / "docs" / "contracts.md"


def test_doc_table_matches_code():
    text = DOC.read_text()
    block = text.split("<!-- transitions:begin")[1].split("<!-- transitions:end")[0]
    rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line][1:]
    documented = {}
    for row in rows:
        frm, to = (c.strip() for c in row.strip("|").split("|"))
        documented[frm] = set() if to == "(terminal)" else {t.strip() for t in to.split(",")}
    in_code = {str(k): {str(v) for v in vs} for k, vs in TRANSITIONS.items()}
    assert documented == in_code
    assert set(documented) == {NEW, *(s.value for s in OrderStatus)}
