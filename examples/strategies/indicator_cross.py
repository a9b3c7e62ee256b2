"""A user strategy on configured indicators: a fast/slow crossover of any two of them.

The indicators are declared in the config, by registry name, and the strategy only
names which two values to cross (paths are relative to the config file)::

    [strategy]
    path = "examples/strategies/indicator_cross.py"
    name = "IndicatorCross"

    [[strategy.indicators]]
    name = "kama"          # Kaufman's adaptive moving average of trade prices
    timeperiod = 10        # its value is named "kama_10"

    [[strategy.indicators]]
    name = "ema"
    timeperiod = 60
    bar_ns = 1_000_000_000 # over 1 s bars of trades: "ema_60_bar1000000000"
    label = "slow"         # ... or, with a label, "slow"

    [strategy.params]
    fast = "kama_10"       # the two values crossed (checked at load to be configured)
    slow = "slow"
    stop_bps = 4.0
    take_bps = 6.0
    max_hold_ms = 30000

Entries: ``fast`` crossing above ``slow`` on a trade buys, crossing below sells short.
Exits: stop, target, time limit. The kernel (:func:`scan`) feeds every trade and quote
to the symbol's indicator set (``update_trade`` / ``update_quote``, the set's fused
njit update) and reads the two values by their column in ``values``; Python runs per
signal only, where :meth:`Strategy.indicator` reads any value by name.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from numba import njit

from engine.indicators import bind_to_set, update_quote, update_trade
from engine.strategy import Strategy

# Kernel state (float64 array).
LAST_BID, LAST_ASK, PREV_DIFF, SIDE, ENTRY_PRICE, ENTRY_TS = range(6)
STATE_SIZE = 6
_QUOTE, _TRADE = 1, 2


@njit(cache=True, nogil=True)
def scan(
    ts, kind, bid, ask, bid_qty, ask_qty, price, qty, buyer_maker, start, stop, mode, state,
    spec_table, ind_state, bar_ns, bar_state, values, fast_at, slow_at,
    stop_r, take_r, max_hold_ns,
):  # fmt: skip
    """Advance over ticks ``start..stop``; ``(index, signal)`` at a signal, else ``(stop, 0)``.

    ``spec_table .. values`` are the indicator set's arrays; ``fast_at`` and ``slow_at``
    the columns of the crossed values in ``values``.
    """
    for i in range(start, stop):
        k = kind[i]
        signal = 0
        if k == _QUOTE:
            state[LAST_BID] = bid[i]
            state[LAST_ASK] = ask[i]
            update_quote(
                spec_table, ind_state, bar_ns, bar_state, values, bid[i], ask[i],
                bid_qty[i], ask_qty[i],
            )  # fmt: skip
            if mode == 1:
                side = state[SIDE]
                exit_px = bid[i] if side > 0.0 else ask[i]
                ret = side * (exit_px - state[ENTRY_PRICE]) / state[ENTRY_PRICE]
                if ret <= -stop_r:
                    signal = 4
                elif ret >= take_r:
                    signal = 5
                elif ts[i] - state[ENTRY_TS] >= max_hold_ns:
                    signal = 6
        elif k == _TRADE:
            side = -1.0 if buyer_maker[i] else 1.0  # the aggressor's side
            update_trade(
                spec_table, ind_state, bar_ns, bar_state, values, ts[i], price[i], qty[i], side
            )
            diff = values[fast_at] - values[slow_at]
            if diff == diff:  # both warm
                prev = state[PREV_DIFF]
                state[PREV_DIFF] = diff
                if mode == 0 and prev == prev and state[LAST_BID] == state[LAST_BID]:
                    if prev <= 0.0 < diff:
                        signal = 1
                    elif prev >= 0.0 > diff:
                        signal = 2
        if signal != 0:
            return i, signal
    return stop, 0


class IndicatorCross(Strategy):
    """Crossover of two configured indicator values, with stop, target and time exits."""

    kind = "indicator_cross"
    reads_indicators = True
    indicator_params = ("fast", "slow")

    @attrs.frozen
    class Params:
        fast: str = "kama_10"
        slow: str = "ema_60"
        stop_bps: float = attrs.field(default=4.0, validator=attrs.validators.gt(0))
        take_bps: float = attrs.field(default=6.0, validator=attrs.validators.gt(0))
        max_hold_ms: int = attrs.field(default=30_000, validator=attrs.validators.gt(0))

    def __init__(self, config: Any, sizing: Any, params: Params) -> None:
        self.p = params
        self.state = np.full(STATE_SIZE, np.nan)
        iset = self.configured_indicators(config)
        self.fast_at = iset.index[params.fast]
        self.slow_at = iset.index[params.slow]
        self._scan = bind_to_set(scan, iset)  # compiled for this set's indicators only

    def scan(self, ticks, start, stop, mode):
        p = self.p
        return self._scan(
            ticks.ts, ticks.kind, ticks.bid, ticks.ask, ticks.bid_qty, ticks.ask_qty,
            ticks.price, ticks.qty, ticks.buyer_maker, start, stop, int(mode), self.state,
            *self.indicator_set.arrays, self.fast_at, self.slow_at,
            p.stop_bps * 1e-4, p.take_bps * 1e-4, p.max_hold_ms * 1_000_000,
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
        """Nothing: the kernel depends on the configured set, so the first scan of a
        symbol compiles (or loads) it."""
