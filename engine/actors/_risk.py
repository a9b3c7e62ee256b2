"""The risk actor: the Trio shell around :class:`~engine.core.RiskCore`.

Per step it reads the execution report of step k-1 (fills, cancels, rejections,
the step's last quotes, mark-to-market PnL, closed trades, operational events),
then every symbol's intents for step k in a fixed symbol order. It then applies
operator commands, evaluates the triggers, moves the trading machine and checks
the step's orders (all in the core), and sends execution one :class:`OrderBatch`.
Entering HALTED asks execution to cancel every open order. Every ``every_steps``
steps it asks the portfolio actor for exposure limits and applies the answer
``apply_after_steps`` steps later.
"""

from __future__ import annotations

import contextlib
from typing import Any

import trio
from structlog.typing import FilteringBoundLogger

from .._config import PortfolioSection, RiskSection
from ..core import RiskCore
from ..ledger import PositionLedger
from ..messages import (
    ControlCommand,
    ExposureLimits,
    IntentBatch,
    JournalRecord,
    OrderBatch,
    PortfolioRequest,
    ReportBatch,
    SubmitOrder,
)
from ._symbol import ProtocolError

_MS = 1_000_000


class RiskActor(RiskCore):
    """Approves or denies every order before it reaches execution, per step.

    Args:
        intents: one receive channel per symbol.
        reports: execution reports (all symbols).
        orders: the send side towards execution (closed when done).
        portfolio: the portfolio section; with the two channels below, risk asks
            for exposure limits every ``every_steps`` steps and applies the answer
            ``apply_after_steps`` later.
        portfolio_requests: requests to the portfolio actor (closed when done).
        portfolio_answers: its answers.

    The other arguments are :class:`~engine.core.RiskCore`'s.
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
        ledger: PositionLedger | None = None,
        step_ns: int = 250 * _MS,
        control: trio.MemoryReceiveChannel[ControlCommand] | None = None,
        portfolio: PortfolioSection | None = None,
        portfolio_requests: trio.MemorySendChannel[PortfolioRequest] | None = None,
        portfolio_answers: trio.MemoryReceiveChannel[ExposureLimits] | None = None,
    ) -> None:
        super().__init__(
            config=config,
            symbols=symbols,
            log=log,
            ledger=ledger,
            step_ns=step_ns,
            control=control,
        )
        self._intents = intents
        self._reports = reports
        self._orders = orders
        self._portfolio = portfolio if portfolio_requests is not None else None
        self._portfolio_requests = portfolio_requests
        self._portfolio_answers = portfolio_answers
        self._portfolio_due: int | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check each step's orders until the symbols send their final batch.

        Raises:
            ProtocolError: a message for the wrong step arrived.
        """
        # Outputs close synchronously (``with``, not ``async with``): an ``aclose``
        # checkpoint while an error unwinds lets the nursery's Cancelled replace it.
        with contextlib.ExitStack() as stack:
            for channel in self.outputs():
                stack.enter_context(channel)
            task_status.started()
            step = 0
            while True:
                report: ReportBatch | None = None
                if step > 0:
                    report = await self._reports.receive()
                    if report.step != step - 1:
                        raise ProtocolError(f"risk: report step {report.step} != {step - 1}")
                intents: list[IntentBatch] = []
                for symbol in self._symbols:
                    batch = await self._intents[symbol].receive()
                    if batch.step != step:
                        raise ProtocolError(f"risk: {symbol} intent step {batch.step} != {step}")
                    intents.append(batch)
                orders = await self.step(step, report, intents)
                await self._orders.send(orders)
                if orders.final:
                    return
                step += 1

    def outputs(self) -> list[trio.MemorySendChannel[Any]]:
        """The send channels this actor closes when it ends."""
        extra = [self._portfolio_requests] if self._portfolio_requests is not None else []
        return [self._orders, *extra]

    async def step(
        self, step: int, report: ReportBatch | None, intents: list[IntentBatch]
    ) -> OrderBatch:
        """One step: apply execution's ``report`` of step - 1 (None at step 0), then
        every symbol's ``intents`` (in symbol order); the orders for execution.

        Only a portfolio answer due at this step waits (at a fixed step, so the solve
        time cannot change the results); the inline path
        (:class:`~engine.actors.InlineStep`) runs the rest in the feed's task.
        """
        if report is not None:
            self.on_report(report)
        commands: list[SubmitOrder] = []
        records: list[JournalRecord] = []
        final = False
        now = 0
        for batch in intents:
            commands.extend(batch.commands)
            records.extend(batch.records)
            final = final or batch.final
            now = max(now, batch.ts)
        cancel_all = ""
        if not final:
            await self._exchange_with_portfolio(step)
            cancel_all = self.update_trading_state(now, records)
        approved, denials = self.approve(commands, records)
        orders = OrderBatch(
            step=step,
            commands=tuple(approved),
            denials=tuple(denials),
            records=tuple(records),
            cancel_all=cancel_all,
            trading_state=self.trading.state._value_,
            flatten=self.flattening,
            resumed=self._resumed,
            final=final,
        )
        self._resumed = False
        return orders

    async def _exchange_with_portfolio(self, step: int) -> None:
        cfg = self._portfolio
        if cfg is None:
            return
        assert self._portfolio_requests is not None and self._portfolio_answers is not None
        if self._portfolio_due == step:
            # Wait here, at a fixed step, so the solve time cannot change the results;
            # only when the answer is not in yet (``receive`` yields even when it is:
            # on the inline path every other task would run before the step's orders).
            try:
                answer = self._portfolio_answers.receive_nowait()
            except trio.WouldBlock:
                answer = await self._portfolio_answers.receive()
            self._portfolio_due = None
            self.set_exposure_limits(answer.limits, answer.status)
        if self._portfolio_due is None and step > 0 and step % cfg.every_steps == 0:
            matrix = self.returns_matrix(min(cfg.lookback, self._cfg.correlation_window))
            if matrix is not None and matrix.shape[0] >= cfg.min_periods:
                request = PortfolioRequest(step=step, symbols=tuple(self._symbols), returns=matrix)
                self._portfolio_requests.send_nowait(request)
                self._portfolio_due = step + cfg.apply_after_steps
