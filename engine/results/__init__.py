"""Results a quant reads: round trips from the journal, statistics, the tear sheet.

* :func:`read_trades` rebuilds every round trip from a run's journal
  (:class:`Trade`: side, entry and exit, hold, exit reason, fees, funding, PnL);
  :class:`RoundTrips` is the synchronous core it feeds.
* :func:`trade_stats` turns trades and the equity curve into the summary's
  statistics; :func:`run_results` does both for a finished run.
* :class:`OrderActivity` counts orders by type and fills and fees by maker/taker
  (:func:`read_order_activity` for a journal file); :func:`run_results` puts its
  summary in the statistics as ``execution``.
* :func:`write_trades` writes the trade list as CSV or Parquet;
  :func:`tearsheet_html` / :func:`write_tearsheet` the self-contained HTML tear sheet.
"""

from ._files import COLUMNS as COLUMNS
from ._files import TRADE_FORMATS as TRADE_FORMATS
from ._files import trades_format as trades_format
from ._files import write_trades as write_trades
from ._orders import OrderActivity as OrderActivity
from ._orders import read_order_activity as read_order_activity
from ._results import RunResults as RunResults
from ._results import run_results as run_results
from ._stats import MAX_CURVE_POINTS as MAX_CURVE_POINTS
from ._stats import MIN_DAILY_RETURNS as MIN_DAILY_RETURNS
from ._stats import daily_returns as daily_returns
from ._stats import downsample as downsample
from ._stats import drawdown as drawdown
from ._stats import realized_curve as realized_curve
from ._stats import trade_stats as trade_stats
from ._tearsheet import tape_prices as tape_prices
from ._tearsheet import tearsheet_html as tearsheet_html
from ._tearsheet import write_tearsheet as write_tearsheet
from ._trades import OPEN_AT_END as OPEN_AT_END
from ._trades import RoundTrips as RoundTrips
from ._trades import Trade as Trade
from ._trades import journal_records as journal_records
from ._trades import read_round_trips as read_round_trips
from ._trades import read_trades as read_trades

__all__ = [
    "COLUMNS",
    "MAX_CURVE_POINTS",
    "MIN_DAILY_RETURNS",
    "OPEN_AT_END",
    "TRADE_FORMATS",
    "OrderActivity",
    "RoundTrips",
    "RunResults",
    "Trade",
    "daily_returns",
    "downsample",
    "drawdown",
    "journal_records",
    "read_order_activity",
    "read_round_trips",
    "read_trades",
    "realized_curve",
    "run_results",
    "tape_prices",
    "tearsheet_html",
    "trade_stats",
    "trades_format",
    "write_tearsheet",
    "write_trades",
]
