"""Protective orders resting on the exchange while a live position is held.

The symbol core checks its ``[exits]`` levels tick by tick (:mod:`engine.strategy._exits`);
that protects a position only while the engine runs and reaches the exchange. In
live mode the venue also rests, on Binance's algo order API, a STOP_MARKET
``closePosition`` order at the position's stop level and a TAKE_PROFIT_MARKET
``closePosition`` order at its final target, so a crash, a cut connection or a
halt does not leave it unprotected (nor let it run past its target):

* a position opens (the ledger goes from flat to long or short): a stop is placed
  at the tightest of the fixed stop, the ATR stop and the trailing stop
  (:meth:`ExitPolicy.levels`, from the ledger's entry price), and a target at
  the final target (:meth:`ProtectiveStops.final_target`: the level at which the
  engine's exits close what is left; none configured, none rests);
* a level moves by more than ``move_bps`` (the trailing stop towards the price;
  the target either way): a new order is placed at the new level, then the old
  one is cancelled (never a moment without one; two ``closePosition`` orders
  close one position once);
* the position closes (any way: the engine's exit, the stop or the target at the
  exchange): what still rests is cancelled; one that triggered has closed the
  position itself (its fills reach the ledger like any fill);
* at a restart, open protective orders (ids starting ``ps-``: stops, ``pt-``:
  targets) are adopted when their symbol holds a position on their closing side,
  one of each kind, and cancelled otherwise.

``closePosition`` closes the whole position, whatever its size: with a partial
take-profit ladder only the *final* target may rest (a rung's order would close
the rest with it). That is ``target_bps`` or, when the ladder's fractions sum to 1
(its last rung closes what is left), the last rung (``partial_r[-1]`` R from the
entry; R from the fixed stop, as the venue does not see the strategy's ATR), the
nearer of the two; a ladder summing to less than 1 leaves the rest to the other
policies, so only ``target_bps`` counts then.

:class:`ProtectiveStops` is the synchronous core (positions and prices in, the
requests to make out); :class:`~engine.venues.binance.BinanceVenue` does the
I/O. ATR levels need the strategy's ATR, which the venue does not see. When
``[exits]`` gives no stop level the venue can use (no ``stop_bps`` or
``trail_bps``: the default config, a strategy with its own stops only, ATR stops
alone) an emergency stop rests ``fallback_bps`` from the entry
(``venue.protective_fallback_bps``, 100 by default; 0: none rests then), so that a
live position is never left unprotected; it does not trail.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Literal

import attrs

from ..._config import ExitsSection
from ...messages import Side, Ticks
from ...strategy._exits import ExitPolicy, R
from ._ids import _base36
from ._templates import OrderType

PROTECTIVE_PREFIX = "ps-"
"""Client algo ids of protective stops start with this (``ps-<SYMBOL>-<n>``)."""
TARGET_PREFIX = "pt-"
"""Client algo ids of protective targets start with this (``pt-<SYMBOL>-<n>``)."""

Kind = Literal["stop", "target"]
KINDS: tuple[Kind, ...] = ("stop", "target")
_PREFIXES: dict[Kind, str] = {"stop": PROTECTIVE_PREFIX, "target": TARGET_PREFIX}
_ORDER_TYPES: dict[Kind, OrderType] = {
    "stop": OrderType.STOP_MARKET,
    "target": OrderType.TAKE_PROFIT_MARKET,
}


def is_protective_id(client_algo_id: str) -> bool:
    """Whether a client (algo) order id is a protective order's (stop or target)."""
    return client_algo_id.startswith((PROTECTIVE_PREFIX, TARGET_PREFIX))


def protective_kind(client_algo_id: str) -> Kind:
    """``"target"`` for a protective target's id, else ``"stop"``."""
    return "target" if client_algo_id.startswith(TARGET_PREFIX) else "stop"


@attrs.frozen(kw_only=True)
class PlaceStop:
    """Place a STOP_MARKET (``kind`` ``"stop"``) or TAKE_PROFIT_MARKET (``"target"``)
    ``closePosition`` order closing ``symbol``'s position."""

    symbol: str
    side: Side  # the closing side
    trigger: float
    client_algo_id: str
    kind: Kind = attrs.field(default="stop", validator=attrs.validators.in_(KINDS))

    @property
    def order_type(self) -> OrderType:
        """The algo order's type."""
        return _ORDER_TYPES[self.kind]


@attrs.frozen(kw_only=True)
class CancelStop:
    """Cancel the protective order ``client_algo_id``."""

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
class _Slot:
    """One kind of protective order of one symbol."""

    resting: _Resting | None = None
    pending: _Resting | None = None  # placed, not yet confirmed
    # Placed, not yet confirmed, and a newer one placed since: kept (as the resting
    # one) if confirmed while none rests, so that a move never leaves a gap.
    superseded: dict[str, _Resting] = attrs.Factory(dict)
    failed_level: float = math.nan  # a placement refused at this level is not retried


