"""Trade statistics, the equity curve and its deterministic downsampling.

Sharpe and Sortino are computed only where they mean something: on daily returns
of the equity curve (the equity at each UTC midnight the run spans, the start
capital included), annualised with ``sqrt(365)`` (crypto trades every day), and
only with at least :data:`MIN_DAILY_RETURNS` of them; otherwise they are None and
the summary says ``n/a (run too short: ...)``. A per-step ratio annualised from a
three-minute run (the old -681) says nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from ._trades import Trade

MIN_DAILY_RETURNS = 30
DAY_NS = 86_400 * 1_000_000_000
MAX_CURVE_POINTS = 2_000


def realized_curve(pnl_events: Sequence[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative PnL after fees and funding at each fill or payment, in time order.

    Ties keep journal order (a stable sort), so the curve is the same however the
    run was batched.
    """
    if not pnl_events:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    ts = np.fromiter((t for t, _ in pnl_events), dtype=np.int64, count=len(pnl_events))
    delta = np.fromiter((d for _, d in pnl_events), dtype=np.float64, count=len(pnl_events))
    order = np.argsort(ts, kind="stable")
    return ts[order], np.cumsum(delta[order])


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Distance below the running peak at each point (>= 0)."""
    if equity.shape[0] == 0:
        return equity.copy()
    return np.maximum.accumulate(equity) - equity


def downsample(
    ts: np.ndarray, values: np.ndarray, max_points: int = MAX_CURVE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of a curve, chosen by index only (deterministic).

    The curve is cut into ``max_points // 2`` equal runs of indices; each keeps its
    lowest and highest point (in time order), so peaks and troughs, and with them
    the drawdown, survive; the first and last points are always kept.
    """
    n = ts.shape[0]
    if n <= max_points:
        return ts, values
    buckets = max(1, (max_points - 2) // 2)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep = [0, n - 1]
    for lo, hi in itertools.pairwise(edges.tolist()):
        if hi > lo:
            chunk = values[lo:hi]
            keep.append(lo + int(np.argmin(chunk)))
            keep.append(lo + int(np.argmax(chunk)))
    idx = np.unique(np.asarray(keep, dtype=np.int64))
    return ts[idx], values[idx]


def daily_returns(ts: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """Returns between the equity at consecutive UTC midnights the curve spans.

    The equity at a midnight is the last sample at or before it; the run's first
    sample opens the first day and its last sample closes the last day.
    """
    if ts.shape[0] < 2:
        return np.zeros(0)
    first_midnight = (int(ts[0]) // DAY_NS + 1) * DAY_NS
    marks = np.arange(first_midnight, int(ts[-1]), DAY_NS, dtype=np.int64)
    idx = np.searchsorted(ts, marks, side="right") - 1
    levels = np.concatenate([[equity[0]], equity[idx], [equity[-1]]])
    if marks.shape[0] == 0:
        return np.zeros(0)
    prev = levels[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.diff(levels) / prev
    return out[np.isfinite(out)]


def _sharpe_sortino(daily: np.ndarray) -> tuple[float | None, float | None]:
    if daily.shape[0] < MIN_DAILY_RETURNS:
        return None, None
    mean, sd = float(daily.mean()), float(daily.std(ddof=1))
    downside = float(np.sqrt(np.mean(np.minimum(daily, 0.0) ** 2)))
    year = math.sqrt(365.0)
    return (
        None if sd == 0.0 else mean / sd * year,
        None if downside == 0.0 else mean / downside * year,
    )


def _ratio_note(daily: np.ndarray) -> str | None:
    if daily.shape[0] >= MIN_DAILY_RETURNS:
        return None
    return f"n/a (run too short: {daily.shape[0]} daily return(s), needs {MIN_DAILY_RETURNS})"


def _group(trades: Sequence[Trade]) -> dict[str, object]:
    """Counts and PnL of a group of closed trades."""
    wins = [t.net_pnl for t in trades if t.net_pnl > 0]
    losses = [t.net_pnl for t in trades if t.net_pnl <= 0]
    holds = [t.hold_s or 0.0 for t in trades]
    n = len(trades)
    return {
        "trades": n,
        "wins": len(wins),
        "losses": len(losses),
        "win_rate": len(wins) / n if n else None,
        "avg_win": sum(wins) / len(wins) if wins else None,
        "avg_loss": sum(losses) / len(losses) if losses else None,
        "profit_factor": (sum(wins) / -sum(losses) if losses and sum(losses) < 0 else None),
        "expectancy": sum(t.net_pnl for t in trades) / n if n else None,
        "avg_return": sum(t.ret for t in trades) / n if n else None,
        "avg_hold_s": sum(holds) / n if n else None,
        "max_hold_s": max(holds) if holds else None,
        "gross_pnl": sum((t.gross_pnl for t in trades), 0.0),
        "fees": sum((t.fees for t in trades), 0.0),
        "funding": sum((t.funding for t in trades), 0.0),
        "net_pnl": sum((t.net_pnl for t in trades), 0.0),
    }


def trade_stats(
    trades: Sequence[Trade],
    *,
    start_equity: float,
    curve: tuple[np.ndarray, np.ndarray],
    fees: float | None = None,
    funding: float | None = None,
) -> dict[str, object]:
    """The statistics a quant reads first, as a JSON-ready dict.

    Args:
        trades: every round trip (open ones are counted, not measured).
        start_equity: the capital the run starts with.
        curve: sample times (ns) and equity as PnL since the start (0 at the start).
        fees: every fee paid (default: the trades'; give the ledger's to count
            fees of orders no trade owns).
        funding: every funding payment (default: the trades').

    Returns:
        Totals (``trades``, ``win_rate``, ``profit_factor``...), ``long`` and
        ``short`` groups, ``per_symbol`` and ``per_exit_reason`` rows, ``start_equity``,
        ``end_equity``, ``max_drawdown`` and the annualised ``sharpe``/``sortino``
        (None with a ``ratio_note`` when the run is too short; see the module).
    """
    closed = [t for t in trades if t.closed]
    ts, pnl = curve
    equity = start_equity + pnl
    daily = daily_returns(
        np.concatenate([[ts[0]], ts]) if ts.shape[0] else ts,
        np.concatenate([[start_equity], equity]) if ts.shape[0] else equity,
    )
    sharpe, sortino = _sharpe_sortino(daily)
    out = _group(closed)
    reasons: dict[str, list[Trade]] = {}
    symbols: dict[str, list[Trade]] = {}
    for t in closed:
        reasons.setdefault(t.exit_reason, []).append(t)
        symbols.setdefault(t.symbol, []).append(t)
    out.update(
        open_at_end=len(trades) - len(closed),
        exit_reasons={k: len(v) for k, v in sorted(reasons.items())},
        long=_group([t for t in closed if t.side == "LONG"]),
        short=_group([t for t in closed if t.side == "SHORT"]),
        per_symbol=[{"symbol": s, **_group(v)} for s, v in sorted(symbols.items())],
        per_exit_reason=[{"exit_reason": r, **_group(v)} for r, v in sorted(reasons.items())],
        start_equity=float(start_equity),
        end_equity=float(equity[-1]) if equity.shape[0] else start_equity,
        max_drawdown=float(drawdown(np.concatenate([[0.0], pnl])).max()),
        daily_returns=int(daily.shape[0]),
        sharpe=sharpe,
        sortino=sortino,
        ratio_note=_ratio_note(daily),
    )
    if fees is not None:
        out["fees"] = fees
    if funding is not None:
        out["funding"] = funding
    return out
