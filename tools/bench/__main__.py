"""Run a benchmark by name: ``python -m tools.bench <name> [options]``.

Each benchmark is a callable taking the remaining command-line arguments and returning a
JSON-able mapping, printed to stdout. ``python -m tools.bench <name> --help`` lists a
benchmark's options (``indicators`` takes ``--repeat N`` and ``--size N``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

Benchmark = Callable[[list[str]], Mapping[str, Any]]


# Imported on demand: each benchmark pulls in only what it measures.
def _indicators(argv: list[str]) -> Mapping[str, Any]:
    from . import indicators

    return indicators.run(argv)


def _replay(argv: list[str]) -> Mapping[str, Any]:
    from . import replay

    return replay.run(argv)


def _book(argv: list[str]) -> Mapping[str, Any]:
    from . import book

    return book.run(argv)


def _portfolio(argv: list[str]) -> Mapping[str, Any]:
    from . import portfolio

    return portfolio.run(argv)


def _feed(argv: list[str]) -> Mapping[str, Any]:
    from . import feed

    return feed.run(argv)


def _orders(argv: list[str]) -> Mapping[str, Any]:
    from . import orders

    return orders.run(argv)


def _live(argv: list[str]) -> Mapping[str, Any]:
    from . import live

    return live.run(argv)


def _models(argv: list[str]) -> Mapping[str, Any]:
    from . import models

    return models.run(argv)


BENCHMARKS: Mapping[str, Benchmark] = {
    "feed": _feed,
    "book": _book,
    "indicators": _indicators,
    "live": _live,
    "models": _models,
    "orders": _orders,
    "portfolio": _portfolio,
    "replay": _replay,
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the benchmark named by the first argument; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in BENCHMARKS:
        names = ", ".join(sorted(BENCHMARKS))
        sys.stderr.write(f"usage: python -m tools.bench {{{names}}} [options]\n")
        return 2
    result = BENCHMARKS[args[0]](args[1:])
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
