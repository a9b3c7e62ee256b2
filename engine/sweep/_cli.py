"""``trireme sweep``: a grid of replays as Dask tasks, a ranked table and the best config.

Exit codes: 0 done, 1 some replays failed (the table holds the others), 2 bad usage,
config or data (one line on stderr naming the option or dotted key).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._config import Override, env_overrides, load_config, set_overrides
from .._errors import ConfigError, DataError
from ._grid import grid_points, parse_grid
from ._run import SweepOutcome, dask_client, data_span, run_grid, run_walk_forward
from ._table import RANK_BY, check_out_path, config_toml, write_table
from ._task import METRICS
from ._walk import folds, parse_walk_forward

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser(prog: str = "trireme sweep") -> argparse.ArgumentParser:
    """The parser of ``trireme sweep``."""
    from .._cli import _Parser

    parser = _Parser(
        prog=prog,
        description="Replay a grid of configs as Dask tasks (a LocalCluster of worker "
        "processes, or the cluster at --scheduler), print each result as it finishes, and "
        "write a ranked table (CSV or Parquet by extension) plus the best config as TOML "
        "beside it (RESULTS.best.toml). Every replay is deterministic: the same sweep gives "
        "the same table on any cluster.",
    )
    parser.add_argument("--config", type=Path, metavar="PATH", help="TOML config file")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        required=True,
        metavar="KEY=V1,V2,...",
        help="a config key and the values to try, e.g. strategy.fast=5,8,13 (repeatable: "
        "the sweep runs every combination; values are TOML, typed by the config schema)",
    )
    parser.add_argument(
        "--data",
        action="append",
        metavar="PATH",
        help="capture file or directory (repeatable; overrides data.paths)",
    )
    parser.add_argument(
        "--walk-forward",
        metavar="TRAIN/TEST",
        help="walk-forward: pick the best point on each training window and report only "
        "its result on the test window that follows; durations with a unit s, m, h or d "
        "(3d/1d, 90m/30m; a bare number is days: 3/1)",
    )
    parser.add_argument(
        "--rank",
        choices=sorted(RANK_BY),
        default="net_pnl",
        help="what makes a point best (default net_pnl; max_drawdown: smallest first)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on this Dask cluster (tcp://HOST:8786) instead of a LocalCluster; its "
        "workers need Trireme installed and the config's and data's paths readable",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="LocalCluster worker processes (default: the CPUs, at most one per point)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="PATH", help="results table (.csv/.parquet)"
    )
    return parser


def _base_overrides(path: Path | None, sets: Sequence[str]) -> tuple[Path, list[Override]]:
    """The config file and the overrides before the grid's, as ``trireme run`` has them."""
    from .._cli import bundled_config

    overrides: list[Override] = []
    if path is None:
        path = bundled_config()
        origin = "default (no --config)"
        overrides += [
            Override(key="journal.dir", value=str(Path.cwd() / "runs"), origin=origin),
            Override(
                key="logging.path", value=str(Path.cwd() / "logs/trireme.jsonl"), origin=origin
            ),
        ]
    overrides += env_overrides(os.environ)
    overrides += set_overrides(sets)
    return path, overrides


class _Show:
    """One line per finished replay on stderr, with the sweep's rate and ETA so far."""

    def __init__(self) -> None:
        self._started = time.perf_counter()

    def __call__(
        self, done: int, total: int, label: str, result: Mapping[str, Any] | BaseException
    ) -> None:
        if isinstance(result, BaseException):
            line = f"FAILED {type(result).__name__}: {result}"
        else:
            win = result["win_rate"]
            line = (
                f"net {result['net_pnl']:,.2f}  trades {result['trades']}  "
                f"win {'-' if win is None else f'{win:.0%}'}  "
                f"drawdown {result['max_drawdown']:,.2f}  ({result['wall_seconds']:.1f} s)"
            )
        elapsed = time.perf_counter() - self._started
        rate = done / elapsed * 60 if elapsed > 0 else 0.0
        eta = (total - done) * elapsed / done if done else 0.0
        sys.stderr.write(
            f"sweep [{done}/{total}] {label}: {line}  [{rate:.1f} replays/min, ETA {eta:.0f} s]\n"
        )
        sys.stderr.flush()


