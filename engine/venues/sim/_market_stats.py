"""Tickers and klines of the loopback exchange, computed from the trades played so far.

No I/O: the server feeds every played trade and book ticker (times already
re-timed) and asks for REST bodies. Shapes as Binance USD-M sends them:

* ``/fapi/v1/ticker/24hr``: the rolling 24 hours up to now (``openTime`` is
  now - 24 h); prices with the symbol's tick decimals, quantities with its step
  decimals; ``priceChangePercent`` with 3 decimals;
* ``/fapi/v1/ticker/price`` and ``/fapi/v2/ticker/price``: last trade price and time;
* ``/fapi/v1/ticker/bookTicker``: the last played ``bookTicker`` event;
* ``/fapi/v1/klines``: 12-element rows, one per interval from the first played
  trade's interval to now's, empty intervals carrying the previous close with
  zero volume (as Binance fills quiet minutes). Intervals open at multiples of
  their length since the epoch, weeks on Monday 00:00 UTC, months on the 1st.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import attrs

from . import _exchange_errors as err

_ZERO = Decimal(0)
_DAY_MS = 86_400_000
_MONDAY_OFFSET_MS = 4 * _DAY_MS  # 1970-01-01 was a Thursday: weeks open 4 days later
INTERVAL_MS: Mapping[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": _DAY_MS,
    "3d": 3 * _DAY_MS,
    "1w": 7 * _DAY_MS,
    "1M": 0,  # calendar months
}


@attrs.frozen(kw_only=True)
class PlayedTrade:
    """One market trade as played (``time`` re-timed)."""

    time: int
    price: Decimal
    qty: Decimal
    trade_id: int
    buyer_maker: bool


def _fixed(value: Decimal, places: int) -> str:
    return f"{value:.{places}f}"


def interval_open(time_ms: int, interval: str) -> int:
    """The open time of the interval holding ``time_ms``."""
    length = INTERVAL_MS[interval]
    if interval == "1M":
        day = datetime.fromtimestamp(time_ms / 1000, tz=UTC)
        return calendar.timegm((day.year, day.month, 1, 0, 0, 0)) * 1000
    if interval == "1w":
        return (time_ms - _MONDAY_OFFSET_MS) // length * length + _MONDAY_OFFSET_MS
    return time_ms // length * length


def interval_close(open_ms: int, interval: str) -> int:
    """The close time (last millisecond) of the interval opening at ``open_ms``."""
    if interval == "1M":
        day = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000 - 1
    return open_ms + INTERVAL_MS[interval] - 1


class MarketStats:
    """Played trades and book tickers per symbol, and the REST bodies built on them.

    Args:
        price_places: decimals of each symbol's prices (its tick).
        qty_places: decimals of each symbol's quantities (its step).
    """

    def __init__(self, price_places: Mapping[str, int], qty_places: Mapping[str, int]) -> None:
        self._pp = dict(price_places)
        self._qp = dict(qty_places)
        self._trades: dict[str, list[PlayedTrade]] = {}
        self._book_tickers: dict[str, dict[str, Any]] = {}

    # -- input ------------------------------------------------------------------------

    def on_trade(self, symbol: str, trade: PlayedTrade) -> None:
        """A trade was played."""
        self._trades.setdefault(symbol, []).append(trade)

    def on_book_ticker(self, symbol: str, event: Mapping[str, Any], offset_ms: int) -> None:
        """A ``bookTicker`` event was played (its times shifted by ``offset_ms``)."""
        self._book_tickers[symbol] = {
            "lastUpdateId": event.get("u", 0),
            "symbol": symbol,
            "bidPrice": event["b"],
            "bidQty": event["B"],
            "askPrice": event["a"],
            "askQty": event["A"],
            "time": int(event.get("T", event.get("E", 0))) + offset_ms,
        }

    # -- views ------------------------------------------------------------------------

    def _now(self, symbol: str, now_ms: int) -> int:
        # A test playing faster than real time (``advance``) puts played trades
        # after the clock: what was played has happened, so "now" is never before it.
        last = self.last_trade(symbol)
        return max(now_ms, last.time) if last is not None else now_ms

    def last_trade(self, symbol: str) -> PlayedTrade | None:
        """The latest played trade of ``symbol``."""
        trades = self._trades.get(symbol)
        return trades[-1] if trades else None

    def book_ticker(self, symbol: str) -> dict[str, Any] | None:
        """The ``bookTicker`` REST row (``None`` before the first event)."""
        return self._book_tickers.get(symbol)

    def price_ticker(self, symbol: str) -> dict[str, Any] | None:
        """The ``ticker/price`` row (``None`` before the first trade)."""
        last = self.last_trade(symbol)
        if last is None:
            return None
        return {
            "symbol": symbol,
            "price": _fixed(last.price, self._pp.get(symbol, 8)),
            "time": last.time,
        }

    def ticker_24hr(self, symbol: str, now_ms: int) -> dict[str, Any]:
        """The ``ticker/24hr`` row of the 24 hours up to ``now_ms``."""
        pp, qp = self._pp.get(symbol, 8), self._qp.get(symbol, 8)
        now_ms = self._now(symbol, now_ms)
        start = now_ms - _DAY_MS
        window = [t for t in self._trades.get(symbol, []) if start <= t.time <= now_ms]
        if not window:
            zero_p, zero_q = _fixed(_ZERO, pp), _fixed(_ZERO, qp)
            return {
                "symbol": symbol,
                "priceChange": zero_p,
                "priceChangePercent": "0.000",
                "weightedAvgPrice": zero_p,
                "lastPrice": zero_p,
                "lastQty": zero_q,
                "openPrice": zero_p,
                "highPrice": zero_p,
                "lowPrice": zero_p,
                "volume": zero_q,
                "quoteVolume": "0",
                "openTime": start,
                "closeTime": now_ms,
                "firstId": -1,
                "lastId": -1,
                "count": 0,
            }
        first, last = window[0], window[-1]
        volume = sum((t.qty for t in window), _ZERO)
        quote = sum((t.qty * t.price for t in window), _ZERO)
        change = last.price - first.price
        return {
            "symbol": symbol,
            "priceChange": _fixed(change, pp),
            "priceChangePercent": _fixed(change / first.price * 100, 3),
            "weightedAvgPrice": _fixed(quote / volume, pp) if volume else _fixed(_ZERO, pp),
            "lastPrice": _fixed(last.price, pp),
            "lastQty": _fixed(last.qty, qp),
            "openPrice": _fixed(first.price, pp),
            "highPrice": _fixed(max(t.price for t in window), pp),
            "lowPrice": _fixed(min(t.price for t in window), pp),
            "volume": _fixed(volume, qp),
            "quoteVolume": _fixed(quote, 2),
            "openTime": start,
            "closeTime": now_ms,
            "firstId": first.trade_id,
            "lastId": last.trade_id,
            "count": len(window),
        }

    def klines(
        self,
        symbol: str,
        interval: str,
        now_ms: int,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[list[Any]]:
        """``/fapi/v1/klines`` rows, oldest first.

        Raises:
            ExchangeApiError: -1120 for an unknown interval.
        """
        if interval not in INTERVAL_MS:
            raise err.code(400, -1120, "Invalid interval.")
        trades = self._trades.get(symbol, [])
        if not trades:
            return []
        pp, qp = self._pp.get(symbol, 8), self._qp.get(symbol, 8)
        now_ms = self._now(symbol, now_ms)
        first_open = interval_open(trades[0].time, interval)
        last_open = interval_open(now_ms if end_ms is None else min(end_ms, now_ms), interval)
        opens: list[int] = []
        at = first_open
        while at <= last_open:
            opens.append(at)
            at = interval_close(at, interval) + 1
        if start_ms is not None:
            opens = [o for o in opens if interval_close(o, interval) >= start_ms]
            opens = opens[:limit]
        else:
            opens = opens[-limit:]
        if not opens:
            return []
        rows: list[list[Any]] = []
        index = 0
        close = trades[0].price
        while index < len(trades) and trades[index].time < opens[0]:
            close = trades[index].price
            index += 1
        for open_ms in opens:
            close_ms = interval_close(open_ms, interval)
            bucket: list[PlayedTrade] = []
            while index < len(trades) and trades[index].time <= close_ms:
                bucket.append(trades[index])
                index += 1
            if bucket:
                o, c = bucket[0].price, bucket[-1].price
                h, low = max(t.price for t in bucket), min(t.price for t in bucket)
            else:
                o = c = h = low = close
            close = c
            volume = sum((t.qty for t in bucket), _ZERO)
            quote = sum((t.qty * t.price for t in bucket), _ZERO)
            taker = [t for t in bucket if not t.buyer_maker]
            rows.append(
                [
                    open_ms,
                    _fixed(o, pp),
                    _fixed(h, pp),
                    _fixed(low, pp),
                    _fixed(c, pp),
                    _fixed(volume, qp),
                    close_ms,
                    _fixed(quote, 5),
                    len(bucket),
                    _fixed(sum((t.qty for t in taker), _ZERO), qp),
                    _fixed(sum((t.qty * t.price for t in taker), _ZERO), 5),
                    "0",
                ]
            )
        return rows
