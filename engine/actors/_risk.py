"""The risk actor: pre-trade checks between the symbol actors and execution.

Per step it reads the execution reports of step k-1 (to keep positions current)
and then every symbol's intents for step k, always in the same symbol order, and
checks the step's orders sorted by ``(ts_event, symbol, seq)``. An order that
fails a check becomes an :class:`OrderDenied` event with a reason code; it is not
an exception. Exits (reduce-only) are only subject to the order-rate limit.

Checks: notional per symbol (position plus open orders plus this order, at the
order's reference price), total notional across symbols, and orders per second
(a sliding one-second window on event time).
"""

from __future__ import annotations

from collections import deque

import trio
from structlog.typing import FilteringBoundLogger

from .._config import RiskSection
from ..messages import (
    IntentBatch,
    JournalRecord,
    OrderBatch,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    ReportBatch,
    SubmitOrder,
)
from ._symbol import ProtocolError

_SECOND_NS = 1_000_000_000


class RiskActor:
    """Approves or denies every order before it reaches execution.

    Args:
        config: the risk section.
        symbols: symbol order in which intents are read each step.
        intents: one receive channel per symbol.
        reports: execution reports (all symbols).
        orders: the send side towards execution (closed when done).
        log: a bound structlog logger.
    """

    def __init__(
        self,
        *,
        config: RiskSection,
        symbols: list[str],
        intents: dict[str, trio.MemoryReceiveChannel[IntentBatch]],
        reports: trio.MemoryReceiveChannel[ReportBatch],
        orders: trio.MemorySendChannel[OrderBatch],
        log: FilteringBoundLogger,
    ) -> None:
        self._cfg = config
        self._symbols = list(symbols)
        self._intents = intents
        self._reports = reports
        self._orders = orders
        self._log = log
        self.positions: dict[str, float] = dict.fromkeys(symbols, 0.0)
        self.prices: dict[str, float] = {}
        self._open: dict[str, SubmitOrder] = {}
        self._recent: deque[int] = deque()
        self._seq = 0
        self.approved = 0
        self.denied: dict[str, int] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check each step's orders until the symbols send their final batch.

        Raises:
            ProtocolError: a message for the wrong step arrived.
        """
        async with self._orders:
            task_status.started()
            step = 0
            while True:
                if step > 0:
                    report = await self._reports.receive()
                    if report.step != step - 1:
                        raise ProtocolError(f"risk: report step {report.step} != {step - 1}")
                    for event in report.events:
                        self._on_report(event)
                commands: list[SubmitOrder] = []
                records: list[JournalRecord] = []
                final = False
                for symbol in self._symbols:
                    batch = await self._intents[symbol].receive()
                    if batch.step != step:
                        raise ProtocolError(f"risk: {symbol} intent step {batch.step} != {step}")
                    commands.extend(batch.commands)
                    records.extend(batch.records)
                    final = final or batch.final
                commands.sort(key=lambda c: (c.ts_event, c.symbol, c.seq))
                approved: list[SubmitOrder] = []
                denials: list[OrderDenied] = []
                for command in commands:
                    reason = self.check(command)
                    if reason is None:
                        approved.append(command)
                        self._open[command.client_order_id] = command
                        self._recent.append(command.ts_event)
                        self.approved += 1
                    else:
                        denial = self._deny(command, reason)
                        denials.append(denial)
                        records.append(denial)
                await self._orders.send(
                    OrderBatch(
                        step=step,
                        commands=tuple(approved),
                        denials=tuple(denials),
                        records=tuple(records),
                        final=final,
                    )
                )
                if final:
                    return
                step += 1

    def check(self, order: SubmitOrder) -> str | None:
        """The reason code to deny ``order``, or None to approve it."""
        self.prices[order.symbol] = order.ref_price
        window_start = order.ts_event - _SECOND_NS
        while self._recent and self._recent[0] <= window_start:
            self._recent.popleft()
        if len(self._recent) >= self._cfg.max_orders_per_second:
            return "max_orders_per_second"
        if order.reduce_only:
            return None
        signed = int(order.side) * order.qty
        exposure = self._exposure(order.symbol) + signed
        if abs(exposure) * order.ref_price > self._cfg.max_notional_per_symbol:
            return "max_notional_per_symbol"
        total = sum(
            abs(self._exposure(s)) * self.prices.get(s, 0.0)
            for s in self._symbols
            if s != order.symbol
        )
        if total + abs(exposure) * order.ref_price > self._cfg.max_notional_total:
            return "max_notional_total"
        return None

    def _exposure(self, symbol: str) -> float:
        """Position plus what open orders would add."""
        pending = sum(int(o.side) * o.qty for o in self._open.values() if o.symbol == symbol)
        return self.positions.get(symbol, 0.0) + pending

    def _on_report(self, event: object) -> None:
        if isinstance(event, OrderFilled):
            self.positions[event.symbol] = round(
                self.positions.get(event.symbol, 0.0) + int(event.side) * event.last_qty, 12
            )
            self.prices[event.symbol] = event.last_price
            if event.cum_qty >= event.order_qty:
                self._open.pop(event.client_order_id, None)
        elif isinstance(event, OrderRejected | OrderExpired | OrderDenied):
            self._open.pop(event.client_order_id, None)

    def _deny(self, order: SubmitOrder, reason: str) -> OrderDenied:
        self._seq += 1
        self.denied[reason] = self.denied.get(reason, 0) + 1
        self._log.warning(
            "order denied",
            symbol=order.symbol,
            client_order_id=order.client_order_id,
            reason=reason,
            ts_event=order.ts_event,
        )
        return OrderDenied(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            purpose=order.purpose,
            reason=reason,
            ts_event=order.ts_event,
            ts_init=order.ts_init,
            seq=self._seq,
            correlation_id=order.correlation_id,
        )
