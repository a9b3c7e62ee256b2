"""The market maker: two-sided post-only quotes around a fair price, skewed by inventory.

Fair value is the mid (``fair = "mid"``) or the micro-price (``"micro"``: the touch
prices weighted by the opposite side's displayed quantity), read on every quote.
Volatility is a realised volatility (:func:`engine.indicators.realized_vol_update`)
of the mid sampled at the close of every ``vol_sample_ms`` bucket, over
``vol_period`` samples, as a per-sample standard deviation ``sigma``. The quotes::

    spread = max(min_spread_bps * 1e-4, vol_mult * sigma)          (a fraction of fair)
    shift  = skew_bps * 1e-4 * inventory / quote_qty
    bid    = fair * (1 - spread / 2 - shift)     rounded down to the tick
    ask    = fair * (1 + spread / 2 - shift)     rounded up to the tick

so a long inventory lowers both quotes (sell sooner, buy later) and a short one
raises them. Each side is kept one tick off the opposite touch (a post-only order
that would cross is rejected by the exchange). A side whose fill would take the
inventory beyond ``max_inventory`` (base units) is not quoted, so the inventory never
exceeds it. Nothing is quoted until the volatility has ``vol_period`` samples.

Refresh: the kernel (:func:`scan`) returns :attr:`Signal.REQUOTE` at the first quote
where a side's wanted price is ``refresh_ticks`` or more from its working price, or
differs at all and the working price is ``refresh_ms`` old, or a side should start or
stop quoting; the symbol core then amends (cancel-replace), places or cancels. A
working price younger than ``min_quote_life_ms`` is not amended (it may still be
cancelled): two sides amended at most every 0.5 s stay within Binance-like order-rate
limits (``risk.max_orders_per_second``). With
``max_hold_ms`` > 0, an inventory held that long without going back through flat is
closed by a reduce-only market order (:attr:`Signal.EXIT_TIME`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import attrs
import numpy as np
from attrs import validators as v
from numba import njit

from .._config import SizingSection, StrategySection
from ..indicators import realized_vol_state, realized_vol_update
from ..messages import Ticks
from ._base import Mode, QuotingStrategy, state_slot

__all__ = ["MarketMaker", "MarketMakerParams", "scan", "wanted"]

# State layout (float64 array).
MODE, LAST_BID, LAST_ASK, BID_QTY, ASK_QTY, FAIR = range(6)
BUCKET, LAST_MID, SIGMA = range(6, 9)
WORK_BID, WORK_ASK, WORK_BID_TS, WORK_ASK_TS, INV, INV_SINCE, QUIET_UNTIL = range(9, 16)
STATE_SIZE = 16

# Parameter layout (float64 array).
P_TICK, P_QTY, P_MAX_INV, P_MIN_SPREAD, P_VOL_MULT, P_SKEW = range(6)
P_REFRESH_TICKS, P_REFRESH_NS, P_SAMPLE_NS, P_MAX_HOLD_NS, P_MICRO, P_VOL_N = range(6, 12)
P_MIN_LIFE_NS = 12
PARAMS_SIZE = 13

_QUOTE = 1


@attrs.frozen(kw_only=True)
class MarketMakerParams:
    """``[strategy.params]`` of the market maker (see the module docstring)."""

    quote_qty: float = attrs.field(default=0.002, validator=v.gt(0))
    max_inventory: float = attrs.field(default=0.01, validator=v.gt(0))
    tick_size: float = attrs.field(default=0.1, validator=v.gt(0))
    fair: Literal["mid", "micro"] = attrs.field(default="mid", validator=v.in_(("mid", "micro")))
    min_spread_bps: float = attrs.field(default=0.5, validator=v.ge(0))
    vol_mult: float = attrs.field(default=1.0, validator=v.ge(0))
    vol_sample_ms: int = attrs.field(default=1000, validator=v.gt(0))
    vol_period: int = attrs.field(default=30, validator=v.ge(2))
    skew_bps: float = attrs.field(default=0.1, validator=v.ge(0))
    refresh_ticks: int = attrs.field(default=5, validator=v.ge(1))
    refresh_ms: int = attrs.field(default=1000, validator=v.ge(0))
    min_quote_life_ms: int = attrs.field(default=500, validator=v.ge(0))
    max_hold_ms: int = attrs.field(default=0, validator=v.ge(0))

    def __attrs_post_init__(self) -> None:
        if self.quote_qty > self.max_inventory:
            raise ValueError(f"'quote_qty' must be at most max_inventory ({self.max_inventory})")


attrs.resolve_types(MarketMakerParams)


def pack_params(p: MarketMakerParams) -> np.ndarray:
    """The parameters as the kernel reads them."""
    out = np.zeros(PARAMS_SIZE)
    out[P_TICK] = p.tick_size
    out[P_QTY] = p.quote_qty
    out[P_MAX_INV] = p.max_inventory
    out[P_MIN_SPREAD] = p.min_spread_bps * 1e-4
    out[P_VOL_MULT] = p.vol_mult
    out[P_SKEW] = p.skew_bps * 1e-4
    out[P_REFRESH_TICKS] = p.refresh_ticks
    out[P_REFRESH_NS] = p.refresh_ms * 1e6
    out[P_SAMPLE_NS] = p.vol_sample_ms * 1e6
    out[P_MAX_HOLD_NS] = p.max_hold_ms * 1e6
    out[P_MICRO] = 1.0 if p.fair == "micro" else 0.0
    out[P_VOL_N] = p.vol_period
    out[P_MIN_LIFE_NS] = p.min_quote_life_ms * 1e6
    return out


def new_state() -> np.ndarray:
    """A fresh state: no quote seen, nothing working, flat."""
    state = np.full(STATE_SIZE, np.nan)
    state[MODE] = Mode.WAITING
    state[BUCKET] = -1.0
    state[WORK_BID_TS] = 0.0
    state[WORK_ASK_TS] = 0.0
    state[INV] = 0.0
    state[INV_SINCE] = 0.0
    state[QUIET_UNTIL] = 0.0
    return state


@njit(cache=True, nogil=True)
def wanted(state: np.ndarray, params: np.ndarray) -> tuple[float, float]:
    """The wanted bid and ask in ticks (NaN: no quote on that side)."""
    fair = state[FAIR]
    sigma = state[SIGMA]
    if not (fair > 0.0) or sigma != sigma:
        return np.nan, np.nan
    tick = params[P_TICK]
    qty = params[P_QTY]
    inv = state[INV]
    half = 0.5 * max(params[P_MIN_SPREAD], params[P_VOL_MULT] * sigma)
    shift = params[P_SKEW] * inv / qty
    b = math.floor(fair * (1.0 - half - shift) / tick + 1e-9)
    a = math.ceil(fair * (1.0 + half - shift) / tick - 1e-9)
    best_bid = round(state[LAST_BID] / tick)
    best_ask = round(state[LAST_ASK] / tick)
    b = min(b, best_ask - 1.0)  # post-only: never at or through the opposite touch
    a = max(a, best_bid + 1.0)
    if not b > 0.0:
        b = np.nan
    cap = params[P_MAX_INV] + 1e-12
    if inv + qty > cap:
        b = np.nan
    if inv - qty < -cap:
        a = np.nan
    return b, a


@njit(cache=True, nogil=True)
def _moves(want: float, work: float, age: float, params: np.ndarray) -> bool:
    """Whether a side's working price (NaN: none) should change to ``want`` (ticks)."""
    if want != want:
        return work == work
    if work != work:
        return True
    if age < params[P_MIN_LIFE_NS]:
        return False
    d = abs(want - round(work / params[P_TICK]))
    return d >= params[P_REFRESH_TICKS] or (d > 0.0 and age >= params[P_REFRESH_NS])


