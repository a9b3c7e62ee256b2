"""Multi-timeframe confirmation of entries, for any strategy: ``[strategy.confirm]``.

The symbol core holds one :class:`Confirmation` per symbol when
``strategy.confirm.timeframes_ms`` is set. It feeds the symbol's trades, in order, to
an :class:`~engine.indicators.IndicatorSet` of one bar-fed moving average per
timeframe (``indicator`` of ``period`` closes, ``bar_ns`` = the timeframe): the set's
own bar builder makes the bars (time bars aligned on ``ts // bar_ns``, a bar closing
when the first trade of a later one arrives), so the bars and averages are exactly
those a ``[[strategy.indicators]]`` entry with that ``bar_ns`` would give.

A timeframe's trend is +1 when its last closed bar closed above the average (the
average as of that bar), -1 below, 0 on it. An entry long is confirmed when at least
``min_agree`` trends are +1 (0: every timeframe), short when that many are -1. Until
every timeframe's average exists (``period`` closed bars of the longest timeframe),
``warmup`` decides: ``"block"`` refuses the entry, ``"pass"`` takes it unconfirmed.
Every decision is counted (:attr:`Confirmation.counts`).

Feeding is one njit call per range of events the core scans (O(timeframes) per
trade, nothing allocated); the check runs in Python only at an entry signal. The
trends at a signal depend only on the trades up to and including the signal's event,
so the decision is the same however the events are batched (replay's ``step_ms``,
paper and live batches).

:func:`check_confirm` refuses, at start, a confirmation that could never act: with a
quoting strategy (no entry signals), or in paper and live modes without a trade
stream in ``feeds.streams`` (no bars to build).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._config import Config, ConfirmSection
from .._errors import ConfigError
from ..indicators import IndicatorSet
from ..indicators._set import _B_DONE_BAR, spec, update_trade
from ..messages import Ticks
from ._base import QuotingStrategy

__all__ = ["BLOCKED_DISAGREE", "BLOCKED_WARMUP", "Confirmation", "check_confirm", "feed_trades"]

_TRADE = 2
_CLOSE = _B_DONE_BAR + 3  # the bar builder's last closed bar's close

BLOCKED_DISAGREE = "blocked_disagree"
"""An entry refused: fewer than ``min_agree`` timeframes trend its way."""
BLOCKED_WARMUP = "blocked_warmup"
"""An entry refused while a timeframe's average is still warming up (``warmup = "block"``)."""
PASSED_WARMUP = "passed_warmup"
"""An entry taken unconfirmed while warming up (``warmup = "pass"``)."""
CONFIRMED = "confirmed"
"""An entry taken with enough timeframes agreeing."""


_TRADE_STREAMS = ("aggTrade", "trade")
"""The ``feeds.streams`` that carry trades, from which the confirmation builds its bars."""


def check_confirm(config: Config, strategy: type) -> None:
    """Refuse a ``[strategy.confirm]`` that would be accepted and then do nothing.

    Args:
        config: the whole config (the section, the mode, the feed's streams).
        strategy: the strategy class ``[strategy]`` resolved to.

    Raises:
        ConfigError: naming ``strategy.confirm``: the strategy quotes (a
            :class:`~engine.strategy.QuotingStrategy` has no entry signals to confirm),
            or paper/live mode subscribes to no trade stream (no bars, so every entry
            would be blocked, or passed unconfirmed, for ever).
    """
    if not config.strategy.confirm.enabled:
        return
    where = config.where("strategy.confirm.timeframes_ms")
    if issubclass(strategy, QuotingStrategy):
        raise ConfigError(
            where,
            "strategy.confirm",
            f"{strategy.__name__} is a quoting strategy: it has no entry signals to "
            "confirm (remove [strategy.confirm])",
        )
    streams = config.feeds.streams
    if config.engine.mode != "replay" and not any(s in _TRADE_STREAMS for s in streams):
        raise ConfigError(
            where,
            "strategy.confirm",
            f"builds its bars from trades, but feeds.streams {list(streams)} has no "
            "aggTrade or trade stream",
        )


@njit(cache=True, nogil=True, error_model="numpy")
def feed_trades(
    spec_table: np.ndarray,
    state: np.ndarray,
    bar_ns: np.ndarray,
    bar_state: np.ndarray,
    values: np.ndarray,
    kind: np.ndarray,
    ts: np.ndarray,
    price: np.ndarray,
    qty: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """Feed the trades among events ``start..stop`` to a set of bar-fed indicators.

    The set holds bar-fed indicators only, which ignore the aggressor side (0 here).
    """
    for i in range(start, min(stop, kind.shape[0])):
        if kind[i] == _TRADE:
            update_trade(spec_table, state, bar_ns, bar_state, values, ts[i], price[i], qty[i], 0.0)


class Confirmation:
    """One symbol's confirmation state: the bars' averages, the trends, the counts.

    Args:
        config: the ``[strategy.confirm]`` section (enabled: some timeframe set).
    """

    def __init__(self, config: ConfirmSection) -> None:
        if not config.enabled:
            raise ValueError("strategy.confirm has no timeframes_ms")
        self.timeframes_ms = config.timeframes_ms
        self._need = config.min_agree or len(config.timeframes_ms)
        self._block_warmup = config.warmup == "block"
        # One entry per timeframe, all distinct: bar builder k and value k are timeframe k.
        self._set = IndicatorSet(
            spec(config.indicator, bar_ns=tf * 1_000_000, label=f"tf{tf}", timeperiod=config.period)
            for tf in config.timeframes_ms
        )
        self.counts: dict[str, int] = {}
        """Entries by decision: ``confirmed``, ``passed_warmup``, ``blocked_disagree``,
        ``blocked_warmup`` (only those that happened)."""

    def feed(self, ticks: Ticks, start: int, stop: int) -> None:
        """Consume events ``start..stop`` of ``ticks`` (each event exactly once, in order)."""
        if stop > start:
            feed_trades(
                *self._set.arrays, ticks.kind, ticks.ts, ticks.price, ticks.qty, start, stop
            )

    def trends(self) -> np.ndarray:
        """Each timeframe's trend now: +1 up, -1 down, 0 flat, NaN warming up."""
        ma = self._set.values
        close = self._set.bar_state[:, _CLOSE]
        return np.where(ma == ma, np.sign(close - ma), np.nan)

    def admit(self, side: int) -> str:
        """Decide on an entry (``side`` +1 long, -1 short) as of the events fed so far.

        Returns:
            The decision, counted: :data:`CONFIRMED` or ``"passed_warmup"`` (take it),
            :data:`BLOCKED_DISAGREE` or :data:`BLOCKED_WARMUP` (drop it).
        """
        trends = self.trends()
        if np.isnan(trends).any():
            decision = BLOCKED_WARMUP if self._block_warmup else PASSED_WARMUP
        elif int(np.count_nonzero(trends == float(side))) >= self._need:
            decision = CONFIRMED
        else:
            decision = BLOCKED_DISAGREE
        self.counts[decision] = self.counts.get(decision, 0) + 1
        return decision

    @staticmethod
    def takes(decision: str) -> bool:
        """Whether an entry with ``decision`` goes ahead."""
        return decision in (CONFIRMED, PASSED_WARMUP)
