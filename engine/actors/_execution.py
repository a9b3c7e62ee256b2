"""The execution actor: the Trio shell around :class:`~engine.core.ExecutionCore`.

Per step it reads the feed's market step k and risk's order batch k (in that
order), submits the orders to the venue, lets the venue fill against the step's
quotes, drives each order's machine, and sends every symbol actor and risk a
:class:`ReportBatch` for step k, plus one :class:`JournalBatch` with the step's
records in canonical order ``(ts_init, source, symbol, seq)``. When the market
ends, orders still pending expire, and one more round lets the symbol actors
journal what that did.

The venue applies every fill to the engine's position ledger (which risk and the
symbol actors read: see :mod:`engine.ledger`). Each report also carries the
account's trading state as risk set it for the step, and an operator ``resume``
reaches the venue (:meth:`on_resume`), which re-arms its own checks.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, NamedTuple

import trio
from structlog.typing import FilteringBoundLogger

from .._config import FaultEvent
from ..core import ExecutionCore
from ..core._execution import _SOURCE_RANK, record_key
from ..messages import (
    CancelOrder,
    JournalBatch,
    JournalRecord,
    Mark,
    MarketStep,
    OpsEvent,
    OrderBatch,
    OrderDenied,
    OrderEvent,
    OrderSubmitted,
    ReplaceOrder,
    ReportBatch,
)
from ._symbol import ProtocolError

if TYPE_CHECKING:
    from ..venues import Venue


class ExecutionActor(ExecutionCore):
    """Bridges approved orders to a venue, per step.

    Args:
        symbols: the symbols whose actors receive reports.
        market: market steps from the feed.
        orders: order batches from risk.
        symbol_reports: one send channel per symbol actor.
        risk_reports: the send channel to risk.
        journal: the send channel to the journal actor.

    The other arguments are :class:`~engine.core.ExecutionCore`'s.
    """

    def __init__(
        self,
        *,
        venue: Venue,
        symbols: list[str],
        market: trio.MemoryReceiveChannel[MarketStep],
        orders: trio.MemoryReceiveChannel[OrderBatch],
        symbol_reports: dict[str, trio.MemorySendChannel[ReportBatch]],
        risk_reports: trio.MemorySendChannel[ReportBatch],
        journal: trio.MemorySendChannel[JournalBatch],
        log: FilteringBoundLogger,
        faults: tuple[FaultEvent, ...] = (),
    ) -> None:
        super().__init__(venue=venue, log=log, faults=faults)
        self.drain_s = 5.0
        """How long the last step waits for a live venue's pending orders to end."""
        self._symbols = list(symbols)
        self._market = market
        self._orders = orders
        self._symbol_reports = symbol_reports
        self._risk_reports = risk_reports
        self._journal = journal
        self._trading_state = "ACTIVE"
        self._flatten = False
        self.last_ts = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Process steps until risk sends its final batch; then close every output.

        Raises:
            ProtocolError: a message for the wrong step arrived.
        """
        with contextlib.ExitStack() as stack:
            for channel in self.outputs():
                stack.enter_context(channel)
            task_status.started()
            await self._loop()

    def outputs(self) -> list[trio.MemorySendChannel[Any]]:
        """The send channels this actor closes when it ends."""
        return [self._journal, self._risk_reports, *self._symbol_reports.values()]

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
            batch = await self._orders.receive()
            if batch.step != step:
                raise ProtocolError(f"execution: order step {batch.step} != {step}")
            out = await self.step(step, market, batch)
            if out.symbol_reports is not None:
                for symbol in self._symbols:
                    await self._symbol_reports[symbol].send(out.symbol_reports[symbol])
            if out.risk_report is not None:
                await self._risk_reports.send(out.risk_report)
            if out.journal is not None:
                await self._journal.send(out.journal)
            if batch.final:
                return
            step += 1

    async def step(self, step: int, market: MarketStep | None, batch: OrderBatch) -> StepOutput:
        """One step: submit risk's ``batch``, fill against ``market`` (None: the market
        has ended); the reports and the step's journal batch (no reports on risk's
        final batch).

        Only the market's final step waits (for a live venue's last answers); the
        inline path (:class:`~engine.actors.InlineStep`) runs the rest in the feed's task.
        """
        if market is not None:
            self.last_ts = max(self.last_ts, market.ts_start)
        records: list[JournalRecord] = list(batch.records)
        self._trading_state = batch.trading_state
        self._flatten = batch.flatten
        if batch.resumed:
            self.venue.on_resume()
        if batch.final:
            return StepOutput(None, None, self._journal_batch(step, records))
        now = market.ts_start if market is not None else self.last_ts
        ops = self.inject_faults(now) if market is not None and not market.final else []
        if market is not None:
            ops.extend(market.ops)
            ops.extend(self.venue.take_ops())
        events: list[OrderEvent] = list(batch.denials)
        venue_events: list[OrderEvent] = []
        if batch.cancel_all:
            venue_events += self.venue.cancel_all(now, batch.cancel_all)
        for command in batch.commands:
            # Cancels and amendments of resting orders, where risk passes them on.
            if isinstance(command, CancelOrder):
                venue_events += self.cancel(command)
                continue
            if isinstance(command, ReplaceOrder):
                venue_events += self.replace(command)
                continue
            submitted, *answer = self.submit(command)
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
            self.apply(event)
        events.extend(venue_events)
        events.sort(key=_event_order(events))
        records.extend(e for e in events if not isinstance(e, OrderDenied))
        records.extend(ops)
        final = market is not None and market.final
        symbol_reports, risk_report = self._reports(step, events, marks, ops, final)
        return StepOutput(symbol_reports, risk_report, self._journal_batch(step, records))

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

    def _marks(self) -> list[Mark]:
        """The step's last quote per symbol, as the venue saw it filling."""
        return [
            Mark(symbol=symbol, ts=ts, bid=bid, ask=ask)
            for symbol, (ts, bid, ask) in sorted(self.venue.step_quotes.items())
        ]

    def _reports(
        self,
        step: int,
        events: list[OrderEvent],
        marks: list[Mark],
        ops: list[OpsEvent],
        final: bool,
    ) -> tuple[dict[str, ReportBatch], ReportBatch]:
        per_symbol: dict[str, list[OrderEvent]] = {s: [] for s in self._symbols}
        for event in events:
            per_symbol[event.symbol].append(event)
        symbol_reports = {
            symbol: ReportBatch(
                step=step,
                events=tuple(per_symbol[symbol]),
                equity=self.venue.equity,
                trading_state=self._trading_state,
                flatten=self._flatten,
                final=final,
            )
            for symbol in self._symbols
        }
        risk_report = ReportBatch(
            step=step,
            events=tuple(events),
            marks=tuple(marks),
            equity=self.venue.equity,
            trades=tuple(self.venue.take_closed_trades()),
            ops=tuple(ops),
            trading_state=self._trading_state,
            flatten=self._flatten,
            final=final,
        )
        return symbol_reports, risk_report

    @staticmethod
    def _journal_batch(step: int, records: list[JournalRecord]) -> JournalBatch | None:
        if not records:
            return None
        records.sort(key=record_key)
        return JournalBatch(step=step, records=tuple(records))


