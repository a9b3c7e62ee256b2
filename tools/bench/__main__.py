"""Run a benchmark by name: ``python -m tools.bench <name> [options]``.

Each benchmark is a callable taking the remaining command-line arguments and returning a
JSON-able mapping, printed to stdout. ``python -m tools.bench <name> --help`` lists a
benchmark's options (``indicators`` takes ``--repeat N`` and ``--size N``).
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
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


def _cold_path(argv: list[str]) -> Mapping[str, Any]:
    from . import cold_path

    return cold_path.run(argv)


def _hot_path(argv: list[str]) -> Mapping[str, Any]:
    from . import hot_path

    return hot_path.run(argv)


def _compiled_order(argv: list[str]) -> Mapping[str, Any]:
    from . import compiled_order

    return compiled_order.run(argv)


def _entry_step(argv: list[str]) -> Mapping[str, Any]:
    from . import entry_step

    return entry_step.run(argv)


def _feed(argv: list[str]) -> Mapping[str, Any]:
    from . import feed

    return feed.run(argv)


def _feed_step(argv: list[str]) -> Mapping[str, Any]:
    from . import feed_step

    return feed_step.run(argv)


def _orders(argv: list[str]) -> Mapping[str, Any]:
    from . import orders

    return orders.run(argv)


def _live(argv: list[str]) -> Mapping[str, Any]:
    from . import live

    return live.run(argv)


def _models(argv: list[str]) -> Mapping[str, Any]:
    from . import models

    return models.run(argv)


def _nautilus(argv: list[str]) -> Mapping[str, Any]:
    from . import nautilus

    return nautilus.run(argv)


def _soak(argv: list[str]) -> Mapping[str, Any]:
    from . import soak

    return soak.run(argv)


def _tick_to_order(argv: list[str]) -> Mapping[str, Any]:
    from . import tick_to_order

    return tick_to_order.run(argv)


def _startup(argv: list[str]) -> Mapping[str, Any]:
    from . import startup

    return startup.run(argv)


def _tick_windows(argv: list[str]) -> Mapping[str, Any]:
    from . import tick_windows

    return tick_windows.main(argv)


def _sweep(argv: list[str]) -> Mapping[str, Any]:
    from . import sweep

    return sweep.run(argv)


BENCHMARKS: Mapping[str, Benchmark] = {
    "cold_path": _cold_path,
    "compiled_order": _compiled_order,
    "hot_path": _hot_path,
    "entry_step": _entry_step,
    "feed": _feed,
    "feed_step": _feed_step,
    "book": _book,
    "indicators": _indicators,
    "live": _live,
    "models": _models,
    "nautilus": _nautilus,
    "orders": _orders,
    "portfolio": _portfolio,
    "replay": _replay,
    "soak": _soak,
    "startup": _startup,
    "sweep": _sweep,
    "tick_to_order": _tick_to_order,
    "tick_windows": _tick_windows,
}


def _summary(name: str) -> str:
    """The first line of benchmark ``name``'s module docstring, read without importing it
    (importing pulls in what the benchmark measures)."""
    path = Path(__file__).with_name(f"{name}.py")
    if not path.is_file():  # a benchmark whose module is named otherwise
        return ""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.splitlines()[0] if doc else ""


def _usage() -> str:
    names = ",".join(sorted(BENCHMARKS))
    lines = [f"usage: python -m tools.bench {{{names}}} [options]", "", "benchmarks:"]
    lines += [f"  {name:<15}{_summary(name)}" for name in sorted(BENCHMARKS)]
    lines += [
        "",
        "Each prints JSON (medians); 'python -m tools.bench NAME --help' for its options.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the benchmark named by the first argument; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        sys.stdout.write(_usage())
        return 0
    if not args or args[0] not in BENCHMARKS:
        sys.stderr.write(_usage())
        return 2
    result = BENCHMARKS[args[0]](args[1:])
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
