"""Public market endpoints of the loopback exchange beyond book and trades.

``/fapi/v1/ticker/24hr``, ``/fapi/v1/ticker/price`` and ``/fapi/v2/ticker/price``,
``/fapi/v1/ticker/bookTicker``, ``/fapi/v1/klines``, ``/fapi/v1/premiumIndex``,
``/fapi/v1/fundingRate``, ``/fapi/v1/openInterest`` and the two spot paths
python-binance's constructor calls (``/api/v3/ping``, ``/api/v3/time``). Bodies
are Binance's shapes; without a symbol the ticker endpoints answer a list of
every symbol.

Where the capture lacks a figure, what is served follows from what the
loopback exchange is:

* mark, index and funding come from a recorded ``markPrice`` stream when there
  is one; else the mark is the book's mid (as everywhere on this exchange), the
  index equals it, and the funding rate is what Binance's formula gives with no
  premium: the interest rate, 0.01% per 8 hours; the next funding time is the
  next 00:00/08:00/16:00 UTC;
* funding is never settled here, so the funding rate history is empty;
* open interest is the open position of the one simulated account, the only
  positions this exchange holds.

No I/O: the server supplies the market view and the played-trade statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Protocol

import orjson

from . import _exchange_errors as err
from ._market_stats import MarketStats

_FUNDING_INTERVAL_MS = 8 * 3_600_000
_INTEREST_RATE = Decimal("0.00010000")

Params = Mapping[str, str]


class MarketSource(Protocol):
    """What the public endpoints read of the replayed market and the account."""

    def exchange_ms(self) -> int:
        """The exchange clock, ms."""
        ...

    def mark_price(self, symbol: str) -> Decimal:
        """The mark price (0 while unknown)."""
        ...

    def recorded_mark(self, symbol: str) -> Mapping[str, Any] | None:
        """The last played ``markPriceUpdate`` event (re-timed), if the capture has one."""
        ...

    def open_interest(self, symbol: str) -> Decimal:
        """The open position of the simulated account, in contracts."""
        ...


class PublicEndpoints:
    """The handlers, keyed by path.

    Args:
        market: clock, marks and the account.
        stats: played trades and book tickers.
        symbols: the traded symbols.
        price_places, qty_places: decimals of each symbol's prices and quantities.
    """

    def __init__(
        self,
        market: MarketSource,
        stats: MarketStats,
        symbols: list[str],
        price_places: Mapping[str, int],
        qty_places: Mapping[str, int],
    ) -> None:
        self._market = market
        self._stats = stats
        self._symbols = sorted(symbols)
        self._pp = dict(price_places)
        self._qp = dict(qty_places)
        self.handlers: Mapping[str, Callable[[Params], Any]] = {
            "/fapi/v1/ticker/24hr": self._ticker_24hr,
            "/fapi/v1/ticker/price": self._ticker_price,
            "/fapi/v2/ticker/price": self._ticker_price,
            "/fapi/v1/ticker/bookTicker": self._book_ticker,
            "/fapi/v1/klines": self._klines,
            "/fapi/v1/premiumIndex": self._premium_index,
            "/fapi/v1/fundingRate": self._funding_rate,
            "/fapi/v1/openInterest": self._open_interest,
            "/api/v3/ping": lambda _params: {},
            "/api/v3/time": lambda _params: {"serverTime": self._market.exchange_ms()},
        }

    def handle(self, path: str, params: Params) -> tuple[int, bytes] | None:
        """Answer ``path``, or ``None`` when it is not one of these endpoints.

        Raises:
            ExchangeApiError: a bad or missing parameter.
        """
        handler = self.handlers.get(path)
        if handler is None:
            return None
        return 200, orjson.dumps(handler(params))

    # -- helpers ----------------------------------------------------------------------

    def _symbol(self, params: Params) -> str:
        symbol = params.get("symbol", "")
        if not symbol:
            raise err.mandatory("symbol")
        if symbol not in self._symbols:
            raise err.bad_symbol()
        return symbol

    def _each(self, params: Params, row: Callable[[str], Any]) -> Any:
        """One row for ``symbol``, or a list of every symbol's row."""
        if params.get("symbol"):
            return row(self._symbol(params))
        return [r for r in (row(s) for s in self._symbols) if r is not None]

    @staticmethod
    def _int(params: Params, name: str) -> int | None:
        if not params.get(name):
            return None
        try:
            return int(params[name])
        except ValueError:
            raise err.illegal_chars(name, "^[0-9]{1,20}$") from None

    # -- endpoints --------------------------------------------------------------------

    def _ticker_24hr(self, params: Params) -> Any:
        now = self._market.exchange_ms()
        return self._each(params, lambda s: self._stats.ticker_24hr(s, now))

    def _ticker_price(self, params: Params) -> Any:
        def row(symbol: str) -> dict[str, Any]:
            found = self._stats.price_ticker(symbol)
            if found is not None:
                return found
            return {"symbol": symbol, "price": "0", "time": self._market.exchange_ms()}

        return self._each(params, row)

    def _book_ticker(self, params: Params) -> Any:
        def row(symbol: str) -> dict[str, Any]:
            found = self._stats.book_ticker(symbol)
            if found is not None:
                return found
            return {
                "lastUpdateId": 0,
                "symbol": symbol,
                "bidPrice": "0",
                "bidQty": "0",
                "askPrice": "0",
                "askQty": "0",
                "time": self._market.exchange_ms(),
            }

        return self._each(params, row)

    def _klines(self, params: Params) -> Any:
        symbol = self._symbol(params)
        interval = params.get("interval", "")
        if not interval:
            raise err.mandatory("interval")
        limit = self._int(params, "limit")
        if limit is None:
            limit = 500
        if not 1 <= limit <= 1500:
            raise err.invalid_param("limit")
        return self._stats.klines(
            symbol,
            interval,
            self._market.exchange_ms(),
            start_ms=self._int(params, "startTime"),
            end_ms=self._int(params, "endTime"),
            limit=limit,
        )

    def _premium_index(self, params: Params) -> Any:
        now = self._market.exchange_ms()

        def row(symbol: str) -> dict[str, Any]:
            pp = self._pp.get(symbol, 8)
            recorded = self._market.recorded_mark(symbol)
            if recorded is not None:
                mark, index = recorded["p"], recorded.get("i", recorded["p"])
                settle = recorded.get("P", mark)
                rate, next_funding = recorded.get("r", str(_INTEREST_RATE)), recorded["T"]
            else:
                price = self._market.mark_price(symbol)
                mark = index = settle = f"{price:.{pp}f}" if price else "0"
                rate = f"{_INTEREST_RATE:.8f}"
                next_funding = (now // _FUNDING_INTERVAL_MS + 1) * _FUNDING_INTERVAL_MS
            return {
                "symbol": symbol,
                "markPrice": mark,
                "indexPrice": index,
                "estimatedSettlePrice": settle,
                "lastFundingRate": rate,
                "interestRate": f"{_INTEREST_RATE:.8f}",
                "nextFundingTime": next_funding,
                "time": now,
            }

        return self._each(params, row)

    def _funding_rate(self, params: Params) -> Any:
        if params.get("symbol"):
            self._symbol(params)
        return []

    def _open_interest(self, params: Params) -> Any:
        symbol = self._symbol(params)
        qp = self._qp.get(symbol, 8)
        return {
            "openInterest": f"{self._market.open_interest(symbol):.{qp}f}",
            "symbol": symbol,
            "time": self._market.exchange_ms(),
        }
