"""Risk as a synchronous core: the trading machine, automatic triggers and pre-trade checks.

It takes order events (fills, cancels, rejections), samples of the market and the
account (the latest quotes, mark-to-market equity, closed trades), operational
events and operator commands; :meth:`RiskCore.update_trading_state` evaluates the
triggers and moves the trading machine (``fsm.TRADING_TABLE``: ACTIVE, REDUCING,
HALTED) and :meth:`RiskCore.approve` checks orders sorted by
``(ts_event, symbol, seq)``. The Trio actor (:class:`engine.actors.RiskActor`) runs
it per step; the replay driver per event. A failed check is an :class:`OrderDenied`
event with a reason code, never an exception. Entering HALTED asks execution to
cancel every open order. Positions are read from the engine's one
:class:`~engine.ledger.PositionLedger` (fed by the venue's fills and by positions
adopted at a live start), never kept here.

Pre-trade checks, first failure wins (reason codes in brackets):
trading state [``trading_halted``, ``trading_reducing``], the symbol's own state
[``symbol_reducing``: no new entries on that symbol], order rate
[``max_orders_per_second``], reduce-only orders must reduce [``not_reducing``]
(and skip the rest), min notional [``min_notional``], price band against the mid
[``price_band``], notional per symbol [``max_notional_per_symbol``], total
notional [``max_notional_total``] (after ``portfolio_limit``, the portfolio actor's
per-symbol exposure limit), leverage [``max_leverage``], open positions
[``max_open_positions``], correlation with open positions [``correlation``].

Account-wide triggers (each with a configured action ``halt``/``reduce``/``off``)
move the account's machine: ``daily_loss`` (realized + unrealized since the UTC
day began, replay clock), ``drawdown`` (from the equity peak), ``reconnect_storm``
of feed reconnects not tied to a symbol, ``rate_limit_ban`` (until the ban ends),
``execution_errors`` (venue rejections in a window; a post-only order refused because
it would take, Binance's -5022, is the order type working, not an error: a market
maker meets it every time the price moves through its quote), ``reconciliation``.

Per-symbol triggers have a per-symbol cause and move only that symbol's own
machine (ACTIVE or REDUCING: no new entries on the symbol, its exits still go, the
other symbols trade on): ``stale`` (no quote of the symbol for ``stale_data_ms``:
one quiet symbol, or a capture that ends early) and ``reconnect_storm`` (the
symbol's feed reconnected ``max_reconnects`` times in the window). Their action
``off`` disables them; ``reduce`` and ``halt`` both block the symbol's entries.

With ``auto_resume`` a trigger clears when its cause is gone (a new day, fresh
data, a quiet cooldown, the ban's end); drawdown, reconciliation and manual
halts clear only by an operator ``resume``, which clears every trigger,
account-wide and per symbol.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import attrs
import numpy as np
import trio
from structlog.typing import FilteringBoundLogger

import fsm

from .._config import RiskSection
from ..ledger import PositionLedger
from ..messages import (
    CancelOrder,
    ControlCommand,
    FeedReconnected,
    JournalRecord,
    Mark,
    OpsEvent,
    OrderCanceled,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    RateLimitBanned,
    ReconciliationFailed,
    ReplaceOrder,
    ReportBatch,
    SubmitOrder,
    TradingStateChanged,
)
from ..risk import RiskMetrics

OrderCommand = SubmitOrder | CancelOrder | ReplaceOrder
"""What the symbol cores send towards execution, through risk."""

_SECOND_NS = 1_000_000_000
_MS = 1_000_000
_DAY_NS = 86_400 * _SECOND_NS
_MIN_CORRELATION_SAMPLES = 20


_POST_ONLY_REFUSED = "-5022"  # the reason of a GTX order that would take (sim and live)


class RiskCore:
    """Approves or denies every order before it reaches execution (no Trio, no I/O).

    Args:
        config: the risk section.
        symbols: symbol order in which intents are read each step.
        log: a bound structlog logger.
        ledger: the engine's position ledger (read only; a new, flat one by default).
        step_ns: market time per step (for annualised metrics).
        control: operator commands (drained without waiting at each evaluation).
    """

    def __init__(
        self,
        *,
        config: RiskSection,
        symbols: list[str],
        log: FilteringBoundLogger,
        ledger: PositionLedger | None = None,
        step_ns: int = 250 * _MS,
        control: trio.MemoryReceiveChannel[ControlCommand] | None = None,
    ) -> None:
        self._cfg = config
        self._trig = config.triggers
        self._symbols = list(symbols)
        self._control = control
        self._log = log
        self.trading = fsm.new_trading()
        self.active: dict[str, tuple[str, str]] = {}  # trigger -> (action, reason)
        self.symbol_trading = {s: fsm.new_trading() for s in symbols}
        """Each symbol's own machine (ACTIVE or REDUCING), moved by per-symbol triggers."""
        self.symbol_active: dict[str, dict[str, tuple[str, str]]] = {s: {} for s in symbols}
        self.symbol_changes: list[tuple[str, str, str, str]] = []
        """``(symbol, from, to, reason)`` of every move of a symbol's machine."""
        self.ledger = ledger if ledger is not None else PositionLedger()
        self.prices: dict[str, float] = {}
        self.marks: dict[str, Mark] = {}
        self.equity = 0.0
        self.metrics = RiskMetrics(capital=config.capital, step_ns=step_ns)
        self._returns = {s: deque[float](maxlen=config.correlation_window) for s in symbols}
        self._open: dict[str, SubmitOrder] = {}
        # What of each open order has filled: its rest still counts toward exposure.
        self._filled: dict[str, float] = {}
        self._recent: deque[int] = deque()
        self._reconnects: deque[int] = deque()  # not tied to a traded symbol
        self._symbol_reconnects: dict[str, deque[int]] = {s: deque() for s in symbols}
        self._resumed = False
        self._errors: deque[int] = deque()
        self._ban_until = 0
        self._origin: int | None = None
        self._day = -1
        self._day_start_equity = 0.0
        self._seq = 0
        self.approved = 0
        self.denied: dict[str, int] = {}
        self.state_changes: list[tuple[str, str, str]] = []
        self.exposure_limits: dict[str, float] = {}
        self._mids: dict[str, float] = {}
        self._corr: dict[tuple[str, str], float] | None = None
        # While :meth:`check` runs: each symbol's exposure and the order's notional
        # after it, computed once for the checks that read them (None otherwise).
        self._memo: dict[str, float] | None = None
        self._memo_notional: float | None = None
        self._checks: list[tuple[str, Callable[[SubmitOrder], bool]]] = [
            ("max_orders_per_second", self._rate_ok),
            ("not_reducing", self._reduces_if_reduce_only),
            ("min_notional", self._min_notional_ok),
            ("price_band", self._price_band_ok),
            ("max_notional_per_symbol", self._symbol_notional_ok),
            ("portfolio_limit", self._portfolio_limit_ok),
            ("max_notional_total", self._total_notional_ok),
            ("max_leverage", self._leverage_ok),
            ("max_open_positions", self._open_positions_ok),
            ("correlation", self._correlation_ok),
        ]
        # What :meth:`check` runs: a reduce-only order the rate and that it reduces, and
        # skips the rest; any other order the rest (``not_reducing`` passes it).
        self._reducing_checks = self._checks[:2]
        self._opening_checks = [c for c in self._checks if c[0] != "not_reducing"]

    @property
    def flattening(self) -> bool:
        """Whether an operator asked to close every position (until ``resume``)."""
        return "flatten" in self.active

    @property
    def open_orders(self) -> list[SubmitOrder]:
        """The orders approved and not yet filled, canceled, rejected or expired."""
        return list(self._open.values())

    # -- pre-trade checks -----------------------------------------------------------

    def check(self, order: SubmitOrder) -> str | None:
        """The reason code to deny ``order``, or None to approve it."""
        self.prices[order.symbol] = order.ref_price
        state = self.trading.state
        if state is fsm.TradingState.HALTED:
            return "trading_halted"
        if state is fsm.TradingState.REDUCING and not order.reduce_only:
            return "trading_reducing"
        own = self.symbol_trading.get(order.symbol)
        if own is not None and own.state is not fsm.TradingState.ACTIVE and not order.reduce_only:
            return "symbol_reducing"
        self._memo = {}
        try:
            for reason, passes in (
                self._reducing_checks if order.reduce_only else self._opening_checks
            ):
                if not passes(order):
                    return reason
            return None
        finally:
            self._memo = self._memo_notional = None

    def _rate_ok(self, order: SubmitOrder) -> bool:
        window_start = order.ts_event - _SECOND_NS
        while self._recent and self._recent[0] <= window_start:
            self._recent.popleft()
        return len(self._recent) < self._cfg.max_orders_per_second

    def _reduces_if_reduce_only(self, order: SubmitOrder) -> bool:
        if not order.reduce_only:
            return True
        before = self._exposure(order.symbol)
        after = before + int(order.side) * order.qty
        # Smaller, and not through flat to the other side.
        return abs(after) <= abs(before) + 1e-12 and after * before >= 0.0

    def _min_notional_ok(self, order: SubmitOrder) -> bool:
        return order.qty * _order_price(order) >= self._cfg.min_notional

    def _price_band_ok(self, order: SubmitOrder) -> bool:
        mark = self.marks.get(order.symbol)
        if mark is None:
            return True  # no quote seen by risk yet: nothing to compare against
        mid = 0.5 * (mark.bid + mark.ask)
        return abs(_order_price(order) - mid) / mid * 1e4 <= self._cfg.price_band_bps

    def _symbol_notional_ok(self, order: SubmitOrder) -> bool:
        after = self._exposure(order.symbol) + int(order.side) * order.qty
        return abs(after) * _order_price(order) <= self._cfg.max_notional_per_symbol

    def _portfolio_limit_ok(self, order: SubmitOrder) -> bool:
        limit = self.exposure_limits.get(order.symbol)
        if limit is None:
            return True
        after = self._exposure(order.symbol) + int(order.side) * order.qty
        return abs(after) * _order_price(order) <= limit

    def _notional_after(self, order: SubmitOrder) -> float:
        if self._memo_notional is not None:
            return self._memo_notional
        after = self._exposure(order.symbol) + int(order.side) * order.qty
        others = sum(
            abs(self._exposure(s)) * self._price(s) for s in self._symbols if s != order.symbol
        )
        notional = others + abs(after) * _order_price(order)
        if self._memo is not None:
            self._memo_notional = notional
        return notional

    def _total_notional_ok(self, order: SubmitOrder) -> bool:
        return self._notional_after(order) <= self._cfg.max_notional_total

    def _leverage_ok(self, order: SubmitOrder) -> bool:
        equity = self._cfg.capital + self.equity
        return equity > 0 and self._notional_after(order) / equity <= self._cfg.max_leverage

    def _open_positions_ok(self, order: SubmitOrder) -> bool:
        if self._exposure(order.symbol) != 0.0:
            return True
        others = sum(1 for s in self._symbols if s != order.symbol and self._exposure(s) != 0.0)
        return others < self._cfg.max_open_positions

    def _correlation_ok(self, order: SubmitOrder) -> bool:
        mine = self._returns.get(order.symbol)
        if mine is None:
            return True
        for other in self._symbols:
            if other == order.symbol or self._exposure(other) == 0.0:
                continue
            corr = self.correlation(order.symbol, other)
            if corr is not None and corr > self._cfg.max_correlation:
                return False
        return True

    def correlation(self, a: str, b: str) -> float | None:
        """Correlation of the two symbols' recent per-step mid returns (None: too little data).

        The matrix of all symbols is computed once per step (returns change only
        when a report arrives) and reused by every order of the step.
        """
        if self._corr is None:
            self._corr = self._correlations()
        value = self._corr.get((a, b))
        return None if value is None or value != value else value

    def _correlations(self) -> dict[tuple[str, str], float]:
        started = [s for s in self._symbols if len(self._returns[s]) >= _MIN_CORRELATION_SAMPLES]
        if len(started) < 2:
            return {}
        n = min(len(self._returns[s]) for s in started)
        matrix = np.column_stack([np.fromiter(self._returns[s], float)[-n:] for s in started])
        flat = matrix.std(axis=0) == 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.corrcoef(matrix, rowvar=False)
        corr[flat, :] = np.nan
        corr[:, flat] = np.nan
        return {
            (x, y): float(corr[i, j])
            for i, x in enumerate(started)
            for j, y in enumerate(started)
            if i != j
        }

    def _exposure(self, symbol: str) -> float:
        """Position (the ledger's) plus what open orders would add."""
        memo = self._memo
        if memo is not None and symbol in memo:
            return memo[symbol]
        pending = sum(
            int(o.side) * (o.qty - self._filled.get(c, 0.0))
            for c, o in self._open.items()
            if o.symbol == symbol
        )
        exposure = self.ledger.qty(symbol) + pending
        if memo is not None:
            memo[symbol] = exposure
        return exposure

    def _price(self, symbol: str) -> float:
        mark = self.marks.get(symbol)
        if mark is not None:
            return 0.5 * (mark.bid + mark.ask)
        return self.prices.get(symbol, 0.0)

    # -- reports --------------------------------------------------------------------

    def on_order_events(self, events: tuple[OrderEvent, ...] | list[OrderEvent]) -> None:
        """Fills, cancels, rejections and denials: open orders end, errors are counted."""
        for event in events:
            if isinstance(event, OrderFilled):
                # The position itself is the ledger's (the venue applied the fill).
                self.prices[event.symbol] = event.last_price
                if event.cum_qty >= event.order_qty:
                    self._open.pop(event.client_order_id, None)
                    self._filled.pop(event.client_order_id, None)
                elif event.client_order_id in self._open:
                    self._filled[event.client_order_id] = event.cum_qty
            elif isinstance(event, OrderRejected | OrderExpired | OrderDenied | OrderCanceled):
                self._open.pop(event.client_order_id, None)
                self._filled.pop(event.client_order_id, None)
                if isinstance(event, OrderRejected) and not event.reason.startswith(
                    _POST_ONLY_REFUSED
                ):
                    self._errors.append(event.ts_event)

    def on_report(self, report: ReportBatch) -> None:
        """Execution's report of a step: its order events, then its sample (marks,
        equity, closed trades), then its operational events."""
        self.on_order_events(report.events)
        self.on_sample(report.marks, report.equity, report.trades)
        self.on_ops(report.ops)

    def on_sample(
        self,
        marks: tuple[Mark, ...] | list[Mark],
        equity: float,
        trades: tuple[float, ...] | list[float] = (),
    ) -> None:
        """One sample of the market and the account: the latest quotes, the equity
        (marked to market) and the trades closed since the last sample."""
        self._corr = None  # returns move on: recompute correlations when next needed
        for mark in marks:
            self.marks[mark.symbol] = mark
        # One return per symbol per sample (0 when it was not quoted), so the rows
        # of different symbols line up for correlations and the portfolio.
        for symbol in self._symbols:
            mark = self.marks.get(symbol)
            if mark is None:
                continue
            mid = 0.5 * (mark.bid + mark.ask)
            old = self._mids.get(symbol)
            if old is not None:
                self._returns[symbol].append(math.log(mid / old))
            self._mids[symbol] = mid
        self.equity = equity
        self.metrics.record_equity(equity)
        for pnl in trades:
            self.metrics.record_trade(pnl)

    def quiet(self, now: int) -> bool:
        """Whether samples from ``now`` on can only move figures, not the machines: no
        trigger raised, no reconnect or venue error in a window, no ban, no operator
        command waiting (see :meth:`calm_samples`)."""
        if self._origin is None or self._resumed or now < self._ban_until:
            return False
        if self.active or not all(self._steady_stale(s) for s in self._symbols):
            return False
        if self._reconnects or self._errors or any(self._symbol_reconnects.values()):
            return False
        control = self._control
        return control is None or control.statistics().current_buffer_used == 0

    def _steady_stale(self, symbol: str) -> bool:
        """Whether the symbol's own triggers leave its machine where it is: none raised,
        or only ``stale`` with the symbol already REDUCING (candle-only data never has a
        quote; a calm run ends where a fresh quote could clear it)."""
        own = self.symbol_active[symbol]
        if not own:
            return True
        return (
            own.keys() == {"stale"}
            and self.symbol_trading[symbol].state is fsm.TradingState.REDUCING
        )

    def calm_samples(
        self, times: np.ndarray, equities: np.ndarray, quoted: dict[str, np.ndarray]
    ) -> int:
        """How many of these samples, in order, raise no trigger and clear none (while
        :meth:`quiet`): the checks of :meth:`_evaluate_triggers`, over arrays.

        Args:
            times: the samples' times (int64).
            equities: the account's equity at each (float64).
            quoted: per symbol, the time of its latest quote before each sample (-1:
                none yet).

        A sample in a new UTC day ends the calm run too (the day's loss restarts there),
        and so does a fresh quote of a symbol whose ``stale`` trigger is raised.
        """
        t = self._trig
        ends = [int(times.shape[0])]

        def first(bad: np.ndarray) -> None:
            hit = np.flatnonzero(bad)
            if hit.size:
                ends.append(int(hit[0]))

        first(times // _DAY_NS != self._day)
        if t.daily_loss_action != "off":
            first(self._day_start_equity - equities >= t.daily_loss_limit)
        if t.drawdown_action != "off":
            peaks = np.maximum(np.maximum.accumulate(equities), self.metrics.peak)
            first(peaks - equities >= t.max_drawdown)
        if t.stale_data_action != "off":
            origin = self._origin if self._origin is not None else 0
            stale_ns = t.stale_data_ms * _MS
            for symbol in self._symbols:
                last = quoted[symbol]
                fresh = times - np.where(last >= 0, last, origin) < stale_ns
                first(fresh if self.symbol_active[symbol] else ~fresh)
        return min(ends)

    def on_calm_samples(
        self, marks: list[Mark], mids: dict[str, list[float]], equities: list[float]
    ) -> None:
        """Take calm samples in one call: what :meth:`on_sample` and the trigger
        evaluation would do for each (only figures move), without the per-call cost.

        Args:
            marks: each quoted symbol's latest quote at the last sample.
            mids: per symbol, its mid at each sample where it had a quote.
            equities: the account's equity at each sample.
        """
        self._corr = None
        for mark in marks:
            self.marks[mark.symbol] = mark
        for symbol in self._symbols:
            series = mids.get(symbol)
            if not series:
                continue
            returns = self._returns[symbol]
            old = self._mids.get(symbol)
            keep = returns.maxlen
            if keep is not None and len(series) > keep:
                # The deque keeps only the last ``keep`` returns: skip the others.
                old, series = series[-keep - 1], series[-keep:]
            for mid in series:
                if old is not None:
                    returns.append(math.log(mid / old))
                old = mid
            self._mids[symbol] = series[-1]
        self.metrics.record_equities(equities)
        self.equity = equities[-1]

    def on_ops(self, ops: tuple[OpsEvent, ...] | list[OpsEvent]) -> None:
        """Operational events: feed reconnects, venue bans, failed reconciliations."""
        for op in ops:
            if isinstance(op, FeedReconnected):
                self._symbol_reconnects.get(op.symbol, self._reconnects).append(op.ts_event)
            elif isinstance(op, RateLimitBanned):
                self._ban_until = max(self._ban_until, op.until_ts)
            elif isinstance(op, ReconciliationFailed):
                self._activate("reconciliation", self._trig.reconciliation_action, op.reason)

    def approve(
        self, commands: list[OrderCommand], records: list[JournalRecord]
    ) -> tuple[list[OrderCommand], list[OrderDenied]]:
        """Check orders in ``(ts_event, symbol, seq)`` order; denials go to ``records``.

        Cancels and amendments of resting orders (a quoting strategy's) pass as
        :meth:`vet_amendment` leaves them, journaled here.
        """
        if len(commands) > 1:
            commands.sort(key=_command_order)
        approved: list[OrderCommand] = []
        denials: list[OrderDenied] = []
        for command in commands:
            if not isinstance(command, SubmitOrder):
                vetted = self.vet_amendment(command)
                approved.append(vetted)
                records.append(vetted)
                continue
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
        return approved, denials

    def vet_amendment(self, command: CancelOrder | ReplaceOrder) -> CancelOrder | ReplaceOrder:
        """What to send for a cancel or an amendment: a cancel as it is (it only lowers
        exposure); an amendment risk approves (:meth:`approve_replace`) as it is, one it
        denies as a cancel whose reason names the check, so that a quote risk would not
        place does not keep resting at its old price."""
        if isinstance(command, CancelOrder):
            return command
        reason = self.approve_replace(command)
        if reason is None:
            return command
        self._log_denied(command, reason)
        cancel = CancelOrder.of(command, f"replace_denied_{reason}", command.ts_event, command.seq)
        return attrs.evolve(cancel, ts_init=command.ts_init)

    def approve_replace(self, command: ReplaceOrder) -> str | None:
        """Check an amendment as a new order of its size at its price, in place of the
        open order it amends (the reason to deny it, or None: approved and counted).
        An order risk does not hold open is the venue's to refuse (-2013)."""
        old = self._open.pop(command.client_order_id, None)
        if old is None:
            return None
        new = attrs.evolve(
            old,
            qty=command.qty,
            price=command.price,
            ts_event=command.ts_event,
            ts_init=command.ts_init,
        )
        reason = self.check(new)
        if reason is None:
            self._open[command.client_order_id] = new
            self._recent.append(command.ts_event)
            self.approved += 1
        else:
            self._open[command.client_order_id] = old
            self.denied[reason] = self.denied.get(reason, 0) + 1
        return reason

    def set_exposure_limits(self, limits: dict[str, float], status: str) -> None:
        """Apply the portfolio's per-symbol exposure limits (empty: keep the last ones)."""
        if limits:
            self.exposure_limits = dict(limits)
        else:
            self._log.warning("portfolio solve failed; keeping last limits", status=status)

    # -- portfolio ------------------------------------------------------------------

    def returns_matrix(self, rows: int) -> np.ndarray | None:
        """The last ``rows`` (or fewer) aligned per-sample returns, or None if too few."""
        if any(len(self._returns[s]) == 0 for s in self._symbols):
            return None
        m = min(rows, *(len(self._returns[s]) for s in self._symbols))
        cols = [np.fromiter(self._returns[s], float)[-m:] for s in self._symbols]
        return np.column_stack(cols)

    # -- triggers and the trading machine -------------------------------------------

    def _activate(
        self,
        name: str,
        action: str,
        reason: str,
        active: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        """Raise trigger ``name`` (account-wide, or in a symbol's ``active`` table)."""
        table = self.active if active is None else active
        if action != "off" and name not in table:
            table[name] = (action, reason)

    def _clear(self, name: str, active: dict[str, tuple[str, str]] | None = None) -> None:
        (self.active if active is None else active).pop(name, None)

    def _evaluate_triggers(self, now: int) -> None:
        t = self._trig
        auto = t.auto_resume
        if self._origin is None:
            self._origin = now
        day = now // _DAY_NS
        if day != self._day:
            self._day = day
            self._day_start_equity = self.equity
            if auto:
                self._clear("daily_loss")
        loss = self._day_start_equity - self.equity
        if loss >= t.daily_loss_limit:
            self._activate("daily_loss", t.daily_loss_action, f"daily loss {loss:.2f}")
        drawdown = self.metrics.peak - self.equity
        if drawdown >= t.max_drawdown:
            self._activate("drawdown", t.drawdown_action, f"drawdown {drawdown:.2f}")
        cooldown = t.cooldown_ms * _MS
        for symbol in self._symbols:
            # Causes of one symbol block that symbol only: a quiet symbol or a capture
            # that ends early must not stop the others.
            own = self.symbol_active[symbol]
            mark = self.marks.get(symbol)
            last = mark.ts if mark is not None else self._origin
            if now - last >= t.stale_data_ms * _MS:
                self._activate("stale", t.stale_data_action, f"no quote for {symbol}", own)
            elif auto and own:
                own.pop("stale", None)
            self._windowed(
                "reconnect_storm",
                self._symbol_reconnects[symbol],
                now,
                t.reconnect_window_ms * _MS,
                t.max_reconnects,
                t.reconnect_action,
                cooldown,
                own,
            )
        self._windowed(
            "reconnect_storm",
            self._reconnects,
            now,
            t.reconnect_window_ms * _MS,
            t.max_reconnects,
            t.reconnect_action,
            cooldown,
        )
        self._windowed(
            "execution_errors",
            self._errors,
            now,
            t.execution_error_window_ms * _MS,
            t.max_execution_errors,
            t.execution_error_action,
            cooldown,
        )
        if now < self._ban_until:
            self._activate("rate_limit_ban", t.rate_limit_ban_action, "venue ban")
        elif self.active:
            self.active.pop("rate_limit_ban", None)  # a ban ends by itself

    def _windowed(
        self,
        name: str,
        times: deque[int],
        now: int,
        window: int,
        limit: int,
        action: str,
        cooldown: int,
        active: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        table = self.active if active is None else active
        if not times:  # the usual case: nothing in any window (``limit`` is >= 1)
            if name in table and self._trig.auto_resume:
                self._clear(name, table)
            return
        while times and times[0] <= now - max(window, cooldown):
            times.popleft()
        in_window = sum(1 for ts in times if ts > now - window)
        if in_window >= limit:
            self._activate(name, action, f"{in_window} in {window // _MS} ms", table)
        elif (
            self._trig.auto_resume and name in table and (not times or times[-1] <= now - cooldown)
        ):
            self._clear(name, table)

    def _apply_control(self) -> None:
        if self._control is None:
            return
        while True:
            try:
                command = self._control.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            self._log.warning("operator command", action=command.action, reason=command.reason)
            if command.action == "resume":
                self.active.clear()
                for own in self.symbol_active.values():
                    own.clear()
                self._resumed = True  # execution tells the venue: check drift again
            elif command.action == "flatten":
                self.active.pop("manual", None)
                self._activate("manual", "reduce", command.reason)
                self._activate("flatten", "reduce", command.reason)
            else:
                self.active.pop("manual", None)
                self._activate("manual", command.action, command.reason)

    def update_trading_state(self, now: int, records: list[JournalRecord]) -> str:
        """Evaluate triggers and move the machines; returns a cancel-all reason or ""."""
        self._apply_control()
        self._evaluate_triggers(now)
        actions = {action for action, _reason in self.active.values()} if self.active else ()
        if "halt" in actions:
            target, event_type = fsm.TradingState.HALTED, fsm.HaltRequested
        elif "reduce" in actions:
            target, event_type = fsm.TradingState.REDUCING, fsm.ReduceRequested
        else:
            target, event_type = fsm.TradingState.ACTIVE, fsm.ResumeRequested
        cancel_all = ""
        if target is not self.trading.state:
            reason = "; ".join(f"{k}: {r}" for k, (_a, r) in sorted(self.active.items()))
            t = self._move(self.trading, "", event_type, reason or "clear", now, records)
            self.state_changes.append((t.source.value, t.target.value, reason or "clear"))
            if t.target is fsm.TradingState.HALTED:
                cancel_all = reason or "clear"
        for symbol in self._symbols:
            own = self.symbol_active[symbol]
            machine = self.symbol_trading[symbol]
            # A symbol's own machine only ever reduces: its exits stay allowed.
            wanted = fsm.TradingState.REDUCING if own else fsm.TradingState.ACTIVE
            if wanted is machine.state:
                continue
            reason = "; ".join(f"{k}: {r}" for k, (_a, r) in sorted(own.items())) or "clear"
            request = fsm.ReduceRequested if own else fsm.ResumeRequested
            t = self._move(machine, symbol, request, reason, now, records)
            self.symbol_changes.append((symbol, t.source.value, t.target.value, reason))
        return cancel_all

    def _move(
        self,
        machine: fsm.Machine[fsm.TradingState],
        symbol: str,
        event_type: type,
        reason: str,
        now: int,
        records: list[JournalRecord],
    ) -> fsm.Transition[fsm.TradingState]:
        """Move a trading machine (the account's when ``symbol`` is ""); journal and log it."""
        t = machine.handle(event_type(reason=reason))
        self._seq += 1
        records.append(
            TradingStateChanged(
                symbol=symbol,
                source=t.source.value,
                target=t.target.value,
                reason=reason,
                ts_event=now,
                ts_init=now,
                seq=self._seq,
            )
        )
        self._log.warning(
            "trading state changed" if not symbol else "symbol trading state changed",
            **({"symbol": symbol} if symbol else {}),
            **{"from": t.source.value, "to": t.target.value},
            reason=reason,
            ts_event=now,
        )
        return t

    def _log_denied(self, order: SubmitOrder | ReplaceOrder, reason: str) -> None:
        self._log.warning(
            "order denied",
            symbol=order.symbol,
            client_order_id=order.client_order_id,
            reason=reason,
            ts_event=order.ts_event,
        )

    def _deny(self, order: SubmitOrder, reason: str) -> OrderDenied:
        self._seq += 1
        self.denied[reason] = self.denied.get(reason, 0) + 1
        self._log_denied(order, reason)
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


def _command_order(command: OrderCommand) -> tuple[int, str, int]:
    """The order :meth:`RiskCore.approve` checks a step's commands in."""
    return command.ts_event, command.symbol, command.seq


def _order_price(order: SubmitOrder) -> float:
    """The price an order's notional is counted at: a LIMIT's own price (it rests
    there), a stop's trigger price, else the quote it was built from."""
    if order.order_type == "LIMIT":
        return order.price
    if order.order_type != "MARKET":
        return order.stop_price
    return order.ref_price
