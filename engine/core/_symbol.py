"""One symbol's strategy and position machine as a synchronous core (no Trio, no I/O).

The core owns the strategy kernel's state, the indicators it reads, the position
machine (:mod:`fsm`) and the entry's figures for sizing. The symbol's position
itself is the engine's :class:`~engine.ledger.PositionLedger`'s (the venue feeds it
with fills, a live start with the adopted position). The hold timer compares times
of one clock: the entry's time is the fill's ``ts_init`` (when this process saw it:
the replay clock in replay, the local clock live, as the ticks' times are), never
the exchange's own fill time.

With ``[strategy.confirm]`` (:mod:`engine.strategy._confirm`) the core feeds every
scanned event to the higher timeframes' bars and drops the entry signals they do not
confirm, scanning on after each; exits always pass.

A :class:`~engine.strategy.QuotingStrategy` (the market maker) runs the core in
quoting mode instead: the position machine stays IDLE and the core keeps at most one
resting GTX LIMIT order per side, placed, amended in place
(:class:`~engine.messages.ReplaceOrder`) or cancelled when the strategy's kernel
asks for a requote; the inventory, its average price, realised PnL and fees come
from the fills (:attr:`SymbolCore.inventory`). Every quote is a
:class:`~engine.messages.SubmitOrder` that risk checks, every amendment is checked
again by risk (the driver), and all of it is journaled.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
from structlog.typing import FilteringBoundLogger

import fsm

from .._config import ExitsSection, SizingSection, StrategySection
from ..ledger import PositionLedger
from ..messages import (
    CancelOrder,
    EntryScored,
    JournalRecord,
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderSubmitted,
    OrderTriggered,
    PositionChanged,
    Purpose,
    ReplaceOrder,
    Score,
    Side,
    SubmitOrder,
    Ticks,
)
from ..risk import SizingInputs, size_notional
from ..strategy import Mode, QuotingStrategy, Signal, Strategy, make_strategy
from ..strategy._base import MARKET as MARKET_SPEC
from ..strategy._base import configured_entry_order
from ..strategy._confirm import Confirmation
from ..strategy._exits import EXIT_CODES, PARTIAL, POLICY_SIGNAL, ExitPolicy

if TYPE_CHECKING:
    from ..actors._filter import EntryFilter, PendingEntry

# What the strategy kernel should look for in each position state, by the state's
# value (a str's hash is cached; an Enum member's is a Python call, once per step).
_KERNEL_MODE = {
    fsm.PositionState.IDLE._value_: Mode.FLAT,
    fsm.PositionState.IN_POSITION._value_: Mode.HOLDING,
    fsm.PositionState.SIGNALED._value_: Mode.WAITING,
    fsm.PositionState.ORDERING._value_: Mode.WAITING,
    fsm.PositionState.EXITING._value_: Mode.WAITING,
}


@attrs.define
class _Quote:
    """One side's working quote in quoting mode."""

    order: SubmitOrder | None = None  # as sent (its qty is the order's whole quantity)
    price: float = math.nan  # its limit price now (after amendments)
    since: int = 0  # when that price was set
    # The command whose answer has not come: "new" (not acknowledged yet), "amend",
    # "cancel"; "" when none.
    pending: str = ""


@attrs.define
class QuoteInventory:
    """A quoting strategy's inventory, built from its fills (average-cost accounting)."""

    qty: float = 0.0
    avg_price: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    since: int = 0  # when it last left flat
    maker_fills: int = 0
    taker_fills: int = 0
    peak: float = 0.0  # the largest absolute inventory held

    def apply(self, signed_qty: float, price: float, fee: float, liquidity: str, ts: int) -> None:
        """Book one fill (``signed_qty`` > 0 bought)."""
        old = self.qty
        new = round(old + signed_qty, 12)
        if old == 0.0 or (old > 0) == (signed_qty > 0):
            self.avg_price = (abs(old) * self.avg_price + abs(signed_qty) * price) / abs(new)
        else:
            closed = min(abs(signed_qty), abs(old))
            self.realized += closed * (price - self.avg_price) * (1.0 if old > 0 else -1.0)
            if new != 0.0 and (new > 0) != (old > 0):  # through flat: the rest opens anew
                self.avg_price = price
        if old == 0.0 or (new != 0.0 and (new > 0) != (old > 0)):
            self.since = ts
        if new == 0.0:
            self.avg_price = 0.0
        self.qty = new
        self.fees += fee
        self.peak = max(self.peak, abs(new))
        if liquidity == "MAKER":
            self.maker_fills += 1
        elif liquidity == "TAKER":
            self.taker_fills += 1


def round_down(qty: float, step: float) -> float:
    """``qty`` rounded down to a multiple of ``step`` (a tiny epsilon absorbs 0.1+0.2)."""
    n = math.floor(qty / step + 1e-9)
    return round(n * step, 12)


