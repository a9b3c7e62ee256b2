"""Sweep throughput: replays per minute on a Dask LocalCluster of 1 and of 2 workers.

``python -m tools.bench sweep [--data PATH] [--repeat N] [--workers 1,2] [--set K=V]``
runs the same grid (``strategy.fast=5,8`` x ``strategy.slow=21,34``, ML filter off,
hardware pinning off as every sweep task has it) through :func:`engine.sweep.run_grid`,
``--repeat`` times per worker count, on one warm cluster per count (each worker
first replays one point untimed: kernels compiled, tick store mapped), and prints
the median, min and max of replays per minute and of seconds per sweep. The default
data is the 16-symbol, 30-day Freqtrade 1-minute USD-M klines from ../shared with
``risk.sample_ms = 60000`` (one risk sample per bar; at the default 250 ms a 30-day
replay samples 10 million times); ``--data`` and ``--set`` change either.

Every sweep's table must equal the first one's (same digests): the benchmark
fails otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from engine._config import Override, set_overrides
from engine.sweep import dask_client, grid_points, parse_grid, run_grid

ROOT = Path(__file__).resolve().parents[2]
KLINES = ROOT.parent / "shared/data/external/freqtrade_1m_usdm"
GRID = ["strategy.fast=5,8", "strategy.slow=21,34"]


def _quiet(_done: int, _total: int, _label: str, result: Any) -> None:
    if isinstance(result, BaseException):
        raise result


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(argv: list[str]) -> dict[str, Any]:
    """Parse ``argv``, run the sweeps, return the JSON-able results."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench sweep")
    parser.add_argument("--data", type=Path, default=KLINES)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    base = [
        Override(key="data.paths", value=[str(args.data.resolve())], origin="bench"),
        Override(key="model.enabled", value=False, origin="bench"),
        Override(key="journal.dir", value="/tmp/trireme-bench-sweep", origin="bench"),
        Override(key="logging.path", value="-", origin="bench"),
    ]
    if args.data == KLINES:
        base.append(Override(key="risk.sample_ms", value=60_000, origin="bench"))
    base += set_overrides(args.set)
    points, _skipped = grid_points(ROOT / "config.toml", base, parse_grid(GRID))
    out: dict[str, Any] = {
        "data": str(args.data),
        "grid": GRID,
        "points": len(points),
        "repeat": args.repeat,
        "overrides": {o.key: o.value for o in base if o.key not in ("journal.dir",)},
    }
    reference: list[tuple[Any, ...]] | None = None
    for workers in (int(w) for w in args.workers.split(",")):
        with dask_client(None, workers) as client:
            # Warm every worker: one untimed replay each (kernel compile, store map).
            run_grid(client, points[:workers], data=None, rank_by="net_pnl", progress=_quiet)
            seconds = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                outcome = run_grid(client, points, data=None, rank_by="net_pnl", progress=_quiet)
                seconds.append(time.perf_counter() - t0)
                table = [(r["point"], r["journal_sha256"], r["net_pnl"]) for r in outcome.rows]
                if reference is None:
                    reference = table
                if table != reference or len(table) != len(points):
                    raise SystemExit(f"sweep tables differ between runs ({workers} workers)")
        out[f"workers_{workers}"] = {
            "replays_per_minute": _stats([60.0 * len(points) / s for s in seconds]),
            "seconds_per_sweep": _stats(seconds),
        }
    if reference:
        out["events_per_replay"] = outcome.rows[0]["events"]
        out["orders_per_replay"] = [r["orders"] for r in outcome.rows]
    return out
