"""Execution as a synchronous core: orders to the venue, each order's machine, drills.

:meth:`ExecutionCore.submit` hands an approved order to the venue and answers with
the order's :class:`OrderSubmitted` and the venue's first answer;
:meth:`ExecutionCore.apply` drives the order's machine (:mod:`fsm` order table)
with every venue event; :meth:`ExecutionCore.inject_faults` raises the configured
drills at their market time. :func:`record_key` is the canonical order of journal
records stamped the same nanosecond. The Trio actor
(:class:`engine.actors.ExecutionActor`) runs it per step; the replay driver per event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from structlog.typing import FilteringBoundLogger

import fsm

from .._config import FaultEvent
from ..messages import (
    CancelOrder,
    DecisionLabeled,
    EntryScored,
    FeedReconnected,
    FillRecovered,
    FundingApplied,
    JournalRecord,
    ModelRetrained,
    OpsEvent,
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderReconciled,
    OrderRejected,
    OrderReplaced,
    OrderSubmitted,
    OrderTriggered,
    PositionChanged,
    PositionReconciled,
    RateLimitBanned,
    ReconciliationFailed,
    ReplaceOrder,
    SubmitOrder,
    TradingStateChanged,
)
from ..venues import FaultDrills
from ..venues._protocol import ManagesOrders

if TYPE_CHECKING:
    from ..venues import Venue

# Who produced a record: orders the tie-break between records stamped the same
# nanosecond, in causal order (a symbol's intent, then risk's verdict, then the venue).
_SOURCE_RANK: dict[type, int] = {
    PositionChanged: 0,
    SubmitOrder: 0,
    CancelOrder: 0,
    ReplaceOrder: 0,
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
    OrderTriggered: 2,
    OrderReplaced: 2,
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
    if isinstance(event, OrderTriggered):
        return fsm.Triggered()
    if isinstance(event, OrderReplaced):
        return fsm.Replaced()
    return None


class ExecutionCore:
    """Bridges approved orders to a venue.

    Args:
        venue: any :class:`~engine.venues.Venue` (the simulated one, or the live
            :class:`~engine.venues.binance.BinanceVenue`, whose requests run in its own tasks).
        log: a bound structlog logger.
        faults: faults to inject, at market-time offsets from the first event
            (replay tests and drills).
    """

    def __init__(
        self,
        *,
        venue: Venue,
        log: FilteringBoundLogger,
        faults: tuple[FaultEvent, ...] = (),
    ) -> None:
        self.venue = venue
        self._faults = sorted(faults, key=lambda f: f.at_ms)
        self._origin: int | None = None
        self._log = log
        self._machines: dict[str, fsm.Machine[fsm.OrderStatus]] = {}
        self._seq = venue.seq
        self.orders_sent = 0
        self.fills = 0
        self.expired = 0

    def next_fault_ns(self, origin: int) -> int | None:
        """When the next drill is due (None: no more). Offsets count from the first
        market time seen: ``origin`` on the first call, unless a drill ran already."""
        if self._origin is None:
            self._origin = origin
        if not self._faults:
            return None
        return self._origin + self._faults[0].at_ms * 1_000_000

    def inject_faults(self, now: int) -> list[OpsEvent]:
        """Raise the drills due by ``now``: their operational events (bans and venue
        rejections go to a venue that takes :class:`~engine.venues.FaultDrills`)."""
        if self._origin is None:
            self._origin = now
        ops: list[OpsEvent] = []
        while self._faults and self._origin + self._faults[0].at_ms * 1_000_000 <= now:
            fault = self._faults.pop(0)
            venue = self.venue
            if fault.kind in ("ban", "reject") and not isinstance(venue, FaultDrills):
                self._log.warning("fault not supported by the venue", kind=fault.kind)
                continue
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
                assert isinstance(venue, FaultDrills)
                venue.ban(until)
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
                assert isinstance(venue, FaultDrills)
                venue.reject_next(fault.count)
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

    def submit(self, order: SubmitOrder) -> list[OrderEvent]:
        """Send an approved order; its :class:`OrderSubmitted` and the venue's answer."""
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

    def cancel(self, command: CancelOrder) -> list[OrderEvent]:
        """Cancel an open order; the venue's answer (``[]``: it was no longer open).

        Raises:
            TypeError: the venue cannot cancel orders (not a :class:`ManagesOrders`).
        """
        if command.client_order_id not in self._machines:
            return []
        return list(self._managing().cancel(command))

    def replace(self, command: ReplaceOrder) -> list[OrderEvent]:
        """Amend an open LIMIT order (risk approved its new size and price); the
        venue's answer (``[]``: it was no longer open).

        Raises:
            TypeError: the venue cannot amend orders (not a :class:`ManagesOrders`).
        """
        if command.client_order_id not in self._machines:
            return []
        return list(self._managing().replace(command))

    def _managing(self) -> ManagesOrders:
        if not isinstance(self.venue, ManagesOrders):
            raise TypeError(f"{type(self.venue).__name__} cannot cancel or amend orders")
        return self.venue

    def apply(self, event: OrderEvent) -> None:
        """Drive the order's machine with a venue event (and log and count it)."""
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
