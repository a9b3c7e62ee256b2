"""The simulated venue: deterministic fills and account keeping for replay.

A market order is acknowledged ``latency`` after it was sent and fills at the
opposite best quote (ask for a buy, bid for a sell) of the first book update of
its symbol at or after ``ts + latency``; the whole quantity fills there (no
depth is consumed) and pays the taker fee. The venue keeps, per symbol, the
signed position, the average entry price, realized PnL and fees, and the equity
curve marked to the mid at the end of every step (for max drawdown).

No I/O, no Trio, no wall clock: the same orders and quotes give the same fills.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import attrs
import numpy as np

from ...messages import (
    EventKind,
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
class SymbolAccount:
    """One symbol's position and PnL at the venue."""

    qty: float = 0.0
    avg_price: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    round_trips: int = 0
    fills: int = 0
    last_mid: float = math.nan
    closed: list[float] = attrs.Factory(list)
    _opened_at: float = 0.0  # realized - fees when the position was opened

    def unrealized(self) -> float:
        """Mark-to-mid PnL of the open position (0 when flat or never quoted)."""
        if self.qty == 0.0 or math.isnan(self.last_mid):
            return 0.0
        return self.qty * (self.last_mid - self.avg_price)

    def apply_fill(self, signed_qty: float, price: float, fee: float) -> None:
        """Update position, average price, realized PnL and fees for one fill."""
        if self.qty == 0.0:
            self._opened_at = self.realized - self.fees
        self.fees += fee
        self.fills += 1
        old = self.qty
        new = old + signed_qty
        if old == 0.0 or (old > 0.0) == (signed_qty > 0.0):
            self.avg_price = (self.avg_price * abs(old) + price * abs(signed_qty)) / abs(new)
        else:
            closed = min(abs(signed_qty), abs(old))
            self.realized += closed * (price - self.avg_price) * (1.0 if old > 0.0 else -1.0)
            if abs(new) < 1e-12:
                new = 0.0
                self.avg_price = 0.0
                self.round_trips += 1
                self.closed.append(self.realized - self.fees - self._opened_at)
            elif (new > 0.0) != (old > 0.0):
                # Flipped through flat: the rest opens a new position at this price.
                self.avg_price = price
                self.round_trips += 1
                self.closed.append(self.realized - self.fees - self._opened_at)
                self._opened_at = self.realized - self.fees
        self.qty = new


@attrs.define
class _Pending:
    order: SubmitOrder
    due_ts: int
    venue_order_id: int


def take_closed_trades(accounts: dict[str, SymbolAccount]) -> list[float]:
    """PnL after fees of the accounts' trades closed since the last call, in symbol order
    (shared by the simulated and the live venue)."""
    out: list[float] = []
    for symbol in sorted(accounts):
        acct = accounts[symbol]
        out.extend(acct.closed)
        acct.closed.clear()
    return out


class SimVenue:
    """Deterministic matcher and account for replay and paper trading.

    Args:
        latency_ns: time from send to the matching engine.
        taker_fee_rate: fee as a fraction of notional (5 bps = 0.0005).
        seq: the sequence the venue numbers its events from; execution passes the
            one it numbers its own events from, so that events stamped the same
            nanosecond still sort in the order they were made.
    """

    def __init__(
        self,
        *,
        latency_ns: int,
        taker_fee_rate: float,
        seq: Iterator[int] | None = None,
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
        self.accounts: dict[str, SymbolAccount] = {}
        self.equity_peak = 0.0
        self.max_drawdown = 0.0
        self.equity = 0.0

    def _next_seq(self) -> int:
        return next(self._seq)

    def account(self, symbol: str) -> SymbolAccount:
        """The symbol's account (created flat on first use)."""
        acct = self.accounts.get(symbol)
        if acct is None:
            acct = self.accounts[symbol] = SymbolAccount()
        return acct

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
                self.account(symbol).last_mid = 0.5 * (last[1] + last[2])
        self._mark()
        fills.sort(key=lambda e: (e.ts_event, e.seq))
        return fills

    @staticmethod
    def _quotes(batch: Ticks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mask = batch.kind == EventKind.QUOTE
        return batch.ts[mask], batch.bid[mask], batch.ask[mask]

    def _fill(self, pending: _Pending, ts: int, bid: float, ask: float) -> OrderFilled:
        order = pending.order
        price = ask if order.side > 0 else bid
        fee = order.qty * price * self._fee_rate
        self.account(order.symbol).apply_fill(int(order.side) * order.qty, price, fee)
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
        equity = sum(a.realized - a.fees + a.unrealized() for a in self.accounts.values())
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
        return take_closed_trades(self.accounts)

    def take_ops(self) -> list[OpsEvent]:
        """Operational events since the last call (the simulated venue has none of its own:
        its drills are injected by the execution actor)."""
        return []

    @property
    def seq(self) -> Iterator[int]:
        """The event sequence shared with the execution actor."""
        return self._seq

    @property
    def pending_orders(self) -> int:
        """Orders accepted but not yet filled."""
        return len(self._pending)
