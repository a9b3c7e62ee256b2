"""Every message that crosses a channel: frozen, slotted attrs classes, no behaviour.

Market data crosses channels in batches of columns (:class:`Ticks`), never one
tick per message. Commands are imperative (:class:`SubmitOrder`), events past
tense (:class:`OrderFilled`, :class:`OrderDenied`). Every message carries
``ts_event`` and ``ts_init`` (int nanoseconds, from the replay clock in replay)
and a ``seq`` unique within its source.

Replay advances in steps: each ``*Batch`` message carries the step number, and an
actor with several inputs reads them in a fixed order per step, so what it does
never depends on the order in which Trio runs tasks.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import attrs
import numpy as np
from attrs import validators as v


class EventKind(enum.IntEnum):
    """Kind of a market event in a :class:`Ticks` batch (the ``kind`` column)."""

    QUOTE = 1  # bookTicker: best bid/ask
    TRADE = 2  # trade / aggTrade
    DEPTH = 3  # depthUpdate (diff book)
    KLINE = 4  # kline
    MARK = 5  # markPriceUpdate


class Side(enum.IntEnum):
    """Order side; the value is the sign of the position change."""

    BUY = 1
    SELL = -1


class Purpose(enum.Enum):
    """Why an order exists, so a report can drive the right position event."""

    ENTRY = "ENTRY"
    EXIT = "EXIT"


@attrs.frozen(kw_only=True, eq=False)
class Ticks:
    """A batch of one symbol's market events as columns (all of equal length).

    Attributes:
        ts: replay time of each event, ns (local receive time when recorded).
        ts_exchange: exchange event time (``E``), ns.
        seq: position in the merged replay stream.
        kind: :class:`EventKind` values.
        bid, bid_qty, ask, ask_qty: best quote (QUOTE rows; NaN elsewhere).
        price, qty: trade price and size (TRADE), close and volume (KLINE),
            mark price (MARK); NaN elsewhere.
        buyer_maker: 1 when the aggressor sold (``m`` true), 0 otherwise.
        index_price, funding_rate: index price and funding rate of the next
            settlement (MARK rows of ``markPriceUpdate``; NaN elsewhere or absent).
        next_funding_ts: the next funding settlement, ns (MARK rows; 0 elsewhere).

    The three MARK columns default to NaN / 0 when a batch is built without them.

    The local order book (see :mod:`engine.feeds._bookcols`), optional:

        book_row: per row, the index of the latest book state at or before it
            (-1: no synced book; all -1 when the batch has no book).
        book_bid_px, book_bid_qty, book_ask_px, book_ask_qty: ``(n_states, levels)``
            float64, best level first (NaN price / 0 qty past a thin side). These
            are indexed by state, not by row: :meth:`rows` slices ``book_row`` and
            keeps them whole, so a row's state index stays valid in any slice.
    """

    ts: np.ndarray
    ts_exchange: np.ndarray
    seq: np.ndarray
    kind: np.ndarray
    bid: np.ndarray
    bid_qty: np.ndarray
    ask: np.ndarray
    ask_qty: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    buyer_maker: np.ndarray
    index_price: np.ndarray = attrs.field(
        default=attrs.Factory(lambda self: _blank(self.ts, np.nan), takes_self=True)
    )
    funding_rate: np.ndarray = attrs.field(
        default=attrs.Factory(lambda self: _blank(self.ts, np.nan), takes_self=True)
    )
    next_funding_ts: np.ndarray = attrs.field(
        default=attrs.Factory(lambda self: _blank(self.ts, 0), takes_self=True)
    )
    book_row: np.ndarray = attrs.field(
        default=attrs.Factory(lambda self: _blank(self.ts, -1), takes_self=True)
    )
    book_bid_px: np.ndarray = attrs.field(default=attrs.Factory(lambda: _NO_BOOK))
    book_bid_qty: np.ndarray = attrs.field(default=attrs.Factory(lambda: _NO_BOOK))
    book_ask_px: np.ndarray = attrs.field(default=attrs.Factory(lambda: _NO_BOOK))
    book_ask_qty: np.ndarray = attrs.field(default=attrs.Factory(lambda: _NO_BOOK))

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def rows(self, lo: int, hi: int) -> Ticks:
        """Events ``lo..hi`` (exclusive) as a batch of their own (views, no copy).

        The book state arrays are indexed by state and are passed on whole.
        """
        return Ticks(
            **{
                f.name: getattr(self, f.name)
                if f.name in BOOK_STATE_COLUMNS
                else getattr(self, f.name)[lo:hi]
                for f in attrs.fields(Ticks)
            }
        )


BOOK_STATE_COLUMNS = frozenset({"book_bid_px", "book_bid_qty", "book_ask_px", "book_ask_qty"})
"""The :class:`Ticks` fields indexed by book state (``book_row``), not by row."""

_NO_BOOK = np.empty((0, 0), dtype=np.float64)
_NO_BOOK.flags.writeable = False


def _blank(like: np.ndarray, value: float) -> np.ndarray:
    """A read-only column as long as ``like``, all ``value`` (float NaN, or int64 0 / -1)."""
    out = np.full(like.shape[0], value, dtype=np.int64 if value in (0, -1) else np.float64)
    out.flags.writeable = False
    return out


@attrs.frozen(kw_only=True)
class MarketBatch:
    """Feed -> symbol actor: one step of one symbol's market data (may be empty)."""

    step: int = attrs.field(validator=v.ge(0))
    ts_start: int
    symbol: str
    ticks: Ticks | None
    final: bool = False


