"""A thin Binance USD-M REST client on one injected ``httpx.AsyncClient``.

Every request goes through the :class:`RateLimiter` (with its weight and
priority), is signed with the :class:`ServerClock`'s timestamp when the
endpoint needs it, runs under a Trio cancel scope (``trio.fail_after``) and has
its failure translated here, once, to a :class:`BinanceError`:

* no response in time, or the connection broke after sending:
  :class:`UnknownOrderStateError` (the order may exist);
* the connection could not be opened: :class:`ServiceUnavailableError`
  (nothing was sent);
* an error response: :func:`error_from_response`; a 429 or 418 also tells the
  limiter, and a -1021 re-syncs the clock and resends once with a fresh
  timestamp (a -1021 request was not executed, so resending is safe).

The market-data endpoints the live feed needs (``depth``, ``aggTrades``,
``historicalTrades``) are here too, at ``Priority.MARKET_DATA`` and with
Binance's documented weights, so that the feed's snapshots and backfill spend
the same limiter budget as the orders and see the same 429/418 state.

Parameters travel in the query string for every method, so the string signed
is exactly the string sent. The bytes go out through an :class:`OrderTransport`
(:mod:`._transport`): the httpx one for everything by default; order placement
and cancels can take a separate, leaner one (``order_transport``), and both
send the same query and have their answers read here, by the same code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import orjson
import trio

from ._clock import ServerClock
from ._errors import (
    BinanceError,
    IpBannedError,
    RateLimitedError,
    SendDeadlineError,
    TimestampSkewError,
    UnknownOrderStateError,
    error_from_response,
)
from ._ratelimit import Priority, RateLimiter
from ._signing import Credentials
from ._templates import PreparedOrder
from ._transport import HttpxTransport, InFlight, LeanTransport, OrderTransport, RawResponse

BASE_URL = "https://fapi.binance.com"
# Bound once: an enum member lookup costs a call on the inline order path.
_CLOSE = Priority.CLOSE
_NEW_ORDER = Priority.NEW_ORDER
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
"""The ``limit`` values ``GET /fapi/v1/depth`` accepts."""
HISTORICAL_TRADES_MAX = 500
"""``historicalTrades`` returns at most this many rows (USD-M; spot allows 1000)."""
AGG_TRADES_MAX = 1000
"""``aggTrades`` returns at most this many rows."""


def depth_weight(limit: int) -> int:
    """The request weight of ``GET /fapi/v1/depth`` for ``limit`` (Binance USD-M docs).

    Raises:
        ValueError: ``limit`` is not one Binance accepts.
    """
    if limit not in DEPTH_LIMITS:
        raise ValueError(f"depth limit must be one of {DEPTH_LIMITS}, not {limit!r}")
    return 2 if limit <= 50 else 5 if limit == 100 else 10 if limit == 500 else 20


def _order_ref(symbol: str, client_order_id: str | None, order_id: int | None) -> str:
    if client_order_id is None and order_id is None:
        raise ValueError("give client_order_id or order_id")
    ref = f"symbol={quote(symbol, safe='')}"
    if order_id is not None:
        ref += f"&orderId={int(order_id)}"
    if client_order_id is not None:
        ref += f"&origClientOrderId={quote(client_order_id, safe='')}"
    return ref


@attrs.frozen(kw_only=True)
class NewOrderInFlight:
    """A new order :meth:`BinanceRestClient.new_order_now` wrote; its answer is pending.

    Attributes:
        order: the prepared order (resent from it after a -1021).
        flight: the transport's request in flight.
        generation: the server clock's generation when it was signed.
    """

    order: PreparedOrder
    flight: InFlight
    generation: int


class BinanceRestClient:
    """Signed REST calls to Binance USD-M futures.

    Args:
        http: the shared ``httpx.AsyncClient`` (keep-alive pool; tests pass one
            on an ``httpx.MockTransport``), or any :class:`OrderTransport`.
        credentials: API key and secret; ``None`` allows public endpoints only.
        limiter: the rate limiter for this IP and account.
        clock: the server-time estimate used for ``timestamp``.
        base_url: the REST root (the loopback server's in tests and paper).
        recv_window_ms: ``recvWindow`` sent with signed requests.
        timeout_s: the deadline for one HTTP exchange (limiter wait excluded).
        order_transport: the transport for new orders and cancels (for example a
            :class:`LeanTransport`); ``http``'s by default.
    """

    def __init__(
        self,
        http: httpx.AsyncClient | OrderTransport,
        *,
        credentials: Credentials | None,
        limiter: RateLimiter,
        clock: ServerClock,
        base_url: str = BASE_URL,
        recv_window_ms: int | None = 5000,
        timeout_s: float = 5.0,
        order_transport: OrderTransport | None = None,
    ) -> None:
        self._transport: OrderTransport = (
            HttpxTransport(http, base_url) if isinstance(http, httpx.AsyncClient) else http
        )
        self._order_transport = order_transport if order_transport is not None else self._transport
        self._credentials = credentials
        self._key_headers = credentials.headers if credentials is not None else {}
        self._limiter = limiter
        self._clock = clock
        self._recv_window_ms = recv_window_ms
        self._timeout_s = timeout_s

    async def _request(
        self,
        method: str,
        path: str,
        params: str = "",
        *,
        signed: bool = False,
        api_key: bool = False,
        weight: int = 1,
        orders: int = 0,
        priority: Priority = Priority.QUERY,
        order_endpoint: bool = False,
        send_by: float | None = None,
        raw: bool = False,
        resent: bool = False,
        written: Callable[[], None] | None = None,
    ) -> Any:
        if (signed or api_key) and self._credentials is None:
            raise BinanceError(f"{method} {path} needs credentials")
        retried = resent
        while True:
            with trio.move_on_at(math.inf if send_by is None else send_by) as queued:
                await self._limiter.acquire(weight, orders=orders, priority=priority)
            if queued.cancelled_caught:
                raise SendDeadlineError(f"{method} {path}: not sent by its deadline (rate limit)")
            generation = self._clock.generation
            target = self._target(path, params, signed)
            headers = self._key_headers if (signed or api_key) else None
            transport = self._order_transport if order_endpoint else self._transport
            try:
                with trio.fail_after(self._timeout_s):
                    response = await transport.request(method, target, headers, written=written)
            except trio.TooSlowError as exc:
                raise UnknownOrderStateError(
                    f"{method} {path}: no response in {self._timeout_s} s"
                ) from exc
            # ServiceUnavailableError / UnknownOrderStateError from the transport pass through.
            try:
                return self._answer(method, path, response, order_endpoint=order_endpoint, raw=raw)
            except TimestampSkewError:
                if not signed or retried:
                    raise
            retried = True
            await self._clock.resync_after_skew(self.server_time, generation)

    def _target(self, path: str, params: str, signed: bool) -> str:
        query = params
        if signed:
            assert self._credentials is not None
            query = self._credentials.sign_query(
                params, timestamp_ms=self._clock.now_ms(), recv_window_ms=self._recv_window_ms
            )
        return f"{path}?{query}" if query else path

    def _answer(
        self, method: str, path: str, response: RawResponse, *, order_endpoint: bool, raw: bool
    ) -> Any:
        """The body of a success; else tell the limiter (429, 418) and raise the error."""
        status = response.status
        self._limiter.on_response(status, response.headers)
        if status < 400:
            if raw:
                return response.body
            try:
                return orjson.loads(response.body) if response.body else None
            except orjson.JSONDecodeError as exc:
                raise UnknownOrderStateError(
                    f"{method} {path}: unreadable body", status=status
                ) from exc
        err = error_from_response(
            status, response.body, response.headers, order_endpoint=order_endpoint
        )
        if isinstance(err, RateLimitedError):
            self._limiter.on_rate_limited(err.retry_after)
        elif isinstance(err, IpBannedError):
            seconds = err.retry_after
            if seconds is None and err.banned_until_ms is not None:
                seconds = err.banned_until_ms / 1000 - self._clock.now()
            self._limiter.on_banned(seconds)
        raise err

    async def server_time(self) -> int:
        """``GET /fapi/v1/time``: the server time in epoch ms (weight 1)."""
        data = await self._request("GET", "/fapi/v1/time", priority=Priority.CANCEL)
        return int(data["serverTime"])

    async def sync_time(self, *, samples: int = 3) -> float:
        """Measure the server-time offset now; returns it in seconds."""
        return await self._clock.sync(self.server_time, samples=samples)

    async def exchange_info(self) -> dict[str, Any]:
        """``GET /fapi/v1/exchangeInfo`` (weight 1)."""
        return await self._request("GET", "/fapi/v1/exchangeInfo")

    @property
    def limiter(self) -> RateLimiter:
        """The rate limiter this client's requests go through."""
        return self._limiter

    async def depth(self, symbol: str, limit: int = 1000) -> bytes:
        """``GET /fapi/v1/depth``: the order book snapshot's raw JSON body.

        Weight 2 for ``limit`` 5-50, 5 for 100, 10 for 500, 20 for 1000; sent at
        ``Priority.MARKET_DATA``.

        Raises:
            ValueError: ``limit`` is not one Binance accepts.
            BinanceError: as every request (a 429 or 418 also reaches the limiter).
        """
        weight = depth_weight(limit)
        return await self._request(
            "GET",
            "/fapi/v1/depth",
            f"symbol={quote(symbol, safe='')}&limit={int(limit)}",
            weight=weight,
            priority=Priority.MARKET_DATA,
            raw=True,
        )

    async def agg_trades(
        self, symbol: str, *, from_id: int, limit: int = AGG_TRADES_MAX
    ) -> list[dict[str, Any]]:
        """``GET /fapi/v1/aggTrades`` from aggregate trade id ``from_id`` (weight 20)."""
        return await self._request(
            "GET",
            "/fapi/v1/aggTrades",
            f"symbol={quote(symbol, safe='')}&fromId={int(from_id)}"
            f"&limit={min(int(limit), AGG_TRADES_MAX)}",
            weight=20,
            priority=Priority.MARKET_DATA,
        )

    async def historical_trades(
        self, symbol: str, *, from_id: int, limit: int = HISTORICAL_TRADES_MAX
    ) -> list[dict[str, Any]]:
        """``GET /fapi/v1/historicalTrades`` from trade id ``from_id`` (weight 20).

        Binance files it under MARKET_DATA security: the API key is sent when
        this client has credentials.
        """
        return await self._request(
            "GET",
            "/fapi/v1/historicalTrades",
            f"symbol={quote(symbol, safe='')}&fromId={int(from_id)}"
            f"&limit={min(int(limit), HISTORICAL_TRADES_MAX)}",
            api_key=self._credentials is not None,
            weight=20,
            priority=Priority.MARKET_DATA,
        )

    async def new_order(
        self,
        order: PreparedOrder,
        *,
        priority: Priority | None = None,
        send_by: float | None = None,
        written: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """``POST /fapi/v1/order``: place a prepared order; returns Binance's response.

        A conditional order (STOP_MARKET, TAKE_PROFIT_MARKET) goes to
        ``POST /fapi/v1/algoOrder`` instead (its :attr:`PreparedOrder.path`); the
        answer is then the algo order (``algoId``, ``algoStatus``).

        Args:
            order: from :meth:`OrderTemplate.prepare`.
            priority: defaults to ``CLOSE`` for reduce-only orders, else ``NEW_ORDER``.
            send_by: Trio time by which the request must have left the rate
                limiter's queue; ``None``: no deadline.
            written: called as soon as the request's last byte is written
                (each time, if it is resent).

        Raises:
            SendDeadlineError: still queued at ``send_by``; nothing was sent.
            OrderRejectedError: refused; nothing was placed.
            UnknownOrderStateError: the order may or may not exist; find out by
                ``query_order(symbol, client_order_id=...)``, never assume it failed.
            BinanceError: any other failure.

        On cancellation after sending, the order's state is unknown as well.
        """
        if priority is None:
            priority = Priority.CLOSE if order.reduce_only else Priority.NEW_ORDER
        return await self._request(
            "POST",
            order.path,
            order.params,
            signed=True,
            weight=0,  # new orders count against the order limits, not the IP weight
            orders=1,
            priority=priority,
            order_endpoint=True,
            send_by=send_by,
            written=written,
        )

    def new_order_now(
        self, order: PreparedOrder, *, written: Callable[[], None] | None = None
    ) -> NewOrderInFlight | None:
        """Write ``POST /fapi/v1/order`` at once, in the caller's task, if nothing is in the way.

        The inline path of :meth:`new_order`: when the order transport can write
        without waiting (:meth:`LeanTransport.write_now`: an idle plain-TCP
        connection) and the rate limiter lets the order through now
        (:meth:`RateLimiter.try_acquire`: nobody queued, room in every window),
        the signed request is written before this returns; :meth:`finish_new_order`
        reads its answer. ``None``: nothing was sent; use :meth:`new_order`. (An
        order counted by the limiter whose write the socket then refused stays
        counted: the budget errs on the safe side.)
        """
        transport = self._order_transport
        if not isinstance(transport, LeanTransport) or not transport.can_write_now():
            return None
        priority = _CLOSE if order.reduce_only else _NEW_ORDER
        if not self._limiter.try_acquire(0, orders=1, priority=priority):
            return None
        generation = self._clock.generation
        target = self._target(order.path, order.params, True)
        flight = transport.write_now("POST", target, self._key_headers, written=written)
        if flight is None:
            return None
        return NewOrderInFlight(order=order, flight=flight, generation=generation)

    async def finish_new_order(self, sent: NewOrderInFlight) -> dict[str, Any]:
        """The answer to an order :meth:`new_order_now` wrote; raises as :meth:`new_order`.

        A -1021 answer re-syncs the clock and resends once (through
        :meth:`new_order`'s path, same ``clientOrderId``).
        """
        transport = self._order_transport
        assert isinstance(transport, LeanTransport)
        path = sent.order.path
        try:
            with trio.fail_after(self._timeout_s):
                response = await transport.finish(sent.flight)
        except trio.TooSlowError as exc:
            raise UnknownOrderStateError(
                f"POST {path}: no response in {self._timeout_s} s"
            ) from exc
        try:
            return self._answer("POST", path, response, order_endpoint=True, raw=False)  # type: ignore[no-any-return]
        except TimestampSkewError:
            pass
        await self._clock.resync_after_skew(self.server_time, sent.generation)
        order = sent.order
        return await self._request(
            "POST",
            path,
            order.params,
            signed=True,
            weight=0,
            orders=1,
            priority=Priority.CLOSE if order.reduce_only else Priority.NEW_ORDER,
            order_endpoint=True,
            resent=True,
        )

    async def cancel_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> dict[str, Any]:
        """``DELETE /fapi/v1/order`` by client order id or order id (weight 1)."""
        return await self._request(
            "DELETE",
            "/fapi/v1/order",
            _order_ref(symbol, client_order_id, order_id),
            signed=True,
            priority=Priority.CANCEL,
            order_endpoint=True,
        )

    async def amend_order(self, params: str) -> dict[str, Any]:
        """``PUT /fapi/v1/order``: new price and quantity of an open LIMIT order
        (``params`` from :meth:`OrderTemplate.amend_params`; weight 1, one order)."""
        return await self._request(
            "PUT",
            "/fapi/v1/order",
            params,
            signed=True,
            orders=1,
            priority=Priority.CANCEL,
            order_endpoint=True,
        )

    async def cancel_algo_order(self, *, client_algo_id: str) -> dict[str, Any]:
        """``DELETE /fapi/v1/algoOrder`` by ``clientAlgoId`` (weight 1)."""
        return await self._request(
            "DELETE",
            "/fapi/v1/algoOrder",
            f"clientAlgoId={quote(client_algo_id, safe='')}",
            signed=True,
            priority=Priority.CANCEL,
            order_endpoint=True,
        )

    async def query_algo_order(self, *, client_algo_id: str) -> dict[str, Any]:
        """``GET /fapi/v1/algoOrder`` by ``clientAlgoId`` (weight 1)."""
        return await self._request(
            "GET",
            "/fapi/v1/algoOrder",
            f"clientAlgoId={quote(client_algo_id, safe='')}",
            signed=True,
        )

    async def open_algo_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """``GET /fapi/v1/openAlgoOrders`` (weight 1 for a symbol, 40 for all)."""
        params = f"symbol={quote(symbol, safe='')}" if symbol else ""
        return await self._request(
            "GET", "/fapi/v1/openAlgoOrders", params, signed=True, weight=1 if symbol else 40
        )

    async def cancel_all(self, symbol: str) -> dict[str, Any]:
        """``DELETE /fapi/v1/allOpenOrders`` for one symbol (weight 1)."""
        return await self._request(
            "DELETE",
            "/fapi/v1/allOpenOrders",
            f"symbol={quote(symbol, safe='')}",
            signed=True,
            priority=Priority.CANCEL,
            order_endpoint=True,
        )

    async def query_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> dict[str, Any]:
        """``GET /fapi/v1/order`` by client order id or order id (weight 1)."""
        return await self._request(
            "GET", "/fapi/v1/order", _order_ref(symbol, client_order_id, order_id), signed=True
        )

    async def open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """``GET /fapi/v1/openOrders`` (weight 1 for a symbol, 40 for all)."""
        params = f"symbol={quote(symbol, safe='')}" if symbol else ""
        return await self._request(
            "GET", "/fapi/v1/openOrders", params, signed=True, weight=1 if symbol else 40
        )

    async def position_risk(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """``GET /fapi/v2/positionRisk`` (weight 5)."""
        params = f"symbol={quote(symbol, safe='')}" if symbol else ""
        return await self._request("GET", "/fapi/v2/positionRisk", params, signed=True, weight=5)

    async def user_trades(
        self,
        symbol: str,
        *,
        order_id: int | None = None,
        start_time_ms: int | None = None,
        from_id: int | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """``GET /fapi/v1/userTrades``: the account's trades of one symbol (weight 5).

        Args:
            symbol: the symbol.
            order_id: only this order's trades.
            start_time_ms: trades at or after this time (Binance serves 7 days at most).
            from_id: trades with this id and later.
            limit: at most this many (Binance's cap is 1000).
        """
        params = f"symbol={quote(symbol, safe='')}"
        if order_id is not None:
            params += f"&orderId={int(order_id)}"
        if start_time_ms is not None:
            params += f"&startTime={int(start_time_ms)}"
        if from_id is not None:
            params += f"&fromId={int(from_id)}"
        params += f"&limit={int(limit)}"
        return await self._request("GET", "/fapi/v1/userTrades", params, signed=True, weight=5)

    async def create_listen_key(self) -> str:
        """``POST /fapi/v1/listenKey``: open (or extend) the user-data stream key."""
        data = await self._request(
            "POST", "/fapi/v1/listenKey", api_key=True, priority=Priority.NEW_ORDER
        )
        return str(data["listenKey"])

    async def keepalive_listen_key(self) -> None:
        """``PUT /fapi/v1/listenKey``: extend the key by 60 minutes."""
        await self._request("PUT", "/fapi/v1/listenKey", api_key=True, priority=Priority.NEW_ORDER)

    async def close_listen_key(self) -> None:
        """``DELETE /fapi/v1/listenKey``: close the user-data stream."""
        await self._request(
            "DELETE", "/fapi/v1/listenKey", api_key=True, priority=Priority.NEW_ORDER
        )