class SymbolCore:
    """One symbol's strategy and position machine, with no Trio and no I/O.

    Messages in, messages out: :meth:`scan` runs the strategy kernel over a range
    of the symbol's market columns and stops at a signal; :meth:`on_signal` turns
    it into orders (or a scoring request, with the ML filter); :meth:`on_events`
    applies execution reports; :meth:`take` hands over the orders and journal
    records made since the last call. The Trio actor (:class:`engine.actors.SymbolActor`)
    and the replay driver (:class:`engine.core.ReplayDriver`) both run it.

    Args:
        symbol: the instrument (``BTCUSDT``).
        config: the strategy section.
        log: a bound structlog logger.
        ledger: the engine's position ledger (read only: the venue applies the fills).
        sizing: how entries are sized (default: fixed ``order_notional``).
        capital: starting equity (sizing adds the venue's PnL to it).
        max_notional: the per-symbol risk limit; sizes are capped at it.
        entry_filter: the ML filter's per-symbol side (features, threshold, labels);
            None trades every signal.
        strategy: the strategy (default: a new one of ``config.kind``).
        exits: the ``[exits]`` policies run while a position is held (None, or
            none enabled: the strategy's own exits only).
    """

    def __init__(
        self,
        *,
        symbol: str,
        config: StrategySection,
        log: FilteringBoundLogger,
        ledger: PositionLedger,
        sizing: SizingSection | None = None,
        capital: float = 10_000.0,
        max_notional: float = float("inf"),
        entry_filter: EntryFilter | None = None,
        strategy: Strategy | None = None,
        exits: ExitsSection | None = None,
    ) -> None:
        self.symbol = symbol
        self._filter = entry_filter
        self._cfg = config
        self._sizing = sizing or SizingSection()
        # Fixed sizing needs no inputs: the entry path skips building them.
        self._fixed_sizing = self._sizing.mode == "fixed" and not self._sizing.scale_by_strength
        self._capital = capital
        self._max_notional = max_notional
        self._equity = 0.0
        self._trade_returns: deque[float] = deque(maxlen=self._sizing.kelly_window)
        self._log = log.bind(symbol=symbol)
        self.position = fsm.new_position()
        self._ledger = ledger
        # Signed quantity of the fills of the report being handled that the actor has
        # not reached yet: the ledger holds the step's fills already, and each event is
        # handled at the position right after it.
        self._unapplied = 0.0
        self._trading_state = fsm.TradingState.ACTIVE.value
        self._flatten = False
        self.transitions: dict[str, int] = {}
        self.signals = 0
        self.ticks = 0
        self.strategy = strategy if strategy is not None else make_strategy(config, self._sizing)
        # Quoting mode (a market maker): two resting quotes instead of the position machine.
        self._quoting = isinstance(self.strategy, QuotingStrategy)
        # Entries are market orders whatever the quote: no spec to work out per entry.
        self._market_entries = (
            type(self.strategy).entry_order is Strategy.entry_order
            and config.entry_order == "market"
        )
        self._quotes = {Side.BUY: _Quote(), Side.SELL: _Quote()}
        self._quiet_until = 0
        self.inventory = QuoteInventory()
        """Quoting mode: the inventory its fills made."""
        self._seq = 0
        self._orders = 0
        self._live_order: SubmitOrder | None = None
        self._timed_out = ""  # the entry :meth:`expire_entry` sent a cancel for
        self._sizing_basis = "fixed"
        self._entry_cost = 0.0
        self._entry_qty = 0.0
        self._entry_fees = 0.0
        self._last_exit_ts = -(2**62)
        self._exits = ExitPolicy(exits) if exits is not None and exits.enabled else None
        # ``[strategy.confirm]``: entries need the higher timeframes to agree (not in
        # quoting mode, which has no entry signals).
        self._confirm = (
            Confirmation(config.confirm) if config.confirm.enabled and not self._quoting else None
        )
        self._strategy_exits = exits is None or exits.opposite_signal
        # The quantity an exit in progress leaves held (0: a full exit; >0: a partial
        # take-profit), so a retried exit sends the same reduction.
        self._exit_keep = 0.0
        self._commands: list[SubmitOrder] = []
        self._records: list[JournalRecord] = []
        # :meth:`defer_transitions`: the position transitions' records, as their fields,
        # until :meth:`deferred_transitions` builds them (None: built as they happen).
        self._deferred: list[tuple[str, str, str, float, int, int, int, str]] | None = None
        self._handlers: dict[type, Callable[[OrderEvent, int], None]] = {
            OrderDenied: self._on_denied,
            OrderSubmitted: self._on_submitted,
            OrderAccepted: self._on_accepted,
            OrderFilled: self._on_filled,
            OrderRejected: self._on_failed,
            OrderExpired: self._on_failed,
            OrderCanceled: self._on_failed,
            # A stop's trigger and an amendment change nothing until their fills.
            OrderTriggered: self._on_accepted,
            OrderReplaced: self._on_accepted,
        }

    # -- messages in, messages out ----------------------------------------------

    @property
    def waiting(self) -> bool:
        """Whether only the symbol's own order (or a retry) can move it on: the kernel
        finds no signal in this state, only updates its indicators."""
        if self._quoting:  # a quote command unanswered, or the inventory's close in flight
            return self._live_order is not None or any(q.pending for q in self._quotes.values())
        return _KERNEL_MODE[self.position.state._value_] is Mode.WAITING

    @property
    def live_order(self) -> SubmitOrder | None:
        """The order in flight (None: none)."""
        return self._live_order

    def set_account(self, equity: float, trading_state: str, flatten: bool = False) -> None:
        """The venue's equity (PnL since the start), risk's trading state and whether an
        operator asked to close every position: for sizing, exit retries, flattening."""
        self._equity = equity
        self._trading_state = trading_state
        self._flatten = flatten

    def scan(self, ticks: Ticks, start: int, stop: int) -> tuple[int, int]:
        """Run the strategy kernel over events ``start..stop`` of ``ticks``.

        Returns:
            ``(index, signal)``: the event that raised a signal (hand it to
            :meth:`on_signal`, then resume at ``index + 1``) and its code, or
            ``(stop, 0)``.
        """
        if self._quoting:
            mode = Mode.WAITING if self.waiting else Mode.QUOTING
            index, signal = self.strategy.scan(ticks, start, stop, mode)
            self.ticks += index + (1 if signal else 0) - start
            return index, signal
        index, signal = self._scan_position(ticks, start, stop)
        if self._confirm is not None:
            index, signal = self._scan_confirmed(ticks, start, stop, index, signal)
        self.ticks += index + (1 if signal else 0) - start
        return index, signal

    def _scan_position(self, ticks: Ticks, start: int, stop: int) -> tuple[int, int]:
        mode = _KERNEL_MODE[self.position.state._value_]
        if mode is not Mode.HOLDING or (self._exits is None and self._strategy_exits):
            return self.strategy.scan(ticks, start, stop, mode)
        return self._scan_holding(ticks, start, stop)

    def _scan_confirmed(
        self, ticks: Ticks, start: int, stop: int, index: int, signal: int
    ) -> tuple[int, int]:
        """Feed the confirmation the events scanned, and drop the entry signals the
        higher timeframes do not confirm, scanning on after each (exits pass)."""
        confirm = self._confirm
        assert confirm is not None
        while True:
            end = index + 1 if signal else index
            confirm.feed(ticks, start, end)
            if signal not in (Signal.ENTER_LONG, Signal.ENTER_SHORT):
                return index, signal
            side = 1 if signal == Signal.ENTER_LONG else -1
            decision = confirm.admit(side)
            if confirm.takes(decision):
                return index, signal
            self._log.debug("entry not confirmed", reason=decision, side=Side(side).name)
            start = end
            index, signal = self._scan_position(ticks, start, stop)

    @property
    def confirm_counts(self) -> dict[str, int]:
        """``[strategy.confirm]``'s entry decisions by kind (empty when it is off)."""
        return {} if self._confirm is None else dict(sorted(self._confirm.counts.items()))

    def _scan_holding(self, ticks: Ticks, start: int, stop: int) -> tuple[int, int]:
        """The exit policies to their first trigger ``e``, then the strategy up to ``e``
        inclusive: the earlier signal wins, the policy on the same tick."""
        code = 0
        end = stop
        if self._exits is not None:
            e, code = self._exits.scan(ticks, start, stop)
            if code:
                end = e + 1
        index, signal = self.strategy.scan(ticks, start, end, Mode.HOLDING)
        while signal and not self._strategy_exits and index + 1 < end:
            index, signal = self.strategy.scan(ticks, index + 1, end, Mode.HOLDING)
        if signal and self._strategy_exits and not (code and index == end - 1):
            return index, signal
        if code:
            return end - 1, POLICY_SIGNAL + code
        return index if not signal else end, 0

    def on_signal(self, ticks: Ticks, index: int, signal: int) -> None:
        """Act on a signal :meth:`scan` stopped at: an entry (sized; with the ML filter,
        a scoring request the caller answers with :meth:`decide`) or an exit."""
        self.signals += 1
        ts = int(ticks.ts[index])
        if self._quoting:
            if signal == Signal.REQUOTE:
                self._requote(ts)
            elif signal == Signal.EXIT_TIME:
                self._close_inventory("time_limit", ts)
            return
        if signal in (Signal.ENTER_LONG, Signal.ENTER_SHORT):
            side = Side.BUY if signal == Signal.ENTER_LONG else Side.SELL
            if self._filter is not None:
                self._filter.advance(index + 1)  # features as of the signal's tick, no later
            self._enter(side, ts)
        elif signal >= POLICY_SIGNAL:
            self._policy_exit(signal - POLICY_SIGNAL, ts)
        else:
            self._exit(self.strategy.exit_reason(signal), ts)

    def on_events(self, events: tuple[OrderEvent, ...] | list[OrderEvent], now: int) -> None:
        """Apply execution reports in order (the ledger already holds their fills)."""
        self._unapplied = sum(
            int(e.side) * e.last_qty for e in events if isinstance(e, OrderFilled)
        )
        handle = self._on_quote_event if self._quoting else None
        for event in events:
            if handle is not None:
                handle(event, now)
            else:
                self._handlers[type(event)](event, now)
        self._unapplied = 0.0

    def take(self) -> tuple[list[SubmitOrder], list[JournalRecord]]:
        """The orders and journal records made since the last call."""
        commands, self._commands = self._commands, []
        records, self._records = self._records, []
        return commands, records

    @property
    def position_qty(self) -> float:
        """The symbol's signed position (the ledger's, as of the event being handled)."""
        return round(self._ledger.qty(self.symbol) - self._unapplied, 12)

    def adopt_position(self, ts: int) -> None:
        """Take over the position the ledger holds (live restart, after reconciliation).

        The machine starts IN_POSITION with the ledger's quantity and entry price (the
        exchange's, adopted by the venue), so the strategy's exits (stop, take-profit,
        time limit from ``ts``, a local time) manage it; without this a restarted
        engine would think itself flat and could enter again.

        Raises:
            ValueError: the ledger holds no position of the symbol.
        """
        qty = self.position_qty
        if qty == 0.0:
            raise ValueError(f"{self.symbol}: no position in the ledger to adopt")
        if self._quoting:  # an inventory to quote around (and to close at its time limit)
            self.inventory.apply(qty, self._ledger.avg_price(self.symbol), 0.0, "ADOPTED", ts)
            self.strategy.on_inventory(qty, ts)  # type: ignore[attr-defined]
            return
        self.position = fsm.new_position(fsm.PositionState.IN_POSITION)
        self._entry_qty = abs(qty)
        self._entry_cost = abs(qty) * self._ledger.avg_price(self.symbol)
        self._hold(ts)
        self._record_transition(  # journaled with the first step
            fsm.PositionState.IDLE,
            fsm.PositionState.IN_POSITION,
            "adopted",
            ts,
            ts,
            f"{self.symbol}-adopted",
        )

    # -- strategy ---------------------------------------------------------------

    def _enter(self, side: Side, ts: int) -> None:
        strategy = self.strategy
        price = strategy.last_ask if side is Side.BUY else strategy.last_bid
        sz = self._sizing
        if self._fixed_sizing:  # size_notional's answer for fixed sizing, without its inputs
            notional, basis = self._cfg.order_notional, "fixed"
            if notional > self._max_notional:
                notional, basis = self._max_notional, "fixed, capped"
        else:
            notional, basis = size_notional(
                SizingInputs(
                    price=price,
                    equity=self._capital + self._equity,
                    atr=strategy.atr,
                    strength=strategy.strength,
                    trade_returns=list(self._trade_returns),
                ),
                mode=sz.mode,
                order_notional=self._cfg.order_notional,
                max_notional=self._max_notional,
                risk_per_trade=sz.risk_per_trade,
                atr_stop_mult=sz.atr_stop_mult,
                kelly_fraction_scale=sz.kelly_fraction,
                kelly_cap=sz.kelly_cap,
                kelly_min_trades=sz.kelly_min_trades,
                scale_by_strength=sz.scale_by_strength,
                min_scale=sz.min_scale,
            )
        qty = round_down(notional / price, self._cfg.qty_step)
        if qty <= 0.0:
            self._log.info("entry skipped", reason=basis, notional=notional, price=price)
            return
        self._sizing_basis = basis
        self._transition(fsm.EntrySignaled(side=int(side)), ts, ts, "signal")
        if self._filter is None:
            self._submit(side, qty, float(price), Purpose.ENTRY, ts)
            return
        pending = self._filter.propose(side, qty, float(price), ts)
        if pending is None:  # features not warm yet: no score, no entry (fail closed)
            self._transition(
                fsm.EntryDenied(reason="features_not_ready"), ts, ts, "features_not_ready"
            )

    def decide(self, pending: PendingEntry, score: Score, now: int) -> None:
        """Take or drop a scored entry (journaled as :class:`EntryScored`)."""
        taken = pending.passes(score.score)
        self._records.append(
            EntryScored(
                symbol=self.symbol,
                side=pending.side,
                score=score.score,
                threshold=pending.threshold,
                regime=pending.regime,
                model=score.model,
                taken=taken,
                features=tuple(float(x) for x in pending.row),
                ts_event=pending.ts,
                ts_init=pending.ts,
                seq=self._next_seq(),
                correlation_id=pending.correlation_id,
            )
        )
        self._log.info(
            "entry scored",
            correlation_id=pending.correlation_id,
            side=pending.side.name,
            score=round(score.score, 6),
            threshold=round(pending.threshold, 6),
            regime=pending.regime,
            model=score.model,
            taken=taken,
            ts_event=pending.ts,
        )
        if taken:
            self._submit(
                pending.side,
                pending.qty,
                pending.price,
                Purpose.ENTRY,
                pending.ts,
                correlation_id=pending.correlation_id,
            )
        else:
            self._transition(fsm.EntryDenied(reason="model_filter"), pending.ts, now, "filtered")

    def _exit(self, reason: str, ts: int, keep: float = 0.0) -> None:
        self._exit_keep = keep
        self._transition(fsm.ExitSignaled(reason=reason), ts, ts, reason)
        self._submit_exit(ts)

    def _policy_exit(self, code: int, ts: int) -> None:
        """An exit policy fired: close the position, or part of it (a ladder step)."""
        reason = EXIT_CODES[code]
        if code != PARTIAL:
            self._exit(reason, ts)
            return
        assert self._exits is not None
        held = abs(self.position_qty)
        qty = round_down(self._entry_qty * self._exits.fraction, self._cfg.qty_step)
        if qty <= 0.0:
            self._log.info("partial exit skipped", reason="below qty_step")
            return
        keep = round(held - qty, 12)
        if keep < self._cfg.qty_step:  # the step would leave less than a lot: close all
            self._exits.on_flat()
            keep = 0.0
        self._exit(reason, ts, keep)

    def _submit_exit(self, ts: int) -> None:
        self._last_exit_ts = ts
        side = Side.SELL if self.position_qty > 0 else Side.BUY
        price = self.strategy.last_bid if side is Side.SELL else self.strategy.last_ask
        if not price > 0.0 and self._entry_qty:
            # No quote seen yet (a position adopted at a live restart, closed before the
            # strategy's first quote): the entry's price is the reference.
            price = self._entry_cost / self._entry_qty
        qty = round(abs(self.position_qty) - self._exit_keep, 12)
        self._submit(side, qty, float(price), Purpose.EXIT, ts)

    def retry_exit(self, now: int) -> None:
        """Send the exit again if it was refused and the retry interval has passed; while
        flattening, exit a held position now. In quoting mode: while trading is not
        active (or flattening), pull the quotes; while flattening, close the inventory."""
        if self._quoting:
            self._quote_guard(now)
            return
        if self._closed_outside(now):
            return
        if (
            self._flatten
            and self.position.state is fsm.PositionState.IN_POSITION
            and self._live_order is None
            and self.position_qty != 0.0
            and self._trading_state != fsm.TradingState.HALTED.value
        ):
            self._log.warning("flattening", position_qty=self.position_qty)
            self._exit("flatten", now)
            return
        if (
            self.position.state is fsm.PositionState.EXITING
            and self._live_order is None
            and self.position_qty != 0.0
            # Spaced out: live steps come every few ms, and a denied exit retried at each
            # would only be denied again (order rate) and flood the journal.
            and now - self._last_exit_ts >= self._cfg.exit_retry_ms * 1_000_000
            # While the account is halted every order is denied: the exit waits for the
            # first step after the halt ends instead of being denied (and journaled)
            # every retry interval.
            and self._trading_state != fsm.TradingState.HALTED.value
        ):
            self._log.info("retrying exit", position_qty=self.position_qty)
            self._submit_exit(now)

    def expire_entry(self, now: int) -> None:
        """Paper and live: cancel the limit entry in flight once it has been open
        ``strategy.entry_timeout_ms`` (the replay driver keeps that timer itself, in
        market time). The cancel's answer ends the entry as any cancel does (IDLE, or
        held with what of it filled)."""
        order = self._live_order
        timeout_ns = self._cfg.entry_timeout_ms * 1_000_000
        if (
            timeout_ns <= 0
            or self._quoting
            or order is None
            or order.purpose is not Purpose.ENTRY
            or order.order_type == "MARKET"
            or order.client_order_id == self._timed_out
            or now - order.ts_event < timeout_ns
        ):
            return
        self._timed_out = order.client_order_id
        self._commands.append(CancelOrder.of(order, "entry_timeout", now, self._next_seq()))

    def _closed_outside(self, now: int) -> bool:
        """Go flat when the position was closed by an order the engine did not send
        (live: the protective stop resting on the exchange triggered; its fills reach
        the ledger and the journal as ``FillRecovered``), instead of sending an exit of
        nothing. True when it did."""
        state = self.position.state
        if (
            state not in (fsm.PositionState.IN_POSITION, fsm.PositionState.EXITING)
            or self._live_order is not None
            or self.position_qty != 0.0
        ):
            return False
        self._log.warning("position closed outside the engine", reason="protective_stop")
        if state is fsm.PositionState.IN_POSITION:
            self._transition(
                fsm.ExitSignaled(reason="protective_stop"), now, now, "protective_stop"
            )
        self._exit_keep = 0.0
        if self._exits is not None:
            self._exits.on_flat()
        self._transition(fsm.ExitFilled(), now, now, "protective_stop")
        self._entry_cost = self._entry_qty = self._entry_fees = 0.0
        return True

    def _submit(
        self,
        side: Side,
        qty: float,
        price: float,
        purpose: Purpose,
        ts: int,
        *,
        correlation_id: str = "",
    ) -> None:
        self._orders += 1
        spec = MARKET_SPEC
        if purpose is Purpose.ENTRY and not self._market_entries:
            bid, ask = self.strategy.last_bid, self.strategy.last_ask
            spec = self.strategy.entry_order(int(side), bid, ask) or configured_entry_order(
                self._cfg, int(side), bid, ask
            )
        order = SubmitOrder(
            client_order_id=f"tr-{self.symbol}-{self._orders}",
            symbol=self.symbol,
            side=side,
            qty=qty,
            ref_price=price,
            purpose=purpose,
            reduce_only=purpose is Purpose.EXIT,
            order_type=spec.order_type,
            price=spec.price,
            time_in_force=spec.time_in_force,
            ts_event=ts,
            ts_init=ts,
            seq=self._next_seq(),
            correlation_id=correlation_id or f"{self.symbol}-{self._orders}",
        )
        self._live_order = order
        self._send(order, self._sizing_basis if purpose is Purpose.ENTRY else "close position")

    def _send(self, order: SubmitOrder, sizing: str) -> None:
        """Hand ``order`` to execution (via risk) and journal and log it."""
        self._commands.append(order)
        self._records.append(order)
        self._log.info(
            "order intent",
            client_order_id=order.client_order_id,
            side=order.side._name_,
            qty=order.qty,
            ref_price=order.ref_price,
            purpose=order.purpose._value_,
            sizing=sizing,
            ts_event=order.ts_event,
        )

    # -- reports ------------------------------------------------------------------

    def _is_live(self, event: OrderEvent) -> bool:
        live = self._live_order
        return live is not None and live.client_order_id == event.client_order_id

    def _on_denied(self, event: OrderEvent, now: int) -> None:
        assert isinstance(event, OrderDenied)
        self._live_order = None
        if event.purpose is Purpose.ENTRY:
            self._transition(fsm.EntryDenied(reason=event.reason), event.ts_event, now, "denied")
        else:
            self._transition(fsm.ExitRejected(reason=event.reason), event.ts_event, now, "denied")

    def _on_submitted(self, event: OrderEvent, now: int) -> None:
        if event.purpose is Purpose.ENTRY:
            self._transition(fsm.EntrySubmitted(), event.ts_event, now, "submitted")
        else:
            self._transition(fsm.ExitSubmitted(), event.ts_event, now, "submitted")

    def _on_accepted(self, event: OrderEvent, now: int) -> None:
        self._log.debug("order accepted", client_order_id=event.client_order_id)

    def _on_filled(self, event: OrderEvent, now: int) -> None:
        assert isinstance(event, OrderFilled)
        self._unapplied -= int(event.side) * event.last_qty  # position_qty is now after it
        complete = event.cum_qty >= event.order_qty
        if complete and self._is_live(event):
            self._live_order = None
        if event.purpose is Purpose.ENTRY:
            self._entry_cost += event.last_qty * event.last_price
            self._entry_qty += event.last_qty
            self._entry_fees += event.fee
            if complete:
                self._hold(event.ts_init)
                self._transition(fsm.EntryFilled(), event.ts_event, now, "filled")
            else:
                self._transition(fsm.EntryPartiallyFilled(), event.ts_event, now, "partial_fill")
        elif complete and self.position_qty == 0.0:
            self._exit_keep = 0.0
            if self._exits is not None:
                self._exits.on_flat()
            self._transition(fsm.ExitFilled(), event.ts_event, now, "filled")
            self._record_trade(event)
            self._entry_cost = self._entry_qty = self._entry_fees = 0.0
        elif complete and self._exit_keep > 0.0 and self._is_reduced():
            self._exit_keep = 0.0
            self._transition(fsm.ExitReduced(), event.ts_event, now, "reduced")
        else:
            self._transition(fsm.ExitPartiallyFilled(), event.ts_event, now, "partial_fill")

    def _record_trade(self, exit_fill: OrderFilled) -> None:
        """A closed trade's return on its entry notional, for Kelly sizing."""
        if self._entry_qty <= 0.0:
            return
        entry = self._entry_cost / self._entry_qty
        side = 1.0 if exit_fill.side is Side.SELL else -1.0  # selling closes a long
        self._trade_returns.append(side * (exit_fill.last_price - entry) / entry)
        if self._filter is not None:
            net = side * (exit_fill.last_price - entry) * self._entry_qty
            self._filter.record_outcome(net - self._entry_fees - exit_fill.fee > 0.0)

    def _on_failed(self, event: OrderEvent, now: int) -> None:
        assert isinstance(event, OrderRejected | OrderExpired | OrderCanceled)
        if self._is_live(event):
            self._live_order = None
        trigger = {OrderRejected: "rejected", OrderExpired: "expired", OrderCanceled: "canceled"}[
            type(event)
        ]
        if event.purpose is Purpose.EXIT:
            self._transition(fsm.ExitRejected(reason=event.reason), event.ts_event, now, trigger)
        elif self.position_qty != 0.0:
            # Part of the entry filled before the rest failed: hold what we have.
            self._hold(event.ts_init)
            self._transition(fsm.EntryFilled(), event.ts_event, now, trigger)
        else:
            self._transition(fsm.EntryFailed(reason=event.reason), event.ts_event, now, trigger)

    def _is_reduced(self) -> bool:
        """Whether a partial exit's order left the position at what it was to keep."""
        return abs(abs(self.position_qty) - self._exit_keep) < 1e-9 * max(1.0, self._exit_keep)

    def _hold(self, ts: int) -> None:
        """Hold the position from ``ts`` (the clock of the ticks: the hold timer's)."""
        side = 1 if self.position_qty > 0 else -1
        price = self._entry_cost / self._entry_qty
        self.strategy.on_entry_filled(side, price, ts)
        if self._exits is not None:
            self._exits.on_entry(side, price, ts, self.strategy.atr)

    # -- quoting mode -------------------------------------------------------------

    def _requote(self, ts: int) -> None:
        """The kernel asked for a requote: place, amend or cancel each side so that the
        working quotes are the strategy's (a side with a command unanswered waits)."""
        strategy = self.strategy
        assert isinstance(strategy, QuotingStrategy)
        bid_px, bid_qty, ask_px, ask_qty = strategy.quotes()
        if self._trading_state != fsm.TradingState.ACTIVE.value or self._flatten:
            bid_px = ask_px = math.nan  # and ask again only after the retry interval
            self._quiet_until = ts + self._cfg.exit_retry_ms * 1_000_000
        for side, px, qty in ((Side.BUY, bid_px, bid_qty), (Side.SELL, ask_px, ask_qty)):
            q = self._quotes[side]
            if q.pending:
                continue
            if q.order is None:
                if px == px and qty > 0.0:
                    self._quote_new(side, px, qty, ts)
            elif px != px:
                self._quote_cancel(side, "unquoted", ts)
            elif px != q.price:
                self._quote_amend(side, px, ts)
        self._tell_working()

    def _quote_new(self, side: Side, price: float, qty: float, ts: int) -> None:
        self._orders += 1
        order = SubmitOrder(
            client_order_id=f"tr-{self.symbol}-{self._orders}",
            symbol=self.symbol,
            side=side,
            qty=qty,
            ref_price=price,
            purpose=Purpose.ENTRY,  # a quote may open or reduce: never reduce-only
            reduce_only=False,
            order_type="LIMIT",
            price=price,
            time_in_force="GTX",
            ts_event=ts,
            ts_init=ts,
            seq=self._next_seq(),
            correlation_id=f"{self.symbol}-q{self._orders}",
        )
        self._quotes[side] = _Quote(order=order, price=price, since=ts, pending="new")
        self._send(order, "quote")

    def _quote_amend(self, side: Side, price: float, ts: int) -> None:
        q = self._quotes[side]
        assert q.order is not None
        q.pending = "amend"
        self._commands.append(
            ReplaceOrder(
                client_order_id=q.order.client_order_id,
                symbol=self.symbol,
                side=side,
                purpose=q.order.purpose,
                qty=q.order.qty,  # the whole order's: what has filled stays filled
                price=price,
                ts_event=ts,
                ts_init=ts,
                seq=self._next_seq(),
                correlation_id=q.order.correlation_id,
            )
        )

    def _quote_cancel(self, side: Side, reason: str, ts: int) -> None:
        q = self._quotes[side]
        assert q.order is not None
        q.pending = "cancel"
        self._commands.append(CancelOrder.of(q.order, reason, ts, self._next_seq()))

    def _quote_guard(self, now: int) -> None:
        """While trading is not active (or flattening) no quote rests; while flattening
        (and not halted) the inventory is closed."""
        state = self._trading_state
        if state == fsm.TradingState.ACTIVE.value and not self._flatten:
            return
        for side, q in self._quotes.items():
            if q.order is not None and not q.pending:
                self._quote_cancel(side, f"trading_{state.lower()}", now)
        if self._flatten and state != fsm.TradingState.HALTED.value:
            self._close_inventory("flatten", now)
        self._tell_working()

    def _close_inventory(self, reason: str, ts: int) -> None:
        """Pull both quotes and close the inventory with a reduce-only market order."""
        qty = self.position_qty
        if qty == 0.0 or self._live_order is not None:
            return
        for side, q in self._quotes.items():
            if q.order is not None and not q.pending:
                self._quote_cancel(side, reason, ts)
        self._log.info("closing inventory", reason=reason, position_qty=qty)
        side = Side.SELL if qty > 0 else Side.BUY
        price = self.strategy.last_bid if side is Side.SELL else self.strategy.last_ask
        self._sizing_basis = reason
        self._submit(side, abs(qty), float(price), Purpose.EXIT, ts)
        self._tell_working()

    def _side_of(self, client_order_id: str) -> Side | None:
        for side, q in self._quotes.items():
            if q.order is not None and q.order.client_order_id == client_order_id:
                return side
        return None

    def _on_quote_event(self, event: OrderEvent, now: int) -> None:
        """An execution report in quoting mode: the inventory from fills, each side's
        quote from its order's events."""
        if isinstance(event, OrderFilled):
            signed = int(event.side) * event.last_qty
            self._unapplied -= signed
            self.inventory.apply(
                signed, event.last_price, event.fee, event.liquidity, event.ts_init
            )
            strategy = self.strategy
            assert isinstance(strategy, QuotingStrategy)
            strategy.on_inventory(self.inventory.qty, self.inventory.since)
        side = self._side_of(event.client_order_id)
        if side is None:  # the inventory's close
            if not self._is_live(event):
                return
            if isinstance(event, OrderRejected | OrderDenied | OrderCanceled | OrderExpired):
                self._live_order = None
                self._quiet_until = event.ts_event + self._cfg.exit_retry_ms * 1_000_000
            elif isinstance(event, OrderFilled) and event.cum_qty >= event.order_qty:
                self._live_order = None
            self._tell_working()
            return
        q = self._quotes[side]
        if isinstance(event, OrderAccepted):
            if q.pending == "new":
                q.pending = ""
        elif isinstance(event, OrderReplaced):
            q.price = event.price
            q.since = event.ts_event
            q.pending = ""
        elif isinstance(event, OrderFilled):
            if event.cum_qty >= event.order_qty:
                self._quotes[side] = _Quote()
        elif isinstance(event, OrderRejected | OrderDenied | OrderCanceled | OrderExpired):
            if isinstance(event, OrderRejected | OrderDenied) or (
                isinstance(event, OrderCanceled) and q.pending != "cancel"
            ):  # refused, or cancelled by the venue or risk: quiet for a while
                self._quiet_until = event.ts_event + self._cfg.exit_retry_ms * 1_000_000
            self._quotes[side] = _Quote()
        self._tell_working()

    def _tell_working(self) -> None:
        strategy = self.strategy
        assert isinstance(strategy, QuotingStrategy)
        bid, ask = self._quotes[Side.BUY], self._quotes[Side.SELL]
        strategy.on_working(
            bid.price if bid.order is not None else math.nan,
            ask.price if ask.order is not None else math.nan,
            bid.since,
            ask.since,
            self._quiet_until,
        )

    # -- bookkeeping --------------------------------------------------------------

    def defer_transitions(self) -> None:
        """From now on keep each position transition's record as its fields until
        :meth:`deferred_transitions` (the inline path: after the step's orders are
        written; the journal orders a step's records by :func:`record_key`, so
        where a record joins them does not change the journal)."""
        if self._deferred is None:
            self._deferred = []

    def deferred_transitions(self) -> list[PositionChanged]:
        """The records of the transitions taken since the last call (with
        :meth:`defer_transitions`; else none), with the fields they had then."""
        deferred = self._deferred
        if not deferred:
            return []
        self._deferred = []
        return [self._position_changed(*fields) for fields in deferred]

    def _position_changed(
        self,
        source: str,
        target: str,
        trigger: str,
        position_qty: float,
        ts_event: int,
        ts_init: int,
        seq: int,
        correlation_id: str,
    ) -> PositionChanged:
        return PositionChanged(
            symbol=self.symbol,
            source=source,
            target=target,
            trigger=trigger,
            position_qty=position_qty,
            ts_event=ts_event,
            ts_init=ts_init,
            seq=seq,
            correlation_id=correlation_id,
        )

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _transition(self, event: object, ts_event: int, ts_init: int, trigger: str) -> None:
        t = self.position.handle(event)
        self._record_transition(
            t.source, t.target, trigger, ts_event, ts_init, f"{self.symbol}-{self._orders}"
        )

    def _record_transition(
        self,
        source: fsm.PositionState,
        target: fsm.PositionState,
        trigger: str,
        ts_event: int,
        ts_init: int,
        correlation_id: str,
    ) -> None:
        """Journal, count and log a position transition."""
        # ``_value_``, not ``value``: the property costs a descriptor call per use, and
        # this runs between a tick and its order.
        src, dst, qty = source._value_, target._value_, self.position_qty
        fields = (src, dst, trigger, qty, ts_event, ts_init, self._next_seq(), correlation_id)
        if self._deferred is not None:
            self._deferred.append(fields)
        else:
            self._records.append(self._position_changed(*fields))
        self.transitions[dst] = self.transitions.get(dst, 0) + 1
        self._log.info(
            "position transition",
            **{"from": src, "to": dst},
            trigger=trigger,
            position_qty=qty,
            ts_event=ts_event,
        )
