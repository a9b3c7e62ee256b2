"""A user strategy in its own file: a channel breakout on the mid price.

Select it in a config (paths are relative to the config file)::

    [strategy]
    path = "examples/strategies/breakout.py"
    name = "Breakout"

    [strategy.params]
    lookback = 200        # quotes in the channel
    stop_bps = 4.0        # exit when the position loses this much
    take_bps = 6.0        # exit when it gains this much
    max_hold_ms = 30000   # exit after this long

Entries: the mid breaking above the highest mid of the last ``lookback`` quotes buys;
breaking below the lowest sells short. Exits: stop, target, time limit. The hot loop is
one numba kernel (:func:`scan`) over whole ranges of ticks; Python runs per signal
only. ``engine.strategy.Strategy`` documents every method.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from numba import njit

from engine.strategy import Mode, Strategy

# Kernel state (float64 array): the ring of recent mids, then scalars.
LAST_BID, LAST_ASK, SIDE, ENTRY_PRICE, ENTRY_TS, FILLED, HEAD = range(7)
RING = 7


@njit(cache=True)
def scan(ts, kind, bid, ask, start, stop, mode, state, lookback, stop_r, take_r, max_hold_ns):
    """Advance over ticks ``start..stop``; ``(index, signal)`` at a signal, else ``(stop, 0)``."""
    for i in range(start, stop):
        if kind[i] != 1:  # quotes only
            continue
        b = bid[i]
        a = ask[i]
        mid = 0.5 * (b + a)
        state[LAST_BID] = b
        state[LAST_ASK] = a
        filled = int(state[FILLED])
        signal = 0
        if mode == 0 and filled == lookback:
            hi = state[RING]
            lo = state[RING]
            for k in range(1, lookback):
                x = state[RING + k]
                hi = max(hi, x)
                lo = min(lo, x)
            if mid > hi:
                signal = 1
            elif mid < lo:
                signal = 2
        elif mode == 1:
            side = state[SIDE]
            exit_px = b if side > 0.0 else a
            ret = side * (exit_px - state[ENTRY_PRICE]) / state[ENTRY_PRICE]
            if ret <= -stop_r:
                signal = 4
            elif ret >= take_r:
                signal = 5
            elif ts[i] - state[ENTRY_TS] >= max_hold_ns:
                signal = 6
        head = int(state[HEAD])
        state[RING + head] = mid
        state[HEAD] = (head + 1) % lookback
        if filled < lookback:
            state[FILLED] = filled + 1
        if signal != 0:
            return i, signal
    return stop, 0


class Breakout(Strategy):
    """Channel breakout with stop, target and time exits."""

    kind = "breakout"

    @attrs.frozen
    class Params:
        lookback: int = attrs.field(default=200, validator=attrs.validators.ge(2))
        stop_bps: float = attrs.field(default=4.0, validator=attrs.validators.gt(0))
        take_bps: float = attrs.field(default=6.0, validator=attrs.validators.gt(0))
        max_hold_ms: int = attrs.field(default=30_000, validator=attrs.validators.gt(0))

    def __init__(self, config: Any, sizing: Any, params: Params) -> None:
        self.p = params
        self.state = np.zeros(RING + params.lookback)

    def scan(self, ticks, start, stop, mode):
        p = self.p
        return scan(
            ticks.ts, ticks.kind, ticks.bid, ticks.ask, start, stop, int(mode), self.state,
            p.lookback, p.stop_bps * 1e-4, p.take_bps * 1e-4, p.max_hold_ms * 1_000_000,
        )  # fmt: skip

    @property
    def last_bid(self) -> float:
        return float(self.state[LAST_BID])

    @property
    def last_ask(self) -> float:
        return float(self.state[LAST_ASK])

    def on_entry_filled(self, side: int, entry_price: float, ts: int) -> None:
        self.state[SIDE] = side
        self.state[ENTRY_PRICE] = entry_price
        self.state[ENTRY_TS] = ts

    @classmethod
    def warm_up(cls) -> None:
        n = 3
        ts = np.arange(n, dtype=np.int64)
        kind = np.ones(n, dtype=np.int8)
        px = np.full(n, 100.0)
        scan(ts, kind, px, px, 0, n, int(Mode.FLAT), np.zeros(RING + 2), 2, 1e-4, 1e-4, 10)