@njit(cache=True, nogil=True)
def scan(
    ts: np.ndarray,
    kind: np.ndarray,
    bid: np.ndarray,
    bid_qty: np.ndarray,
    ask: np.ndarray,
    ask_qty: np.ndarray,
    start: int,
    stop: int,
    state: np.ndarray,
    rvol: np.ndarray,
    params: np.ndarray,
) -> tuple[int, int]:
    """Advance over events ``start..stop`` (exclusive); stop at a requote or a time limit.

    Returns:
        ``(index, signal)`` (the state includes ``index``; resume at ``index + 1``),
        or ``(stop, 0)``.
    """
    n = min(stop, ts.shape[0])
    sample_ns = params[P_SAMPLE_NS]
    root_n = math.sqrt(params[P_VOL_N])
    for i in range(start, n):
        if kind[i] != _QUOTE:
            continue
        b = bid[i]
        a = ask[i]
        bq = bid_qty[i]
        aq = ask_qty[i]
        mid = 0.5 * (b + a)
        state[LAST_BID] = b
        state[LAST_ASK] = a
        state[BID_QTY] = bq
        state[ASK_QTY] = aq
        fair = mid
        if params[P_MICRO] > 0.0 and bq > 0.0 and aq > 0.0 and bq + aq < np.inf:
            fair = (b * aq + a * bq) / (bq + aq)
        state[FAIR] = fair
        bucket = np.floor(ts[i] / sample_ns)
        if bucket > state[BUCKET]:
            closed = state[LAST_MID]
            state[BUCKET] = bucket
            if closed == closed:
                rv = realized_vol_update(rvol, closed)
                if rv == rv:
                    state[SIGMA] = rv / root_n
        state[LAST_MID] = mid
        if state[MODE] != 3.0 or ts[i] < state[QUIET_UNTIL]:  # not QUOTING: indicators only
            continue
        inv = state[INV]
        hold = params[P_MAX_HOLD_NS]
        if hold > 0.0 and inv != 0.0 and ts[i] - state[INV_SINCE] >= hold:
            return i, 6
        want_b, want_a = wanted(state, params)
        now = float(ts[i])
        if _moves(want_b, state[WORK_BID], now - state[WORK_BID_TS], params) or _moves(
            want_a, state[WORK_ASK], now - state[WORK_ASK_TS], params
        ):
            return i, 7
    return n, 0


