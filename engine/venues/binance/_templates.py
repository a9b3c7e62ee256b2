"""Per-symbol order templates built once from ``exchangeInfo``.

An :class:`OrderTemplate` holds a symbol's filters as pre-parsed
:class:`~decimal.Decimal` quanta and the constant head of every order's
parameter string, so preparing an order is two roundings, a few comparisons
and a string join, with no lookups and no float formatting.

Rounding rules:
    * quantity rounds DOWN to ``stepSize`` (never more than asked);
    * a limit price rounds to ``tickSize`` on the passive side: DOWN for a
      buy, UP for a sell, so the order never pays more (or sells for less)
      than the caller asked;
    * a ``float`` input is first read as its shortest ``repr`` (``0.1 + 0.2``
      is ``0.30000000000000004``) and, if it lies within ``1e-9`` of a step
      of a multiple, snapped to it, so ``0.7 - 0.4`` (``0.29999999999999993``)
      gives ``0.3`` and not ``0.299``; ``Decimal`` and ``str`` inputs are exact.

Checks before sending (each a :class:`FilterError` with a stable ``reason``):
``SYMBOL_NOT_TRADING``, ``CLIENT_ORDER_ID_INVALID``, ``QTY_INVALID``, ``QTY_BELOW_MIN``,
``QTY_ABOVE_MAX``
(LOT_SIZE for limit, MARKET_LOT_SIZE for market orders), ``PRICE_INVALID``,
``PRICE_BELOW_MIN``, ``PRICE_ABOVE_MAX``, ``PRICE_BELOW_PERCENT``,
``PRICE_ABOVE_PERCENT`` (PERCENT_PRICE, when a mark price is given),
``NOTIONAL_BELOW_MIN`` (MIN_NOTIONAL; reduce-only orders are exempt, as on
Binance; a market order is checked against ``ref_price`` when given).

STOP_MARKET and TAKE_PROFIT_MARKET go to Binance's algo order API
(``POST /fapi/v1/algoOrder``, ``algoType=CONDITIONAL``; ``/fapi/v1/order`` refuses
them since December 2025 with -4120): the prepared order carries that path, its
``triggerPrice`` (rounded to the tick like a limit price of its side, so that a
sell stop triggers no later than asked and a buy stop no later either) and
``clientAlgoId``; with ``close_position`` it sends ``closePosition=true`` and no
quantity (the whole position, whatever its size when it triggers).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import attrs

from engine.messages import Side

from ._errors import FilterError
from ._ids import CLIENT_ORDER_ID_PATTERN

Number = Decimal | str | float | int

_FLOAT_SNAP = Decimal("1e-9")
_ZERO = Decimal(0)
_INF = Decimal("Infinity")
_FLOAT_INF = math.inf
_SURE_PASS = 1.0 + 1e-9  # a float notional this far above the bound passes for sure
_QUANTITIES_KEPT = 4096


class OrderType(enum.Enum):
    """The order types the templates serialise."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP_MARKET = "STOP_MARKET"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"

    @property
    def conditional(self) -> bool:
        """Placed through the algo order API (a trigger price, no limit price)."""
        return self is _STOP_MARKET or self is _TAKE_PROFIT_MARKET


# Members bound once: an enum member lookup (and an Enum's hash) costs a Python call,
# and an order is prepared between a tick and its write.
_MARKET = OrderType.MARKET
_STOP_MARKET = OrderType.STOP_MARKET
_TAKE_PROFIT_MARKET = OrderType.TAKE_PROFIT_MARKET


class TimeInForce(enum.Enum):
    """Binance time in force; ``GTX`` is post-only (refused if it would take)."""

    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTX = "GTX"


_SIDE_NAMES = {Side.BUY: "BUY", Side.SELL: "SELL"}
ORDER_PATH = "/fapi/v1/order"
ALGO_ORDER_PATH = "/fapi/v1/algoOrder"


