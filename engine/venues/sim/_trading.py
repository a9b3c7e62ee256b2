"""The loopback exchange's matching engine and USDT-margined account (no I/O).

One account in one-way position mode (``positionSide`` ``BOTH``), cross margin,
USDT wallet. Orders match against the *replayed* order book:

* a MARKET order walks the opposite side level by level, one trade per level;
  what the visible book cannot fill expires (Binance: ``EXPIRED``);
* a LIMIT order takes what is marketable up to its price the same way; the rest
  rests (GTC), expires (IOC), or the whole order is refused (FOK: -5021, GTX
  that would take: -5022, neither recorded);
* a resting order fills as a maker when a replayed trade prints at or through
  its price; the trade's quantity is the liquidity shared, best price then
  queue order (oldest first; an amended order goes to the back);
* an amendment (``PUT /fapi/v1/order``) changes a resting LIMIT order's price
  and quantity as Binance documents it (:meth:`MatchingEngine.amend`).

Liquidity this account took from a book level is remembered and subtracted
until a recorded depth update touches that level again (the recording cannot
know about our orders), so two market orders do not both eat the same level.

Arithmetic is :class:`~decimal.Decimal`: entry price is the quantity-weighted
average of the fills that opened or grew the position; realized PnL of a fill
that reduces it is ``(price - entry) * closed * sign(position)``; fees are
``price * qty * rate`` (maker or taker) taken from the wallet. Everything is
deterministic given the same book, trades and requests.

Every state change returns the Binance user-data events it causes
(``ORDER_TRADE_UPDATE``, ``ACCOUNT_UPDATE``), built by :mod:`._trading_format`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

import attrs
import orjson

from . import _exchange_errors as err
from ._trading_format import account_update, config_update, order_trade_update

ZERO = Decimal(0)
_ENTRY_PLACES = Decimal("1e-8")

Event = dict[str, Any]


@attrs.frozen(kw_only=True)
class SymbolRules:
    """The filters of one symbol, from its ``exchangeInfo`` entry.

    Attributes:
        symbol: e.g. ``BTCUSDT``.
        tick: ``PRICE_FILTER.tickSize``.
        min_price, max_price: ``PRICE_FILTER`` bounds (0: none).
        step, min_qty, max_qty: ``LOT_SIZE``.
        market_step, market_min_qty, market_max_qty: ``MARKET_LOT_SIZE``.
        min_notional: ``MIN_NOTIONAL.notional``.
        multiplier_up, multiplier_down: ``PERCENT_PRICE`` (0: no check).
        price_precision, quantity_precision: decimals allowed in requests.
    """

    symbol: str
    tick: Decimal
    min_price: Decimal = ZERO
    max_price: Decimal = ZERO
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal = ZERO
    market_step: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal = ZERO
    min_notional: Decimal = ZERO
    min_notional_text: str = "0"
    multiplier_up: Decimal = ZERO
    multiplier_down: Decimal = ZERO
    price_precision: int
    quantity_precision: int


def _places(step: Decimal) -> int:
    return max(0, -int(step.normalize().as_tuple().exponent))


def rules_from_exchange_info(info: bytes | Mapping[str, Any]) -> dict[str, SymbolRules]:
    """Read every symbol's filters from an ``exchangeInfo`` body."""
    data = orjson.loads(info) if isinstance(info, bytes) else info
    out: dict[str, SymbolRules] = {}
    for entry in data.get("symbols", []):
        filters = {f["filterType"]: f for f in entry.get("filters", [])}
        price = filters.get("PRICE_FILTER", {})
        lot = filters.get("LOT_SIZE", {})
        market = filters.get("MARKET_LOT_SIZE", lot)
        notional = filters.get("MIN_NOTIONAL", {})
        percent = filters.get("PERCENT_PRICE", {})
        tick = Decimal(price.get("tickSize", "0.01"))
        step = Decimal(lot.get("stepSize", "0.001"))
        notional_text = str(notional.get("notional", notional.get("minNotional", "0")))
        out[entry["symbol"]] = SymbolRules(
            symbol=entry["symbol"],
            tick=tick,
            min_price=Decimal(price.get("minPrice", "0")),
            max_price=Decimal(price.get("maxPrice", "0")),
            step=step,
            min_qty=Decimal(lot.get("minQty", "0")),
            max_qty=Decimal(lot.get("maxQty", "0")),
            market_step=Decimal(market.get("stepSize", str(step))),
            market_min_qty=Decimal(market.get("minQty", "0")),
            market_max_qty=Decimal(market.get("maxQty", "0")),
            min_notional=Decimal(notional_text),
            min_notional_text=notional_text,
            multiplier_up=Decimal(percent.get("multiplierUp", "0")),
            multiplier_down=Decimal(percent.get("multiplierDown", "0")),
            price_precision=int(entry.get("pricePrecision", _places(tick))),
            quantity_precision=int(entry.get("quantityPrecision", _places(step))),
        )
    return out


