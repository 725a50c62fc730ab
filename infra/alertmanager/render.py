#!/usr/bin/env python3
"""Render infra/alertmanager/alertmanager.yml for a place other than /etc/tradeops.

    render.py OUT --secrets DIR [--templates DIR]

Points the webhook URL files at DIR (slack_platform_webhook_url, slack_trading_webhook_url,
teams_webhook_url) and the templates at DIR (default: infra/alertmanager/templates of this
checkout). Used by scripts/up.d/20-alertmanager.sh (dev stack) and tests/test_mixin*.py.
Text substitution only: the rendered file is the same config with other paths.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = "/etc/tradeops/alertmanager/"


def render(text: str, secrets: str, templates: str) -> str:
    text = text.replace(PREFIX + "templates/", templates.rstrip("/") + "/")
    return text.replace(PREFIX, secrets.rstrip("/") + "/")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--secrets", required=True)
    ap.add_argument("--templates", default=os.path.join(HERE, "templates"))
    ap.add_argument("--config", default=os.path.join(HERE, "alertmanager.yml"))
    a = ap.parse_args(argv)
    with open(a.config, encoding="utf-8") as f:
        text = render(f.read(), os.path.abspath(a.secrets), os.path.abspath(a.templates))
    tmp = a.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
