"""The deterministic replay driver: the cores, event by event, in market-time order.

Replay is event-accurate. A decision is taken at the tick that triggers it; its
order reaches the simulated venue at that tick's time plus the venue latency and
fills at the first quote of its symbol at or after that time (the fill rule of
:class:`~engine.venues.sim.SimVenue`); the strategy sees the fill at the fill's
own time and checks its exits from the next tick on. Timers fire at their own
market time: risk samples the market and the account every ``risk.sample_ms``
(equity, drawdown, returns for correlations and the portfolio, trigger
evaluation, exit retries, the portfolio's cadence), configured faults fire at
their offsets, and the ML filter retrains every ``model.retrain_every_events``
events.

How it stays exact while running the strategy kernel over long stretches in one
call: a symbol whose position machine is IDLE or IN_POSITION with no order in
flight can only be moved on by its own next signal, so its kernel runs ahead to
that signal (or the end of its data) in one call, and the signal waits in a heap
keyed by market time. A symbol with an order in flight (or an exit waiting for
its retry) is WAITING: its kernel only updates indicators, and it runs only up to
its order's fill or the next timer, whichever comes first, because either may
move it. The heap is processed in ``(time, timers first, merged-stream order)``
order, so every decision sees risk, the ledger and the other symbols exactly as
they stood at its tick.

``replay.max_step_events`` only cuts the kernel's runs into chunks (a pure
performance knob), and ``replay.step_ms`` plays no part in replay: the events
processed, and so the journal, are the same for any value of either. Long calm
stretches (flat or holding, nothing in flight, no trigger near) take their risk
samples in one vectorised call with the same arithmetic as one by one. Nothing
here reads the wall clock (except to yield to the event loop now and then, which
changes no result) or depends on how Trio schedules tasks: there is one task.
"""

from __future__ import annotations

import heapq
import time
from array import array
from typing import TYPE_CHECKING, Any

import numpy as np
import trio
from structlog.typing import FilteringBoundLogger

from .._config import Config
from ..messages import (
    CancelOrder,
    EventKind,
    JournalRecord,
    Mark,
    OrderAccepted,
    OrderEvent,
    OrderFilled,
    PortfolioRequest,
    Purpose,
    ReplaceOrder,
    SubmitOrder,
    Ticks,
)
from ._execution import ExecutionCore
from ._risk import RiskCore
from ._symbol import SymbolCore

if TYPE_CHECKING:
    from ..actors._filter import EntryFilter
    from ..actors._model import ModelActor
    from ..journal import Journal
    from ..portfolio import PortfolioActor
    from ..venues.sim import SimVenue

# Heap event classes: at one market time, timers come before market events (a
# timer at t sees the market up to, not including, t), and market events go in
# merged-stream order.
_TIMER, _MARKET = 0, 1
# Event kinds.
_SAMPLE, _FAULT, _RETRAIN, _SWAP, _FILL, _MARK, _SIGNAL, _ROW, _TIMEOUT = range(9)
_FLUSH_RECORDS = 4096
_NEVER = 2**63 - 1
_DAY_NS = 86_400 * 1_000_000_000
_YIELD_EVERY_S = 0.05  # let the control socket answer during long replays


class _Symbol:
    """One symbol's columns, cursor and quote index (driver bookkeeping)."""

    __slots__ = (
        "core",
        "cursor",
        "filter",
        "index",
        "labeled_to",
        "marks",
        "n",
        "name",
        "q_rows",
        "q_seq",
        "q_ts",
        "stopped",
        "ticks",
    )

    def __init__(self, index: int, core: SymbolCore, ticks: Ticks, flt: EntryFilter | None):
        self.index = index
        self.name = core.symbol
        self.core = core
        self.ticks = ticks
        self.filter = flt
        self.n = len(ticks)
        self.cursor = 0
        self.stopped = False
        self.labeled_to = 0
        quotes = np.flatnonzero(ticks.kind == EventKind.QUOTE)
        self.q_rows = quotes
        self.q_ts = np.ascontiguousarray(ticks.ts[quotes])
        self.q_seq = np.ascontiguousarray(ticks.seq[quotes])
        self.marks = np.flatnonzero(ticks.kind == EventKind.MARK)

    def quote_before_ts(self, ts: int) -> int:
        """The row of the last quote strictly before ``ts`` (-1: none)."""
        k = int(np.searchsorted(self.q_ts, ts, side="left")) - 1
        return int(self.q_rows[k]) if k >= 0 else -1

    def quote_before_seq(self, seq: int) -> int:
        """The row of the last quote before merged-stream position ``seq`` (-1: none)."""
        k = int(np.searchsorted(self.q_seq, seq, side="left")) - 1
        return int(self.q_rows[k]) if k >= 0 else -1

    def first_quote_at(self, ts: int) -> int:
        """The row of the first quote at or after ``ts`` (-1: none)."""
        k = int(np.searchsorted(self.q_ts, ts, side="left"))
        return int(self.q_rows[k]) if k < self.q_rows.shape[0] else -1

    def mark(self, row: int) -> Mark:
        t = self.ticks
        return Mark(
            symbol=self.name, ts=int(t.ts[row]), bid=float(t.bid[row]), ask=float(t.ask[row])
        )


