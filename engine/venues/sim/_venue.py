"""The simulated venue: deterministic fills and account keeping for replay.

A market order is acknowledged ``latency`` after it was sent and fills at the
opposite best quote (ask for a buy, bid for a sell) of the first book update of
its symbol at or after ``ts + latency``; the whole quantity fills there (no
depth is consumed) and pays the taker fee. The venue keeps, per symbol, the
signed position, the average entry price, realized PnL and fees in the engine's
:class:`~engine.ledger.PositionLedger` (the one the other actors read), and the
equity curve marked to the mid at the end of every step (for max drawdown).

Where the market data carries mark prices (``markPriceUpdate``: MARK rows), open
positions are marked to the mark price instead of the mid, as Binance computes
unrealised PnL, and funding is settled on them at each funding time
(:meth:`SimVenue.apply_funding`, journaled as :class:`~engine.messages.FundingApplied`).

Resting orders (LIMIT, STOP_MARKET, TAKE_PROFIT_MARKET) live event by event
(:meth:`SimVenue.on_row`, or row by row inside :meth:`SimVenue.on_market`). An
order arrives at the matching engine at the first quote of its symbol at or after
``ts + latency``; its ack (or its rejection) carries that time, since that is when
Binance would answer it. At arrival, with that quote's touch:

* a LIMIT that crosses (a buy at or above the ask) takes as a taker at the touch,
  at most the displayed touch quantity (``ask_qty``; the depth behind it is not in
  a bookTicker capture, so the venue assumes none). IOC and GTC take what the
  touch shows; FOK takes the whole order if the touch shows it, else expires with
  nothing filled; GTX (post-only) is rejected (Binance -5022). A GTC remainder
  rests at its price, queue ahead 0 (it is the new best price);
* a LIMIT that does not cross: IOC and FOK expire unfilled, GTC and GTX rest.

Queue model of a resting LIMIT, conservative (risk averse) as hftbacktest's
``RiskAdverseQueueModel`` (nkaz001/hftbacktest, ``models/queue.rs``): the order is
assumed to be at the back of its level and the queue ahead of it only shrinks by
trades or by the displayed quantity dropping below it. For a buy at ``P`` (a sell
mirrors it):

* queue ahead at arrival: the displayed ``bid_qty`` when ``P`` is the best bid, 0
  when ``P`` improves it, unknown (infinite: fills only on a trade-through) when
  ``P`` is behind it;
* whenever ``P`` is the best bid, the queue ahead is cut to ``bid_qty`` (all of
  it is visible then, so it cannot be longer);
* a trade AT ``P`` whose aggressor sold shrinks the queue ahead by its quantity;
  what exceeds the queue fills the order (partial fills);
* a trade below ``P``, or a quote with ``ask <= P``, trades through: the rest
  fills at ``P``.

A resting fill is a maker fill at the order's price and pays the maker fee;
everything that takes pays the taker fee (``OrderFilled.liquidity``). Prices are
compared exactly: a strategy quotes on the tick grid of the capture.

A STOP_MARKET (buy: last trade >= stop; sell: <=) or TAKE_PROFIT_MARKET (buy:
last trade <= stop; sell: >=) triggers on the last trade price, Binance's default
``workingType`` ``CONTRACT_PRICE`` (the capture's mark prices are 1 s apart and
would trigger late), emits :class:`~engine.messages.OrderTriggered`, and fills
whole as a market order at the next quote's touch. A reduce-only order never
fills more than the position it reduces; with nothing left to reduce it expires.

:meth:`SimVenue.cancel` cancels an open order, :meth:`SimVenue.replace` amends a
resting LIMIT as Binance's ``PUT /fapi/v1/order`` does (back of the queue).

No I/O, no Trio, no wall clock: the same orders and quotes give the same fills.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import attrs
import numpy as np

from ...ledger import PositionLedger, SymbolAccount
from ...messages import (
    STOP_ORDER_TYPES,
    CancelOrder,
    EventKind,
    FundingApplied,
    OpsEvent,
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
    ReplaceOrder,
    SubmitOrder,
    Ticks,
)

_QTY_DECIMALS = 9  # as the ledger rounds positions

GTX_WOULD_TAKE = "-5022 post only order would immediately match"
"""The rejection reason of a GTX order that would take (Binance's code -5022)."""


@attrs.define
class _Pending:
    order: SubmitOrder
    due_ts: int
    venue_order_id: int


@attrs.define(eq=False)
class _Resting:
    """A non-market order: waiting to arrive, resting, or triggered."""

    order: SubmitOrder
    due_ts: int
    venue_order_id: int
    price: float  # limit price (LIMIT), NaN for stops
    qty: float
    arrived: bool = False
    triggered: bool = False
    queue: float = math.inf  # quantity ahead of the order at its price
    cum_qty: float = 0.0


class SimVenue:
    """Deterministic matcher and account for replay and paper trading.

    Args:
        latency_ns: time from send to the matching engine.
        taker_fee_rate: fee as a fraction of notional (5 bps = 0.0005).
        maker_fee_rate: fee of resting (maker) fills (Binance VIP0: 2 bps).
        seq: the sequence the venue numbers its events from; execution passes the
            one it numbers its own events from, so that events stamped the same
            nanosecond still sort in the order they were made.
        ledger: the engine's position ledger, which the venue feeds with its fills
            (a new one by default).
    """

    def __init__(
        self,
        *,
        latency_ns: int,
        taker_fee_rate: float,
        maker_fee_rate: float = 0.0002,
        seq: Iterator[int] | None = None,
        ledger: PositionLedger | None = None,
    ) -> None:
        self._latency_ns = latency_ns
        self._fee_rate = taker_fee_rate
        self._maker_fee_rate = maker_fee_rate
        self._pending: list[_Pending] = []
        # Non-market orders in submission order, and how many are open per symbol.
        self._resting: list[_Resting] = []
        self._resting_count: dict[str, int] = {}
        # The last quote (bid, bid_qty, ask, ask_qty) a resting order of a symbol saw.
        self._last_quote: dict[str, tuple[float, float, float, float]] = {}
        self._next_order_id = 1
        self._seq = seq if seq is not None else itertools.count(1)
        self._banned_until = 0
        self._reject_next = 0
        # The last quote (ts, bid, ask) of each symbol quoted in the latest step.
        self.step_quotes: dict[str, tuple[int, float, float]] = {}
        self.ledger = ledger if ledger is not None else PositionLedger()
        self.equity_peak = 0.0
        self.max_drawdown = 0.0
        self.equity = 0.0
        # Mark prices: the latest per symbol, what funding has paid (+) or cost (-),
        # and per symbol (next funding time ns, its latest rate, last time settled).
        self.mark_prices: dict[str, float] = {}
        self.funding: dict[str, float] = {}
        self._next_funding: dict[str, tuple[int, float, int]] = {}
        self._ops: list[OpsEvent] = []

    def _next_seq(self) -> int:
        return next(self._seq)

    @property
    def accounts(self) -> dict[str, SymbolAccount]:
        """The ledger's accounts, by symbol."""
        return self.ledger.accounts

    def account(self, symbol: str) -> SymbolAccount:
        """The symbol's account in the ledger (created flat on first use)."""
        return self.ledger.account(symbol)

    def ban(self, until_ts: int) -> None:
        """Refuse every order sent before ``until_ts`` (an HTTP 418 IP ban)."""
        self._banned_until = max(self._banned_until, until_ts)

    def reject_next(self, count: int) -> None:
        """Reject the next ``count`` orders (margin insufficient, -2019)."""
        self._reject_next += count

    def _refusal(self, order: SubmitOrder) -> str | None:
        if order.ts_event < self._banned_until:
            return "418 ip banned"
        if self._reject_next > 0:
            self._reject_next -= 1
            return "-2019 margin is insufficient"
        return None

    def submit(self, order: SubmitOrder) -> list[OrderEvent]:
        """Accept an order; it fills on a later call to :meth:`on_market` / :meth:`on_row`.

        Returns:
            ``[OrderAccepted]`` for a market order, ``[]`` for any other (its ack or
            rejection comes when it arrives, at the first quote at or after its due
            time), or ``[OrderRejected]`` while a fault is injected.
        """
        due = order.ts_event + self._latency_ns
        refusal = self._refusal(order)
        if refusal is not None:
            return [self._rejected(order, refusal, due)]
        if order.order_type != "MARKET":
            self._resting.append(
                _Resting(
                    order=order,
                    due_ts=due,
                    venue_order_id=self._next_order_id,
                    price=order.price,
                    qty=order.qty,
                )
            )
            self._next_order_id += 1
            self._resting_count[order.symbol] = self._resting_count.get(order.symbol, 0) + 1
            return []
        pending = _Pending(order=order, due_ts=due, venue_order_id=self._next_order_id)
        self._next_order_id += 1
        self._pending.append(pending)
        return [
            OrderAccepted(
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                purpose=order.purpose,
                venue_order_id=pending.venue_order_id,
                ts_event=due,
                ts_init=due,
                seq=self._next_seq(),
                correlation_id=order.correlation_id,
            )
        ]

    def on_market(self, ticks: dict[str, Ticks]) -> list[OrderEvent]:
        """Fill pending orders against a step's quotes and mark the accounts.

        Args:
            ticks: the step's events per symbol, each in time order.

        Returns:
            The fills, in (time, order of submission) order.
        """
        fills: list[OrderEvent] = []
        quotes = {symbol: self._quotes(batch) for symbol, batch in ticks.items()}
        still: list[_Pending] = []
        for pending in self._pending:
            q = quotes.get(pending.order.symbol)
            filled = None
            if q is not None:
                q_ts, q_bid, q_ask = q
                j = int(np.searchsorted(q_ts, pending.due_ts, side="left"))
                if j < q_ts.shape[0]:
                    filled = self._fill(pending, int(q_ts[j]), float(q_bid[j]), float(q_ask[j]))
            if filled is None:
                still.append(pending)
            else:
                fills.append(filled)
        self._pending = still
        for symbol, batch in ticks.items():
            for row in range(len(batch)):
                if not self._resting_count.get(symbol):
                    break
                fills += self.on_row(symbol, batch, row)
        self.step_quotes = {}
        for symbol, q in quotes.items():
            if q[0].shape[0]:
                last = (int(q[0][-1]), float(q[1][-1]), float(q[2][-1]))
                self.step_quotes[symbol] = last
                self.ledger.mark(symbol, 0.5 * (last[1] + last[2]))
        self._on_mark_prices(ticks, fills)
        self._mark()
        fills.sort(key=lambda e: (e.ts_event, e.seq))
        return fills

    # -- event by event (the replay driver) -------------------------------------

    def fill(self, client_order_id: str, ts: int, bid: float, ask: float) -> OrderFilled | None:
        """Fill a pending order at the quote ``(ts, bid, ask)`` (the first of its symbol at
        or after the order's due time, found by the caller); None: no longer pending."""
        for i, pending in enumerate(self._pending):
            if pending.order.client_order_id == client_order_id:
                del self._pending[i]
                return self._fill(pending, ts, bid, ask)
        return None

    def has_resting(self, symbol: str) -> bool:
        """Whether ``symbol`` has a non-market order open (the driver then hands every
        one of its events to :meth:`on_row`)."""
        return bool(self._resting_count.get(symbol))

    def on_row(self, symbol: str, ticks: Ticks, row: int) -> list[OrderEvent]:
        """One market event of ``symbol`` (row ``row`` of ``ticks``) for its open
        non-market orders, oldest first: arrival, queue, fills, stop triggers.

        Returns:
            The events it caused (acks, rejections, fills, triggers, expiries).
        """
        if not self._resting_count.get(symbol):
            return []
        kind = int(ticks.kind[row])
        if kind != EventKind.QUOTE and kind != EventKind.TRADE:
            return []
        ts = int(ticks.ts[row])
        out: list[OrderEvent] = []
        for r in [r for r in self._resting if r.order.symbol == symbol]:
            if kind == EventKind.QUOTE:
                bid, ask = float(ticks.bid[row]), float(ticks.ask[row])
                bid_qty, ask_qty = float(ticks.bid_qty[row]), float(ticks.ask_qty[row])
                if not r.arrived:
                    if ts >= r.due_ts:
                        out += self._arrive(r, ts, bid, bid_qty, ask, ask_qty)
                elif r.triggered:
                    touch = ask if r.order.side > 0 else bid
                    out += self._fill_part(r, r.qty - r.cum_qty, touch, ts, "TAKER")
                elif r.order.order_type == "LIMIT":
                    out += self._on_quote(r, ts, bid, bid_qty, ask, ask_qty)
            elif r.arrived and not r.triggered:
                price, qty = float(ticks.price[row]), float(ticks.qty[row])
                if r.order.order_type == "LIMIT":
                    out += self._on_trade(r, ts, price, qty, bool(ticks.buyer_maker[row]))
                elif _stop_hit(r.order, price):
                    r.triggered = True
                    out.append(self._triggered(r, ts, price))
        return out

    def cancel(self, command: CancelOrder) -> list[OrderEvent]:
        """Cancel an open order: ``[OrderCanceled]`` with what it had filled, or ``[]``
        when it is no longer open (filled or ended; its last event went out before)."""
        for r in self._resting:
            if r.order.client_order_id == command.client_order_id and not r.triggered:
                return [self._close(r, OrderCanceled, command.ts_event, command.reason)]
        for i, pending in enumerate(self._pending):
            if pending.order.client_order_id == command.client_order_id:
                del self._pending[i]
                return [self._end(pending.order, OrderCanceled, command.ts_event, command.reason)]
        return []

    def replace(self, command: ReplaceOrder) -> list[OrderEvent]:
        """Amend an open LIMIT order (Binance ``PUT /fapi/v1/order``): new quantity and
        price, back of the queue at the new price. A new quantity at most what has
        filled cancels it, as does a GTX that would now take (against the quote
        the venue last saw).

        Returns:
            ``[OrderReplaced]``, ``[OrderCanceled]``, ``[OrderRejected]`` (no such
            open LIMIT order, -2013) or, for an amendment that takes, the taker fill.
        """
        ts = command.ts_event
        for r in self._resting:
            order = r.order
            if order.client_order_id != command.client_order_id:
                continue
            if order.order_type != "LIMIT" or not r.arrived:
                break
            if command.qty <= r.cum_qty:
                return [self._close(r, OrderCanceled, ts, "replace_below_filled")]
            r.qty, r.price = command.qty, command.price
            r.order = attrs.evolve(order, qty=command.qty, price=command.price)
            r.queue = math.inf
            out: list[OrderEvent] = [
                OrderReplaced(
                    client_order_id=order.client_order_id,
                    symbol=order.symbol,
                    purpose=order.purpose,
                    qty=command.qty,
                    price=command.price,
                    ts_event=ts,
                    ts_init=ts,
                    seq=self._next_seq(),
                    correlation_id=order.correlation_id,
                )
            ]
            quote = self._last_quote.get(order.symbol)
            if quote is not None:
                bid, bid_qty, ask, ask_qty = quote
                if _crosses(order.side, r.price, bid, ask):
                    if order.time_in_force == "GTX":
                        return [self._close(r, OrderCanceled, ts, "gtx_would_take")]
                    touch, touch_qty = (ask, ask_qty) if order.side > 0 else (bid, bid_qty)
                    take = min(r.qty - r.cum_qty, _depth(touch_qty))
                    out += self._fill_part(r, take, touch, ts, "TAKER")
                    if r in self._resting:
                        r.queue = 0.0
                else:
                    r.queue = _queue_at(order.side, r.price, bid, bid_qty, ask, ask_qty)
            return out
        return [self._rejected(command, "-2013 order does not exist", ts)]

    # -- resting orders: arrival, queue, fills ---------------------------------------

    def _arrive(
        self, r: _Resting, ts: int, bid: float, bid_qty: float, ask: float, ask_qty: float
    ) -> list[OrderEvent]:
        order = r.order
        self._last_quote[order.symbol] = (bid, bid_qty, ask, ask_qty)
        r.arrived = True
        if order.order_type in STOP_ORDER_TYPES:
            return [self._accepted(r, ts)]
        crosses = _crosses(order.side, r.price, bid, ask)
        tif = order.time_in_force
        if crosses and tif == "GTX":
            self._drop(r)
            return [self._rejected(order, GTX_WOULD_TAKE, ts)]
        out: list[OrderEvent] = [self._accepted(r, ts)]
        if crosses:
            touch, touch_qty = (ask, ask_qty) if order.side > 0 else (bid, bid_qty)
            shown = _depth(touch_qty)
            if tif == "FOK" and shown < r.qty:
                return [*out, self._close(r, OrderExpired, ts, "fok_not_filled")]
            out += self._fill_part(r, min(r.qty, shown), touch, ts, "TAKER")
            r.queue = 0.0
        elif tif in ("IOC", "FOK"):
            return [*out, self._close(r, OrderExpired, ts, f"{tif.lower()}_not_filled")]
        else:
            r.queue = _queue_at(order.side, r.price, bid, bid_qty, ask, ask_qty)
        if tif == "IOC" and r in self._resting:
            out.append(self._close(r, OrderExpired, ts, "ioc_not_filled"))
        return out

    def _on_quote(
        self, r: _Resting, ts: int, bid: float, bid_qty: float, ask: float, ask_qty: float
    ) -> list[OrderEvent]:
        self._last_quote[r.order.symbol] = (bid, bid_qty, ask, ask_qty)
        if r.order.side > 0:
            if ask <= r.price:
                return self._fill_part(r, r.qty - r.cum_qty, r.price, ts, "MAKER")
            if bid == r.price:
                r.queue = min(r.queue, _depth(bid_qty))
        else:
            if bid >= r.price:
                return self._fill_part(r, r.qty - r.cum_qty, r.price, ts, "MAKER")
            if ask == r.price:
                r.queue = min(r.queue, _depth(ask_qty))
        return []

    def _on_trade(
        self, r: _Resting, ts: int, price: float, qty: float, buyer_maker: bool
    ) -> list[OrderEvent]:
        buy = r.order.side > 0
        if (price < r.price) if buy else (price > r.price):
            return self._fill_part(r, r.qty - r.cum_qty, r.price, ts, "MAKER")
        # A trade at our price whose aggressor hit our side of the book.
        if price == r.price and buyer_maker == buy and qty > 0:
            left = qty - r.queue
            r.queue = max(0.0, r.queue - qty)
            if left > 0:
                return self._fill_part(r, min(left, r.qty - r.cum_qty), r.price, ts, "MAKER")
        return []

    def _fill_part(
        self, r: _Resting, qty: float, price: float, ts: int, liquidity: str
    ) -> list[OrderEvent]:
        order = r.order
        if order.reduce_only:
            position = self.ledger.qty(order.symbol)
            reducible = max(0.0, -int(order.side) * position)
            qty = min(qty, reducible)
            if qty <= 0.0:
                return [self._close(r, OrderExpired, ts, "reduce_only_nothing_to_reduce")]
        # Quantities the ledger keeps (a queue remainder can be a float crumb).
        qty = round(qty, _QTY_DECIMALS)
        if qty <= 0.0:
            return []
        rate = self._maker_fee_rate if liquidity == "MAKER" else self._fee_rate
        fee = qty * price * rate
        self.ledger.apply_fill(order.symbol, int(order.side) * qty, price, fee)
        r.cum_qty = min(r.qty, r.cum_qty + qty)
        done = round(r.qty - r.cum_qty, _QTY_DECIMALS) <= 0.0
        if done:
            r.cum_qty = r.qty
            self._drop(r)
        fill = OrderFilled(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            purpose=order.purpose,
            side=order.side,
            last_qty=qty,
            last_price=price,
            cum_qty=r.cum_qty,
            order_qty=r.qty,
            fee=fee,
            liquidity=liquidity,
            ts_event=ts,
            ts_init=ts,
            seq=self._next_seq(),
            correlation_id=order.correlation_id,
        )
        if not done and r.triggered:
            # A triggered stop that reduce-only capped: Binance expires the rest.
            return [fill, self._close(r, OrderExpired, ts, "reduce_only_nothing_to_reduce")]
        return [fill]

    def _rejected(self, order: SubmitOrder | ReplaceOrder, reason: str, ts: int) -> OrderRejected:
        return OrderRejected(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            purpose=order.purpose,
            reason=reason,
            ts_event=ts,
            ts_init=ts,
            seq=self._next_seq(),
            correlation_id=order.correlation_id,
        )

    def _accepted(self, r: _Resting, ts: int) -> OrderAccepted:
        return OrderAccepted(
            client_order_id=r.order.client_order_id,
            symbol=r.order.symbol,
            purpose=r.order.purpose,
            venue_order_id=r.venue_order_id,
            ts_event=ts,
            ts_init=ts,
            seq=self._next_seq(),
            correlation_id=r.order.correlation_id,
        )

    def _triggered(self, r: _Resting, ts: int, price: float) -> OrderTriggered:
        return OrderTriggered(
            client_order_id=r.order.client_order_id,
            symbol=r.order.symbol,
            purpose=r.order.purpose,
            trigger_price=price,
            ts_event=ts,
            ts_init=ts,
            seq=self._next_seq(),
            correlation_id=r.order.correlation_id,
        )

    def _drop(self, r: _Resting) -> None:
        self._resting.remove(r)
        self._resting_count[r.order.symbol] -= 1

    def _close(
        self, r: _Resting, event: type[OrderCanceled] | type[OrderExpired], ts: int, reason: str
    ) -> OrderEvent:
        self._drop(r)
        return self._end(r.order, event, ts, reason, r.cum_qty)

    def _end(
        self,
        order: SubmitOrder,
        event: type[OrderCanceled] | type[OrderExpired],
        ts: int,
        reason: str,
        cum_qty: float = 0.0,
    ) -> OrderEvent:
        return event(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            purpose=order.purpose,
            cum_qty=cum_qty,
            reason=reason,
            ts_event=ts,
            ts_init=ts,
            seq=self._next_seq(),
            correlation_id=order.correlation_id,
        )

    def on_mark_row(self, symbol: str, ticks: Ticks, row: int) -> None:
        """One mark price update (a MARK row of ``ticks``): settle funding it makes due,
        on the position the ledger holds now, and mark the position to it."""
        self._on_mark_prices({symbol: ticks.rows(row, row + 1)}, [])

    def mark_to(self, mids: dict[str, float]) -> None:
        """Mark the positions to these mids (the mark price where one is known) and take
        an equity sample for the drawdown."""
        for symbol, mid in mids.items():
            self.ledger.mark(symbol, mid)
        for symbol, mark in self.mark_prices.items():
            self.ledger.mark(symbol, mark)
        self._mark()

    def _on_mark_prices(self, ticks: dict[str, Ticks], fills: list[OrderEvent]) -> None:
        """Settle funding whose time a step's mark prices passed; mark to the mark price.

        A settlement at funding time ``T`` is applied at the first mark price update
        with an event time at or after ``T``, at that update's mark price and at the
        rate last published for ``T`` (that update's, while it still names ``T``), on
        the position held at the update's replay time.
        """
        for symbol, batch in ticks.items():
            rows = np.flatnonzero(batch.kind == EventKind.MARK)
            for j in rows.tolist():
                now = int(batch.ts[j])
                event_ns = int(batch.ts_exchange[j])
                mark = float(batch.price[j])
                rate = float(batch.funding_rate[j])
                next_ns = int(batch.next_funding_ts[j])
                due, due_rate, settled = self._next_funding.get(symbol, (0, rate, 0))
                if settled < due <= event_ns:
                    final_rate = rate if next_ns == due else due_rate
                    qty = self._qty_at(symbol, now, fills)
                    self.apply_funding(
                        symbol, rate=final_rate, mark_price=mark, qty=qty, funding_ts=due, ts=now
                    )
                    settled = due
                self._next_funding[symbol] = (next_ns, rate, settled)
                self.mark_prices[symbol] = mark
        for symbol, mark in self.mark_prices.items():
            self.ledger.mark(symbol, mark)

    def _qty_at(self, symbol: str, ts: int, fills: list[OrderEvent]) -> float:
        """The symbol's position at ``ts``: now, less this step's fills after ``ts``."""
        qty = self.ledger.qty(symbol)
        for fill in fills:
            if isinstance(fill, OrderFilled) and fill.symbol == symbol and fill.ts_event > ts:
                qty -= int(fill.side) * fill.last_qty
        return round(qty, 12)

    def apply_funding(
        self, symbol: str, *, rate: float, mark_price: float, qty: float, funding_ts: int, ts: int
    ) -> FundingApplied | None:
        """Settle one funding payment on a position (Binance's rule: longs pay a positive rate).

        The amount, ``-qty * mark_price * rate``, is booked into the symbol's realized
        PnL (as Binance books it into the wallet balance), so equity, the risk
        triggers and the PnL of the trade that held the position include it. The
        :class:`FundingApplied` record goes out with :meth:`take_ops` (journal, risk).

        Args:
            symbol: the symbol.
            rate: the funding rate settled.
            mark_price: the mark price at settlement.
            qty: the signed position at settlement.
            funding_ts: the funding time (ns), the record's ``ts_event``.
            ts: the replay time it was applied at, the record's ``ts_init``.

        Returns:
            The record, or None when flat or the rate is unknown (nothing is paid).
        """
        if qty == 0.0 or not np.isfinite(rate) or not np.isfinite(mark_price):
            return None
        amount = -qty * mark_price * rate
        self.ledger.account(symbol).realized += amount
        self.funding[symbol] = self.funding.get(symbol, 0.0) + amount
        record = FundingApplied(
            symbol=symbol,
            rate=rate,
            mark_price=mark_price,
            position_qty=qty,
            amount=amount,
            ts_event=funding_ts,
            ts_init=ts,
            seq=self._next_seq(),
        )
        self._ops.append(record)
        return record

    @staticmethod
    def _quotes(batch: Ticks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mask = batch.kind == EventKind.QUOTE
        return batch.ts[mask], batch.bid[mask], batch.ask[mask]

    def _fill(self, pending: _Pending, ts: int, bid: float, ask: float) -> OrderFilled:
        order = pending.order
        price = ask if order.side > 0 else bid
        fee = order.qty * price * self._fee_rate
        self.ledger.apply_fill(order.symbol, int(order.side) * order.qty, price, fee)
        return OrderFilled(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            purpose=order.purpose,
            side=order.side,
            last_qty=order.qty,
            last_price=price,
            cum_qty=order.qty,
            order_qty=order.qty,
            fee=fee,
            ts_event=ts,
            ts_init=ts,
            seq=self._next_seq(),
            correlation_id=order.correlation_id,
        )

    def _mark(self) -> None:
        self.record_equity(self.ledger.equity())

    def record_equity(self, equity: float) -> None:
        """Take an equity sample (the ledger's, marked by the caller) for the drawdown."""
        self.equity = equity
        self.equity_peak = max(self.equity_peak, equity)
        self.max_drawdown = max(self.max_drawdown, self.equity_peak - equity)

    def record_equities(self, equities: list[float]) -> None:
        """:meth:`record_equity` for each sample of a calm replay stretch, in order."""
        peak, max_dd = self.equity_peak, self.max_drawdown
        for equity in equities:
            if equity > peak:  # max(), without the call
                peak = equity
            if peak - equity > max_dd:
                max_dd = peak - equity
        self.equity_peak, self.max_drawdown = peak, max_dd
        if equities:
            self.equity = equities[-1]

    def cancel_all(self, ts: int, reason: str) -> list[OrderEvent]:
        """Cancel every open order (with what each has filled)."""
        return self._end_pending(OrderCanceled, ts, reason)

    def expire_all(self, ts: int, reason: str) -> list[OrderEvent]:
        """Expire every pending order (the replay ended before it could fill)."""
        return self._end_pending(OrderExpired, ts, reason)

    def _end_pending(
        self, event: type[OrderCanceled] | type[OrderExpired], ts: int, reason: str
    ) -> list[OrderEvent]:
        out: list[OrderEvent] = [self._end(p.order, event, ts, reason) for p in self._pending]
        self._pending = []
        out += [self._end(r.order, event, ts, reason, r.cum_qty) for r in self._resting]
        self._resting = []
        self._resting_count = {}
        return out

    def take_closed_trades(self) -> list[float]:
        """PnL after fees of trades closed since the last call, in symbol order."""
        return self.ledger.take_closed_trades()

    def on_resume(self) -> None:
        """An operator resumed trading (the simulated venue re-arms nothing: its drills
        are injected by the execution actor)."""

    def take_ops(self) -> list[OpsEvent]:
        """Operational events since the last call: funding settlements (its drills are
        injected by the execution actor)."""
        ops, self._ops = self._ops, []
        return ops

    @property
    def seq(self) -> Iterator[int]:
        """The event sequence shared with the execution actor."""
        return self._seq

    @property
    def pending_orders(self) -> int:
        """Orders accepted but not yet filled (market and resting)."""
        return len(self._pending) + len(self._resting)


def _crosses(side: int, price: float, bid: float, ask: float) -> bool:
    """Whether a limit order at ``price`` would take against the touch."""
    return price >= ask if side > 0 else price <= bid


def _depth(qty: float) -> float:
    """A displayed quantity; unknown (NaN) counts as unlimited, as a market order's fill."""
    return qty if math.isfinite(qty) else math.inf


def _queue_at(
    side: int, price: float, bid: float, bid_qty: float, ask: float, ask_qty: float
) -> float:
    """Queue ahead of a non-crossing limit at arrival: the displayed quantity at the
    best price, 0 when it improves it, unknown (infinite) behind it."""
    best, shown = (bid, bid_qty) if side > 0 else (ask, ask_qty)
    if price == best:
        return _depth(shown)
    improves = price > best if side > 0 else price < best
    return 0.0 if improves else math.inf


def _stop_hit(order: SubmitOrder, last: float) -> bool:
    """Whether the last trade price ``last`` triggers a stop order."""
    rising = (order.order_type == "STOP_MARKET") == (order.side > 0)
    return last >= order.stop_price if rising else last <= order.stop_price