def best_path(out: Path) -> Path:
    """``results.csv`` -> ``results.best.toml``."""
    return out.with_name(out.stem + ".best.toml")


def main(argv: Sequence[str]) -> int:
    """``trireme sweep``: 0 done, 1 some replays failed, 2 bad usage, config or data."""
    args = build_parser().parse_args(argv)
    try:
        check_out_path(args.out)
        if args.workers is not None and args.workers < 1:
            raise ConfigError("--workers", "", f"expected at least 1, got {args.workers}")
        walk = parse_walk_forward(args.walk_forward) if args.walk_forward else None
        axes = parse_grid(args.grid)
        path, base = _base_overrides(args.config, args.set)
        base_config = load_config(path, overrides=base)
        if base_config.engine.mode != "replay":
            raise ConfigError(base_config.where("engine.mode"), "engine.mode", "sweeps replay")
        points, skipped = grid_points(path, base, axes)
        data, first_ts, last_ts = data_span(base_config, args.data)
        fold_list = folds(walk, first_ts, last_ts) if walk is not None else []
    except (ConfigError, DataError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    for reason, count in skipped.items():
        sys.stderr.write(f"sweep: skipped {count} point(s): {reason}\n")
    if not points:
        sys.stderr.write("error: --grid: no valid point in the grid\n")
        return EXIT_USAGE
    workers = args.workers or max(1, min(len(points), os.cpu_count() or 1))
    where = args.scheduler or f"a LocalCluster of {workers} worker process(es)"
    tasks = len(points) * len(fold_list) + len(fold_list) if walk else len(points)
    sys.stderr.write(f"sweep: {len(points)} point(s), {tasks} replay(s) on {where}\n")
    started = time.perf_counter()
    show = _Show()
    with dask_client(args.scheduler, workers) as client:
        if walk is None:
            outcome = run_grid(client, points, data=data, rank_by=args.rank, progress=show)
        else:
            outcome = run_walk_forward(
                client, points, fold_list, data=data, rank_by=args.rank, progress=show
            )
    seconds = time.perf_counter() - started
    _write(args.out, outcome, [k for k, _v in points[0].params], walk is not None, args.rank)
    sys.stdout.write(_summary(outcome, args.out, walk is not None, seconds) + "\n")
    for label, error in outcome.failed:
        sys.stderr.write(f"error: {label}: {error}\n")
    return EXIT_FAILED if outcome.failed else EXIT_OK


def _write(out: Path, outcome: SweepOutcome, keys: list[str], walk: bool, rank_by: str) -> None:
    if walk:
        lead = ["fold", "train_start", "train_end", "test_start", "test_end", "point"]
    else:
        lead = ["rank", "point"]
    write_table(outcome.rows, [*lead, *keys, *METRICS], out)
    if outcome.best is not None:
        what = "the last fold's pick (walk-forward)" if walk else f"rank 1 by {rank_by}"
        params = ", ".join(f"{k}={v!r}" for k, v in outcome.best.params)
        header = f"The best config of a Trireme sweep: {what}.\n{params}\nTable: {out}"
        best_path(out).write_text(config_toml(outcome.best.config, header))


def _summary(outcome: SweepOutcome, out: Path, walk: bool, seconds: float) -> str:
    lines = [f"sweep: {len(outcome.rows)} row(s) in {seconds:.1f} s -> {out}"]
    if walk and outcome.rows:
        total = sum(r["net_pnl"] for r in outcome.rows)
        trades = sum(r["trades"] for r in outcome.rows)
        lines.append(f"  out-of-sample: net PnL {total:,.2f} over {trades} trade(s)")
    for row in outcome.rows[:5]:
        head = f"fold {row['fold']}" if walk else f"#{row['rank']}"
        params = " ".join(f"{k}={row[k]}" for k in row if "." in k)
        lines.append(
            f"  {head:<7} {params}  net {row['net_pnl']:,.2f}  trades {row['trades']}  "
            f"{row['journal_sha256'][:12]}"
        )
    if outcome.best is not None:
        lines.append(f"  best config: {best_path(out)}")
    return "\n".join(lines)