@attrs.define
class _Symbol:
    policy: ExitPolicy
    held: int = 0  # the position's side as last seen: 1, -1 or 0
    entry: float = math.nan  # the entry price when the position opened (or was adopted)
    slots: dict[Kind, _Slot] = attrs.Factory(lambda: {k: _Slot() for k in KINDS})


class ProtectiveStops:
    """Which protective orders should rest on the exchange, step by step.

    Args:
        exits: the ``[exits]`` section (its stops and targets give the levels).
        move_bps: move an order only when its level changed by more than this
            (each move costs two requests).
        now_ns: the id source's clock (ids must not repeat across restarts).
        fallback_bps: where the stop rests, from the entry, when ``exits`` gives no
            stop level (0: none rests then).
        stop: rest protective stops.
        target: rest protective targets (at :meth:`final_target`).
    """

    def __init__(
        self,
        exits: ExitsSection,
        *,
        move_bps: float,
        now_ns: Callable[[], int],
        fallback_bps: float = 0.0,
        stop: bool = True,
        target: bool = True,
    ) -> None:
        self._exits = exits
        self._move = move_bps / 1e4
        self._fallback = fallback_bps / 1e4
        self._now_ns = now_ns
        self._kinds: set[Kind] = set()
        if stop and _has_stop(exits, fallback_bps):
            self._kinds.add("stop")
        if target and _has_target(exits):
            self._kinds.add("target")
        # The ladder closes what is left at its last rung only if its fractions sum to 1.
        self._ladder_r = exits.partial_r[-1] if _ladder_closes(exits) else math.nan
        self._symbols: dict[str, _Symbol] = {}
        self._ids = itertools.count()
        # The exit kernels now, at start-up: loaded (or compiled) by the first entry
        # they were a pause on the order path and 0.3-0.5 MB of numba/LLVM memory
        # that appeared mid-run (the soak, --mode live --memray).
        ExitPolicy.warm_up()

    @staticmethod
    def wanted(
        exits: ExitsSection, *, stop: bool = True, target: bool = True, fallback_bps: float = 0.0
    ) -> bool:
        """Whether any protective order can ever rest under this configuration."""
        return (stop and _has_stop(exits, fallback_bps)) or (target and _has_target(exits))

    def adopts(self, kind: Kind) -> bool:
        """Whether a start keeps an order of ``kind`` it finds protecting a held
        position: a stop always (it protects till the position closes, then it is
        cancelled), a target only while targets rest (one left by a run with other
        settings would close the position early); the others are cancelled."""
        return kind == "stop" or kind in self._kinds

    def _state(self, symbol: str) -> _Symbol:
        state = self._symbols.get(symbol)
        if state is None:
            state = self._symbols[symbol] = _Symbol(policy=ExitPolicy(self._exits))
        return state

    def resting(self, symbol: str, kind: Kind = "stop") -> tuple[str, float] | None:
        """The confirmed protective order of ``kind`` of ``symbol`` (id, trigger), if any."""
        rest = self._state(symbol).slots[kind].resting
        return None if rest is None else (rest.client_algo_id, rest.trigger)

    def adopt(self, symbol: str, client_algo_id: str, side: Side, trigger: float) -> None:
        """An order found at the exchange at start-up protects ``symbol``'s position
        (a stop or a target, by its id)."""
        slot = self._state(symbol).slots[protective_kind(client_algo_id)]
        slot.resting = _Resting(client_algo_id, side, trigger)

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
            for slot in s.slots.values():
                for rest in (slot.resting, slot.pending):
                    if rest is not None and (side == 0 or rest.side is not _closing(side)):
                        out.append(CancelStop(symbol=symbol, client_algo_id=rest.client_algo_id,
                                              reason="position closed"))  # fmt: skip
                if slot.resting is not None and (
                    side == 0 or slot.resting.side is not _closing(side)
                ):
                    slot.resting = None
                if slot.pending is not None and (
                    side == 0 or slot.pending.side is not _closing(side)
                ):
                    slot.pending = None
                slot.superseded.clear()  # their confirmations cancel them
                slot.failed_level = math.nan
            s.held = side
            s.entry = entry if side else math.nan
            if side:
                s.policy.on_entry(side, entry, now, math.nan)
        if not side:
            return out
        if ticks is not None and len(ticks.ts):
            s.policy.scan(ticks, 0, len(ticks.ts))
        last = math.nan
        if ticks is not None and len(ticks.ts):
            last = float(ticks.bid[-1] if side > 0 else ticks.ask[-1])
        for kind in KINDS:
            slot = s.slots[kind]
            if kind not in self._kinds:
                level = math.nan
            elif kind == "stop":
                level = self._level(s, side)
            else:
                level = self.final_target(symbol)
            if not math.isfinite(level) or level <= 0.0:
                continue
            out.extend(self._place(symbol, s, slot, kind, side, level, last))
        return out

    def _place(
        self, symbol: str, s: _Symbol, slot: _Slot, kind: Kind, side: int, level: float,
        last: float,
    ) -> list[StopAction]:  # fmt: skip
        stop = kind == "stop"
        # At or past the last closing price it would trigger at once (Binance refuses
        # it, -2021): the engine's own exit is due.
        if math.isfinite(last) and (
            (level >= last if side > 0 else level <= last)
            if stop
            else (level <= last if side > 0 else level >= last)
        ):
            return []
        current = slot.pending or slot.resting
        if current is not None:
            far = abs(level - current.trigger) > self._move * current.trigger
            tighter = level > current.trigger if side > 0 else level < current.trigger
            # A stop only tightens (it trails); a target follows its level either way.
            if not far or (stop and not tighter):
                return []
        elif slot.failed_level == level:
            return []
        new = _Resting(self._new_id(symbol, kind), _closing(side), level)
        if slot.pending is not None:
            # Superseded before it was confirmed: cancelled once something else rests.
            slot.superseded[slot.pending.client_algo_id] = slot.pending
        slot.pending = new
        return [PlaceStop(symbol=symbol, side=new.side, trigger=level,
                          client_algo_id=new.client_algo_id, kind=kind)]  # fmt: skip

    def on_placed(self, symbol: str, client_algo_id: str) -> list[StopAction]:
        """The exchange took an order: it replaces the one resting (cancel that)."""
        slot = self._state(symbol).slots[protective_kind(client_algo_id)]
        superseded = slot.superseded.pop(client_algo_id, None)
        if superseded is not None and slot.resting is None:
            # A newer one is on its way but none rests yet: this one protects till then.
            slot.resting = superseded
            return []
        if slot.pending is None or slot.pending.client_algo_id != client_algo_id:
            # Superseded or no longer wanted: cancel it.
            return [CancelStop(symbol=symbol, client_algo_id=client_algo_id, reason="stale")]
        old, slot.resting, slot.pending = slot.resting, slot.pending, None
        if old is None:
            return []
        return [CancelStop(symbol=symbol, client_algo_id=old.client_algo_id, reason="moved")]

    def on_refused(self, symbol: str, client_algo_id: str) -> None:
        """The exchange refused an order: not retried at the same level."""
        slot = self._state(symbol).slots[protective_kind(client_algo_id)]
        slot.superseded.pop(client_algo_id, None)
        if slot.pending is not None and slot.pending.client_algo_id == client_algo_id:
            slot.failed_level = slot.pending.trigger
            slot.pending = None

    def on_gone(self, symbol: str, client_algo_id: str) -> None:
        """An order ended at the exchange (triggered, cancelled, expired)."""
        slot = self._state(symbol).slots[protective_kind(client_algo_id)]
        if slot.resting is not None and slot.resting.client_algo_id == client_algo_id:
            slot.resting = None

    def final_target(self, symbol: str) -> float:
        """The level at which the engine's exits close what is left of ``symbol``'s
        position on a gain (NaN: flat, or no target configured): the nearer of
        ``target_bps``'s level and, for a ladder that closes everything, its last rung."""
        s = self._state(symbol)
        if not s.held:
            return math.nan
        found = [v] if math.isfinite(v := s.policy.levels()["take_profit"]) and v > 0 else []
        r = float(s.policy.state[R])
        if math.isfinite(self._ladder_r) and math.isfinite(r) and r > 0.0:
            found.append(s.entry + s.held * self._ladder_r * r)
        if not found:
            return math.nan
        return min(found) if s.held > 0 else max(found)

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

    def _new_id(self, symbol: str, kind: Kind = "stop") -> str:
        return f"{_PREFIXES[kind]}{symbol}-{_base36(self._now_ns() + next(self._ids))}"


def _ladder_closes(exits: ExitsSection) -> bool:
    """Whether the take-profit ladder's last rung closes what is left (its fractions
    sum to 1) at a level the venue knows (R from the fixed stop)."""
    return bool(exits.partial_r and exits.stop_bps) and sum(exits.partial_fraction) >= 1.0 - 1e-9


def _has_stop(exits: ExitsSection, fallback_bps: float) -> bool:
    return bool(exits.stop_bps or exits.trail_bps or fallback_bps)


def _has_target(exits: ExitsSection) -> bool:
    return bool(exits.target_bps) or _ladder_closes(exits)


def _closing(side: int) -> Side:
    return Side.SELL if side > 0 else Side.BUY