class ReplayDriver:
    """Runs one replay through the cores.

    Args:
        config: the engine configuration (``risk.sample_ms``, ``replay`` chunking,
            ``portfolio``, ``model``).
        tape: each symbol's whole-run market columns (``seq``: merged-stream order).
        cores: each symbol's core, in symbol order.
        risk: the risk core.
        execution: the execution core (its venue is the simulated one).
        journal: where the records go, in the order they are made.
        log: a bound structlog logger.
        filters: each symbol's ML filter side (empty: no filter).
        model: the model actor's scoring and retraining (None: no filter).
        portfolio: solves the portfolio problem (None: no portfolio).
    """

    def __init__(
        self,
        *,
        config: Config,
        tape: dict[str, Ticks],
        cores: list[SymbolCore],
        risk: RiskCore,
        execution: ExecutionCore,
        journal: Journal,
        log: FilteringBoundLogger,
        filters: dict[str, EntryFilter] | None = None,
        model: ModelActor | None = None,
        portfolio: PortfolioActor | None = None,
    ) -> None:
        filters = filters or {}
        self._symbols = [
            _Symbol(i, core, tape[core.symbol], filters.get(core.symbol))
            for i, core in enumerate(cores)
        ]
        self._by_name = {s.name: s for s in self._symbols}
        self._risk = risk
        self._exec = execution
        venue = execution.venue
        self._venue: SimVenue = venue  # type: ignore[assignment]
        self._journal = journal
        self._log = log
        self._model = model
        self._portfolio = portfolio
        self._portfolio_cfg = config.portfolio
        self._correlation_window = config.risk.correlation_window
        self._model_cfg = config.model
        self._entry_timeout_ns = int(config.strategy.entry_timeout_ms * 1_000_000)
        self._sample_ns = config.risk.sample_ms * 1_000_000
        self._chunk_events = config.replay.max_step_events
        self._heap: list[tuple[int, int, int, int, int, Any]] = []
        self._n = 0  # heap insertion counter: a unique last key
        self._records: list[JournalRecord] = []
        self._written = 0
        self._samples = 0
        self._pending_limits: list[tuple[int, Any]] = []
        self._fill_rows: dict[str, int] = {}  # client order id -> fill row (live orders)
        # Symbol -> the next row the venue sees while the symbol has a resting order:
        # such a symbol is replayed to the venue event by event, the others are not.
        self._rest_rows: dict[str, int] = {}
        self._equity = 0.0
        self._curve_ts = array("q")
        self._curve_equity = array("d")
        self.steps = 0
        """Events the driver processed: signals, fills, timers, mark prices."""
        starts = [int(s.ticks.ts[0]) for s in self._symbols if s.n]
        ends = [int(s.ticks.ts[-1]) for s in self._symbols if s.n]
        self.first_ts: int | None = min(starts) if starts else None
        self.last_ts: int | None = max(ends) if ends else None
        self.events = sum(s.n for s in self._symbols)

    @property
    def processed(self) -> int:
        """Market events the strategy kernels have run over so far (of :attr:`events`)."""
        return sum(s.cursor for s in self._symbols)

    @property
    def equity_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ts, equity)`` at every risk sample so far: the account's PnL after fees,
        marked to market (mark price where known, else mid), in market time."""
        ts = (
            np.frombuffer(self._curve_ts, dtype=np.int64)
            if self._curve_ts
            else np.zeros(0, np.int64)
        )
        eq = (
            np.frombuffer(self._curve_equity, dtype=np.float64)
            if self._curve_equity
            else np.zeros(0)
        )
        return ts.copy(), eq.copy()

    # -- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Replay every event, then expire what is still pending and take a last sample."""
        if self.first_ts is None or self.last_ts is None:
            return
        self._start(self.first_ts)
        last_yield = time.perf_counter()
        while True:
            self._advance()
            if not self._heap:
                break
            ts, _cls, _order, _n, kind, payload = heapq.heappop(self._heap)
            self.steps += 1
            self._label_until(ts)
            self._dispatch(kind, ts, payload)
            if len(self._records) >= _FLUSH_RECORDS:
                self._flush()
            if time.perf_counter() - last_yield > _YIELD_EVERY_S:
                await trio.lowlevel.checkpoint()
                last_yield = time.perf_counter()
        self._finish(self.last_ts)
        self._flush()

    def _start(self, first_ts: int) -> None:
        for sym in self._symbols:
            if sym.filter is not None:
                sym.filter.begin(sym.ticks)
            if sym.marks.shape[0]:
                self._push_mark(sym, 0)
        self._push(self._next_sample(first_ts), _TIMER, 0, _SAMPLE, None)
        due = self._exec.next_fault_ns(first_ts)
        if due is not None:
            self._push(due, _TIMER, 1, _FAULT, None)
        cfg = self._model_cfg
        if self._model is not None and cfg.retrain and cfg.retrain_every_events > 0:
            self._push_retrain(1)

    def _push(self, ts: int, cls: int, order: int, kind: int, payload: Any) -> None:
        self._n += 1
        heapq.heappush(self._heap, (ts, cls, order, self._n, kind, payload))

    def _next_sample(self, ts: int) -> int:
        """The first sample time after ``ts`` (samples sit on multiples of the interval)."""
        return (ts // self._sample_ns + 1) * self._sample_ns

    def _push_mark(self, sym: _Symbol, k: int) -> None:
        row = int(sym.marks[k])
        self._push(int(sym.ticks.ts[row]), _MARKET, int(sym.ticks.seq[row]), _MARK, (sym, k))

    def _push_retrain(self, k: int) -> None:
        """The k-th retrain: before the event that follows ``k * retrain_every_events``."""
        target = k * self._model_cfg.retrain_every_events
        for sym in self._symbols:
            j = int(np.searchsorted(sym.ticks.seq, target, side="left"))
            if j < sym.n and int(sym.ticks.seq[j]) == target:
                self._push(int(sym.ticks.ts[j]), _TIMER, 2, _RETRAIN, k)
                return

    def _advance(self) -> None:
        """Run every symbol's kernel as far as nothing else can change it."""
        next_timer: int | None = None
        for sym in self._symbols:
            if sym.stopped or sym.cursor >= sym.n:
                continue
            limit = sym.n
            if sym.core.waiting:
                if next_timer is None:
                    timers = [e[0] for e in self._heap if e[1] == _TIMER]
                    next_timer = min(timers) if timers else _NEVER
                if next_timer != _NEVER:
                    limit = int(np.searchsorted(sym.ticks.ts, next_timer, side="left"))
                live = sym.core.live_order
                row = self._fill_rows.get(live.client_order_id) if live is not None else None
                if row is not None:
                    limit = min(limit, row + 1)
            rest = self._rest_rows.get(sym.name)
            if rest is not None:  # the venue sees this row before the kernel passes it
                limit = min(limit, rest + 1)
            self._scan(sym, limit)

    def _scan(self, sym: _Symbol, limit: int) -> None:
        ticks = sym.ticks
        ts = ticks.ts
        while sym.cursor < limit:
            start = sym.cursor
            stop = min(limit, start + self._chunk_events)
            index, signal = sym.core.scan(ticks, start, stop)
            if signal:
                sym.cursor = index + 1
                sym.stopped = True
                self._push(
                    int(ts[index]), _MARKET, int(ticks.seq[index]), _SIGNAL, (sym, index, signal)
                )
                return
            sym.cursor = stop
            if sym.filter is not None:
                sym.filter.advance(stop)

    def _label_until(self, ts: int) -> None:
        """Label the ML filter's decisions with every quote before ``ts``."""
        if self._model is None:
            return
        for sym in self._symbols:
            flt = sym.filter
            if flt is None:
                continue
            stop = int(np.searchsorted(sym.ticks.ts, ts, side="left"))
            if stop > sym.labeled_to:
                labeled, records = flt.label(sym.ticks, sym.labeled_to, stop, sym.core._next_seq)
                sym.labeled_to = stop
                self._records.extend(records)
                self._model.learn(labeled)

    # -- events ---------------------------------------------------------------------

    def _dispatch(self, kind: int, ts: int, payload: Any) -> None:
        if kind == _SIGNAL:
            sym, index, signal = payload
            self._on_signal(sym, index, signal, ts)
        elif kind == _FILL:
            self._on_fill(ts, payload)
        elif kind == _ROW:
            self._on_row(ts, payload)
        elif kind == _TIMEOUT:
            self._on_entry_timeout(ts, payload)
        elif kind == _SAMPLE:
            self._on_sample(ts)
        elif kind == _MARK:
            sym, k = payload
            self._venue.on_mark_row(sym.name, sym.ticks, int(sym.marks[k]))
            self._ops(self._venue.take_ops())
            if k + 1 < sym.marks.shape[0]:
                self._push_mark(sym, k + 1)
        elif kind == _FAULT:
            self._ops(self._exec.inject_faults(ts))
            due = self._exec.next_fault_ns(self.first_ts or ts)
            if due is not None:
                self._push(max(due, ts), _TIMER, 1, _FAULT, None)
        elif kind == _RETRAIN:
            self._on_retrain(ts, payload)
        elif kind == _SWAP:
            assert self._model is not None
            result, samples, name = payload
            self._records.append(self._model.swap(result, samples, name, ts, self._samples))

    def _on_signal(self, sym: _Symbol, index: int, signal: int, ts: int) -> None:
        sym.stopped = False
        core = sym.core
        core.set_account(self._equity, self._risk.trading.state.value, self._risk.flattening)
        core.on_signal(sym.ticks, index, signal)
        flt = sym.filter
        if flt is not None:
            requests = list(flt.take_requests())
            if requests:
                assert self._model is not None
                for score in self._model.score(requests):
                    core.decide(flt.resolve(score), score, ts)
        self._route(sym, ts, int(sym.ticks.seq[index]) + 1)  # its own quote included

    def _on_fill(self, ts: int, payload: tuple[_Symbol, str, int]) -> None:
        sym, client_order_id, row = payload
        self._fill_rows.pop(client_order_id, None)
        t = sym.ticks
        fill = self._venue.fill(client_order_id, ts, float(t.bid[row]), float(t.ask[row]))
        if fill is None:  # cancelled (a halt) before it could fill
            return
        self._events([fill], ts)
        self._route(sym, ts, int(t.seq[row]) + 1)

    def _on_row(self, ts: int, payload: tuple[_Symbol, int]) -> None:
        """One event of a symbol with a resting order, for the venue: arrival, queue,
        fills, triggers. The next row is scheduled while an order still rests."""
        sym, row = payload
        t = sym.ticks
        self._events(self._venue.on_row(sym.name, t, row), ts)
        self._route(sym, ts, int(t.seq[row]) + 1)
        self._walk_from(sym, row + 1)

    def _on_entry_timeout(self, ts: int, payload: tuple[_Symbol, SubmitOrder]) -> None:
        """``[strategy] entry_timeout_ms`` after an entry was sent: cancel what of it
        is still open (nothing happens when it has filled or ended)."""
        sym, order = payload
        cancel = CancelOrder.of(order, "entry_timeout", ts, next(self._venue.seq))
        events = self._exec.cancel(cancel)
        if events:
            self._records.append(cancel)
            self._events(events, ts)
            self._route(sym, ts, -1)

    def _walk_from(self, sym: _Symbol, row: int) -> None:
        """Hand the venue row ``row`` of ``sym`` next if it has a resting order."""
        if not self._venue.has_resting(sym.name) or row >= sym.n:
            self._rest_rows.pop(sym.name, None)
            return
        self._rest_rows[sym.name] = row
        t = sym.ticks
        self._push(int(t.ts[row]), _MARKET, int(t.seq[row]), _ROW, (sym, row))

    def _on_sample(self, ts: int) -> None:
        self._samples += 1
        risk = self._risk
        marks = []
        mids = {}
        for sym in self._symbols:
            row = sym.quote_before_ts(ts)
            if row >= 0:
                mark = sym.mark(row)
                marks.append(mark)
                mids[sym.name] = 0.5 * (mark.bid + mark.ask)
        venue = self._venue
        venue.mark_to(mids)
        self._equity = venue.equity
        self._curve_ts.append(ts)
        self._curve_equity.append(venue.equity)
        risk.on_sample(marks, venue.equity, venue.take_closed_trades())
        self._apply_portfolio()
        records: list[JournalRecord] = []
        cancel_all = risk.update_trading_state(ts, records)
        self._records.extend(records)
        if risk._resumed:
            venue.on_resume()
            risk._resumed = False
        if cancel_all:
            self._events(venue.cancel_all(ts, cancel_all), ts)
        state = risk.trading.state.value
        for sym in self._symbols:
            sym.core.set_account(self._equity, state, risk.flattening)
            sym.core.retry_exit(ts)
            self._route(sym, ts, -1)
        nxt = self._calm_run(ts)
        if nxt - self._sample_ns <= (self.last_ts or 0):
            self._push(nxt, _TIMER, 0, _SAMPLE, None)

    def _calm_run(self, ts: int) -> int:
        """Take the samples after ``ts`` that can change nothing but figures in one go;
        the time of the next sample to process one by one.

        Calm: no order in flight, no exit waiting, no trigger raised or pending (see
        :meth:`RiskCore.quiet`), and the samples come before the next event of any other
        kind and before the first sample that would raise a trigger. Each calm sample's
        quotes, equity, returns and portfolio cadence are exactly what the one-by-one
        path computes (same arithmetic, same order); only the per-call cost goes.
        """
        step = self._sample_ns
        nxt = ts + step
        venue = self._venue
        if (
            venue.pending_orders
            or any(sym.core.waiting for sym in self._symbols)
            or not self._risk.quiet(ts)
        ):
            return nxt
        end = min(self._heap[0][0] if self._heap else _NEVER, (self.last_ts or 0) + step + 1)
        # A new UTC day ends a calm run (the daily loss restarts): no samples past it.
        end = min(end, (nxt // _DAY_NS + 1) * _DAY_NS)
        count = (end - 1 - nxt) // step + 1 if end > nxt else 0
        if count <= 0:
            return nxt
        times = np.arange(nxt, nxt + count * step, step, dtype=np.int64)
        quoted: dict[str, np.ndarray] = {}
        mids: dict[str, np.ndarray] = {}
        rows: dict[str, np.ndarray] = {}
        for sym in self._symbols:
            k = np.searchsorted(sym.q_ts, times, side="left") - 1
            if sym.q_rows.shape[0]:
                r = np.where(k >= 0, sym.q_rows[np.maximum(k, 0)], -1)
            else:  # a symbol without quotes (candle-only data)
                r = np.full(count, -1, dtype=np.int64)
            rows[sym.name] = r
            got = np.maximum(r, 0)
            quoted[sym.name] = np.where(r >= 0, sym.ticks.ts[got], -1)
            mid = 0.5 * (sym.ticks.bid[got] + sym.ticks.ask[got])
            mids[sym.name] = np.where(r >= 0, mid, np.nan)
        equity_array = self._equities(mids, count)
        m = self._risk.calm_samples(times, equity_array, quoted)
        if m == 0:
            return nxt
        equities = equity_array[:m].tolist()
        venue.record_equities(equities)
        self._curve_ts.extend(times[:m].tolist())
        self._curve_equity.extend(equities)
        last = {}
        for sym in self._symbols:
            row = int(rows[sym.name][m - 1])
            if row >= 0:
                last[sym.name] = sym.mark(row)
                venue.ledger.mark(sym.name, 0.5 * (last[sym.name].bid + last[sym.name].ask))
        for symbol, mark_price in venue.mark_prices.items():
            venue.ledger.mark(symbol, mark_price)
        # In segments that end where the portfolio acts, so that each solve sees the
        # returns up to its own sample (outside them its call does nothing).
        i = 0
        segmented = self._portfolio is not None and (
            self._pending_limits or self._may_solve(mids, m)
        )
        while i < m:
            j = min(m, i + self._samples_to_portfolio()) if segmented else m
            segment = {
                name: series[i:j][~np.isnan(series[i:j])].tolist() for name, series in mids.items()
            }
            marks = list(last.values()) if j == m else []
            self._risk.on_calm_samples(marks, segment, equities[i:j])
            self._samples += j - i
            self._apply_portfolio()
            i = j
        self._equity = equities[m - 1]
        self.steps += m
        return int(times[m - 1]) + step

    def _may_solve(self, mids: dict[str, np.ndarray], m: int) -> bool:
        """Whether the portfolio could solve within the next ``m`` calm samples: only if
        every symbol can reach ``min_periods`` returns by then (a candle-only symbol
        never has one, and then the calm run needs no cut at the portfolio's cadence)."""
        need = self._portfolio_cfg.min_periods
        returns = self._risk._returns
        return all(
            len(returns[name]) + int(np.count_nonzero(~np.isnan(series[:m]))) >= need
            for name, series in mids.items()
        )

    def _samples_to_portfolio(self) -> int:
        """Samples until the portfolio next acts (a solve or an answer applied)."""
        every = self._portfolio_cfg.every_steps
        due = (self._samples // every + 1) * every
        if self._pending_limits:
            due = min(due, self._pending_limits[0][0])
        return max(1, due - self._samples)

    def _equities(self, mids: dict[str, np.ndarray], count: int) -> np.ndarray:
        """The ledger's equity at each of ``count`` samples (``mids``: per symbol, its mid
        at each, NaN before its first quote), marked as :meth:`SimVenue.mark_to` marks it:
        the mark price where one is known, else the sample's mid, else the last mark.
        Elementwise, in the ledger's account order: the arithmetic of one sample."""
        venue = self._venue
        total = np.zeros(count)
        for symbol, acct in venue.ledger.accounts.items():
            fixed = acct.realized - acct.fees
            if acct.qty == 0.0:
                total = total + (fixed + 0.0)
                continue
            price = venue.mark_prices.get(symbol)
            if price is not None:
                marks = np.full(count, price)
            else:
                series = mids.get(symbol)
                if series is None:
                    series = np.full(count, np.nan)
                seen = np.where(series == series, np.arange(count), -1)
                np.maximum.accumulate(seen, out=seen)
                last = acct.last_mid
                marks = np.where(seen >= 0, series[np.maximum(seen, 0)], last)
            qty, avg = acct.qty, acct.avg_price
            unrealized = np.where(marks == marks, qty * (marks - avg), 0.0)
            total = total + (fixed + unrealized)
        return total

    def _apply_portfolio(self) -> None:
        actor = self._portfolio
        if actor is None:
            return
        cfg = self._portfolio_cfg
        k = self._samples
        while self._pending_limits and self._pending_limits[0][0] <= k:
            _due, answer = self._pending_limits.pop(0)
            self._risk.set_exposure_limits(answer.limits, answer.status)
        if self._pending_limits or k % cfg.every_steps:
            return
        risk = self._risk
        matrix = risk.returns_matrix(min(cfg.lookback, self._correlation_window))
        if matrix is not None and matrix.shape[0] >= cfg.min_periods:
            request = PortfolioRequest(step=k, symbols=tuple(risk._symbols), returns=matrix)
            self._pending_limits.append((k + cfg.apply_after_steps, actor.solve(request)))

    def _on_retrain(self, ts: int, k: int) -> None:
        model = self._model
        assert model is not None
        window = model.retrain_window()
        self._log.info("retrain started", samples=len(window), model=model.model_id)
        result: Any
        try:
            result = model.retrain(window)
        except Exception as exc:  # a failed fit keeps the current model, loudly
            self._log.error("retrain failed", error=repr(exc))
            result = exc
        apply_at = ts + self._model_cfg.apply_after_steps * self._sample_ns
        self._push(apply_at, _TIMER, 3, _SWAP, (result, len(window), f"online-{k}"))
        self._push_retrain(k + 1)

    # -- orders ---------------------------------------------------------------------

    def _route(self, sym: _Symbol, ts: int, seq: int) -> None:
        """Take the core's orders and records: risk checks, the venue accepts, fills are
        scheduled at the first quote at or after the order's arrival."""
        commands, records = sym.core.take()
        self._records.extend(records)
        if not commands:
            return
        risk = self._risk
        for other in self._symbols:  # every quote up to this event, for the checks
            row = other.quote_before_seq(seq) if seq >= 0 else other.quote_before_ts(ts)
            if row >= 0:
                risk.marks[other.name] = other.mark(row)
        commands = self._amend(sym, commands, ts)
        if not commands:
            return
        checked: list[JournalRecord] = []
        approved, denials = risk.approve(commands, checked)
        self._records.extend(checked)
        if denials:
            sym.core.on_events(denials, ts)
        for order in approved:
            events = self._exec.submit(order)
            for event in events[1:]:
                self._exec.apply(event)
            self._records.extend(events)
            risk.on_order_events(events)
            sym.core.on_events(events, ts)
            for event in events:
                if isinstance(event, OrderAccepted):
                    self._schedule_fill(event)
            if order.order_type != "MARKET" and sym.name not in self._rest_rows:
                # From the next event on (the venue ignores those before it arrives).
                self._walk_from(sym, int(np.searchsorted(sym.ticks.seq, seq, side="left")))
            if (
                order.order_type != "MARKET"
                and order.purpose is Purpose.ENTRY
                and self._entry_timeout_ns > 0
            ):
                due = order.ts_event + self._entry_timeout_ns
                self._push(due, _TIMER, 4, _TIMEOUT, (sym, order))
        # The reports may have moved the machine on (a denied entry is IDLE again).
        more, records = sym.core.take()
        self._records.extend(records)
        if more:  # pragma: no cover - the strategy makes no order from a report
            raise RuntimeError(f"{sym.name}: orders made while handling reports")

    def _amend(self, sym: _Symbol, commands: list[Any], ts: int) -> list[Any]:
        """Send the core's cancels and replaces as risk vets them
        (:meth:`~engine.core.RiskCore.vet_amendment`: a denied replace becomes a
        cancel); the new orders are returned for risk."""
        orders = []
        for command in commands:
            if not isinstance(command, CancelOrder | ReplaceOrder):
                orders.append(command)
                continue
            vetted = self._risk.vet_amendment(command)
            self._records.append(vetted)
            if isinstance(vetted, CancelOrder):
                self._events(self._exec.cancel(vetted), ts)
            else:
                self._events(self._exec.replace(vetted), ts)
        return orders

    def _schedule_fill(self, accepted: OrderAccepted) -> None:
        sym = self._by_name[accepted.symbol]
        row = sym.first_quote_at(accepted.ts_event)
        if row < 0:
            return  # no quote after it: it expires when the replay ends
        self._fill_rows[accepted.client_order_id] = row
        t = sym.ticks
        payload = (sym, accepted.client_order_id, row)
        self._push(int(t.ts[row]), _MARKET, int(t.seq[row]), _FILL, payload)

    def _events(self, events: list[OrderEvent], ts: int) -> None:
        """Venue events: order machines, risk, the symbols' cores, the journal."""
        if not events:
            return
        for event in events:
            self._exec.apply(event)
            if not isinstance(event, OrderFilled):
                self._fill_rows.pop(event.client_order_id, None)
        self._records.extend(events)
        self._risk.on_order_events(events)
        for sym in self._symbols:
            mine = [e for e in events if e.symbol == sym.name]
            if mine:
                sym.core.on_events(mine, ts)
                _commands, records = sym.core.take()
                self._records.extend(records)

    def _ops(self, ops: list[Any]) -> None:
        if ops:
            self._records.extend(ops)
            self._risk.on_ops(ops)

    def _finish(self, ts: int) -> None:
        """The market has ended: label what the last quotes resolve, expire what is
        still pending, take a last sample."""
        self._label_until(ts + 1)
        self._events(self._venue.expire_all(ts, "replay_ended"), ts)
        marks = []
        mids = {}
        for sym in self._symbols:
            row = sym.quote_before_ts(ts + 1)
            if row >= 0:
                mark = sym.mark(row)
                marks.append(mark)
                mids[sym.name] = 0.5 * (mark.bid + mark.ask)
        self._venue.mark_to(mids)
        # The last timed sample may sit just past the last event: the end's point is
        # after it, so the curve stays in time order.
        self._curve_ts.append(max(ts, self._curve_ts[-1]) if self._curve_ts else ts)
        self._curve_equity.append(self._venue.equity)
        self._risk.on_sample(marks, self._venue.equity, self._venue.take_closed_trades())

    def _flush(self) -> None:
        if self._records:
            self._journal.append(self._written, self._records)
            self._written += 1
            self._records = []