@attrs.frozen(kw_only=True)
class MarketStep:
    """Feed -> execution actor: one step of every symbol's market data.

    ``ops`` carries the feed's operational events (reconnects) on to risk.
    """

    step: int = attrs.field(validator=v.ge(0))
    ts_start: int
    ticks: dict[str, Ticks]
    ops: tuple[Any, ...] = ()
    final: bool = False


ORDER_TYPES = ("MARKET", "LIMIT", "STOP_MARKET", "TAKE_PROFIT_MARKET")
"""Order types the engine sends; the names are Binance's ``type`` values."""

STOP_ORDER_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
"""Order types that wait for a trigger price (Binance: algo orders)."""

TIMES_IN_FORCE = ("GTC", "IOC", "FOK", "GTX")
"""Binance's ``timeInForce`` values; GTX is post-only (rejected if it would take)."""


_OMIT_DEFAULT = {"journal": "omit_default"}  # see engine.journal.canonical


def _check_order_prices(instance: Any, attribute: Any, value: Any) -> None:
    """Cross-field validator of :class:`SubmitOrder` (attrs runs it once all
    fields are set): each order type carries exactly the prices it uses."""
    price, stop = instance.price, instance.stop_price
    kind = instance.order_type
    if kind == "LIMIT":
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"LIMIT order needs a positive finite price, got {price!r}")
    elif not math.isnan(price):
        raise ValueError(f"{kind} order takes no price (NaN), got {price!r}")
    if kind in STOP_ORDER_TYPES:
        if not (math.isfinite(stop) and stop > 0):
            raise ValueError(f"{kind} order needs a positive finite stop_price, got {stop!r}")
    elif not math.isnan(stop):
        raise ValueError(f"{kind} order takes no stop_price (NaN), got {stop!r}")
    if kind != "LIMIT" and value != "GTC":
        # Binance accepts IOC/FOK/GTX only on LIMIT orders.
        raise ValueError(f"time_in_force {value!r} applies to LIMIT orders only, not {kind}")


@attrs.frozen(kw_only=True)
class SubmitOrder:
    """Command: place an order (symbol actor -> risk -> execution).

    ``order_type`` is one of :data:`ORDER_TYPES`. A ``LIMIT`` order carries its
    limit ``price`` and a ``time_in_force`` (:data:`TIMES_IN_FORCE`); a
    ``STOP_MARKET`` / ``TAKE_PROFIT_MARKET`` order carries its trigger
    ``stop_price`` and becomes a market order when the last trade price reaches it
    (Binance's default ``workingType`` ``CONTRACT_PRICE``). Prices an order type
    does not use are NaN. ``ref_price`` is the quote the order was built from (risk
    and slippage are measured against it). The defaults are a market order, so a
    caller that names none of these fields sends what it always sent.
    """

    client_order_id: str
    symbol: str
    side: Side
    qty: float = attrs.field(validator=v.gt(0))
    ref_price: float = attrs.field(validator=v.gt(0))
    purpose: Purpose
    reduce_only: bool
    order_type: str = attrs.field(default="MARKET", validator=v.in_(ORDER_TYPES))
    # Journaled only when set: a market order's record is what it was before these existed.
    price: float = attrs.field(default=math.nan, converter=float, metadata=_OMIT_DEFAULT)
    stop_price: float = attrs.field(default=math.nan, converter=float, metadata=_OMIT_DEFAULT)
    time_in_force: str = attrs.field(
        default="GTC",
        validator=[v.in_(TIMES_IN_FORCE), _check_order_prices],
        metadata=_OMIT_DEFAULT,
    )
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class CancelOrder:
    """Command: cancel an open order (symbol actor -> execution).

    Risk does not see it: a cancel only ever lowers exposure. The venue answers
    with :class:`OrderCanceled`, or nothing when the order is already closed
    (its terminal event is on its way, so the cancel lost the race).
    """

    client_order_id: str
    symbol: str
    purpose: Purpose
    reason: str
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str

    @classmethod
    def of(cls, order: SubmitOrder | ReplaceOrder, reason: str, ts: int, seq: int) -> CancelOrder:
        """The cancel of ``order`` (its ids, symbol and purpose), issued at ``ts``."""
        return cls(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            purpose=order.purpose,
            reason=reason,
            ts_event=ts,
            ts_init=ts,
            seq=seq,
            correlation_id=order.correlation_id,
        )


