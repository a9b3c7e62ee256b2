"""Regenerate the state diagrams in README.md from the transition tables.

``python -m tools.fsm_diagrams`` rewrites the Mermaid block that follows each
``<!-- fsm:NAME -->`` marker; ``--check`` exits 1 when the README is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import fsm

README = Path(__file__).resolve().parents[1] / "README.md"
TABLES = {
    "position": fsm.POSITION_TABLE,
    "order": fsm.ORDER_TABLE,
    "trading": fsm.TRADING_TABLE,
}


def render(text: str) -> str:
    """``text`` with every marked diagram replaced by the table's current diagram."""
    for name, table in TABLES.items():
        pattern = re.compile(rf"(<!-- fsm:{name} -->\n```mermaid\n).*?(```)", re.S)
        text = pattern.sub(lambda m, t=table: m.group(1) + t.mermaid() + "\n" + m.group(2), text)
    return text


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m tools.fsm_diagrams")
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    args = parser.parse_args()
    old = README.read_text()
    new = render(old)
    if args.check:
        sys.exit(0 if new == old else 1)
    README.write_text(new)


if __name__ == "__main__":
    main()
