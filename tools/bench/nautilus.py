"""Trireme next to NautilusTrader on the same synthetic quotes (issue "Event-accurate core").

``python -m tools.bench nautilus [--quotes N] [--repeat R] [--install]`` writes N
synthetic ETHUSDT ``bookTicker`` quotes (one per 100 ms, mid a seeded random walk:
:mod:`tools.bench._synthetic`), then times, in the same run:

- ``trireme``: the whole replay pipeline (parse, actors, simulated venue, journal)
  with the EMA cross (10/20 EMA on 10 s mid samples, RSI filter open, no ML filter);
  ``events_per_s`` is events over the engine's own run time (set-up excluded, as
  NautilusTrader's data loading is), ``total_events_per_s`` includes set-up;
- ``nautilus``: NautilusTrader 1.221.0's ``BacktestEngine`` with its ``EMACross``
  example (10/20 EMA on 100-tick mid bars, risk engine on), ``engine.run()`` alone,
  in NautilusTrader's own venv (``--install`` creates it under
  ``~/.cache/trireme/``; NautilusTrader is not a Trireme dependency).

Medians over ``--repeat`` runs; ``ratio`` is Trireme's events/s over NautilusTrader's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio

from engine.testing import replay, replay_config

from ._synthetic import START_MS, quote_arrays, write_quotes

NAUTILUS_VERSION = "1.221.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trireme"
NAUTILUS_VENV = CACHE / f"nautilus-{NAUTILUS_VERSION}"
RUNNER = Path(__file__).with_name("_nautilus_run.py")


def _install(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "--quiet",
         f"nautilus_trader=={NAUTILUS_VERSION}"],
        check=True,
    )  # fmt: skip


def _trireme_once(data: Path, tmp: Path, i: int, step_ms: int) -> dict[str, float]:
    config = replay_config(
        tmp / f"t{i}",
        [data],
        strategy={
            "sample_ms": 10_000,
            "fast": 10,
            "slow": 20,
            "rsi_long_max": 100.0,
            "rsi_short_min": 0.0,
            "order_notional": 300.0,
        },
        model={"enabled": False},
        replay={"step_ms": step_ms},
    )
    t0 = time.perf_counter()
    report = trio.run(replay, config)
    total = time.perf_counter() - t0
    return {
        "events": report.events,
        "seconds": report.wall_seconds,
        "events_per_s": report.events / report.wall_seconds,
        "total_events_per_s": report.events / total,
        "orders": report.orders,
        "fills": report.fills,
    }


def _nautilus_once(python: Path, npz: Path) -> dict[str, float]:
    out = subprocess.run(
        [str(python), str(RUNNER), str(npz)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(runs: list[dict[str, float]]) -> dict[str, Any]:
    keys = runs[0].keys()
    return {k: statistics.median(r[k] for r in runs) for k in keys} | {"runs": len(runs)}


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark and return its JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench nautilus")
    parser.add_argument("--quotes", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--step-ms", type=int, default=250, help="Trireme's replay.step_ms")
    parser.add_argument(
        "--install", action="store_true", help=f"create {NAUTILUS_VENV} if it is missing"
    )
    parser.add_argument("--nautilus-python", type=Path, default=NAUTILUS_VENV / "bin/python")
    parser.add_argument("--trireme-only", action="store_true")
    args = parser.parse_args(argv)

    data = write_quotes(CACHE / "bench" / f"quotes_{args.quotes}.txt", args.quotes)
    result: dict[str, Any] = {"quotes": args.quotes, "interval_ms": 100, "step_ms": args.step_ms}
    with tempfile.TemporaryDirectory() as tmp:
        runs = [_trireme_once(data, Path(tmp), i, args.step_ms) for i in range(args.repeat)]
        result["trireme"] = _median(runs)
        if args.trireme_only:
            return result
        python = args.nautilus_python
        if not python.exists():
            if not args.install:
                result["nautilus"] = f"not installed: run with --install (creates {NAUTILUS_VENV})"
                return result
            _install(NAUTILUS_VENV)
        npz = Path(tmp) / "quotes.npz"
        cols = quote_arrays(args.quotes)
        np.savez(npz, ts_ms=START_MS + 100 * np.arange(args.quotes, dtype=np.int64), **cols)
        result["nautilus"] = _median([_nautilus_once(python, npz) for _ in range(args.repeat)])
        result["nautilus"]["version"] = NAUTILUS_VERSION
    result["ratio"] = result["trireme"]["events_per_s"] / result["nautilus"]["events_per_s"]
    return result