@attrs.frozen(kw_only=True)
class AccountSettings:
    """The simulated account.

    Attributes:
        balance: starting USDT wallet balance.
        maker_fee_bps, taker_fee_bps: commission rates in basis points.
        leverage: initial leverage of every symbol (Binance's default is 20).
        max_leverage: the highest leverage ``/fapi/v1/leverage`` accepts.
    """

    balance: Decimal = attrs.field(default=Decimal(10_000), converter=Decimal)
    maker_fee_bps: Decimal = attrs.field(default=Decimal(2), converter=Decimal)
    taker_fee_bps: Decimal = attrs.field(default=Decimal(5), converter=Decimal)
    leverage: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    max_leverage: int = attrs.field(default=125, validator=attrs.validators.ge(1))


@attrs.frozen(kw_only=True)
class OrderRequest:
    """A validated new order (``POST /fapi/v1/order`` after parameter checks)."""

    symbol: str
    side: str = attrs.field(validator=attrs.validators.in_(("BUY", "SELL")))
    type: str = attrs.field(validator=attrs.validators.in_(("MARKET", "LIMIT")))
    quantity: Decimal
    price: Decimal = ZERO
    time_in_force: str = "GTC"
    reduce_only: bool = False
    client_order_id: str | None = None
    algo_id: int = 0  # the conditional (algo) order this order was triggered by


@attrs.frozen(kw_only=True)
class SimOrder:
    """One order as the exchange holds it.

    Attributes:
        status: ``NEW``, ``PARTIALLY_FILLED``, ``FILLED``, ``CANCELED`` or ``EXPIRED``.
        executed_qty: filled so far; ``cum_quote``: sum of price x qty of the fills.
        time: creation time, ``update_time``: last change (exchange ms).
        algo_id: the algo order that triggered it (0: placed directly).
        stp_mode: self-trade prevention mode (Binance's default ``EXPIRE_MAKER``;
            an amended order has ``NONE``).
    """

    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    quantity: Decimal
    price: Decimal
    reduce_only: bool
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    time: int
    update_time: int
    algo_id: int = 0
    stp_mode: str = "EXPIRE_MAKER"

    @property
    def remaining(self) -> Decimal:
        """Quantity still open."""
        return self.quantity - self.executed_qty

    @property
    def is_open(self) -> bool:
        """``NEW`` or ``PARTIALLY_FILLED``."""
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def avg_price(self) -> Decimal:
        """Average fill price (0 before the first fill)."""
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO


@attrs.frozen(kw_only=True)
class SimFill:
    """One trade of this account (``GET /fapi/v1/userTrades`` row)."""

    trade_id: int
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    realized_pnl: Decimal
    maker: bool
    time: int


@attrs.frozen(kw_only=True)
class SimPosition:
    """The one-way position of a symbol.

    Attributes:
        amount: signed quantity (positive long).
        entry_price: average entry (0 when flat).
        realized_pnl: accumulated realized PnL of this symbol (``cr``).
        leverage: the symbol's leverage setting.
        isolated: isolated margin (else cross).
        isolated_wallet: margin held by an isolated position (``iw``): its
            initial margin at entry, ``|amount| * entry / leverage``.
    """

    symbol: str
    amount: Decimal = ZERO
    entry_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    leverage: int
    update_time: int = 0
    isolated: bool = False
    isolated_wallet: Decimal = ZERO


@attrs.frozen(kw_only=True)
class IncomeRecord:
    """One ``GET /fapi/v1/income`` row: a change of the wallet with its cause.

    Attributes:
        income_type: ``COMMISSION`` or ``REALIZED_PNL`` (funding is never
            settled on the loopback exchange).
        amount: signed USDT amount.
        tran_id: the exchange's transaction id.
        trade_id: the trade that caused it.
    """

    symbol: str
    income_type: str
    amount: Decimal
    time: int
    tran_id: int
    trade_id: int