@attrs.frozen(kw_only=True)
class PreparedOrder:
    """An order checked against the filters and serialised, ready to sign.

    Attributes:
        symbol: the symbol.
        side: buy or sell.
        order_type: market or limit.
        quantity: the rounded quantity.
        price: the rounded limit price (``None`` for market orders).
        reduce_only: sent as ``reduceOnly=true``.
        client_order_id: sent as ``newClientOrderId`` (``clientAlgoId`` for a
            conditional order).
        params: the unsigned parameter string to send.
        path: where it is sent (``/fapi/v1/order`` or ``/fapi/v1/algoOrder``).
        time_in_force: a limit order's (``None`` for the other types).
        trigger_price: a conditional order's rounded ``triggerPrice``.
        close_position: a conditional order sent with ``closePosition=true``.
    """

    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None
    reduce_only: bool
    client_order_id: str
    params: str
    path: str = ORDER_PATH
    time_in_force: TimeInForce | None = None
    trigger_price: Decimal | None = None
    close_position: bool = False

    @property
    def conditional(self) -> bool:
        """An algo (conditional) order."""
        return self.order_type.conditional


def _to_decimal(value: Number, symbol: str, what: str) -> tuple[Decimal, bool]:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(symbol, f"{what}_INVALID")
        return Decimal(repr(value)), True
    try:
        dec = Decimal(value)
    except (InvalidOperation, ValueError, TypeError):
        raise FilterError(symbol, f"{what}_INVALID") from None
    if not dec.is_finite():
        raise FilterError(symbol, f"{what}_INVALID")
    return dec, False


def round_to_step(
    value: Decimal, step: Decimal, rounding: str, *, from_float: bool = False
) -> Decimal:
    """Round ``value`` to a multiple of ``step`` carrying ``step``'s exponent.

    Args:
        value: the value.
        step: the quantum (``tickSize`` or ``stepSize``), positive.
        rounding: a :mod:`decimal` rounding mode (``ROUND_FLOOR``, ``ROUND_CEILING``).
        from_float: ``value`` came from a float; snap float noise first.
    """
    units = value / step
    if from_float:
        nearest = units.to_integral_value(ROUND_HALF_EVEN)
        if abs(units - nearest) <= _FLOAT_SNAP:
            units = nearest
    return (units.to_integral_value(rounding) * step).quantize(step)


