"""``python -m tools.regime [fit|compare|trend] ...``.

``fit --data DIR --states 3 --out models/onnx/regime/hmm3.json`` fits the Gaussian HMM on the first
``--train-days`` of every symbol but ``--holdout`` (hmmlearn, the ``train`` extra), writes the
parameter file, and prints the held-out comparison with the threshold regimes as JSON;
``compare --data DIR --model FILE [--markdown]`` prints that comparison again from a saved
file (``--markdown``: the README tables); ``trend --data DIR --out DIR`` fits the
multi-timeframe trend model walk-forward and exports it to ONNX with a sidecar. Exit 2 on bad
arguments or data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine import EngineError
from engine.models._hmm import BarFeatureSpec, HmmParams

from ._data import BadDataError, load

_ROOT = Path(__file__).resolve().parents[2]
_DATA = _ROOT.parent / "shared" / "data" / "external" / "freqtrade_1m_usdm"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=_DATA, help="Freqtrade data directory")
    p.add_argument("--markdown", action="store_true", help="print the README table")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print JSON; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = args.pop(0) if args and args[0] in ("fit", "compare", "trend") else "fit"
    p = argparse.ArgumentParser(prog=f"python -m tools.regime {command}")
    _common(p)
    if command == "fit":
        p.add_argument("--states", type=int, default=3)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--train-days", type=float, default=20.0)
        p.add_argument("--test-days", type=float, default=10.0)
        p.add_argument("--holdout", nargs="*", default=["SOLUSDT"], help="never fitted on")
        p.add_argument("--seed", type=int, default=7)
    elif command == "compare":
        p.add_argument("--model", type=Path, required=True)
    else:
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--train-days", type=float, default=20.0)
        p.add_argument("--test-days", type=float, default=10.0)
        p.add_argument("--holdout", nargs="*", default=["SOLUSDT"], help="never fitted on")
        p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(args)
    if command in ("fit", "trend") and not (a.train_days > 0 and a.test_days > 0):
        p.error("--train-days and --test-days must be positive")
    if command == "fit" and a.states < 1:
        p.error("--states must be >= 1")
    try:
        if command == "fit":
            from ._regime import compare, fit_hmm, markdown, save

            spec = BarFeatureSpec()
            bars = load(a.data, spec)
            missing = sorted(set(a.holdout) - {b.symbol for b in bars})
            if missing:
                raise BadDataError(f"{a.data}: --holdout {missing}: no such symbol")
            params = fit_hmm(
                bars,
                states=a.states,
                spec=spec,
                train_days=a.train_days,
                test_days=a.test_days,
                holdout=list(a.holdout),
                seed=a.seed,
            )
            result = compare(params, bars)
            params = HmmParams.from_json(
                params.to_json() | {"evaluation": _brief(result)}, str(a.out)
            )
            save(params, a.out)
            result = {"path": str(a.out), **result}
        elif command == "compare":
            from ._regime import compare, markdown

            params = HmmParams.load(a.model)
            result = compare(params, load(a.data, params.features))
        else:
            from ._trend import fit_trend, markdown

            result = fit_trend(
                a.data,
                a.out,
                train_days=a.train_days,
                test_days=a.test_days,
                holdout=list(a.holdout),
                seed=a.seed,
            )
    except (BadDataError, EngineError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if a.markdown:
        sys.stdout.write(markdown(result))
    else:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


def _brief(result: dict) -> dict:
    """The separation numbers kept in the parameter file."""
    out = {}
    for group in ("seen_symbols", "held_out_symbols"):
        if group in result:
            g = result[group]
            out[group] = {
                "bars": g["bars"],
                "loglik_per_bar": g["loglik_per_bar"],
                **{
                    m: {
                        k: g[m][k]
                        for k in (
                            "top_over_bottom_next_hour_rel_vol",
                            "eta_squared_log_next_hour_rel_vol",
                            "switches_per_day",
                        )
                    }
                    for m in ("hmm", "threshold")
                },
            }
    return out


if __name__ == "__main__":
    raise SystemExit(main())