@attrs.frozen(kw_only=True)
class ReplaceOrder:
    """Command: new price and quantity for an open LIMIT order (quote updates).

    One command rather than :class:`CancelOrder` + :class:`SubmitOrder` because
    Binance amends in place (``PUT /fapi/v1/order``): one request instead of two
    (half the order-rate budget a quoting strategy spends), no moment with no
    order in the book between the cancel's ack and the new order's, and the same
    ``client_order_id``, so the order machine and the journal trace one order
    rather than a chain. As on Binance, the amended order goes to the back of
    its price level's queue, is cancelled when ``qty`` is at most what has
    already filled, and a GTX order that would now take is cancelled. Risk
    checks it as a new order of the new size at the new price.
    """

    client_order_id: str
    symbol: str
    side: Side
    purpose: Purpose
    qty: float = attrs.field(validator=v.gt(0))
    price: float = attrs.field(converter=float, validator=v.gt(0))
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class OrderDenied:
    """Event: risk refused an order; ``reason`` is a stable code."""

    client_order_id: str
    symbol: str
    purpose: Purpose
    reason: str
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class OrderSubmitted:
    """Event: execution sent the order to the venue."""

    client_order_id: str
    symbol: str
    purpose: Purpose
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class OrderAccepted:
    """Event: the venue acknowledged the order (status NEW)."""

    client_order_id: str
    symbol: str
    purpose: Purpose
    venue_order_id: int
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class OrderFilled:
    """Event: a fill. ``cum_qty`` is the order's total filled so far."""

    client_order_id: str
    symbol: str
    purpose: Purpose
    side: Side
    last_qty: float
    last_price: float
    cum_qty: float
    order_qty: float
    fee: float
    liquidity: str = "TAKER"
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class OrderRejected:
    """Event: the venue refused the order."""

    client_order_id: str
    symbol: str
    purpose: Purpose
    reason: str
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class OrderExpired:
    """Event: the order expired: the unfilled rest of an IOC, an FOK that could
    not fill completely, or an order still open when the replay ended."""

    client_order_id: str
    symbol: str
    purpose: Purpose
    cum_qty: float
    reason: str
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class OrderCanceled:
    """Event: the order was cancelled before it filled completely (a
    :class:`CancelOrder`, a halt, a :class:`ReplaceOrder` to at most the filled
    quantity, or an entry timeout)."""

    client_order_id: str
    symbol: str
    purpose: Purpose
    cum_qty: float
    reason: str
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class OrderTriggered:
    """Event: a STOP_MARKET / TAKE_PROFIT_MARKET order's trigger price was
    reached (last trade price); it now fills as a market order.
    ``trigger_price`` is the trade price that triggered it."""

    client_order_id: str
    symbol: str
    purpose: Purpose
    trigger_price: float
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class OrderReplaced:
    """Event: the venue applied a :class:`ReplaceOrder`; the order now rests
    with ``qty`` at ``price``, at the back of its level's queue."""

    client_order_id: str
    symbol: str
    purpose: Purpose
    qty: float
    price: float
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class Mark:
    """The last best quote of a symbol in a step (execution -> risk)."""

    symbol: str
    ts: int
    bid: float
    ask: float


@attrs.frozen(kw_only=True)
class FeedReconnected:
    """Operational event: a market-data connection was re-established."""

    symbol: str
    reason: str
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str = ""


@attrs.frozen(kw_only=True)
class RateLimitBanned:
    """Operational event: the venue banned us (HTTP 418) until ``until_ts``."""

    symbol: str
    until_ts: int
    reason: str
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str = ""


@attrs.frozen(kw_only=True)
class ReconciliationFailed:
    """Operational event: local state and the venue disagree and cannot be reconciled."""

    symbol: str
    reason: str
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str = ""