def _filters(symbol_info: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {f["filterType"]: f for f in symbol_info.get("filters", ())}


def _dec(filt: Mapping[str, Any] | None, key: str, default: Decimal) -> Decimal:
    if filt is None or key not in filt:
        return default
    value = Decimal(str(filt[key]))
    return value if value != 0 or default == _ZERO else default


@attrs.frozen(kw_only=True)
class OrderTemplate:
    """One symbol's filters and pre-serialised order heads.

    Build with :meth:`from_symbol_info` or :func:`templates_from_exchange_info`.
    A bound the venue did not send is open (0 or infinity).
    """

    symbol: str
    status: str = "TRADING"
    tick_size: Decimal
    min_price: Decimal = _ZERO
    max_price: Decimal = _INF
    step_size: Decimal
    min_qty: Decimal = _ZERO
    max_qty: Decimal = _INF
    market_step_size: Decimal
    market_min_qty: Decimal = _ZERO
    market_max_qty: Decimal = _INF
    min_notional: Decimal = _ZERO
    multiplier_up: Decimal = _INF
    multiplier_down: Decimal = _ZERO
    _heads: Mapping[tuple[Side, OrderType, TimeInForce | None], str] = attrs.field(
        init=False, repr=False, eq=False
    )
    # A float quantity's rounding and its text, by (quantity, market): an order's
    # Decimal work, done once per quantity (sizes repeat) off the tick-to-order path.
    _quantities: dict[tuple[float, bool], tuple[Decimal, str]] = attrs.field(
        init=False, repr=False, eq=False, factory=dict
    )
    # A market order's head by side (an int key: no Enum hash per order).
    _market_heads: dict[Side, str] = attrs.field(init=False, repr=False, eq=False, factory=dict)
    # ``min_notional`` as a float, for the check's sure passes (see :meth:`prepare`).
    _min_notional_float: float = attrs.field(init=False, repr=False, eq=False, default=0.0)

    def __attrs_post_init__(self) -> None:
        heads: dict[tuple[Side, OrderType, TimeInForce | None], str] = {}
        for side, name in _SIDE_NAMES.items():
            base = f"symbol={self.symbol}&side={name}&type="
            heads[(side, OrderType.MARKET, None)] = f"{base}MARKET&quantity="
            for tif in TimeInForce:
                heads[(side, OrderType.LIMIT, tif)] = (
                    f"{base}LIMIT&timeInForce={tif.value}&quantity="
                )
        object.__setattr__(self, "_heads", heads)
        self._market_heads.update(
            {side: heads[(side, OrderType.MARKET, None)] for side in _SIDE_NAMES}
        )
        object.__setattr__(self, "_min_notional_float", float(self.min_notional))

    @classmethod
    def from_symbol_info(cls, info: Mapping[str, Any]) -> OrderTemplate:
        """Build from one entry of ``exchangeInfo["symbols"]``."""
        f = _filters(info)
        price, lot = f.get("PRICE_FILTER"), f.get("LOT_SIZE")
        market = f.get("MARKET_LOT_SIZE") or lot
        notional, percent = f.get("MIN_NOTIONAL"), f.get("PERCENT_PRICE")
        one = Decimal(1)
        step = _dec(lot, "stepSize", one)
        return cls(
            symbol=info["symbol"],
            status=info.get("status", "TRADING"),
            tick_size=_dec(price, "tickSize", Decimal("1e-8")),
            min_price=_dec(price, "minPrice", _ZERO),
            max_price=_dec(price, "maxPrice", _INF),
            step_size=step,
            min_qty=_dec(lot, "minQty", _ZERO),
            max_qty=_dec(lot, "maxQty", _INF),
            market_step_size=_dec(market, "stepSize", step),
            market_min_qty=_dec(market, "minQty", _ZERO),
            market_max_qty=_dec(market, "maxQty", _INF),
            # spot and old futures payloads call it minNotional
            min_notional=_dec(notional, "notional", _dec(notional, "minNotional", _ZERO)),
            multiplier_up=_dec(percent, "multiplierUp", _INF),
            multiplier_down=_dec(percent, "multiplierDown", _ZERO),
        )

    def round_price(self, price: Number, side: Side) -> Decimal:
        """Round a limit price to the tick on the passive side (down to buy, up to sell)."""
        dec, from_float = _to_decimal(price, self.symbol, "PRICE")
        mode = ROUND_FLOOR if side is Side.BUY else ROUND_CEILING
        return round_to_step(dec, self.tick_size, mode, from_float=from_float)

    def round_quantity(self, quantity: Number, order_type: OrderType = OrderType.LIMIT) -> Decimal:
        """Round a quantity down to the step of ``order_type``'s lot filter."""
        dec, from_float = _to_decimal(quantity, self.symbol, "QTY")
        step = self.market_step_size if order_type is OrderType.MARKET else self.step_size
        return round_to_step(dec, step, ROUND_FLOOR, from_float=from_float)

    def prepare(
        self,
        side: Side,
        quantity: Number,
        *,
        client_order_id: str,
        order_type: OrderType = OrderType.MARKET,
        price: Number | None = None,
        time_in_force: TimeInForce = TimeInForce.GTC,
        reduce_only: bool = False,
        ref_price: Number | None = None,
        mark_price: Number | None = None,
        trigger_price: Number | None = None,
        close_position: bool = False,
    ) -> PreparedOrder:
        """Round, check and serialise one order.

        Args:
            side: buy or sell.
            quantity: the wanted quantity (rounded down to the step).
            client_order_id: the ``newClientOrderId`` (see :class:`ClientOrderIds`).
            order_type: market or limit.
            price: the limit price (required for limit orders; rounded passively).
            time_in_force: for limit orders.
            reduce_only: send ``reduceOnly=true``; exempt from MIN_NOTIONAL.
            ref_price: a market order's expected price, for the MIN_NOTIONAL check.
            mark_price: the mark price, for the PERCENT_PRICE check.
            trigger_price: a conditional order's trigger (rounded passively).
            close_position: a conditional order closes the whole position
                (``closePosition=true``, no quantity sent; ``quantity`` is kept
                only as the size expected).

        Returns:
            The :class:`PreparedOrder`.

        Raises:
            FilterError: a check failed; ``reason`` says which.
        """
        if self.status != "TRADING":
            raise FilterError(self.symbol, "SYMBOL_NOT_TRADING")
        if CLIENT_ORDER_ID_PATTERN.match(client_order_id) is None:
            raise FilterError(self.symbol, "CLIENT_ORDER_ID_INVALID")
        if order_type is _STOP_MARKET or order_type is _TAKE_PROFIT_MARKET:
            return self._prepare_conditional(
                side,
                quantity,
                client_order_id=client_order_id,
                order_type=order_type,
                reduce_only=reduce_only,
                trigger_price=trigger_price,
                close_position=close_position,
            )
        market = order_type is _MARKET
        qty, qty_text = self._quantity(quantity, order_type, market)
        min_qty, max_qty = (
            (self.market_min_qty, self.market_max_qty) if market else (self.min_qty, self.max_qty)
        )
        if qty <= 0 or qty < min_qty:
            raise FilterError(self.symbol, "QTY_BELOW_MIN", value=qty, bound=min_qty)
        if qty > max_qty:
            raise FilterError(self.symbol, "QTY_ABOVE_MAX", value=qty, bound=max_qty)

        px: Decimal | None = None
        notional_price: Decimal | None = None
        if market:
            params = self._market_heads[side] + qty_text
            if ref_price is None:
                pass
            elif type(ref_price) is not float or not -_FLOAT_INF < ref_price < _FLOAT_INF:
                # Not a finite float: checked (and refused) as before, reduce-only too.
                notional_price = _to_decimal(ref_price, self.symbol, "PRICE")[0]
            elif not reduce_only and not (
                # A sure pass needs no Decimal: a float product's error (a few ulps)
                # is far inside this margin; anything nearer takes the exact check.
                float(qty) * ref_price >= self._min_notional_float * _SURE_PASS
            ):
                notional_price = _to_decimal(ref_price, self.symbol, "PRICE")[0]
        else:
            if price is None:
                raise FilterError(self.symbol, "PRICE_INVALID")
            px = self.round_price(price, side)
            self._check_price(px, mark_price)
            head = self._heads[(side, OrderType.LIMIT, time_in_force)]
            params = f"{head}{qty_text}&price={format(px, 'f')}"
            notional_price = px
        if not reduce_only and notional_price is not None:
            notional = qty * notional_price
            if notional < self.min_notional:
                raise FilterError(
                    self.symbol, "NOTIONAL_BELOW_MIN", value=notional, bound=self.min_notional
                )
        if reduce_only:
            params += "&reduceOnly=true"
        params = f"{params}&newClientOrderId={client_order_id}"
        return PreparedOrder(
            symbol=self.symbol,
            side=side,
            order_type=order_type,
            quantity=qty,
            price=px,
            reduce_only=reduce_only,
            client_order_id=client_order_id,
            params=params,
            time_in_force=None if market else time_in_force,
        )

    def _quantity(
        self, quantity: Number, order_type: OrderType, market: bool
    ) -> tuple[Decimal, str]:
        """:meth:`round_quantity` and its text, remembered for float quantities."""
        if type(quantity) is not float:
            qty = self.round_quantity(quantity, order_type)
            return qty, format(qty, "f")
        key = (quantity, market)
        known = self._quantities.get(key)
        if known is not None:
            return known
        qty = self.round_quantity(quantity, order_type)
        known = (qty, format(qty, "f"))
        if len(self._quantities) >= _QUANTITIES_KEPT:
            self._quantities.clear()
        self._quantities[key] = known
        return known

    def _prepare_conditional(
        self,
        side: Side,
        quantity: Number,
        *,
        client_order_id: str,
        order_type: OrderType,
        reduce_only: bool,
        trigger_price: Number | None,
        close_position: bool,
    ) -> PreparedOrder:
        # A triggered conditional order is a MARKET order: MARKET_LOT_SIZE applies.
        qty = self.round_quantity(quantity, OrderType.MARKET)
        if not close_position:
            if qty <= 0 or qty < self.market_min_qty:
                raise FilterError(
                    self.symbol, "QTY_BELOW_MIN", value=qty, bound=self.market_min_qty
                )
            if qty > self.market_max_qty:
                raise FilterError(
                    self.symbol, "QTY_ABOVE_MAX", value=qty, bound=self.market_max_qty
                )
        if trigger_price is None:
            raise FilterError(self.symbol, "PRICE_INVALID")
        trigger = self.round_price(trigger_price, side)
        self._check_price(trigger, None)
        params = (
            f"algoType=CONDITIONAL&symbol={self.symbol}&side={_SIDE_NAMES[side]}"
            f"&type={order_type.value}&triggerPrice={format(trigger, 'f')}"
        )
        if close_position:
            params += "&closePosition=true"
        else:
            params += f"&quantity={format(qty, 'f')}"
            if reduce_only:
                params += "&reduceOnly=true"
        params += f"&clientAlgoId={client_order_id}"
        return PreparedOrder(
            symbol=self.symbol,
            side=side,
            order_type=order_type,
            quantity=qty,
            price=None,
            reduce_only=reduce_only or close_position,
            client_order_id=client_order_id,
            params=params,
            path=ALGO_ORDER_PATH,
            trigger_price=trigger,
            close_position=close_position,
        )

    def amend_params(
        self, side: Side, quantity: Number, price: Number, client_order_id: str
    ) -> str:
        """The parameter string of ``PUT /fapi/v1/order`` (amend a LIMIT order).

        The quantity rounds down to the step and the price passively to the tick,
        as for a new limit order.

        Raises:
            FilterError: the new quantity or price fails a filter.
        """
        qty = self.round_quantity(quantity, OrderType.LIMIT)
        if qty <= 0 or qty < self.min_qty:
            raise FilterError(self.symbol, "QTY_BELOW_MIN", value=qty, bound=self.min_qty)
        if qty > self.max_qty:
            raise FilterError(self.symbol, "QTY_ABOVE_MAX", value=qty, bound=self.max_qty)
        px = self.round_price(price, side)
        self._check_price(px, None)
        return (
            f"symbol={self.symbol}&origClientOrderId={client_order_id}&side={_SIDE_NAMES[side]}"
            f"&quantity={format(qty, 'f')}&price={format(px, 'f')}"
        )

    def _check_price(self, px: Decimal, mark_price: Number | None) -> None:
        if px <= 0 or px < self.min_price:
            raise FilterError(self.symbol, "PRICE_BELOW_MIN", value=px, bound=self.min_price)
        if px > self.max_price:
            raise FilterError(self.symbol, "PRICE_ABOVE_MAX", value=px, bound=self.max_price)
        if mark_price is None:
            return
        mark = _to_decimal(mark_price, self.symbol, "PRICE")[0]
        upper, lower = mark * self.multiplier_up, mark * self.multiplier_down
        if px > upper:
            raise FilterError(self.symbol, "PRICE_ABOVE_PERCENT", value=px, bound=upper)
        if px < lower:
            raise FilterError(self.symbol, "PRICE_BELOW_PERCENT", value=px, bound=lower)


def templates_from_exchange_info(info: Mapping[str, Any]) -> dict[str, OrderTemplate]:
    """Build every symbol's :class:`OrderTemplate` from a parsed ``exchangeInfo``.

    Returns:
        Templates keyed by symbol (non-trading symbols included; they refuse orders).
    """
    return {s["symbol"]: OrderTemplate.from_symbol_info(s) for s in info.get("symbols", ())}
