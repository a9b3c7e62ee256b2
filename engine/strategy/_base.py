"""The strategy interface the symbol core drives.

A strategy is two things: a numba kernel that scans a range of a symbol's market
columns and returns at the first event that needs Python (a signal) or at the end of
the range the driver gives (the horizon), and Python hooks the core calls around it
(an entry filled, the position closed). The core owns the position machine, sizing,
orders and the journal; the strategy only says *when*: an entry (long or short) or
an exit with a reason. The same strategy object runs in replay (the deterministic
driver hands it long stretches of ticks) and in paper and live (a step's batch).

A strategy is chosen by ``strategy.kind``; :data:`STRATEGIES` maps each kind to its
class. ``ema_cross`` (:mod:`engine.strategy._ema_cross`) is the first implementation.
"""

from __future__ import annotations

import abc
import enum
from typing import ClassVar

from .._config import SizingSection, StrategySection
from ..messages import Ticks


class Signal(enum.IntEnum):
    """What a strategy's scan stopped for."""

    NONE = 0
    ENTER_LONG = 1
    ENTER_SHORT = 2
    EXIT_CROSS = 3
    EXIT_STOP = 4
    EXIT_TAKE_PROFIT = 5
    EXIT_TIME = 6


class Mode(enum.IntEnum):
    """What the kernel looks for; set by the core from the position machine."""

    FLAT = 0  # IDLE: look for entries
    HOLDING = 1  # IN_POSITION: look for exits
    WAITING = 2  # SIGNALED / ORDERING / EXITING: only update indicators


EXIT_REASONS: dict[int, str] = {
    Signal.EXIT_CROSS: "cross",
    Signal.EXIT_STOP: "stop_loss",
    Signal.EXIT_TAKE_PROFIT: "take_profit",
    Signal.EXIT_TIME: "time_limit",
}


class Strategy(abc.ABC):
    """One symbol's strategy state and kernel.

    Args:
        config: the ``[strategy]`` section (its parameters are checked with the config).
        sizing: the ``[sizing]`` section (the ATR period the sizing reads).
    """

    kind: ClassVar[str]

    @abc.abstractmethod
    def __init__(self, config: StrategySection, sizing: SizingSection) -> None: ...

    @abc.abstractmethod
    def scan(self, ticks: Ticks, start: int, stop: int, mode: Mode) -> tuple[int, int]:
        """Advance over events ``start..stop`` (exclusive) of ``ticks`` in ``mode``.

        Returns:
            ``(index, signal)``: the event that raised a :class:`Signal` (the state
            includes it; resume at ``index + 1``), or ``(stop, Signal.NONE)``.
        """

    @property
    @abc.abstractmethod
    def last_bid(self) -> float:
        """The latest bid the kernel saw (an entry's or exit's reference price)."""

    @property
    @abc.abstractmethod
    def last_ask(self) -> float:
        """The latest ask the kernel saw."""

    @property
    def atr(self) -> float:
        """The strategy's ATR, for ATR sizing (NaN: none)."""
        return float("nan")

    @property
    def strength(self) -> float:
        """The latest signal's strength in [0, 1], for sizing by strength (1: full)."""
        return 1.0

    @abc.abstractmethod
    def on_entry_filled(self, side: int, entry_price: float, ts: int) -> None:
        """The position is held from ``ts`` (the ticks' clock) at ``entry_price``;
        ``side`` is +1 long, -1 short. Exits are looked for from the next tick on."""

    def exit_reason(self, signal: int) -> str:
        """The journal's name for an exit signal."""
        return EXIT_REASONS[signal]

    @classmethod
    @abc.abstractmethod
    def warm_up(cls) -> None:
        """Load (or compile) the kernel now, not at the first market batch."""


def strategy_class(kind: str) -> type[Strategy]:
    """The class of ``strategy.kind`` (the config checks the kind exists)."""
    from ._ema_cross import EmaCross  # the registry's implementations

    strategies: dict[str, type[Strategy]] = {EmaCross.kind: EmaCross}
    return strategies[kind]


def make_strategy(config: StrategySection, sizing: SizingSection) -> Strategy:
    """A new strategy of ``config.kind`` for one symbol."""
    return strategy_class(config.kind)(config, sizing)