@attrs.frozen(kw_only=True)
class TradingStateChanged:
    """Event: a trading machine took a transition: the account-wide one (``symbol`` is
    ""), or a symbol's own (``symbol`` set; per-symbol causes such as stale data)."""

    symbol: str
    source: str
    target: str
    reason: str
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str = ""


@attrs.frozen(kw_only=True)
class PositionChanged:
    """Event: a symbol's position machine took a transition."""

    symbol: str
    source: str
    target: str
    trigger: str
    position_qty: float
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


OrderEvent = (
    OrderDenied
    | OrderSubmitted
    | OrderAccepted
    | OrderFilled
    | OrderRejected
    | OrderExpired
    | OrderCanceled
    | OrderTriggered
    | OrderReplaced
)


@attrs.frozen(kw_only=True)
class FundingApplied:
    """Operational event: a funding settlement paid or received on an open position.

    ``amount`` is what the account received (negative: paid), ``-position_qty *
    mark_price * rate`` as Binance settles it (longs pay a positive rate);
    ``ts_event`` is the settlement time, ``ts_init`` when the venue applied it (the
    first mark price update at or after that time).
    """

    symbol: str
    rate: float
    mark_price: float
    position_qty: float
    amount: float
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str = ""


OpsEvent = FeedReconnected | RateLimitBanned | ReconciliationFailed | FundingApplied
# -- model ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True, eq=False)
class ScoreRequest:
    """Command: score one entry signal (symbol actor -> model actor).

    ``row`` is the feature row at the signal (the engine's feature spec, float32). With
    sequence models, ``window`` is the ordered ``(N, F)`` window of the symbol's last N
    ticks' rows (the signal's last) and, with a multi-modal one, ``book`` the ``(K, 4)`` top
    book levels at the signal's tick (NaN: no book there); None otherwise.
    """

    correlation_id: str
    symbol: str
    side: Side
    row: np.ndarray
    ts_event: int
    window: np.ndarray | None = None
    book: np.ndarray | None = None


@attrs.frozen(kw_only=True)
class Score:
    """Event: the model's P(entry pays) for a request, and the model that said it."""

    correlation_id: str
    score: float
    model: str


@attrs.frozen(kw_only=True)
class EntryScored:
    """Event: a symbol's entry signal met the filter; ``taken`` says whether it passed.

    ``features`` is the row the model saw (NaN journaled as null), so the journal alone
    holds what online retraining learns from.
    """

    symbol: str
    side: Side
    score: float
    threshold: float
    regime: str
    model: str
    taken: bool
    features: tuple[float, ...]
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class DecisionLabeled:
    """Event: a scored entry's outcome is known (triple barrier on later quotes only).

    ``label`` is 1 when the entry would have paid after fees; ``ret_bps`` its net return.
    """

    symbol: str
    label: int
    ret_bps: float
    ts_decision: int
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str


@attrs.frozen(kw_only=True)
class ModelRetrained:
    """Event: an online retrain finished; ``swapped`` says whether the new model took over.

    AUCs are on the same most recent validation slice; ``reason`` says why a model was
    not swapped in (worse, too few samples, one class, export parity).
    """

    symbol: str
    previous: str
    candidate: str
    swapped: bool
    reason: str
    samples: int
    auc_previous: float
    auc_candidate: float
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str = ""


ModelRecord = EntryScored | DecisionLabeled | ModelRetrained


# -- reconciliation (live start) -------------------------------------------------------


@attrs.frozen(kw_only=True)
class FillRecovered:
    """Event: a fill the last journal missed, found at the exchange on a live start.

    ``trade_id`` is -1 when no trade was found and the fill was made from the order's
    executed quantity and average price.
    """

    symbol: str
    client_order_id: str
    venue_client_order_id: str
    side: Side
    qty: float
    price: float
    fee: float
    trade_id: int
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str = ""


@attrs.frozen(kw_only=True)
class OrderReconciled:
    """Event: what start-up reconciliation did with an order.

    ``action``: ``resolved`` (a journal order's final status found), ``canceled`` or
    ``adopted`` (open at the exchange). ``venue_client_order_id`` is the id the order
    has at the exchange (engine ids repeat across runs; this one does not).
    """

    symbol: str
    client_order_id: str
    venue_client_order_id: str = ""
    action: str
    status: str
    executed_qty: float
    reason: str
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str = ""


@attrs.frozen(kw_only=True)
class PositionReconciled:
    """Event: a live start agreed the symbol's position with the exchange.

    Journaled for every traded symbol (flat included) once reconciliation passed;
    the engine's history of positions restarts from it (the next start's
    reconciliation reads it as the position at this point). ``ts_event`` is the
    exchange's time of the check, ``ts_init`` the local time.
    """

    symbol: str
    qty: float
    avg_price: float
    ts_event: int
    ts_init: int
    seq: int
    correlation_id: str = ""


