"""The portfolio optimiser's four objectives on real returns: 16 USD-M symbols' klines.

Reads a Freqtrade data directory of 1-minute futures candles
(``<BASE>_USDT_USDT-1m-futures.feather``), keeps the minutes every symbol has, and
builds bar returns (``--bar-minutes``, default hourly). Then a walk-forward test: at
each rebalance (every ``--rebalance-hours``) each objective of
:class:`engine.portfolio.Optimizer` (the one the portfolio actor runs: Ledoit-Wolf
covariance, Clarabel) is fitted on the previous ``--lookback-hours`` of returns and
its weights are held until the next rebalance. Equal weight is the reference. Only
returns after a fit are scored (out of sample), with no fees and no funding: this
compares allocations, not strategies.

    python examples/portfolio_klines.py --data ../shared/data/external/freqtrade_1m_usdm

prints a table per objective (annualised return and volatility, Sharpe, max
drawdown, 95 % CVaR of bar returns, turnover) and the last weights; ``--json PATH``
writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from engine.portfolio import Constraints, Objective, Optimizer

SUFFIX = "_USDT_USDT-1m-futures.feather"
HOURS_PER_YEAR = 24 * 365


def _die(message: str) -> None:
    """Bad input: one line on stderr, exit status 2."""
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(2)


def load_closes(data: Path, symbols: list[str] | None = None) -> pd.DataFrame:
    """Close prices by minute (rows) and symbol (columns), minutes every symbol has."""
    files = sorted(data.glob(f"*{SUFFIX}"))
    if not files:
        _die(f"{data}: no *{SUFFIX} files")
    closes = {}
    for path in files:
        symbol = path.name.removesuffix(SUFFIX) + "USDT"
        if symbols and symbol not in symbols:
            continue
        frame = pd.read_feather(path, columns=["date", "close"])
        closes[symbol] = frame.set_index("date")["close"]
    if len(closes) < 2:
        _die(f"{data}: need at least two symbols, found {sorted(closes)}")
    return pd.DataFrame(closes).dropna(how="any").sort_index()


def bar_returns(closes: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """Simple returns of ``minutes``-long bars (the close of each bar)."""
    bars = closes.resample(f"{minutes}min", label="right", closed="right").last().dropna()
    return bars.pct_change().dropna()


def walk_forward(
    returns: pd.DataFrame,
    objective: Objective | None,
    *,
    lookback: int,
    rebalance: int,
    max_weight: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Out-of-sample bar returns of one allocation rule, its last weights and turnover.

    ``objective`` None is equal weight. Weights drift with prices between rebalances.
    """
    r = returns.to_numpy()
    n = r.shape[1]
    optimizer = (
        Optimizer(n, objective, Constraints(max_weight=max_weight, long_only=True))
        if objective is not None
        else None
    )
    out: list[float] = []
    weights = np.full(n, 1.0 / n)
    held = weights.copy()
    turnover = 0.0
    for start in range(lookback, r.shape[0], rebalance):
        if optimizer is not None:
            weights = optimizer.solve(r[start - lookback : start]).weights
            weights = np.clip(weights, 0.0, None)
            weights = weights / weights.sum()
        turnover += float(np.abs(weights - held).sum())
        held = weights.copy()
        for row in r[start : start + rebalance]:
            gross = float(held @ row)
            out.append(gross)
            held = held * (1.0 + row) / (1.0 + gross)  # drift with the prices
    return np.asarray(out), weights, turnover


