"""The order machine, with Binance's order statuses.

``SUBMITTED`` is local: the request is on its way and the venue has not answered
(a live venue keeps an order whose answer timed out, state UNKNOWN at the
exchange, in ``SUBMITTED`` until the user stream or a query says what it is).
``TRIGGERED`` is local too: a STOP_MARKET / TAKE_PROFIT_MARKET order whose trigger
price was reached and that now fills as a market order (Binance's algo service
reports this as its own ``TRIGGERED`` algo status and opens a new order; the
engine keeps one machine per client order id). Everything else is the exchange's
own status, so a status string from a REST reply or an ``ORDER_TRADE_UPDATE``
maps onto it with :func:`status_from_exchange`.

The life of each order type (Binance's semantics, the loopback exchange's and the
replay venue's):

* MARKET: SUBMITTED -> (NEW) -> PARTIALLY_FILLED* -> FILLED.
* LIMIT GTC: SUBMITTED -> NEW -> PARTIALLY_FILLED* -> FILLED, or CANCELED while
  open (a cancel, a halt, a replace to at most the filled quantity); a
  :class:`Replaced` keeps the status.
* LIMIT IOC: what fills at once fills; the rest EXPIRED. FOK: FILLED or EXPIRED
  with nothing filled.
* LIMIT GTX (post-only): REJECTED when it would take on arrival (Binance -5022),
  else as GTC.
* STOP_MARKET / TAKE_PROFIT_MARKET: SUBMITTED -> NEW -> TRIGGERED -> FILLED,
  or CANCELED while NEW.
"""

from __future__ import annotations

import enum

import attrs

from ._machine import Machine, Table


class OrderStatus(enum.Enum):
    """An order's status; names match Binance's ``X`` / ``status`` field."""

    SUBMITTED = "SUBMITTED"
    NEW = "NEW"
    TRIGGERED = "TRIGGERED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


TERMINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)

# Binance statuses that mean the same thing as one of ours.
_EXCHANGE_ALIASES = {
    "NEW_INSURANCE": OrderStatus.NEW,
    "NEW_ADL": OrderStatus.NEW,
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
}


def status_from_exchange(status: str) -> OrderStatus:
    """Map a Binance order status string onto :class:`OrderStatus`.

    Raises:
        ValueError: the status is not one Binance documents.
    """
    alias = _EXCHANGE_ALIASES.get(status)
    if alias is not None:
        return alias
    try:
        result = OrderStatus(status)
    except ValueError:
        raise ValueError(f"unknown exchange order status {status!r}") from None
    if result in (OrderStatus.SUBMITTED, OrderStatus.TRIGGERED):
        raise ValueError(f"{status} is local, not an exchange order status")
    return result


@attrs.frozen(kw_only=True)
class Accepted:
    """The venue acknowledged the order (status NEW)."""


@attrs.frozen(kw_only=True)
class Rejected:
    """The venue refused the order."""

    reason: str = ""


@attrs.frozen(kw_only=True)
class Fill:
    """A fill; ``cum_qty`` is the total filled so far, ``qty`` the order size."""

    cum_qty: float
    qty: float


@attrs.frozen(kw_only=True)
class Canceled:
    """The order was cancelled."""


@attrs.frozen(kw_only=True)
class Expired:
    """The order expired (IOC/FOK remainder, end of replay, ...)."""


@attrs.frozen(kw_only=True)
class Triggered:
    """A stop order's trigger price was reached; it now fills as a market order."""


@attrs.frozen(kw_only=True)
class Replaced:
    """The venue amended an open LIMIT order's price and quantity (status unchanged)."""


def is_complete(event: Fill) -> bool:
    """Guard: the fill completes the order."""
    return event.cum_qty >= event.qty


def is_partial(event: Fill) -> bool:
    """Guard: quantity remains after the fill."""
    return event.cum_qty < event.qty


_O = OrderStatus
_FILL = ((is_complete, _O.FILLED), (is_partial, _O.PARTIALLY_FILLED))

ORDER_TABLE: Table[OrderStatus] = Table(
    name="order",
    states=OrderStatus,
    initial=_O.SUBMITTED,
    terminal=TERMINAL_STATUSES,
    transitions={
        (_O.SUBMITTED, Accepted): _O.NEW,
        (_O.SUBMITTED, Rejected): _O.REJECTED,
        # A market order's fill can arrive before (or instead of) its ack.
        (_O.SUBMITTED, Fill): _FILL,
        (_O.SUBMITTED, Expired): _O.EXPIRED,
        # A live order cancelled before its ack arrived (halt while the answer
        # is outstanding or UNKNOWN), or never sent at all.
        (_O.SUBMITTED, Canceled): _O.CANCELED,
        (_O.NEW, Fill): _FILL,
        (_O.NEW, Canceled): _O.CANCELED,
        (_O.NEW, Expired): _O.EXPIRED,
        (_O.NEW, Replaced): _O.NEW,
        (_O.NEW, Triggered): _O.TRIGGERED,
        # A stop order's trigger can be seen before its ack.
        (_O.SUBMITTED, Triggered): _O.TRIGGERED,
        (_O.TRIGGERED, Fill): _FILL,
        # Triggered with no liquidity to fill, or a reduce-only with no position.
        (_O.TRIGGERED, Expired): _O.EXPIRED,
        (_O.TRIGGERED, Rejected): _O.REJECTED,
        (_O.PARTIALLY_FILLED, Fill): _FILL,
        (_O.PARTIALLY_FILLED, Canceled): _O.CANCELED,
        (_O.PARTIALLY_FILLED, Expired): _O.EXPIRED,
        (_O.PARTIALLY_FILLED, Replaced): _O.PARTIALLY_FILLED,
    },
)


def new_order(status: OrderStatus | None = None) -> Machine[OrderStatus]:
    """An order machine, in SUBMITTED unless ``status`` is given (journal rebuild)."""
    return Machine(ORDER_TABLE, status)
