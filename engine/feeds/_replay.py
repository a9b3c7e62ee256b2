"""The replay feed: a recorded market, cut into steps, handed out in batches.

Replay advances in steps of ``step_ms`` of market time (or ``max_step_events``
events, whichever comes first). For step k the feed sends every symbol actor its
slice of the step (possibly empty: the empty batch tells the actor that step k
happened) and sends the execution actor the whole step, so the simulated venue
fills from the same events the strategy saw. Nothing here reads the wall clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import trio
from structlog.typing import FilteringBoundLogger

from ..messages import MarketBatch, MarketStep
from ._capture import (
    AggTrade,
    BookTicker,
    CaptureLimits,
    CaptureStats,
    MarketMessage,
    Trade,
    merge_captures,
)
from ._columns import NAN, QUOTE, TRADE, Columns, append_other


class ReplayFeed:
    """Reads captures and sends each step to the symbol actors and the execution actor.

    Args:
        paths: capture files, merged by replay time.
        symbols: the symbols to replay, in the order their actors were created.
        step_ns: market time per step.
        max_step_events: a step ends early after this many events.
        symbol_channels: one send channel per symbol (its actor's market inbox).
        execution_channel: the execution actor's market inbox.
        stats: counters the feed updates (lines, events, skipped lines by reason).
        limits: bounds of the readers' time checks (``[data]``).
        log: where a truncated file is reported once the replay ends (None: only
            in ``stats``).

    Events of symbols not in ``symbols`` are skipped and counted.
    """

    def __init__(
        self,
        *,
        paths: list[Path],
        symbols: list[str],
        step_ns: int,
        max_step_events: int,
        symbol_channels: dict[str, trio.MemorySendChannel[MarketBatch]],
        execution_channel: trio.MemorySendChannel[MarketStep],
        stats: CaptureStats,
        limits: CaptureLimits | None = None,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        self._paths = paths
        self._symbols = list(symbols)
        self._step_ns = step_ns
        self._max_step_events = max_step_events
        self._symbol_channels = symbol_channels
        self._execution_channel = execution_channel
        self.stats = stats
        self._limits = limits or CaptureLimits()
        self._log = log
        self.steps = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    def _events(self) -> Iterator[tuple[int, MarketMessage]]:
        return merge_captures(
            self._paths, self.stats, frozenset(self._symbols), limits=self._limits
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Replay every step, then a final empty step, then close the channels.

        Reading and decoding the files is synchronous: it is the replay's own
        work and there is nothing else for the process to wait on. The feed yields
        to the actors at every send.

        On cancellation the channels are closed and the replay stops mid-step.
        """
        columns = {symbol: Columns() for symbol in self._symbols}
        step_ns = self._step_ns
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._execution_channel)
            for channel in self._symbol_channels.values():
                stack.enter_context(channel)
            task_status.started()
            window_end = -1
            step_start = 0
            in_step = 0
            for seq, (ts, msg) in enumerate(self._events()):
                if ts >= window_end or in_step >= self._max_step_events:
                    if in_step:
                        await self._send_step(step_start, columns)
                        in_step = 0
                    if ts >= window_end:
                        window_end = (ts // step_ns + 1) * step_ns
                    step_start = ts
                    if self.first_ts is None:
                        self.first_ts = ts
                # Appending is inlined (an if-chain on the exact type rather than a
                # dict of handlers): it runs once per event, and a call per event
                # would cost as much as the append itself.
                cols = columns[msg.symbol]
                kind = type(msg)
                ex = msg.event_time * 1_000_000
                if kind is BookTicker:
                    cols.ints.extend((ts, ex, seq, QUOTE, 0))
                    cols.floats.extend((msg.bid, msg.bid_qty, msg.ask, msg.ask_qty, NAN, NAN))
                elif kind is Trade or kind is AggTrade:
                    cols.ints.extend((ts, ex, seq, TRADE, 1 if msg.buyer_maker else 0))
                    cols.floats.extend((NAN, NAN, NAN, NAN, msg.price, msg.qty))
                else:
                    append_other(cols, ts, ex, seq, msg)
                in_step += 1
                self.last_ts = ts
            if in_step:
                await self._send_step(step_start, columns)
            if self._log is not None:
                for path in self.stats.truncated:
                    self._log.warning("truncated gzip: replayed up to the cut", file=path)
            await self._send_final()

    async def _send_step(self, ts_start: int, columns: dict[str, Columns]) -> None:
        step = self.steps
        batches = {symbol: cols.take() for symbol, cols in columns.items()}
        present = {symbol: ticks for symbol, ticks in batches.items() if ticks is not None}
        # The venue first: it must hold the step's quotes before any order of the
        # step can reach it (it reads them in step order regardless).
        await self._execution_channel.send(MarketStep(step=step, ts_start=ts_start, ticks=present))
        for symbol in self._symbols:
            batch = MarketBatch(step=step, ts_start=ts_start, symbol=symbol, ticks=batches[symbol])
            await self._symbol_channels[symbol].send(batch)
        self.steps += 1

    async def _send_final(self) -> None:
        step = self.steps
        ts = self.last_ts if self.last_ts is not None else 0
        await self._execution_channel.send(MarketStep(step=step, ts_start=ts, ticks={}, final=True))
        for symbol in self._symbols:
            final = MarketBatch(step=step, ts_start=ts, symbol=symbol, ticks=None, final=True)
            await self._symbol_channels[symbol].send(final)
