"""The execution actor: sends approved orders to the venue and reports what happens.

Per step it reads the feed's market step k and risk's order batch k (in that
order), submits the orders to the venue, lets the venue fill against the step's
quotes, drives each order's machine (:mod:`fsm` order table), and sends every
symbol actor and risk a :class:`ReportBatch` for step k, plus one
:class:`JournalBatch` with the step's records in canonical order
``(ts_init, source, symbol, seq)``. When the market ends, orders still pending
expire, and one more round lets the symbol actors journal what that did.

The venue applies every fill to the engine's position ledger (which risk and the
symbol actors read: see :mod:`engine.ledger`). Each report also carries the
account's trading state as risk set it for the step, and an operator ``resume``
reaches the venue (:meth:`on_resume`), which re-arms its own checks.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import trio
from structlog.typing import FilteringBoundLogger

import fsm

from .._config import FaultEvent
from ..messages import (
    DecisionLabeled,
    EntryScored,
    FeedReconnected,
    FillRecovered,
    FundingApplied,
    JournalBatch,
    JournalRecord,
    Mark,
    MarketStep,
    ModelRetrained,
    OpsEvent,
    OrderAccepted,
    OrderBatch,
    OrderCanceled,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderReconciled,
    OrderRejected,
    OrderSubmitted,
    PositionChanged,
    PositionReconciled,
    RateLimitBanned,
    ReconciliationFailed,
    ReportBatch,
    SubmitOrder,
    TradingStateChanged,
)
from ..venues.sim import SimVenue

if TYPE_CHECKING:
    from ..venues.binance import BinanceVenue
from ._symbol import ProtocolError

# Who produced a record: orders the tie-break between records stamped the same
# nanosecond, in causal order (a symbol's intent, then risk's verdict, then the venue).
_SOURCE_RANK: dict[type, int] = {
    PositionChanged: 0,
    SubmitOrder: 0,
    EntryScored: 0,
    DecisionLabeled: 0,
    ModelRetrained: 0,
    OrderDenied: 1,
    TradingStateChanged: 1,
    OrderSubmitted: 2,
    OrderAccepted: 2,
    OrderFilled: 2,
    OrderRejected: 2,
    OrderExpired: 2,
    OrderCanceled: 2,
    FeedReconnected: 3,
    RateLimitBanned: 3,
    ReconciliationFailed: 3,
    FundingApplied: 3,
    FillRecovered: 3,
    OrderReconciled: 3,
    PositionReconciled: 3,
}


def record_key(record: JournalRecord) -> tuple[int, int, str, int]:
    """The canonical order of journal records within a step."""
    return (record.ts_init, _SOURCE_RANK[type(record)], record.symbol, record.seq)


def _order_event(event: OrderEvent) -> object | None:
    """The order-machine event for a venue event (None: not an order-machine event)."""
    if isinstance(event, OrderAccepted):
        return fsm.Accepted()
    if isinstance(event, OrderFilled):
        return fsm.Fill(cum_qty=event.cum_qty, qty=event.order_qty)
    if isinstance(event, OrderRejected):
        return fsm.Rejected(reason=event.reason)
    if isinstance(event, OrderExpired):
        return fsm.Expired()
    if isinstance(event, OrderCanceled):
        return fsm.Canceled()
    return None


class ExecutionActor:
    """Bridges approved orders to a venue.

    Args:
        venue: the simulated venue, or the live :class:`~engine.venues.binance.BinanceVenue`
            (same synchronous interface; its requests run in its own tasks).
        symbols: the symbols whose actors receive reports.
        market: market steps from the feed.
        orders: order batches from risk.
        symbol_reports: one send channel per symbol actor.
        risk_reports: the send channel to risk.
        journal: the send channel to the journal actor.
        log: a bound structlog logger.
        faults: faults to inject, at market-time offsets from the first event
            (replay tests and drills).
    """

    def __init__(
        self,
        *,
        venue: SimVenue | BinanceVenue,
        symbols: list[str],
        market: trio.MemoryReceiveChannel[MarketStep],
        orders: trio.MemoryReceiveChannel[OrderBatch],
        symbol_reports: dict[str, trio.MemorySendChannel[ReportBatch]],
        risk_reports: trio.MemorySendChannel[ReportBatch],
        journal: trio.MemorySendChannel[JournalBatch],
        log: FilteringBoundLogger,
        faults: tuple[FaultEvent, ...] = (),
    ) -> None:
        self.venue = venue
        self.drain_s = 5.0
        """How long the last step waits for a live venue's pending orders to end."""
        self._faults = sorted(faults, key=lambda f: f.at_ms)
        self._origin: int | None = None
        self._symbols = list(symbols)
        self._market = market
        self._orders = orders
        self._symbol_reports = symbol_reports
        self._risk_reports = risk_reports
        self._journal = journal
        self._log = log
        self._machines: dict[str, fsm.Machine[fsm.OrderStatus]] = {}
        self._seq = venue.seq
        self._trading_state = "ACTIVE"
        self.orders_sent = 0
        self.fills = 0
        self.expired = 0
        self.last_ts = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Process steps until risk sends its final batch; then close every output.

        Raises:
            ProtocolError: a message for the wrong step arrived.
        """
        with contextlib.ExitStack() as stack:
            for channel in (self._journal, self._risk_reports, *self._symbol_reports.values()):
                stack.enter_context(channel)
            task_status.started()
            await self._loop()

    async def _loop(self) -> None:
        step = 0
        market_done = False
        while True:
            market: MarketStep | None = None
            if not market_done:
                market = await self._market.receive()
                if market.step != step:
                    raise ProtocolError(f"execution: market step {market.step} != {step}")
                market_done = market.final
                self.last_ts = max(self.last_ts, market.ts_start)
            batch = await self._orders.receive()
            if batch.step != step:
                raise ProtocolError(f"execution: order step {batch.step} != {step}")
            records: list[JournalRecord] = list(batch.records)
            self._trading_state = batch.trading_state
            if batch.resumed:
                self.venue.on_resume()
            if batch.final:
                await self._send_journal(step, records)
                return
            now = market.ts_start if market is not None else self.last_ts
            ops = self._inject_faults(now) if market is not None and not market.final else []
            if market is not None:
                ops.extend(market.ops)
                ops.extend(self.venue.take_ops())
            events: list[OrderEvent] = list(batch.denials)
            venue_events: list[OrderEvent] = []
            if batch.cancel_all:
                venue_events += self.venue.cancel_all(now, batch.cancel_all)
            for order in batch.commands:
                submitted, *answer = self._submit(order)
                events.append(submitted)
                venue_events += answer
            marks: list[Mark] = []
            if market is not None:
                venue_events += self.venue.on_market(market.ticks)
                marks = self._marks()
                if market.final:
                    venue_events += self.venue.expire_all(self.last_ts, "replay_ended")
                    venue_events += await self._drain_venue()
            for event in venue_events:
                self._apply(event)
            events.extend(venue_events)
            events.sort(key=lambda e: (e.ts_event, _SOURCE_RANK[type(e)], e.symbol, e.seq))
            records.extend(e for e in events if not isinstance(e, OrderDenied))
            records.extend(ops)
            final = market is not None and market.final
            await self._send_reports(step, events, marks, ops, final)
            await self._send_journal(step, records)
            step += 1

    async def _drain_venue(self) -> list[OrderEvent]:
        """At the end, wait (at most ``drain_s``) for a live venue's last answers.

        A live venue cancels what is still open asynchronously, and fills of orders in
        flight may still arrive: they are journaled before the run ends. The simulated
        venue has nothing pending after ``expire_all``, so replay never waits here.
        """
        events: list[OrderEvent] = []
        with trio.move_on_after(self.drain_s):
            while self.venue.pending_orders:
                await trio.sleep(0.05)
                events += self.venue.on_market({})
        if self.venue.pending_orders:
            self._log.error("orders still pending at the end", pending=self.venue.pending_orders)
        return events

    def _inject_faults(self, now: int) -> list[OpsEvent]:
        if self._origin is None:
            self._origin = now
        ops: list[OpsEvent] = []
        while self._faults and self._origin + self._faults[0].at_ms * 1_000_000 <= now:
            fault = self._faults.pop(0)
            self._log.warning("fault injected", kind=fault.kind, at_ms=fault.at_ms)
            if fault.kind == "reconnect":
                ops.extend(
                    FeedReconnected(
                        symbol=fault.symbol,
                        reason="injected",
                        ts_event=now,
                        ts_init=now,
                        seq=next(self._seq),
                    )
                    for _ in range(fault.count)
                )
            elif fault.kind == "ban":
                until = now + fault.duration_ms * 1_000_000
                self.venue.ban(until)
                ops.append(
                    RateLimitBanned(
                        symbol=fault.symbol,
                        until_ts=until,
                        reason="418 injected",
                        ts_event=now,
                        ts_init=now,
                        seq=next(self._seq),
                    )
                )
            elif fault.kind == "reject":
                self.venue.reject_next(fault.count)
            else:
                ops.append(
                    ReconciliationFailed(
                        symbol=fault.symbol,
                        reason="injected",
                        ts_event=now,
                        ts_init=now,
                        seq=next(self._seq),
                    )
                )
        return ops

    def _marks(self) -> list[Mark]:
        """The step's last quote per symbol, as the venue saw it filling."""
        return [
            Mark(symbol=symbol, ts=ts, bid=bid, ask=ask)
            for symbol, (ts, bid, ask) in sorted(self.venue.step_quotes.items())
        ]

    def _submit(self, order: SubmitOrder) -> list[OrderEvent]:
        self.orders_sent += 1
        self._machines[order.client_order_id] = fsm.new_order()
        submitted = OrderSubmitted(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            purpose=order.purpose,
            ts_event=order.ts_event,
            ts_init=order.ts_init,
            seq=next(self._seq),
            correlation_id=order.correlation_id,
        )
        self._log.info(
            "order submitted",
            symbol=order.symbol,
            client_order_id=order.client_order_id,
            side=order.side.name,
            qty=order.qty,
            purpose=order.purpose.value,
            ts_event=order.ts_event,
        )
        return [submitted, *self.venue.submit(order)]

    def _apply(self, event: OrderEvent) -> None:
        machine = self._machines.get(event.client_order_id)
        order_event = _order_event(event)
        if machine is None or order_event is None:
            return
        t = machine.handle(order_event)
        if isinstance(event, OrderFilled):
            self.fills += 1
            self._log.info(
                "order filled",
                symbol=event.symbol,
                client_order_id=event.client_order_id,
                side=event.side.name,
                qty=event.last_qty,
                price=event.last_price,
                fee=event.fee,
                status=t.target.value,
                ts_event=event.ts_event,
            )
        elif isinstance(event, OrderRejected | OrderCanceled):
            self._log.warning(
                "order " + ("rejected" if isinstance(event, OrderRejected) else "canceled"),
                symbol=event.symbol,
                client_order_id=event.client_order_id,
                reason=event.reason,
            )
        elif isinstance(event, OrderExpired):
            self.expired += 1
            self._log.warning(
                "order expired",
                symbol=event.symbol,
                client_order_id=event.client_order_id,
                reason=event.reason,
            )
        if t.target in fsm.TERMINAL_STATUSES:
            del self._machines[event.client_order_id]

    async def _send_reports(
        self,
        step: int,
        events: list[OrderEvent],
        marks: list[Mark],
        ops: list[OpsEvent],
        final: bool,
    ) -> None:
        per_symbol: dict[str, list[OrderEvent]] = {s: [] for s in self._symbols}
        for event in events:
            per_symbol[event.symbol].append(event)
        for symbol in self._symbols:
            report = ReportBatch(
                step=step,
                events=tuple(per_symbol[symbol]),
                equity=self.venue.equity,
                trading_state=self._trading_state,
                final=final,
            )
            await self._symbol_reports[symbol].send(report)
        await self._risk_reports.send(
            ReportBatch(
                step=step,
                events=tuple(events),
                marks=tuple(marks),
                equity=self.venue.equity,
                trades=tuple(self.venue.take_closed_trades()),
                ops=tuple(ops),
                trading_state=self._trading_state,
                final=final,
            )
        )

    async def _send_journal(self, step: int, records: list[JournalRecord]) -> None:
        if records:
            records.sort(key=record_key)
            await self._journal.send(JournalBatch(step=step, records=tuple(records)))
