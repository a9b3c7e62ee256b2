"""The replay feed: a recorded market, cut into steps, handed out in batches.

Replay advances in steps of ``step_ms`` of market time (or ``max_step_events``
events, whichever comes first). For step k the feed sends every symbol actor its
slice of the step (possibly empty: the empty batch tells the actor that step k
happened) and sends the execution actor the whole step, so the simulated venue
fills from the same events the strategy saw. Nothing here reads the wall clock.

The market is a :class:`~engine.feeds.Tape` (the whole run as columns: parsed, or
mapped from the tick store), and a step's batches are slices of it, cut exactly
where the stream of events used to be cut.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import trio
from structlog.typing import FilteringBoundLogger

from ..messages import MarketBatch, MarketStep, Ticks
from ._capture import CaptureLimits, CaptureStats
from ._store import TickStore
from ._tape import Tape, load_tape, slice_ticks


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
        tick_store: the tick store to read the sources from and write them to
            (None: parse them every time).
        tape: the market data, already loaded (then ``paths``, ``limits`` and
            ``tick_store`` are not read, and ``stats`` is left as it is).

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
        tick_store: TickStore | None = None,
        tape: Tape | None = None,
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
        self._store = tick_store
        self._tape = tape
        self.steps = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    def _load(self) -> Tape:
        if self._tape is None:
            self._tape = load_tape(
                self._paths,
                self._symbols,
                limits=self._limits,
                stats=self.stats,
                store=self._store,
            )
        return self._tape

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Replay every step, then a final empty step, then close the channels.

        The tape is loaded first (parsed, or mapped from the tick store):
        synchronous, since it is the replay's own work and there is nothing else
        for the process to wait on. A step is the slice of the tape a step of the
        stream cut would hold: it ends at the first event at or after the end of
        its ``step_ns`` window, or after ``max_step_events`` events. The feed
        yields to the actors at every send.

        On cancellation the channels are closed and the replay stops mid-step.
        """
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._execution_channel)
            for channel in self._symbol_channels.values():
                stack.enter_context(channel)
            task_status.started()
            tape = self._load()
            ts = tape.merged_ts()
            n = len(ts)
            step_ns = self._step_ns
            max_events = self._max_step_events
            ticks = {symbol: tape.ticks[symbol] for symbol in self._symbols}
            cursors = dict.fromkeys(self._symbols, 0)
            last = int(ts[-1]) if n else 0
            window_end = -1
            start = 0
            while start < n:
                step_start = int(ts[start])
                if step_start >= window_end:
                    window_end = (step_start // step_ns + 1) * step_ns
                    if self.first_ts is None:
                        self.first_ts = step_start
                stop = n if window_end > last else int(np.searchsorted(ts, window_end, "left"))
                stop = min(stop, start + max_events)
                batches: dict[str, Ticks | None] = {}
                for symbol, columns in ticks.items():
                    lo = cursors[symbol]
                    hi = int(np.searchsorted(columns.seq, stop, "left"))
                    cursors[symbol] = hi
                    batches[symbol] = slice_ticks(columns, lo, hi) if hi > lo else None
                self.last_ts = int(ts[stop - 1])
                await self._send_step(step_start, batches)
                start = stop
            if self._log is not None:
                for path in self.stats.truncated:
                    self._log.warning("truncated gzip: replayed up to the cut", file=path)
            await self._send_final()

    async def _send_step(self, ts_start: int, batches: dict[str, Ticks | None]) -> None:
        step = self.steps
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