ReconcileRecord = FillRecovered | OrderReconciled | PositionReconciled


@attrs.frozen(kw_only=True)
class LabeledDecision:
    """A decision's features with its label (symbol actor -> model actor, for retraining)."""

    correlation_id: str
    row: np.ndarray = attrs.field(eq=False)
    label: int
    ts_decision: int
    ts_resolved: int


@attrs.frozen(kw_only=True)
class ScoreBatch:
    """Symbol actor -> model actor: a step's requests and newly labelled decisions.

    Every symbol sends one per step (possibly empty), so the model actor can batch a
    step's requests across symbols in a fixed order. ``events`` counts the step's market
    events (the replay's retraining clock).
    """

    step: int
    symbol: str
    ts: int
    events: int = 0
    requests: tuple[ScoreRequest, ...] = ()
    labeled: tuple[LabeledDecision, ...] = ()


@attrs.frozen(kw_only=True)
class ScoreReply:
    """Model actor -> symbol actor: the step's scores (and, for the first symbol, the model
    actor's own journal records, so they join the step's records in canonical order)."""

    step: int
    scores: tuple[Score, ...] = ()
    records: tuple[ModelRecord, ...] = ()


JournalRecord = (
    SubmitOrder
    | CancelOrder
    | ReplaceOrder
    | OrderEvent
    | PositionChanged
    | TradingStateChanged
    | OpsEvent
    | ModelRecord
    | ReconcileRecord
)


@attrs.frozen(kw_only=True)
class IntentBatch:
    """Symbol actor -> risk: a step's orders and the symbol's journal records.

    ``ts`` is the step's start on the replay clock.
    """

    step: int
    symbol: str
    ts: int = 0
    commands: tuple[SubmitOrder, ...] = ()
    records: tuple[JournalRecord, ...] = ()
    final: bool = False


@attrs.frozen(kw_only=True)
class OrderBatch:
    """Risk -> execution: approved orders, denials to pass back, journal records.

    ``cancel_all`` asks execution to cancel every open order (trading halted).
    ``trading_state`` is the account's trading state after this step's triggers
    (passed on to the symbol actors); ``resumed`` says an operator ``resume`` was
    applied this step (the venue then checks again what it had reported).
    """

    step: int
    commands: tuple[SubmitOrder, ...] = ()
    denials: tuple[OrderDenied, ...] = ()
    records: tuple[JournalRecord, ...] = ()
    cancel_all: str = ""
    trading_state: str = "ACTIVE"
    flatten: bool = False
    resumed: bool = False
    final: bool = False


@attrs.frozen(kw_only=True)
class ReportBatch:
    """Execution -> symbol actor / risk: a step's order events, in (ts, seq) order.

    Risk's copy also carries the step's last quotes (``marks``), the venue's
    mark-to-market PnL after fees (``equity``), the PnL after fees of trades
    closed in the step (``trades``) and operational events (``ops``). Every copy
    carries the account's ``trading_state`` as risk set it for this step.
    """

    step: int
    events: tuple[OrderEvent, ...] = ()
    marks: tuple[Mark, ...] = ()
    equity: float = 0.0
    trading_state: str = "ACTIVE"
    flatten: bool = False
    trades: tuple[float, ...] = ()
    ops: tuple[OpsEvent, ...] = ()
    final: bool = False


@attrs.frozen(kw_only=True)
class ControlCommand:
    """Operator -> risk: ``halt``, ``reduce``, ``flatten`` or ``resume`` trading, with a
    reason (``flatten``: reduce, and close every open position)."""

    action: str = attrs.field(validator=v.in_(("halt", "reduce", "flatten", "resume")))
    reason: str = "operator"


@attrs.frozen(kw_only=True, eq=False)
class PortfolioRequest:
    """Risk -> portfolio: per-step returns of every symbol (rows: steps)."""

    step: int
    symbols: tuple[str, ...]
    returns: np.ndarray


@attrs.frozen(kw_only=True)
class ExposureLimits:
    """Portfolio -> risk: per-symbol notional limits from the optimal weights.

    ``limits`` is empty when the solve failed (``status`` says why); risk then
    keeps the last good limits.
    """

    step: int
    limits: dict[str, float]
    weights: dict[str, float]
    status: str
    solve_seconds: float


@attrs.frozen(kw_only=True)
class JournalBatch:
    """Execution -> journal: a step's records, already in canonical order."""

    step: int
    records: tuple[JournalRecord, ...]
