"""Conditional (algo) orders of the loopback exchange: STOP_MARKET and TAKE_PROFIT_MARKET.

Since December 2025 Binance USD-M takes conditional orders only on the algo
order API (``POST /fapi/v1/algoOrder``; ``/fapi/v1/order`` answers -4120) and
reports them as ``ALGO_UPDATE`` user-data events. No I/O here: the server feeds
prices, this module answers with the events.

Triggers, as Binance defines them, on the last trade price (``workingType``
``CONTRACT_PRICE``, the default) or the mark price (``MARK_PRICE``), checked at
every replayed trade and mark price update:

* STOP_MARKET BUY and TAKE_PROFIT_MARKET SELL: price >= ``triggerPrice``;
* STOP_MARKET SELL and TAKE_PROFIT_MARKET BUY: price <= ``triggerPrice``.

An order that would trigger at once is refused (-2021). With ``priceProtect`` an
order does not trigger while mark and last price differ by more than the
symbol's ``triggerProtect`` (exchangeInfo). On trigger the algo order sends a
MARKET order of its quantity (``closePosition``: the whole position, reduce-only)
through the matching engine; the events follow Binance's recorded sequence:
``ALGO_UPDATE`` TRIGGERING, the order's ``ORDER_TRADE_UPDATE``s (``si`` = algo
id, ``st`` ``ALGO_CONDITION``), ``ALGO_UPDATE`` TRIGGERED then FINISHED; a
refused order (margin, reduce-only) ends the algo order REJECTED with the
reason in ``rm``. Conditional orders hold no margin until they trigger.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from . import _exchange_errors as err
from ._exchange_errors import ExchangeApiError
from ._trading import ZERO, MatchingEngine, OrderRequest, SymbolRules
from ._trading_format import algo_update

ALGO_ORDER_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
_REJECT_REASONS = {-2019: "margin not enough", -2022: "ReduceOnly Order is rejected."}

Event = dict[str, Any]


@attrs.frozen(kw_only=True)
class AlgoRequest:
    """A validated ``POST /fapi/v1/algoOrder``.

    Attributes:
        quantity: the MARKET order's quantity (0 with ``close_position``).
        working_type: ``CONTRACT_PRICE`` or ``MARK_PRICE``.
        client_algo_id: ``clientAlgoId`` (generated when not sent).
    """

    symbol: str
    side: str = attrs.field(validator=attrs.validators.in_(("BUY", "SELL")))
    type: str = attrs.field(validator=attrs.validators.in_(ALGO_ORDER_TYPES))
    quantity: Decimal
    trigger_price: Decimal
    working_type: str = attrs.field(
        default="CONTRACT_PRICE", validator=attrs.validators.in_(("CONTRACT_PRICE", "MARK_PRICE"))
    )
    reduce_only: bool = False
    close_position: bool = False
    price_protect: bool = False
    client_algo_id: str | None = None


@attrs.frozen(kw_only=True)
class AlgoOrder:
    """One conditional order as the exchange holds it.

    Attributes:
        status: ``NEW``, ``TRIGGERING``, ``TRIGGERED``, ``FINISHED``,
            ``CANCELED``, ``EXPIRED`` (``closePosition`` with no position to
            close) or ``REJECTED``.
        actual_order_id: the MARKET order it sent (``None`` before).
        actual_price, actual_qty: that order's average price and filled quantity.
    """

    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    type: str
    quantity: Decimal
    trigger_price: Decimal
    working_type: str
    reduce_only: bool
    close_position: bool
    price_protect: bool
    status: str = "NEW"
    create_time: int
    update_time: int
    trigger_time: int = 0
    actual_order_id: int | None = None
    actual_price: Decimal = ZERO
    actual_qty: Decimal = ZERO
    reject_reason: str = ""

    @property
    def is_open(self) -> bool:
        """Waiting for its trigger."""
        return self.status == "NEW"


def would_trigger(order_type: str, side: str, trigger: Decimal, price: Decimal) -> bool:
    """Whether ``price`` reaches the trigger of a STOP_MARKET / TAKE_PROFIT_MARKET."""
    if not price:
        return False
    if (side == "BUY") == (order_type == "STOP_MARKET"):
        return price >= trigger
    return price <= trigger


class AlgoBook:
    """The account's conditional orders.

    Args:
        engine: the matching engine the triggered orders go to.
        max_open: open algo orders allowed per symbol (``MAX_NUM_ALGO_ORDERS``).
        trigger_protect: per symbol, the largest mark/last divergence at which a
            ``priceProtect`` order still triggers (exchangeInfo ``triggerProtect``).
    """

    def __init__(
        self,
        engine: MatchingEngine,
        max_open: Mapping[str, int],
        trigger_protect: Mapping[str, Decimal],
    ) -> None:
        self._engine = engine
        self._max_open = dict(max_open)
        self._protect = dict(trigger_protect)
        self._orders: dict[int, AlgoOrder] = {}
        self._next_id = 2_000_000_000_000_001

    # -- views ------------------------------------------------------------------------

    def orders(self, symbol: str | None = None) -> list[AlgoOrder]:
        """Every algo order (one symbol or all), oldest first."""
        return [o for o in self._orders.values() if symbol is None or o.symbol == symbol]

    def open_orders(self, symbol: str | None = None) -> list[AlgoOrder]:
        """Algo orders waiting for their trigger, oldest first."""
        return [o for o in self.orders(symbol) if o.is_open]

    def find(self, *, algo_id: int | None, client_algo_id: str | None) -> AlgoOrder | None:
        """An algo order by id, or the newest with this client id."""
        if algo_id is not None:
            return self._orders.get(algo_id)
        for order in reversed(self._orders.values()):
            if order.client_algo_id == client_algo_id:
                return order
        return None

    # -- commands ---------------------------------------------------------------------

    def place(
        self, req: AlgoRequest, last: Decimal, mark: Decimal, now_ms: int
    ) -> tuple[AlgoOrder, list[Event]]:
        """Accept a conditional order.

        Args:
            req: the validated request.
            last, mark: the symbol's last trade and mark price now.
            now_ms: exchange time.

        Raises:
            ExchangeApiError: -4116 duplicate open ``clientAlgoId``; -4045 too many
                open algo orders; -2021 it would trigger at once.
        """
        cid = req.client_algo_id
        open_orders = self.open_orders(req.symbol)
        if cid is not None and any(o.client_algo_id == cid for o in open_orders):
            raise err.code(400, -4116, "ClientOrderId is duplicated.")
        if len(open_orders) >= self._max_open.get(req.symbol, 10):
            raise err.code(400, -4045, "Reach max stop order limit.")
        price = mark if req.working_type == "MARK_PRICE" else last
        if would_trigger(req.type, req.side, req.trigger_price, price):
            raise err.code(400, -2021, "Order would immediately trigger.")
        algo_id = self._next_id
        self._next_id += 1
        order = AlgoOrder(
            algo_id=algo_id,
            client_algo_id=cid if cid is not None else f"sim-algo-{algo_id}",
            symbol=req.symbol,
            side=req.side,
            type=req.type,
            quantity=req.quantity,
            trigger_price=req.trigger_price,
            working_type=req.working_type,
            reduce_only=req.reduce_only,
            close_position=req.close_position,
            price_protect=req.price_protect,
            create_time=now_ms,
            update_time=now_ms,
        )
        self._orders[algo_id] = order
        return order, [self._event(order, now_ms)]

    def cancel(
        self, *, algo_id: int | None, client_algo_id: str | None, now_ms: int
    ) -> tuple[AlgoOrder, list[Event]]:
        """``DELETE /fapi/v1/algoOrder``.

        Raises:
            ExchangeApiError: -2011 no such open algo order.
        """
        order = self.find(algo_id=algo_id, client_algo_id=client_algo_id)
        if order is None or not order.is_open:
            raise err.code(400, -2011, err.UNKNOWN_ORDER)
        return self._set(order, now_ms, status="CANCELED")

    def cancel_all(self, symbol: str, now_ms: int) -> list[Event]:
        """``DELETE /fapi/v1/algoOpenOrders``."""
        events: list[Event] = []
        for order in self.open_orders(symbol):
            events += self._set(order, now_ms, status="CANCELED")[1]
        return events

    def on_price(self, symbol: str, last: Decimal, mark: Decimal, now_ms: int) -> list[Event]:
        """Trigger the symbol's algo orders that the prices reach; returns the events."""
        events: list[Event] = []
        for order in self.open_orders(symbol):
            price = mark if order.working_type == "MARK_PRICE" else last
            if not would_trigger(order.type, order.side, order.trigger_price, price):
                continue
            if order.price_protect and self._protected(symbol, last, mark):
                continue
            events += self._trigger(order, now_ms)
        return events

    # -- internals --------------------------------------------------------------------

    def _protected(self, symbol: str, last: Decimal, mark: Decimal) -> bool:
        limit = self._protect.get(symbol, ZERO)
        return bool(limit and mark and last and abs(mark - last) / mark > limit)

    def _trigger(self, order: AlgoOrder, now_ms: int) -> list[Event]:
        order, events = self._set(order, now_ms, status="TRIGGERING", trigger_time=now_ms)
        qty = order.quantity
        if order.close_position:
            pos = self._engine.position(order.symbol).amount
            closes = (pos > 0 and order.side == "SELL") or (pos < 0 and order.side == "BUY")
            if not closes:
                return events + self._set(order, now_ms, status="EXPIRED")[1]
            qty = abs(pos)
        req = OrderRequest(
            symbol=order.symbol,
            side=order.side,
            type="MARKET",
            quantity=qty,
            reduce_only=order.reduce_only or order.close_position,
            client_order_id=order.client_algo_id,
            algo_id=order.algo_id,
        )
        try:
            _accepted, final, placed = self._engine.new_order(req, now_ms)
        except ExchangeApiError as exc:
            reason = _REJECT_REASONS.get(exc.code, exc.msg)
            return events + self._set(order, now_ms, status="REJECTED", reject_reason=reason)[1]
        events += placed
        order, triggered = self._set(
            order, now_ms, status="TRIGGERED", actual_order_id=final.order_id
        )
        events += triggered
        # A MARKET order is done at once (filled, or the rest expired): the algo
        # order finishes with what it executed.
        events += self._set(
            order,
            now_ms,
            status="FINISHED",
            actual_price=final.avg_price,
            actual_qty=final.executed_qty,
        )[1]
        return events

    def _set(self, order: AlgoOrder, now_ms: int, **changes: Any) -> tuple[AlgoOrder, list[Event]]:
        order = attrs.evolve(order, update_time=now_ms, **changes)
        self._orders[order.algo_id] = order
        return order, [self._event(order, now_ms)]

    def _event(self, order: AlgoOrder, now_ms: int) -> Event:
        rules: SymbolRules = self._engine.rules[order.symbol]
        return algo_update(order, rules, now_ms)
