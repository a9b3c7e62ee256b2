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

No I/O, no Trio, no wall clock: the same orders and quotes give the same fills.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import attrs
import numpy as np

from ...ledger import PositionLedger, SymbolAccount
from ...messages import (
    EventKind,
    FundingApplied,
    OpsEvent,
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    SubmitOrder,
    Ticks,
)


@attrs.define
class _Pending:
    order: SubmitOrder
    due_ts: int
    venue_order_id: int


class SimVenue:
    """Deterministic matcher and account for replay and paper trading.

    Args:
        latency_ns: time from send to the matching engine.
        taker_fee_rate: fee as a fraction of notional (5 bps = 0.0005).
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
        seq: Iterator[int] | None = None,
        ledger: PositionLedger | None = None,
    ) -> None:
        self._latency_ns = latency_ns
        self._fee_rate = taker_fee_rate
        self._pending: list[_Pending] = []
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
        """Accept a market order; it fills on a later call to :meth:`on_market`.

        Returns:
            ``[OrderAccepted]``, or ``[OrderRejected]`` while a fault is injected.
        """
        due = order.ts_event + self._latency_ns
        refusal = self._refusal(order)
        if refusal is not None:
            return [
                OrderRejected(
                    client_order_id=order.client_order_id,
                    symbol=order.symbol,
                    purpose=order.purpose,
                    reason=refusal,
                    ts_event=due,
                    ts_init=due,
                    seq=self._next_seq(),
                    correlation_id=order.correlation_id,
                )
            ]
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

    def cancel_all(self, ts: int, reason: str) -> list[OrderEvent]:
        """Cancel every pending order (nothing of them has filled)."""
        return self._end_pending(OrderCanceled, ts, reason)

    def expire_all(self, ts: int, reason: str) -> list[OrderEvent]:
        """Expire every pending order (the replay ended before it could fill)."""
        return self._end_pending(OrderExpired, ts, reason)

    def _end_pending(
        self, event: type[OrderCanceled] | type[OrderExpired], ts: int, reason: str
    ) -> list[OrderEvent]:
        out: list[OrderEvent] = [
            event(
                client_order_id=p.order.client_order_id,
                symbol=p.order.symbol,
                purpose=p.order.purpose,
                cum_qty=0.0,
                reason=reason,
                ts_event=ts,
                ts_init=ts,
                seq=self._next_seq(),
                correlation_id=p.order.correlation_id,
            )
            for p in self._pending
        ]
        self._pending = []
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
        """Orders accepted but not yet filled."""
        return len(self._pending)
