"""A finished run's results: its trades, statistics and equity curve, from its journal."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np

from ._orders import read_order_activity
from ._stats import MAX_CURVE_POINTS, downsample, realized_curve, trade_stats
from ._trades import Trade, read_round_trips

CURVE_FROM_DRIVER = "equity marked to the mid at every risk sample (replay driver)"
CURVE_FROM_FILLS = "realized equity at each fill and funding payment (from the journal)"


@attrs.frozen(kw_only=True)
class RunResults:
    """What :func:`run_results` found.

    Attributes:
        trades: every round trip, closed ones first (see :class:`Trade`).
        stats: :func:`~engine.results.trade_stats` of the run, with ``execution``:
            its orders by type and fills and fees by liquidity
            (:meth:`OrderActivity.summary <engine.results.OrderActivity.summary>`).
        ts: equity sample times, ns (full resolution).
        equity: equity at those times, USDT, the start capital included.
        curve_source: :data:`CURVE_FROM_DRIVER` or :data:`CURVE_FROM_FILLS`.
    """

    trades: list[Trade]
    stats: dict[str, object]
    ts: np.ndarray
    equity: np.ndarray
    curve_source: str

    def curve_json(self, max_points: int = MAX_CURVE_POINTS) -> dict[str, object]:
        """The equity curve for the JSON report, downsampled deterministically."""
        ts, equity = downsample(self.ts, self.equity, max_points)
        return {
            "source": self.curve_source,
            "points": int(self.ts.shape[0]),
            "ts": [int(t) for t in ts],
            "equity": [float(e) for e in equity],
        }


def run_results(
    journal_path: Path,
    *,
    start_equity: float,
    equity_curve: tuple[np.ndarray, np.ndarray] | None = None,
) -> RunResults:
    """Trades, statistics and the equity curve of the run journaled at ``journal_path``.

    Args:
        journal_path: the run's journal.
        start_equity: the capital the run starts with (``risk.capital``).
        equity_curve: sample times (ns) and equity as PnL since the start, from the
            replay driver; None (paper, live, or a driver without one): the realized
            curve rebuilt from the journal's fills and funding payments.

    Raises:
        JournalError: the journal cannot be read.
    """
    trips = read_round_trips(journal_path)
    trades = trips.finish()
    if equity_curve is not None and len(equity_curve[0]) > 0:
        ts = np.asarray(equity_curve[0], dtype=np.int64)
        pnl = np.asarray(equity_curve[1], dtype=np.float64)
        source = CURVE_FROM_DRIVER
    else:
        ts, pnl = realized_curve(trips.pnl_events)
        source = CURVE_FROM_FILLS
    stats = trade_stats(
        trades,
        start_equity=start_equity,
        curve=(ts, pnl),
        fees=sum(t.fees for t in trades),
        funding=sum(t.funding for t in trades),
    )
    stats["execution"] = read_order_activity(journal_path).summary()
    return RunResults(
        trades=trades, stats=stats, ts=ts, equity=start_equity + pnl, curve_source=source
    )