class MarketMaker(QuotingStrategy):
    """The market maker, a :class:`~engine.strategy.QuotingStrategy` (``market_maker``)."""

    kind = "market_maker"
    Params = MarketMakerParams

    def __init__(self, config: StrategySection, sizing: SizingSection, params: Any = None) -> None:
        self.params = params if params is not None else MarketMakerParams()
        self._state = new_state()
        self._packed = pack_params(self.params)
        self._rvol = realized_vol_state(self.params.vol_period)
        decimals = max(0, -math.floor(math.log10(self.params.tick_size)) + 2)
        self._decimals = decimals

    def scan(self, ticks: Ticks, start: int, stop: int, mode: Mode) -> tuple[int, int]:
        self._state[MODE] = float(mode)
        return scan(  # type: ignore[no-any-return]
            ticks.ts, ticks.kind, ticks.bid, ticks.bid_qty, ticks.ask, ticks.ask_qty,
            start, stop, self._state, self._rvol, self._packed,
        )  # fmt: skip

    def quotes(self) -> tuple[float, float, float, float]:
        b, a = wanted(self._state, self._packed)
        tick = self.params.tick_size
        qty = self.params.quote_qty
        bid_px = round(b * tick, self._decimals) if b == b else math.nan
        ask_px = round(a * tick, self._decimals) if a == a else math.nan
        return bid_px, qty, ask_px, qty

    def on_working(
        self, bid_px: float, ask_px: float, bid_ts: int, ask_ts: int, quiet_until: int
    ) -> None:
        state = self._state
        state[QUIET_UNTIL] = float(quiet_until)
        state[WORK_BID] = bid_px
        state[WORK_ASK] = ask_px
        state[WORK_BID_TS] = float(bid_ts)
        state[WORK_ASK_TS] = float(ask_ts)

    def on_inventory(self, qty: float, since_ts: int) -> None:
        self._state[INV] = qty
        self._state[INV_SINCE] = float(since_ts)

    last_bid = state_slot(LAST_BID)
    last_ask = state_slot(LAST_ASK)
    sigma = state_slot(SIGMA, "The latest per-sample volatility of the mid (NaN while warming up).")

    @classmethod
    def warm_up(cls) -> None:
        n = 4
        ts = np.arange(n, dtype=np.int64)
        kind = np.ones(n, dtype=np.int8)
        px = np.full(n, 100.0)
        for column in (ts, kind, px):
            column.flags.writeable = False  # the columns are read-only: compile that signature
        p = MarketMakerParams(vol_sample_ms=1, vol_period=2)
        scan(ts, kind, px, px, px, px, 0, n, new_state(), realized_vol_state(2), pack_params(p))
        wanted(new_state(), pack_params(p))
