"""The baseline strategy: EMA crossover on the mid price with an RSI filter.

The mid price is sampled at the close of every ``sample_ms`` bucket (the last mid
seen in the bucket; a bucket with no quote adds no sample). On each sample the
fast and slow EMA and the RSI are updated (kernels from :mod:`engine.indicators`).
Entries (only when the symbol is IDLE): the fast EMA crossing above the slow one
with RSI below ``rsi_long_max`` buys; crossing below with RSI above
``rsi_short_min`` sells short. Exits (only when IN_POSITION), checked on every
quote: stop-loss and take-profit in bps of the entry price (marked at the side
the position would close at), a maximum holding time, and the opposite crossover.
Each bucket is also a bar (high, low and close of the mid) for an ATR, and a
signal's strength is the EMA gap over the ATR (capped at 1), for position sizing.

:func:`scan` runs over a whole batch in one njit call and returns at the first
event that needs Python (a signal), so Python runs per signal, not per tick.
:class:`EmaCross` is the :class:`~engine.strategy.Strategy` the symbol core drives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from .._config import SizingSection, StrategySection
from ..indicators import atr_state, atr_update, ema_state, ema_update, rsi_state, rsi_update
from ..indicators._specialize import warm
from ..messages import Ticks
from ._base import Mode, Signal, Strategy, state_slot, store_entry

__all__ = ["EmaCross", "Mode", "Signal", "make_params", "new_indicators", "new_state", "scan"]


# Strategy state layout (float64 array).
MODE, BUCKET, LAST_MID, PREV_DIFF, SIDE, ENTRY_PRICE, ENTRY_TS = range(7)
FAST, SLOW, RSI, LAST_BID, LAST_ASK = range(7, 12)
BAR_HIGH, BAR_LOW, ATR, STRENGTH = range(12, 16)
STATE_SIZE = 16

# Parameter layout (float64 array).
P_SAMPLE_NS, P_RSI_LONG_MAX, P_RSI_SHORT_MIN, P_ALLOW_SHORT = range(4)
P_STOP, P_TAKE, P_MAX_HOLD_NS = range(4, 7)
PARAMS_SIZE = 7

_QUOTE = 1


def new_state() -> np.ndarray:
    """A fresh strategy state (flat, no samples yet)."""
    state = np.full(STATE_SIZE, np.nan)
    state[MODE] = Mode.FLAT
    state[BUCKET] = -1.0
    state[SIDE] = 0.0
    return state


def make_params(
    *,
    sample_ms: int,
    rsi_long_max: float,
    rsi_short_min: float,
    allow_short: bool,
    stop_loss_bps: float,
    take_profit_bps: float,
    max_hold_ms: int,
) -> np.ndarray:
    """Pack the strategy parameters for :func:`scan`."""
    params = np.zeros(PARAMS_SIZE)
    params[P_SAMPLE_NS] = sample_ms * 1e6
    params[P_RSI_LONG_MAX] = rsi_long_max
    params[P_RSI_SHORT_MIN] = rsi_short_min
    params[P_ALLOW_SHORT] = 1.0 if allow_short else 0.0
    params[P_STOP] = stop_loss_bps * 1e-4
    params[P_TAKE] = take_profit_bps * 1e-4
    params[P_MAX_HOLD_NS] = max_hold_ms * 1e6
    return params


def new_indicators(
    fast: int, slow: int, rsi_period: int, atr_period: int = 14
) -> tuple[np.ndarray, ...]:
    """The indicator states the strategy reads: fast EMA, slow EMA, RSI, ATR."""
    return ema_state(fast), ema_state(slow), rsi_state(rsi_period), atr_state(atr_period)


@njit(cache=True, nogil=True)
def scan(
    ts: np.ndarray,
    kind: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    start: int,
    stop: int,
    state: np.ndarray,
    ema_fast: np.ndarray,
    ema_slow: np.ndarray,
    rsi: np.ndarray,
    atr: np.ndarray,
    params: np.ndarray,
) -> tuple[int, int]:
    """Advance the strategy over events ``start..stop`` (exclusive) of the columns.

    Returns:
        ``(index, signal)``: the event that raised a signal and the
        :class:`Signal` code, or ``(stop, 0)`` when the range ran out. The state
        already includes the event at ``index``; resume at ``index + 1``.
    """
    n = min(stop, ts.shape[0])
    sample_ns = params[P_SAMPLE_NS]
    for i in range(start, n):
        if kind[i] != _QUOTE:
            continue
        b = bid[i]
        a = ask[i]
        mid = 0.5 * (b + a)
        state[LAST_BID] = b
        state[LAST_ASK] = a
        bucket = np.floor(ts[i] / sample_ns)
        signal = 0
        if bucket > state[BUCKET]:
            closed = state[LAST_MID]
            state[BUCKET] = bucket
            if closed == closed:  # not NaN: a bucket closed with a mid in it
                fast = ema_update(ema_fast, closed)
                slow = ema_update(ema_slow, closed)
                r = rsi_update(rsi, closed)
                state[ATR] = atr_update(atr, state[BAR_HIGH], state[BAR_LOW], closed)
                state[FAST] = fast
                state[SLOW] = slow
                state[RSI] = r
                if fast == fast and slow == slow:
                    diff = fast - slow
                    atr_now = state[ATR]
                    state[STRENGTH] = min(1.0, abs(diff) / atr_now) if atr_now > 0.0 else 1.0
                    prev = state[PREV_DIFF]
                    state[PREV_DIFF] = diff
                    if prev == prev:
                        crossed_up = prev <= 0.0 < diff
                        crossed_down = prev >= 0.0 > diff
                        mode = state[MODE]
                        if mode == 0.0 and r == r:
                            if crossed_up and r < params[P_RSI_LONG_MAX]:
                                signal = 1
                            elif (
                                crossed_down
                                and params[P_ALLOW_SHORT] > 0.0
                                and r > params[P_RSI_SHORT_MIN]
                            ):
                                signal = 2
                        elif mode == 1.0:
                            side = state[SIDE]
                            if (side > 0.0 and crossed_down) or (side < 0.0 and crossed_up):
                                signal = 3
            state[BAR_HIGH] = mid
            state[BAR_LOW] = mid
        state[LAST_MID] = mid
        if mid > state[BAR_HIGH] or state[BAR_HIGH] != state[BAR_HIGH]:
            state[BAR_HIGH] = mid
        if mid < state[BAR_LOW] or state[BAR_LOW] != state[BAR_LOW]:
            state[BAR_LOW] = mid
        if signal == 0 and state[MODE] == 1.0:
            side = state[SIDE]
            entry = state[ENTRY_PRICE]
            exit_px = b if side > 0.0 else a
            ret = side * (exit_px - entry) / entry
            if ret <= -params[P_STOP]:
                signal = 4
            elif ret >= params[P_TAKE]:
                signal = 5
            elif ts[i] - state[ENTRY_TS] >= params[P_MAX_HOLD_NS]:
                signal = 6
        if signal != 0:
            return i, signal
    return n, 0


def warm_up() -> None:
    """Load (or compile) :func:`scan` now, so the first market batch does not pay for it.

    numba loads a cached kernel on its first call in a process (about 0.3 s
    here; compiling from scratch about 1 s). A cache numba cannot read is dropped
    and the kernel compiled (:func:`~engine.indicators._specialize.warm`).
    """
    n = 4
    ts = np.arange(n, dtype=np.int64)
    kind = np.ones(n, dtype=np.int8)
    px = np.full(n, 100.0)
    # The replay tape's columns are read-only, and numba types them apart from writable
    # ones: warm the signature the replay calls, not a second one.
    for column in (ts, kind, px):
        column.flags.writeable = False
    params = make_params(
        sample_ms=1,
        rsi_long_max=70.0,
        rsi_short_min=30.0,
        allow_short=True,
        stop_loss_bps=10.0,
        take_profit_bps=10.0,
        max_hold_ms=1,
    )
    warm(scan, (ts, kind, px, px, 0, n, new_state(), *new_indicators(2, 3, 2), params))


class EmaCross(Strategy):
    """The EMA cross as a :class:`~engine.strategy.Strategy`: its state arrays and kernel."""

    kind = "ema_cross"

    def __init__(self, config: StrategySection, sizing: SizingSection, params: Any = None) -> None:
        self._state = new_state()
        self._params = make_params(
            sample_ms=config.sample_ms,
            rsi_long_max=config.rsi_long_max,
            rsi_short_min=config.rsi_short_min,
            allow_short=config.allow_short,
            stop_loss_bps=config.stop_loss_bps,
            take_profit_bps=config.take_profit_bps,
            max_hold_ms=config.max_hold_ms,
        )
        self._indicators = new_indicators(
            config.fast, config.slow, config.rsi_period, sizing.atr_period
        )

    def scan(self, ticks: Ticks, start: int, stop: int, mode: Mode) -> tuple[int, int]:
        state = self._state
        state[MODE] = mode
        fast, slow, rsi, atr = self._indicators
        return scan(  # type: ignore[no-any-return]
            ticks.ts, ticks.kind, ticks.bid, ticks.ask, start, stop, state,
            fast, slow, rsi, atr, self._params,
        )  # fmt: skip

    last_bid = state_slot(LAST_BID)
    last_ask = state_slot(LAST_ASK)
    atr = state_slot(ATR)
    strength = state_slot(STRENGTH)

    def on_entry_filled(self, side: int, entry_price: float, ts: int) -> None:
        store_entry(self._state, (SIDE, ENTRY_PRICE, ENTRY_TS), side, entry_price, ts)

    @classmethod
    def warm_up(cls) -> None:
        warm_up()
