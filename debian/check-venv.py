"""Fail the package build unless the vendored venv holds exactly the pins of the lock file.

Run by debian/rules with the venv's own python (so importlib.metadata sees the venv):
    python3 debian/check-venv.py requirements.lock
Every `name==version` line of the lock must be installed at that version, and nothing
else may be installed besides tradeops itself and pip's own tools (removed afterwards).
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

TOOLS = {"pip", "setuptools", "wheel", "tradeops"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock_path: str) -> int:
    want: dict[str, str] = {}
    with open(lock_path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, sep, version = line.partition("==")
                if not sep:
                    print(f"check-venv: {lock_path}: not an exact pin: {line!r}", file=sys.stderr)
                    return 1
                want[norm(name)] = version.strip()
    have = {norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    problems = [f"{n}: locked {v}, installed {have.get(n, 'nothing')}"
                for n, v in want.items() if have.get(n) != v]
    problems += [f"{n}=={v}: installed but not in the lock"
                 for n, v in have.items() if n not in want and n not in TOOLS]
    if "tradeops" not in have:
        problems.append("tradeops itself is not installed")
    for p in problems:
        print(f"check-venv: {p}", file=sys.stderr)
    if not problems:
        print(f"check-venv: {len(want)} pins installed exactly, nothing else")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
