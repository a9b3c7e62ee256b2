"""Protective stops resting on the exchange while a live position is held.

The symbol core checks its ``[exits]`` levels tick by tick (:mod:`engine.strategy._exits`);
that protects a position only while the engine runs and reaches the exchange. In
live mode the venue also rests a STOP_MARKET ``closePosition`` order (Binance's
algo order API) at the position's stop level, so a crash, a cut connection or a
halt does not leave it unprotected:

* a position opens (the ledger goes from flat to long or short): a stop is placed
  at the tightest of the fixed stop, the ATR stop and the trailing stop
  (:meth:`ExitPolicy.levels`, from the ledger's entry price);
* the trailing level moves by more than ``move_bps`` towards the price: a new
  stop is placed at the new level, then the old one is cancelled (never a moment
  without one; two ``closePosition`` stops close one position once);
* the position closes (any way): the stop is cancelled; one that triggered has
  closed it itself (its fills reach the ledger like any fill);
* at a restart, open protective orders (ids starting ``ps-``) are adopted when
  their symbol holds a position on their closing side, and cancelled otherwise.

:class:`ProtectiveStops` is the synchronous core (positions and prices in, the
requests to make out); :class:`~engine.venues.binance.BinanceVenue` does the
I/O. ATR levels need the strategy's ATR, which the venue does not see. When
``[exits]`` gives no level the venue can use (no ``stop_bps`` or ``trail_bps``:
the default config, a strategy with its own stops only, ATR stops alone) an
emergency stop rests ``fallback_bps`` from the entry (``venue.protective_fallback_bps``,
100 by default; 0: none rests then), so that a live position is never left
unprotected; it does not trail.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import attrs

from ..._config import ExitsSection
from ...messages import Side, Ticks
from ...strategy._exits import ExitPolicy
from ._ids import _base36

PROTECTIVE_PREFIX = "ps-"
"""Client algo ids of protective stops start with this (``ps-<SYMBOL>-<n>``)."""


def is_protective_id(client_algo_id: str) -> bool:
    """Whether a client (algo) order id is a protective stop's."""
    return client_algo_id.startswith(PROTECTIVE_PREFIX)


@attrs.frozen(kw_only=True)
class PlaceStop:
    """Place a STOP_MARKET ``closePosition`` order closing ``symbol``'s position."""

    symbol: str
    side: Side  # the closing side
    trigger: float
    client_algo_id: str


@attrs.frozen(kw_only=True)
class CancelStop:
    """Cancel the protective stop ``client_algo_id``."""

    symbol: str
    client_algo_id: str
    reason: str


StopAction = PlaceStop | CancelStop


@attrs.define
class _Resting:
    client_algo_id: str
    side: Side
    trigger: float


@attrs.define
class _Symbol:
    policy: ExitPolicy
    held: int = 0  # the position's side as last seen: 1, -1 or 0
    entry: float = math.nan  # the entry price when the position opened (or was adopted)
    resting: _Resting | None = None
    pending: _Resting | None = None  # placed, not yet confirmed
    # Placed, not yet confirmed, and a newer one placed since: kept (as the resting
    # one) if confirmed while none rests, so that a move never leaves a gap.
    superseded: dict[str, _Resting] = attrs.Factory(dict)
    failed_level: float = math.nan  # a placement refused at this level is not retried


