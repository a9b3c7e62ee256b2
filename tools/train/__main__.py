"""``python -m tools.train [train|evaluate|walkforward|deep] ...``.

``train --data PATH... --out DIR`` fits and exports the models; ``evaluate --data PATH...
[--config FILE]`` scores the configured ensemble on the data's entry signals and replays the
data with the engine with and without the filter (``--no-replay``: the signal metrics only);
``walkforward [--data PATH...] [--config FILE] [--markdown]`` trains on earlier windows and
judges on later ones, one symbol held out (:mod:`tools.train._walkforward`; by default on
every capture in ``../shared/data/external``); ``deep [--data PATH...] [--out DIR]`` scores the
sequence models walk-forward and exports them (:mod:`tools.train._deep`, the ``dl`` extra).
Each prints a JSON summary on stdout (``walkforward --markdown``: the README table). Exit 1
when an export fails its parity check, 2 on bad arguments, config or data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine import EngineError

from ._labels import StrategyConfig
from ._train import MODEL_KINDS, ExportParityError, train_all

_ROOT = Path(__file__).resolve().parents[2]


def _strategy_args(p: argparse.ArgumentParser) -> None:
    d = StrategyConfig()
    p.add_argument("--data", nargs="+", required=True, type=Path, help="capture files")
    p.add_argument("--sample-ms", type=int, default=d.sample_ms)
    p.add_argument("--fast", type=int, default=d.fast)
    p.add_argument("--slow", type=int, default=d.slow)
    p.add_argument("--take-profit-bps", type=float, default=d.take_profit_bps)
    p.add_argument("--stop-loss-bps", type=float, default=d.stop_loss_bps)
    p.add_argument("--max-hold-ms", type=int, default=d.max_hold_ms)
    p.add_argument("--fee-bps", type=float, default=d.fee_bps, help="per leg")
    p.add_argument("--threshold", type=float, default=0.3)
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--embargo-ms", type=int, default=5_000)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", required=True, type=Path, help="capture files or dirs")
    p.add_argument(
        "--config",
        type=Path,
        default=_ROOT / "config.toml",
        help="strategy, venue and [model] settings (default: the repository's config.toml)",
    )
    p.add_argument("--model", nargs="+", type=Path, help="ensemble members (default: config's)")
    p.add_argument("--threshold", type=float, help="default: the config's model.threshold")
    p.add_argument("--no-replay", action="store_true", help="signal metrics only")
    p.add_argument("--journal-dir", type=Path, help="keep the replays' journals and logs here")


def _walkforward_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", type=Path, help="default: every capture in ../shared")
    p.add_argument("--config", type=Path, default=_ROOT / "config.toml")
    p.add_argument("--splits", type=int, default=2, help="windows per capture")
    p.add_argument("--holdout-symbol", nargs="*", default=["ETHUSDT"], help="never trained on")
    p.add_argument("--label-fee-bps", type=float, help="default: the venue's taker fee")
    p.add_argument("--models", nargs="+", default=list(MODEL_KINDS), choices=MODEL_KINDS)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--min-positives", type=int, default=6)
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--work-dir", type=Path, help="keep journals and fold models here")
    p.add_argument("--markdown", action="store_true", help="print the README table")


def _deep_args(p: argparse.ArgumentParser) -> None:
    from ._deep import DEEP_KINDS

    p.add_argument("--data", nargs="+", type=Path, help="default: every capture in ../shared")
    p.add_argument("--config", type=Path, default=_ROOT / "config.toml")
    p.add_argument("--models", nargs="+", default=list(DEEP_KINDS), choices=DEEP_KINDS)
    p.add_argument("--window", type=int, default=16, help="feature rows per sequence")
    p.add_argument("--book-levels", type=int, default=5, help="multimodal: levels a side")
    p.add_argument("--splits", type=int, default=2, help="windows per capture")
    p.add_argument("--holdout-symbol", nargs="*", default=["ETHUSDT"], help="never trained on")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--label-fee-bps", type=float, help="default: the venue's taker fee")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--min-positives", type=int, default=6)
    p.add_argument("--out", type=Path, help="export the models (fitted on every window) here")
    p.add_argument("--work-dir", type=Path, help="keep the take-all journals here")


def _cfg(a: argparse.Namespace) -> StrategyConfig:
    return StrategyConfig(
        sample_ms=a.sample_ms,
        fast=a.fast,
        slow=a.slow,
        take_profit_bps=a.take_profit_bps,
        stop_loss_bps=a.stop_loss_bps,
        max_hold_ms=a.max_hold_ms,
        fee_bps=a.fee_bps,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print JSON; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = "train"
    if args and args[0] in ("train", "evaluate", "walkforward", "deep"):
        command = args.pop(0)
    p = argparse.ArgumentParser(prog=f"python -m tools.train {command}")
    if command == "train":
        _strategy_args(p)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--models", nargs="+", default=list(MODEL_KINDS), choices=MODEL_KINDS)
        p.add_argument("--seed", type=int, default=7)
    elif command == "walkforward":
        _walkforward_args(p)
    elif command == "deep":
        _deep_args(p)
    else:
        _evaluate_args(p)
    a = p.parse_args(args)
    if command == "walkforward" and (a.splits < 1 or a.boot < 1 or a.min_positives < 1):
        p.error("--splits, --boot and --min-positives must be >= 1")
    if command == "deep" and (
        a.splits < 1 or a.window < 1 or a.epochs < 1 or not 1 <= a.book_levels <= 10
    ):
        p.error("--splits, --window and --epochs must be >= 1, --book-levels in 1..10")
    try:
        if command == "train":
            result = train_all(
                a.data,
                a.out,
                _cfg(a),
                kinds=a.models,
                seed=a.seed,
                test_fraction=a.test_fraction,
                embargo_ms=a.embargo_ms,
                threshold=a.threshold,
            )
        elif command == "walkforward":
            from ._walkforward import markdown, walk_forward

            result = walk_forward(
                a.config,
                a.data,
                splits=a.splits,
                holdout_symbols=a.holdout_symbol,
                label_fee_bps=a.label_fee_bps,
                kinds=a.models,
                seed=a.seed,
                min_positives=a.min_positives,
                boot=a.boot,
                work_dir=a.work_dir,
            )
            if a.markdown:
                print(markdown(result), end="")
                return 0
        elif command == "deep":
            from ._deep import deep

            result = deep(
                a.config,
                a.data,
                kinds=a.models,
                window=a.window,
                levels=a.book_levels,
                splits=a.splits,
                holdout_symbols=a.holdout_symbol,
                seed=a.seed,
                epochs=a.epochs,
                min_positives=a.min_positives,
                label_fee_bps=a.label_fee_bps,
                out=a.out,
                work_dir=a.work_dir,
            )
        else:
            from ._evaluate import evaluate

            result = evaluate(
                a.data,
                a.config,
                model_paths=a.model,
                threshold=a.threshold,
                replay=not a.no_replay,
                journal_dir=a.journal_dir,
            )
    except ExportParityError as exc:
        print(f"error: export parity: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # _deep.DeepParityError (imported only with the dl extra)
        if type(exc).__name__ != "DeepParityError":
            raise
        print(f"error: export parity: {exc}", file=sys.stderr)
        return 1
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