def score(bars: np.ndarray, bar_minutes: int) -> dict[str, float]:
    """Annualised return and volatility, Sharpe (no risk-free rate), max drawdown, CVaR95."""
    per_year = HOURS_PER_YEAR * 60 / bar_minutes
    equity = np.cumprod(1.0 + bars)
    peak = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    mean, std = float(bars.mean()), float(bars.std(ddof=1))
    tail = np.sort(bars)[: max(1, math.ceil(0.05 * bars.size))]
    return {
        "return_ann": mean * per_year,
        "vol_ann": std * math.sqrt(per_year),
        "sharpe": mean / std * math.sqrt(per_year) if std > 0 else float("nan"),
        "max_drawdown": float((1.0 - equity / peak).max()),
        "cvar95_bar": float(-tail.mean()),
        "total_return": float(equity[-1] - 1.0),
    }


def run(
    data: Path,
    *,
    symbols: list[str] | None = None,
    bar_minutes: int = 60,
    lookback_hours: int = 168,
    rebalance_hours: int = 24,
    max_weight: float = 0.25,
) -> dict[str, object]:
    """The whole example as a dict (what ``--json`` writes)."""
    closes = load_closes(data, symbols)
    returns = bar_returns(closes, bar_minutes)
    per_hour = 60 / bar_minutes
    lookback = int(lookback_hours * per_hour)
    rebalance = max(1, int(rebalance_hours * per_hour))
    if returns.shape[0] <= lookback + 1:
        _die(f"{returns.shape[0]} bars, need more than the lookback ({lookback})")
    rules: dict[str, Objective | None] = {"equal_weight": None}
    rules.update({o.value: o for o in Objective})
    results: dict[str, object] = {}
    for name, objective in rules.items():
        bars, weights, turnover = walk_forward(
            returns, objective, lookback=lookback, rebalance=rebalance, max_weight=max_weight
        )
        results[name] = {
            **score(bars, bar_minutes),
            "turnover": turnover,
            "last_weights": {
                s: round(float(w), 4) for s, w in zip(returns.columns, weights, strict=True)
            },
        }
    return {
        "symbols": list(returns.columns),
        "first": str(returns.index[0]),
        "last": str(returns.index[-1]),
        "bars": int(returns.shape[0]),
        "out_of_sample_bars": int(returns.shape[0] - lookback),
        "bar_minutes": bar_minutes,
        "lookback_hours": lookback_hours,
        "rebalance_hours": rebalance_hours,
        "max_weight": max_weight,
        "results": results,
    }


def table(report: dict[str, object]) -> str:
    """The report as a markdown table plus the last weights."""
    results = report["results"]
    assert isinstance(results, dict)
    lines = [
        f"{len(report['symbols'])} symbols, {report['first']} .. {report['last']}, "  # type: ignore[arg-type]
        f"{report['out_of_sample_bars']} out-of-sample {report['bar_minutes']}-min bars",
        "",
        "| rule | total return | return (ann., arithmetic) | vol (ann.) | Sharpe | max DD |"
        " CVaR95/bar | turnover |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['total_return']:+.2%} | {r['return_ann']:+.1%} | "
            f"{r['vol_ann']:.1%} | {r['sharpe']:.2f} | "
            f"{r['max_drawdown']:.1%} | {r['cvar95_bar']:.2%} | {r['turnover']:.2f} |"
        )
    lines += ["", "Last weights:"]
    for name, r in results.items():
        top = sorted(r["last_weights"].items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{s} {w:.0%}" for s, w in top if w >= 0.005)
        lines.append(f"- {name}: {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data/external/freqtrade_1m_usdm")
    )
    parser.add_argument("--symbols", nargs="*", help="e.g. BTCUSDT ETHUSDT (default: all)")
    parser.add_argument("--bar-minutes", type=int, default=60)
    parser.add_argument("--lookback-hours", type=int, default=168)
    parser.add_argument("--rebalance-hours", type=int, default=24)
    parser.add_argument("--max-weight", type=float, default=0.25)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    report = run(
        args.data,
        symbols=args.symbols,
        bar_minutes=args.bar_minutes,
        lookback_hours=args.lookback_hours,
        rebalance_hours=args.rebalance_hours,
        max_weight=args.max_weight,
    )
    sys.stdout.write(table(report) + "\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
