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
market steps the journal is the same, record for record. Two things move off the
orders' path: risk takes execution's report as soon as the step's orders are written
instead of at the top of the next step (nothing between reads or changes what it
updates), and the records of the symbol steps' position transitions are built from
their fields (taken as each transition happens) once execution's step is done, then
join the step's journal batch in its canonical order (``record_key``, unique per
record): the same records, the same order. It waits only where an actor waits too:
for a model's scores, for a portfolio answer due at the step, for room in the
journal's channel, and for the venue's last answers at the end.

Log lines wait too: while a step runs, the lines logged through a
:func:`deferring` logger (the pipeline's, with ``feeds.inline``) are held, in the
order they were logged, and written when the step's orders are on the wire. A line
costs its processors (time stamp, ECS fields, JSON, a write to the log file) and a
handful of cold code paths; the symbol, risk and execution steps and the venue
log several between a tick and its order. Lines keep their order; their
``@timestamp`` is when they are written, at most a step later.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, cast

import trio
from structlog.typing import FilteringBoundLogger

from ..core._execution import record_key
from ..messages import JournalBatch, JournalRecord, MarketBatch, MarketStep, ReportBatch
from ._execution import ExecutionActor
from ._risk import RiskActor
from ._symbol import ProtocolError, SymbolActor


class LogDeferral:
    """Holds the log calls made through :func:`deferring` loggers while a step runs."""

    __slots__ = ("_held", "holding")

    def __init__(self) -> None:
        self.holding = False
        self._held: list[tuple[Any, str, tuple[Any, ...], dict[str, Any]]] = []

    def hold(self, method: Any, event: str, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        if kw.get("exc_info") is True:
            kw["exc_info"] = sys.exc_info()  # the exception being handled now, not later
        self._held.append((method, event, args, kw))

    def release(self) -> None:
        """Stop holding; write what was held, in order."""
        self.holding = False
        held, self._held = self._held, []
        for method, event, args, kw in held:
            method(event, *args, **kw)


class _DeferringLogger:
    """A bound logger whose calls wait in ``deferral`` while it holds (see the module
    docstring); ``bind`` and the rest are the wrapped logger's."""

    __slots__ = ("_deferral", "_log")

    def __init__(self, log: FilteringBoundLogger, deferral: LogDeferral) -> None:
        self._log = log
        self._deferral = deferral

    def _call(self, name: str, event: str, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        method = getattr(self._log, name)
        if self._deferral.holding:
            self._deferral.hold(method, event, args, kw)
            return None
        return method(event, *args, **kw)

    def debug(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._call("debug", event, args, kw)

    def info(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._call("info", event, args, kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._call("warning", event, args, kw)

    def error(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._call("error", event, args, kw)

    def critical(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._call("critical", event, args, kw)

    def exception(self, event: str, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._call("error", event, args, kw)

    warn = warning
    msg = info

    def bind(self, **kw: Any) -> FilteringBoundLogger:
        return cast(FilteringBoundLogger, _DeferringLogger(self._log.bind(**kw), self._deferral))

    def new(self, **kw: Any) -> FilteringBoundLogger:
        return cast(FilteringBoundLogger, _DeferringLogger(self._log.new(**kw), self._deferral))

    def unbind(self, *keys: str) -> FilteringBoundLogger:
        return cast(FilteringBoundLogger, _DeferringLogger(self._log.unbind(*keys), self._deferral))

    def try_unbind(self, *keys: str) -> FilteringBoundLogger:
        return cast(
            FilteringBoundLogger, _DeferringLogger(self._log.try_unbind(*keys), self._deferral)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def deferring(log: FilteringBoundLogger) -> FilteringBoundLogger:
    """``log``, and every logger bound from it, able to hold its lines while an
    :class:`InlineStep` runs (``log`` itself when it is one already)."""
    if isinstance(log, _DeferringLogger):
        return log
    return cast(FilteringBoundLogger, _DeferringLogger(log, LogDeferral()))


def deferral_of(log: FilteringBoundLogger) -> LogDeferral | None:
    """The deferral a :func:`deferring` logger holds its lines in (None: not one)."""
    return log._deferral if isinstance(log, _DeferringLogger) else None


class InlineStep:
    """Runs each market step through the actors' steps, in the caller's task.

    Args:
        actors: the symbol actors, in the order risk reads them.
        risk: the risk actor.
        execution: the execution actor.
        journal: the send side towards the journal actor (execution's: it closes it).
        logs: where the pipeline's :func:`deferring` loggers hold their lines: held
            during each step but the final ones (None: lines are written as logged).

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
        logs: LogDeferral | None = None,
    ) -> None:
        self._actors = list(actors)
        for actor in self._actors:
            # Their transitions' records are built after the step's orders are written.
            actor.defer_transitions()
        self._risk = risk
        self._execution = execution
        self._journal = journal
        self._step = 0
        self._now = 0
        self._symbol_reports: dict[str, ReportBatch] | None = None
        self._done = trio.Event()
        self._logs = logs

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
        logs = self._logs
        if logs is None or market.final:  # the end may wait seconds for the venue
            await self._round(batches, market)
        else:
            logs.holding = True
            try:
                await self._round(batches, market)
            finally:
                logs.release()
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
        journal = out.journal
        built: list[JournalRecord] = []
        for actor in self._actors:
            built.extend(actor.deferred_transitions())
        if built:
            # The symbol steps' position transitions, off the orders' way (the journal
            # orders a step's records by ``record_key``, unique per record).
            records = [*journal.records, *built] if journal is not None else built
            records.sort(key=record_key)
            journal = JournalBatch(step=step, records=tuple(records))
        if out.risk_report is not None:
            # Now, after the step's orders are written, rather than at the top of the
            # next step, on its way to the next order: what risk does with a report
            # (ends open orders, takes the sample) reads nothing the symbol steps in
            # between change, so the next step's checks see the same state.
            self._risk.on_report(out.risk_report)
        if journal is not None:
            try:
                self._journal.send_nowait(journal)
            except trio.WouldBlock:
                await self._journal.send(journal)
        self._step += 1
        if orders.final:
            self._done.set()