def _event_order(events: list[OrderEvent]) -> Any:
    """The sort key of a step's events: ``(ts_event, source, symbol, seq)``, with an
    order's own events never before its :class:`OrderSubmitted`.

    A venue stamps its events with the exchange's time in milliseconds, and an
    order's ``OrderSubmitted`` carries the decision's time in nanoseconds: an order
    the exchange took within the same millisecond has an acceptance and fills
    stamped before its submission. Where they come in one step (a step whose orders'
    answers are already in when the venue is drained) the symbol would see the fill
    first and the submission of an order already done. Its events sort at its
    submission's time at the earliest, the submission first.
    """
    submitted = {e.client_order_id: e.ts_event for e in events if type(e) is OrderSubmitted}
    if not submitted:
        return lambda e: (e.ts_event, _SOURCE_RANK[type(e)], e.symbol, e.seq)

    def key(e: OrderEvent) -> tuple[int, int, str, int, int]:
        at = submitted.get(e.client_order_id, e.ts_event)
        first = type(e) is not OrderSubmitted
        return (max(e.ts_event, at), _SOURCE_RANK[type(e)], e.symbol, first, e.seq)

    return key


class StepOutput(NamedTuple):
    """What one execution step sends on: reports (None after risk's final batch) and
    the step's records in canonical order (None: none)."""

    symbol_reports: dict[str, ReportBatch] | None
    risk_report: ReportBatch | None
    journal: JournalBatch | None