class ProtectiveStops:
    """Which protective stops should rest on the exchange, step by step.

    Args:
        exits: the ``[exits]`` section (its stops give the levels).
        move_bps: move a stop only when its level changed by more than this
            (each move costs two requests).
        now_ns: the id source's clock (ids must not repeat across restarts).
        fallback_bps: where the stop rests, from the entry, when ``exits`` gives no
            level (0: none rests then).
    """

    def __init__(
        self,
        exits: ExitsSection,
        *,
        move_bps: float,
        now_ns: Callable[[], int],
        fallback_bps: float = 0.0,
    ) -> None:
        self._exits = exits
        self._move = move_bps / 1e4
        self._fallback = fallback_bps / 1e4
        self._now_ns = now_ns
        self._symbols: dict[str, _Symbol] = {}
        self._ids = itertools.count()
        # The exit kernels now, at start-up: loaded (or compiled) by the first entry
        # they were a pause on the order path and 0.3-0.5 MB of numba/LLVM memory
        # that appeared mid-run (the soak, --mode live --memray).
        ExitPolicy.warm_up()

    def _state(self, symbol: str) -> _Symbol:
        state = self._symbols.get(symbol)
        if state is None:
            state = self._symbols[symbol] = _Symbol(policy=ExitPolicy(self._exits))
        return state

    def resting(self, symbol: str) -> tuple[str, float] | None:
        """The confirmed protective stop of ``symbol`` (id, trigger), if any."""
        rest = self._state(symbol).resting
        return None if rest is None else (rest.client_algo_id, rest.trigger)

    def adopt(self, symbol: str, client_algo_id: str, side: Side, trigger: float) -> None:
        """A stop found at the exchange at start-up protects ``symbol``'s position."""
        self._state(symbol).resting = _Resting(client_algo_id, side, trigger)

    def on_step(
        self, symbol: str, qty: float, entry: float, ticks: Ticks | None, now: int
    ) -> list[StopAction]:
        """The step's position (signed ``qty``, ``entry`` price) and market data.

        Returns:
            The requests to make, in order.
        """
        s = self._state(symbol)
        side = (qty > 0) - (qty < 0)
        out: list[StopAction] = []
        if side != s.held:
            if s.held:
                s.policy.on_flat()
            for rest in (s.resting, s.pending):
                if rest is not None and (side == 0 or rest.side is not _closing(side)):
                    out.append(CancelStop(symbol=symbol, client_algo_id=rest.client_algo_id,
                                          reason="position closed"))  # fmt: skip
            if s.resting is not None and (side == 0 or s.resting.side is not _closing(side)):
                s.resting = None
            if s.pending is not None and (side == 0 or s.pending.side is not _closing(side)):
                s.pending = None
            s.superseded.clear()  # their confirmations cancel them
            s.failed_level = math.nan
            s.held = side
            s.entry = entry if side else math.nan
            if side:
                s.policy.on_entry(side, entry, now, math.nan)
        if not side:
            return out
        if ticks is not None and len(ticks.ts):
            s.policy.scan(ticks, 0, len(ticks.ts))
        level = self._level(s, side)
        if not math.isfinite(level) or level <= 0.0:
            return out
        if ticks is not None and len(ticks.ts):
            last = float(ticks.bid[-1] if side > 0 else ticks.ask[-1])
            if math.isfinite(last) and (level >= last if side > 0 else level <= last):
                return out  # it would trigger at once: the engine's own exit is due
        current = s.pending or s.resting
        if current is not None:
            tighter = level > current.trigger if side > 0 else level < current.trigger
            if not tighter or abs(level - current.trigger) <= self._move * current.trigger:
                return out
        elif s.failed_level == level:
            return out
        new = _Resting(self._new_id(symbol), _closing(side), level)
        out.append(PlaceStop(symbol=symbol, side=new.side, trigger=level,
                             client_algo_id=new.client_algo_id))  # fmt: skip
        if s.pending is not None:
            # Superseded before it was confirmed: cancelled once something else rests.
            s.superseded[s.pending.client_algo_id] = s.pending
        s.pending = new
        return out

    def on_placed(self, symbol: str, client_algo_id: str) -> list[StopAction]:
        """The exchange took a stop: it replaces the one resting (cancel that)."""
        s = self._state(symbol)
        superseded = s.superseded.pop(client_algo_id, None)
        if superseded is not None and s.resting is None:
            # A newer one is on its way but none rests yet: this one protects till then.
            s.resting = superseded
            return []
        if s.pending is None or s.pending.client_algo_id != client_algo_id:
            # Superseded or no longer wanted: cancel it.
            return [CancelStop(symbol=symbol, client_algo_id=client_algo_id, reason="stale")]
        old, s.resting, s.pending = s.resting, s.pending, None
        if old is None:
            return []
        return [CancelStop(symbol=symbol, client_algo_id=old.client_algo_id, reason="moved")]

    def on_refused(self, symbol: str, client_algo_id: str) -> None:
        """The exchange refused a stop: not retried at the same level."""
        s = self._state(symbol)
        s.superseded.pop(client_algo_id, None)
        if s.pending is not None and s.pending.client_algo_id == client_algo_id:
            s.failed_level = s.pending.trigger
            s.pending = None

    def on_gone(self, symbol: str, client_algo_id: str) -> None:
        """A stop ended at the exchange (triggered, cancelled, expired)."""
        s = self._state(symbol)
        if s.resting is not None and s.resting.client_algo_id == client_algo_id:
            s.resting = None

    def _level(self, s: _Symbol, side: int) -> float:
        levels = s.policy.levels()
        found = [
            v
            for k in ("stop_loss", "atr_stop", "trailing_stop")
            if math.isfinite(v := levels[k]) and v > 0.0
        ]
        if not found:
            if not self._fallback:
                return math.nan
            return s.entry * (1.0 - side * self._fallback)
        return max(found) if side > 0 else min(found)

    def _new_id(self, symbol: str) -> str:
        return f"{PROTECTIVE_PREFIX}{symbol}-{_base36(self._now_ns() + next(self._ids))}"


def _closing(side: int) -> Side:
    return Side.SELL if side > 0 else Side.BUY
