"""The inline path: a market step through the symbol, risk and execution actors' steps
in the caller's task.

Paper and live trading hand each step to :class:`InlineStep` from the feed's read loop
(:class:`~engine.feeds._live.LiveFeed`): the symbol actors' :meth:`step`, then risk's,
then execution's, which writes an approved order on the venue's idle connection
inside ``submit``. Between a tick read off the socket and its order's write there is
no channel and no task switch. The actor tasks stay for what is not on that path:
the journal writer, the model and portfolio actors, the venue's streams.

It runs the same steps, in the same order, on the same inputs as the actor tasks
(each step's intents read execution's report of the step before), so for the same
market steps the journal is the same, record for record. One thing moves: risk takes
execution's report as soon as the step's orders are written instead of at the top
of the next step, off the next order's path (nothing between reads or changes what
it updates). It waits only where an actor waits too: for a model's scores, for a
portfolio answer due at the step, for room in the journal's channel, and for the
venue's last answers at the end.
"""

from __future__ import annotations

import contextlib

import trio

from ..messages import JournalBatch, MarketBatch, MarketStep, ReportBatch
from ._execution import ExecutionActor
from ._risk import RiskActor
from ._symbol import ProtocolError, SymbolActor


class InlineStep:
    """Runs each market step through the actors' steps, in the caller's task.

    Args:
        actors: the symbol actors, in the order risk reads them.
        risk: the risk actor.
        execution: the execution actor.
        journal: the send side towards the journal actor (execution's: it closes it).

    Start :meth:`run` in the pipeline's nursery (it closes the actors' outputs, which
    ends the journal, model and portfolio actors, after the final step), then call
    the instance once per market step.
    """

    def __init__(
        self,
        *,
        actors: list[SymbolActor],
        risk: RiskActor,
        execution: ExecutionActor,
        journal: trio.MemorySendChannel[JournalBatch],
    ) -> None:
        self._actors = list(actors)
        self._risk = risk
        self._execution = execution
        self._journal = journal
        self._step = 0
        self._now = 0
        self._symbol_reports: dict[str, ReportBatch] | None = None
        self._done = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the actors' outputs open until the final step has run, then close them."""
        with contextlib.ExitStack() as stack:
            for actor in (*self._actors, self._risk, self._execution):
                for channel in actor.outputs():
                    stack.enter_context(channel)
            task_status.started()
            await self._done.wait()

    async def __call__(self, batches: dict[str, MarketBatch], market: MarketStep) -> None:
        """Run market step ``market`` (``batches``: its batch per symbol); after the
        market's final step, the closing round that journals what the end did.

        Raises:
            ProtocolError: a step out of order, or one after the final step.
        """
        if self._done.is_set() or market.step != self._step:
            raise ProtocolError(f"inline: market step {market.step} != {self._step}")
        await self._round(batches, market)
        while market.final and not self._done.is_set():
            await self._round(None, None)

    async def _round(
        self, batches: dict[str, MarketBatch] | None, market: MarketStep | None
    ) -> None:
        step = self._step
        if market is not None:
            self._now = market.ts_start
        reports = self._symbol_reports
        intents = [
            await actor.step(
                step,
                self._now,
                batches[actor.symbol] if batches is not None else None,
                reports[actor.symbol] if reports is not None else None,
            )
            for actor in self._actors
        ]
        # Risk took execution's report of the step before already (below).
        orders = await self._risk.step(step, None, intents)
        out = await self._execution.step(step, market, orders)
        self._symbol_reports = out.symbol_reports
        if out.risk_report is not None:
            # Now, after the step's orders are written, rather than at the top of the
            # next step, on its way to the next order: what risk does with a report
            # (ends open orders, takes the sample) reads nothing the symbol steps in
            # between change, so the next step's checks see the same state.
            self._risk.on_report(out.risk_report)
        if out.journal is not None:
            try:
                self._journal.send_nowait(out.journal)
            except trio.WouldBlock:
                await self._journal.send(out.journal)
        self._step += 1
        if orders.final:
            self._done.set()