class MarketView(Protocol):
    """What the engine reads of the replayed market."""

    def levels(self, symbol: str, side: str) -> Iterable[tuple[Decimal, Decimal]]:
        """Book levels best first: ``side`` ``"bids"`` or ``"asks"``; (price, qty)."""
        ...

    def mark_price(self, symbol: str) -> Decimal:
        """The mark price (0 when unknown)."""
        ...


def _fmt_dec(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


class MatchingEngine:
    """Orders, fills, positions and the wallet of the simulated account.

    Args:
        rules: symbol filters (only these symbols trade).
        market: the replayed book and mark prices.
        settings: balance, fees, leverage.
    """

    def __init__(
        self, rules: Mapping[str, SymbolRules], market: MarketView, settings: AccountSettings
    ) -> None:
        self.rules = dict(rules)
        self.settings = settings
        self._market = market
        self.wallet = settings.balance
        self._maker = settings.maker_fee_bps / Decimal(10_000)
        self._taker = settings.taker_fee_bps / Decimal(10_000)
        self._orders: dict[int, SimOrder] = {}
        self._open: dict[str, list[int]] = {}
        self._fills: list[SimFill] = []
        self._positions: dict[str, SimPosition] = {}
        self._leverage: dict[str, int] = {}
        self._isolated: set[str] = set()
        self._taken: dict[tuple[str, str, Decimal], Decimal] = {}
        self._income: list[IncomeRecord] = []
        self._next_order_id = 1_000_000_001
        self._next_trade_id = 500_000_001
        self._next_tran_id = 9_000_000_001
        self.update_time = 0

    # -- views ------------------------------------------------------------------------

    def orders(self) -> list[SimOrder]:
        """Every order ever accepted, oldest first."""
        return list(self._orders.values())

    def open_orders(self, symbol: str | None = None) -> list[SimOrder]:
        """Open orders (one symbol or all), oldest first."""
        symbols = [symbol] if symbol else sorted(self._open)
        return [self._orders[i] for s in symbols for i in self._open.get(s, [])]

    def find_order(
        self, symbol: str, *, order_id: int | None = None, client_order_id: str | None = None
    ) -> SimOrder | None:
        """An order by id, or by client order id (the newest with that id)."""
        if order_id is not None:
            order = self._orders.get(order_id)
            if order is None or order.symbol != symbol:
                return None
            if client_order_id is not None and order.client_order_id != client_order_id:
                return None
            return order
        for order in reversed(self._orders.values()):
            if order.symbol == symbol and order.client_order_id == client_order_id:
                return order
        return None

    def fills(self, symbol: str | None = None) -> list[SimFill]:
        """This account's trades, oldest first."""
        return [f for f in self._fills if symbol is None or f.symbol == symbol]

    def income(self) -> list[IncomeRecord]:
        """Every wallet change with its cause, oldest first."""
        return list(self._income)

    def leverage(self, symbol: str) -> int:
        """The symbol's leverage setting."""
        return self._leverage.get(symbol, self.settings.leverage)

    def isolated(self, symbol: str) -> bool:
        """Whether the symbol is in isolated margin mode (else cross)."""
        return symbol in self._isolated

    def position(self, symbol: str) -> SimPosition:
        """The symbol's position (flat if never traded)."""
        pos = self._positions.get(symbol)
        leverage = self.leverage(symbol)
        if pos is None:
            return SimPosition(symbol=symbol, leverage=leverage, isolated=symbol in self._isolated)
        isolated = symbol in self._isolated
        wallet = abs(pos.amount) * pos.entry_price / leverage if isolated else ZERO
        return attrs.evolve(pos, leverage=leverage, isolated=isolated, isolated_wallet=wallet)

    def positions(self) -> list[SimPosition]:
        """Every symbol's position, sorted by symbol."""
        return [self.position(s) for s in sorted(self.rules)]

    def mark_price(self, symbol: str) -> Decimal:
        """The symbol's mark price (0 while unknown)."""
        return self._market.mark_price(symbol)

    def unrealized_pnl(self, symbol: str) -> Decimal:
        """``(mark - entry) * amount`` (0 when flat or no mark yet)."""
        pos = self._positions.get(symbol)
        mark = self._market.mark_price(symbol)
        if pos is None or not pos.amount or not mark:
            return ZERO
        return (mark - pos.entry_price) * pos.amount

    def position_margin(self, symbol: str) -> Decimal:
        """Initial margin of the position: ``|amount| * mark / leverage`` in cross
        margin; the isolated wallet (``|amount| * entry / leverage``) in isolated."""
        pos = self._positions.get(symbol)
        if pos is None or not pos.amount:
            return ZERO
        if symbol in self._isolated:
            return self.position(symbol).isolated_wallet
        mark = self._market.mark_price(symbol) or pos.entry_price
        return abs(pos.amount) * mark / self.leverage(symbol)

    def open_order_margin(self, symbol: str | None = None) -> Decimal:
        """Initial margin held by open LIMIT orders: ``remaining * price / leverage``."""
        return sum(
            (o.remaining * o.price / self.leverage(o.symbol) for o in self.open_orders(symbol)),
            ZERO,
        )

    def total_unrealized(self) -> Decimal:
        """Unrealized PnL of every position."""
        return sum((self.unrealized_pnl(s) for s in self._positions), ZERO)

    def available_balance(self) -> Decimal:
        """Wallet + unrealized PnL of cross positions - position margin (isolated
        wallets included) - open-order margin. An isolated position's unrealized
        PnL stays in its own margin, as on Binance; neither mode liquidates."""
        used = sum((self.position_margin(s) for s in self._positions), ZERO)
        cross_upnl = sum(
            (self.unrealized_pnl(s) for s in self._positions if s not in self._isolated), ZERO
        )
        return self.wallet + cross_upnl - used - self.open_order_margin()

    def notionals(self, symbol: str) -> tuple[Decimal, Decimal]:
        """Open BUY and SELL order notional of a symbol (the ``b`` and ``a`` fields)."""
        bids = asks = ZERO
        for o in self.open_orders(symbol):
            if o.side == "BUY":
                bids += o.remaining * o.price
            else:
                asks += o.remaining * o.price
        return bids, asks

    # -- commands ---------------------------------------------------------------------

    def set_leverage(self, symbol: str, leverage: int, now_ms: int) -> list[Event]:
        """``POST /fapi/v1/leverage``.

        Raises:
            ExchangeApiError: -4028 when out of 1..max_leverage.
        """
        if not 1 <= leverage <= self.settings.max_leverage:
            raise err.code(400, -4028, f"Leverage {leverage} is not valid")
        self._leverage[symbol] = leverage
        return [config_update(symbol, leverage, now_ms)]

    def set_margin_type(self, symbol: str, isolated: bool) -> None:
        """``POST /fapi/v1/marginType`` (``ISOLATED`` or ``CROSSED``).

        Raises:
            ExchangeApiError: -4046 already that type; -4047 open orders; -4048 a
                position (Binance refuses both changes).
        """
        if isolated == (symbol in self._isolated):
            raise err.code(400, -4046, "No need to change margin type.")
        if self._open.get(symbol):
            raise err.code(400, -4047, "Margin type cannot be changed if there exists open orders.")
        if self.position(symbol).amount:
            raise err.code(400, -4048, "Margin type cannot be changed if there exists position.")
        if isolated:
            self._isolated.add(symbol)
        else:
            self._isolated.discard(symbol)

    def new_order(self, req: OrderRequest, now_ms: int) -> tuple[SimOrder, SimOrder, list[Event]]:
        """Accept and match a new order.

        Returns:
            (the order as accepted, the order after immediate matching, events).

        Raises:
            ExchangeApiError: refused (-4116, -2022, -2019, -5021, -5022); nothing
                was recorded.
        """
        rules = self.rules[req.symbol]
        cid = req.client_order_id
        if cid is not None and any(
            self._orders[i].client_order_id == cid for i in self._open.get(req.symbol, [])
        ):
            raise err.code(400, -4116, "ClientOrderId is duplicated.")
        pos = self.position(req.symbol).amount
        reducing = (pos > 0 and req.side == "SELL") or (pos < 0 and req.side == "BUY")
        if req.reduce_only and not reducing:
            raise err.code(400, -2022, err.REDUCE_ONLY_REJECT)
        opposite = "asks" if req.side == "BUY" else "bids"
        if req.type == "LIMIT" and req.time_in_force == "GTX":
            best = next(iter(self._levels(req.symbol, opposite)), None)
            if best is not None and _crosses(req.side, best[0], req.price):
                raise err.code(400, -5022, err.GTX_REJECT)
        if req.type == "LIMIT" and req.time_in_force == "FOK":
            available = self._fillable(req.symbol, opposite, req.side, req.price)
            if available < req.quantity:
                raise err.code(400, -5021, err.FOK_REJECT)
        if not req.reduce_only:
            self._check_margin(req, pos, rules)

        order_id = self._next_order_id
        self._next_order_id += 1
        order = SimOrder(
            order_id=order_id,
            client_order_id=cid if cid is not None else f"sim-autogen-{order_id}",
            symbol=req.symbol,
            side=req.side,
            type=req.type,
            time_in_force=req.time_in_force if req.type == "LIMIT" else "GTC",
            quantity=req.quantity,
            price=req.price if req.type == "LIMIT" else ZERO,
            reduce_only=req.reduce_only,
            time=now_ms,
            update_time=now_ms,
            algo_id=req.algo_id,
        )
        self._orders[order_id] = order
        self._open.setdefault(req.symbol, []).append(order_id)
        accepted = order
        events = [self._order_event(order, "NEW", now_ms)]
        events += self._take(order_id, now_ms)
        order = self._orders[order_id]
        if order.is_open and (order.type == "MARKET" or order.time_in_force in ("IOC", "FOK")):
            events += self._close(order_id, "EXPIRED", now_ms)
        self.update_time = now_ms
        return accepted, self._orders[order_id], events

    def cancel(
        self,
        symbol: str,
        now_ms: int,
        *,
        order_id: int | None = None,
        client_order_id: str | None = None,
    ) -> tuple[SimOrder, list[Event]]:
        """``DELETE /fapi/v1/order``.

        Raises:
            ExchangeApiError: -2011 when there is no such open order.
        """
        order = self.find_order(symbol, order_id=order_id, client_order_id=client_order_id)
        if order is None or not order.is_open:
            raise err.code(400, -2011, err.UNKNOWN_ORDER)
        events = self._close(order.order_id, "CANCELED", now_ms)
        return self._orders[order.order_id], events

    def amend(
        self,
        symbol: str,
        now_ms: int,
        *,
        order_id: int | None,
        client_order_id: str | None,
        side: str,
        quantity: Decimal,
        price: Decimal,
    ) -> tuple[SimOrder, list[Event]]:
        """``PUT /fapi/v1/order``: new quantity and price for an open LIMIT order.

        As Binance documents it: the amended order goes to the back of its price
        level's queue and takes what has become marketable; it is cancelled when
        the new quantity is at most what has been filled, or when a GTX order
        would take; self-trade prevention becomes ``NONE``.

        Raises:
            ExchangeApiError: -2013 no such open order; -1130 the side differs;
                -5027 nothing changes; -2019 not enough margin for the increase.
        """
        order = self.find_order(symbol, order_id=order_id, client_order_id=client_order_id)
        if order is None or not order.is_open:
            raise err.code(400, -2013, err.NO_SUCH_ORDER)
        if side != order.side:
            raise err.invalid_param("side")
        if quantity == order.quantity and price == order.price:
            raise err.code(400, -5027, "No need to modify the order.")
        if quantity <= order.executed_qty:
            return self._amend_cancel(order.order_id, now_ms)
        opposite = "asks" if side == "BUY" else "bids"
        best = next(iter(self._levels(symbol, opposite)), None)
        if order.time_in_force == "GTX" and best is not None and _crosses(side, best[0], price):
            return self._amend_cancel(order.order_id, now_ms)
        extra = (quantity - order.executed_qty) * price - order.remaining * order.price
        need = extra / self.leverage(symbol)
        if need > 0 and need > self.available_balance():
            raise err.code(400, -2019, err.MARGIN_INSUFFICIENT)
        order = attrs.evolve(
            order, quantity=quantity, price=price, update_time=now_ms, stp_mode="NONE"
        )
        self._orders[order.order_id] = order
        queue = self._open[symbol]
        queue.remove(order.order_id)
        queue.append(order.order_id)
        events = [self._order_event(order, "AMENDMENT", now_ms)]
        events += self._take(order.order_id, now_ms)
        self.update_time = now_ms
        return self._orders[order.order_id], events

    def _amend_cancel(self, order_id: int, now_ms: int) -> tuple[SimOrder, list[Event]]:
        events = self._close(order_id, "CANCELED", now_ms)
        return self._orders[order_id], events

    def cancel_all(self, symbol: str, now_ms: int) -> list[Event]:
        """``DELETE /fapi/v1/allOpenOrders``."""
        events: list[Event] = []
        for order_id in list(self._open.get(symbol, [])):
            events += self._close(order_id, "CANCELED", now_ms)
        return events

    # -- market input -----------------------------------------------------------------

    def on_trade(self, symbol: str, price: Decimal, qty: Decimal, now_ms: int) -> list[Event]:
        """A replayed trade: resting LIMIT orders at or through ``price`` fill as makers."""
        ids = self._open.get(symbol)
        if not ids:
            return []
        hit = [
            self._orders[i]
            for i in ids
            if self._orders[i].type == "LIMIT"
            and (
                (self._orders[i].side == "BUY" and price <= self._orders[i].price)
                or (self._orders[i].side == "SELL" and price >= self._orders[i].price)
            )
        ]
        if not hit:
            return []
        # Best price first, then queue order (stable sort: ``_open`` is the queue,
        # where an amended order went to the back).
        hit.sort(key=lambda o: -o.price if o.side == "BUY" else o.price)
        events: list[Event] = []
        liquidity = qty
        for order in hit:
            if liquidity <= 0:
                break
            q = min(order.remaining, liquidity, self._reducible(order))
            if q <= 0:
                if order.reduce_only:
                    events += self._close(order.order_id, "EXPIRED", now_ms)
                continue
            liquidity -= q
            events += self._fill(order.order_id, order.price, q, maker=True, now_ms=now_ms)
        self.update_time = now_ms
        return events

    def on_levels_changed(self, symbol: str, side: str, prices: Iterable[Decimal]) -> None:
        """A recorded depth update rewrote these levels: forget what we took there."""
        if not self._taken:
            return
        for price in prices:
            self._taken.pop((symbol, side, price), None)

    def on_book_reset(self, symbol: str) -> None:
        """A snapshot replaced the book: forget every level taken."""
        for key in [k for k in self._taken if k[0] == symbol]:
            del self._taken[key]

    @property
    def has_taken(self) -> bool:
        """Whether any taken liquidity is being remembered."""
        return bool(self._taken)

    # -- internals --------------------------------------------------------------------

    def _levels(self, symbol: str, side: str) -> Iterable[tuple[Decimal, Decimal]]:
        for price, qty in self._market.levels(symbol, side):
            left = qty - self._taken.get((symbol, side, price), ZERO)
            if left > 0:
                yield price, left

    def _fillable(self, symbol: str, side: str, order_side: str, limit: Decimal) -> Decimal:
        total = ZERO
        for price, qty in self._levels(symbol, side):
            if not _crosses(order_side, price, limit):
                break
            total += qty
        return total

    def _check_margin(self, req: OrderRequest, pos: Decimal, rules: SymbolRules) -> None:
        price = req.price if req.type == "LIMIT" else self._market.mark_price(req.symbol)
        if not price:
            side = "asks" if req.side == "BUY" else "bids"
            book = next(iter(self._levels(req.symbol, side)), None)
            price = book[0] if book else ZERO
        qty = req.quantity
        if (pos > 0 and req.side == "SELL") or (pos < 0 and req.side == "BUY"):
            qty = max(ZERO, qty - abs(pos))
        need = qty * price / self.leverage(req.symbol)
        if need > 0 and need > self.available_balance():
            raise err.code(400, -2019, err.MARGIN_INSUFFICIENT)

    def _reducible(self, order: SimOrder) -> Decimal:
        if not order.reduce_only:
            return order.remaining
        pos = self.position(order.symbol).amount
        if (order.side == "SELL" and pos > 0) or (order.side == "BUY" and pos < 0):
            return abs(pos)
        return ZERO

    def _take(self, order_id: int, now_ms: int) -> list[Event]:
        order = self._orders[order_id]
        side = "asks" if order.side == "BUY" else "bids"
        limit = order.price if order.type == "LIMIT" else None
        fills: list[tuple[Decimal, Decimal]] = []
        remaining = min(order.remaining, self._reducible(order))
        for price, qty in self._levels(order.symbol, side):
            if remaining <= 0 or (limit is not None and not _crosses(order.side, price, limit)):
                break
            q = min(remaining, qty)
            fills.append((price, q))
            remaining -= q
        events: list[Event] = []
        for price, q in fills:
            key = (order.symbol, side, price)
            self._taken[key] = self._taken.get(key, ZERO) + q
            events += self._fill(order_id, price, q, maker=False, now_ms=now_ms)
        return events

    def _fill(
        self, order_id: int, price: Decimal, qty: Decimal, *, maker: bool, now_ms: int
    ) -> list[Event]:
        order = self._orders[order_id]
        symbol = order.symbol
        rate = self._maker if maker else self._taker
        commission = _fmt_dec(price * qty * rate, 8)
        signed = qty if order.side == "BUY" else -qty
        pos = self.position(symbol)
        amount, entry = pos.amount, pos.entry_price
        realized = ZERO
        if amount == 0 or (amount > 0) == (signed > 0):
            new_amount = amount + signed
            entry = _fmt_dec((abs(amount) * entry + qty * price) / abs(new_amount), 8)
        else:
            closed = min(qty, abs(amount))
            realized = (price - entry) * closed * (1 if amount > 0 else -1)
            new_amount = amount + signed
            if new_amount == 0:
                entry = ZERO
            elif (new_amount > 0) != (amount > 0):
                entry = price
        self.wallet += realized - commission
        self._positions[symbol] = attrs.evolve(
            pos,
            amount=new_amount,
            entry_price=entry,
            realized_pnl=pos.realized_pnl + realized,
            update_time=now_ms,
        )
        executed = order.executed_qty + qty
        order = attrs.evolve(
            order,
            executed_qty=executed,
            cum_quote=order.cum_quote + price * qty,
            status="FILLED" if executed == order.quantity else "PARTIALLY_FILLED",
            update_time=now_ms,
        )
        self._orders[order_id] = order
        if not order.is_open:
            self._open[symbol].remove(order_id)
        trade_id = self._next_trade_id
        self._next_trade_id += 1
        fill = SimFill(
            trade_id=trade_id,
            order_id=order_id,
            client_order_id=order.client_order_id,
            symbol=symbol,
            side=order.side,
            price=price,
            qty=qty,
            quote_qty=price * qty,
            commission=commission,
            realized_pnl=realized,
            maker=maker,
            time=now_ms,
        )
        self._fills.append(fill)
        self._record_income(symbol, "COMMISSION", -commission, now_ms, trade_id)
        if realized:
            self._record_income(symbol, "REALIZED_PNL", realized, now_ms, trade_id)
        return [
            self._order_event(order, "TRADE", now_ms, fill),
            account_update(
                "ORDER",
                self.wallet,
                self.wallet,
                [(self.position(symbol), self.unrealized_pnl(symbol))],
                now_ms,
            ),
        ]

    def _record_income(
        self, symbol: str, kind: str, amount: Decimal, now_ms: int, trade_id: int
    ) -> None:
        self._income.append(
            IncomeRecord(
                symbol=symbol,
                income_type=kind,
                amount=amount,
                time=now_ms,
                tran_id=self._next_tran_id,
                trade_id=trade_id,
            )
        )
        self._next_tran_id += 1

    def _close(self, order_id: int, status: str, now_ms: int) -> list[Event]:
        order = attrs.evolve(self._orders[order_id], status=status, update_time=now_ms)
        self._orders[order_id] = order
        self._open[order.symbol].remove(order_id)
        return [self._order_event(order, status, now_ms)]

    def _order_event(
        self, order: SimOrder, exec_type: str, now_ms: int, fill: SimFill | None = None
    ) -> Event:
        rules = self.rules[order.symbol]
        bids, asks = self.notionals(order.symbol)
        return order_trade_update(order, rules, exec_type, now_ms, fill, bids, asks)


def _crosses(side: str, level: Decimal, limit: Decimal) -> bool:
    """Whether a book level at ``level`` is marketable for an order limited at ``limit``."""
    return level <= limit if side == "BUY" else level >= limit
