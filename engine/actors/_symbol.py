"""The per-symbol actor: the Trio shell around one symbol's :class:`~engine.core.SymbolCore`.

Per step the actor reads, in this fixed order, its market batch for step k and the
execution reports of step k-1; it applies the reports to the core, runs the
strategy kernel over the batch (one njit call per stretch of ticks between
signals) and sends risk one :class:`IntentBatch` for step k with its orders and
journal records. Reading its inputs in step order is what makes the actor's
output independent of how Trio schedules tasks. Paper and live trading run this
shell; replay drives the same core from :class:`~engine.core.ReplayDriver`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import trio
from structlog.typing import FilteringBoundLogger

from .._config import ExitsSection, SizingSection, StrategySection
from ..core import SymbolCore
from ..ledger import PositionLedger
from ..messages import (
    IntentBatch,
    MarketBatch,
    ReportBatch,
    ScoreBatch,
    ScoreReply,
)
from ..strategy import Strategy

if TYPE_CHECKING:
    from ._filter import EntryFilter


class ProtocolError(RuntimeError):
    """Messages arrived out of step order: a bug, so the actor fails (closed)."""


class SymbolActor(SymbolCore):
    """Runs one symbol's core on Trio channels.

    Args:
        market: market batches from the feed.
        reports: execution reports for this symbol.
        intents: the send side towards risk (the actor closes it when done).
        scores: ``(requests, replies)`` channels to the model actor (with ``entry_filter``):
            every step the actor sends its entry signals and waits for their scores.

    The other arguments are :class:`~engine.core.SymbolCore`'s.
    """

    def __init__(
        self,
        *,
        symbol: str,
        config: StrategySection,
        market: trio.MemoryReceiveChannel[MarketBatch],
        reports: trio.MemoryReceiveChannel[ReportBatch],
        intents: trio.MemorySendChannel[IntentBatch],
        log: FilteringBoundLogger,
        ledger: PositionLedger,
        sizing: SizingSection | None = None,
        capital: float = 10_000.0,
        max_notional: float = float("inf"),
        entry_filter: EntryFilter | None = None,
        scores: tuple[trio.MemorySendChannel[ScoreBatch], trio.MemoryReceiveChannel[ScoreReply]]
        | None = None,
        strategy: Strategy | None = None,
        exits: ExitsSection | None = None,
    ) -> None:
        if (entry_filter is None) != (scores is None):
            raise ValueError("entry_filter and scores go together")
        super().__init__(
            symbol=symbol,
            config=config,
            log=log,
            ledger=ledger,
            sizing=sizing,
            capital=capital,
            max_notional=max_notional,
            entry_filter=entry_filter,
            strategy=strategy,
            exits=exits,
        )
        self._scores = scores
        self._market = market
        self._reports = reports
        self._intents = intents

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Process steps until execution reports the final one.

        On cancellation the actor stops between messages; its position machine is
        left as it was (the journal holds every transition taken).

        Raises:
            ProtocolError: a message for the wrong step arrived.
        """
        # Outputs close synchronously: an ``aclose`` checkpoint while an error unwinds
        # lets the nursery's Cancelled replace that error.
        with contextlib.ExitStack() as stack:
            for channel in self.outputs():
                stack.enter_context(channel)
            task_status.started()
            step = 0
            now = 0
            market_open = True
            while True:
                batch: MarketBatch | None = None
                if market_open:
                    try:
                        batch = await self._market.receive()
                    except trio.EndOfChannel:
                        market_open = False
                if batch is not None:
                    if batch.step != step:
                        raise ProtocolError(f"{self.symbol}: market step {batch.step} != {step}")
                    now = batch.ts_start
                    market_open = not batch.final
                report: ReportBatch | None = None
                if step > 0:
                    report = await self._reports.receive()
                    if report.step != step - 1:
                        raise ProtocolError(
                            f"{self.symbol}: report step {report.step} != {step - 1}"
                        )
                intents = await self.step(step, now, batch, report)
                await self._intents.send(intents)
                if intents.final:
                    return
                step += 1

    def outputs(self) -> list[trio.MemorySendChannel[Any]]:
        """The send channels this actor closes when it ends."""
        return [self._intents] + ([self._scores[0]] if self._scores is not None else [])

    async def step(
        self, step: int, now: int, batch: MarketBatch | None, report: ReportBatch | None
    ) -> IntentBatch:
        """One step: apply execution's ``report`` of step - 1 (None at step 0), run the
        strategy over ``batch`` (None: the market has ended), ask the model (with an
        entry filter); the step's intents, stamped ``now``.

        Without an entry filter nothing here waits: the inline path
        (:class:`~engine.actors.InlineStep`) runs it in the feed's task.
        """
        final = False
        if report is not None:
            self.set_account(report.equity, report.trading_state, report.flatten)
            self.on_events(report.events, now)
            final = report.final
            if not final:
                self.retry_exit(now)
                self.expire_entry(now)
        if batch is not None and batch.ticks is not None:
            self._scan_batch(batch)
        if self._scores is not None:
            await self._ask_model(step, now, batch)
        # :meth:`take`, without its frame and without new lists when there was nothing.
        commands, records = self._commands, self._records
        if commands:
            self._commands = []
        if records:
            self._records = []
        return IntentBatch(
            step=step,
            symbol=self.symbol,
            ts=now,
            commands=tuple(commands),
            records=tuple(records),
            final=final,
        )

    def _scan_batch(self, batch: MarketBatch) -> None:
        ticks = batch.ticks
        assert ticks is not None
        n = len(ticks)
        flt = self._filter
        if flt is not None:
            flt.begin(ticks)
        start = 0
        while start < n:
            index, signal = self.scan(ticks, start, n)
            if not signal:
                break
            self.on_signal(ticks, index, signal)
            start = index + 1
        if flt is not None:
            flt.advance(n)

    async def _ask_model(self, step: int, now: int, batch: MarketBatch | None) -> None:
        """Send the step's entry signals to the model actor and act on the scores."""
        assert self._filter is not None and self._scores is not None
        flt = self._filter
        ticks = batch.ticks if batch is not None else None
        requests, labeled, records = flt.take_step(ticks, self._next_seq)
        send, receive = self._scores
        await send.send(
            ScoreBatch(
                step=step,
                symbol=self.symbol,
                ts=now,
                events=len(ticks) if ticks is not None else 0,
                requests=requests,
                labeled=labeled,
            )
        )
        reply = await receive.receive()
        if reply.step != step:
            raise ProtocolError(f"{self.symbol}: score step {reply.step} != {step}")
        self._records.extend(reply.records)
        self._records.extend(records)
        for score in reply.scores:
            self.decide(flt.resolve(score), score, now)
