"""The shipped scalper: eight short-horizon signals vote, and enough agreeing votes enter.

Each signal votes long (+1), short (-1) or nothing on the event that triggers it; a vote
stays alive for ``confirm_window_ms`` after that event and, with ``decay = "linear"``,
its weight falls linearly from its full weight to 0 over the window (``"none"``: full
weight until it expires). A later vote of the same signal replaces its earlier one.

Bars: ``bar_ms`` buckets of the mid price (high, low, close of the mids seen; a bucket
with no event adds no bar), plus the traded volume and the aggressor-signed volume of
the bucket. Signals, with ``mid = (bid + ask) / 2`` of the latest quote:

1. ``micro_trend`` (every quote whose mid moved): the last ``micro_ticks`` (3) mid
   moves all in one direction vote that direction.
2. ``acceleration`` (bar close): with ``r1 = close - close[-1]`` and
   ``r0 = close[-1] - close[-2]``: ``r0 > 0 and r1 > r0`` votes long (rising faster),
   ``r0 < 0 and r1 < r0`` short.
3. ``volume_spike`` (every trade): the current bar's volume so far above
   ``volume_mult`` (2.0) times the mean volume of the last ``volume_period`` bars
   (``sma_update``) votes the sign of the bar's aggressor-signed volume.
4. ``order_flow`` (every trade): the trade order-flow imbalance of the last
   ``ofi_period`` trades (``trade_ofi_update``: buyer-aggressor volume minus
   seller-aggressor volume over their sum) at or above ``ofi_threshold`` votes long, at
   or below ``-ofi_threshold`` short.
5. ``squeeze_breakout`` (bar close): Bollinger bands (``bbands_update``, ``bb_period``
   bars, ``bb_dev`` deviations); the previous bar was in a squeeze when its bandwidth
   ``(upper - lower) / middle`` was below ``squeeze_ratio`` times the mean bandwidth of
   the last ``squeeze_period`` bars; then a close above that bar's upper band votes
   long, below its lower band short.
6. ``ema_cross`` (bar close): the ``ema_fast``-bar EMA of closes crossing above the
   ``ema_slow``-bar EMA votes long, below short (from the last non-zero gap: leaving a
   flat stretch where both are equal is not a cross).
7. ``rsi_divergence`` (bar close): over the last ``divergence_bars`` bars (a ring of
   closes and ``rsi_period`` RSIs), a close below their lowest close while the RSI is
   above the RSI of that bar and below 50 votes long (bullish divergence: a lower low
   in price, a higher low in RSI); a close above their highest close with the RSI
   below that bar's and above 50 votes short. A bar whose close equals the one before
   is never the reference (a flat stretch's RSI is 0 or 100 by TA-Lib's rule).
8. ``spread`` (every quote): ``spread_bps_update`` against its ``spread_period``-quote
   EMA ``avg``. Expansion (spread above ``spread_expand`` x ``avg``): the ask lifted
   (ask up, bid not down) votes long, the bid dropped (bid down, ask not up) short.
   Compression (the quote after an expansion, spread narrower than it): the bid
   stepping up votes long, the ask stepping down short.

Strength of a side: the sum of its live votes' (decayed) weights over the sum of all
weights (``weight_<signal>``, 1.0 each; 0 turns a signal off). Entry (FLAT):
at least ``min_confirmations`` live votes for a side, its strength at least
``min_strength`` and above the other side's; with ``htf_ms > 0`` the slower bar series
(``htf_ms`` buckets of the mid) must agree: its last close above the ``htf_period``
EMA of its closes for a long, below for a short (no entry before that EMA exists).
Each entry or opposite-signal exit needs fresh evidence: a vote on its side that began
after the previous such signal (a new direction, or again after its window ran out;
renewing a live vote does not count) (so a refused entry is not raised again on every tick by the
same votes, and an exit does not at once reverse on the votes that caused it).

Exits (HOLDING): the opposite side meeting the entry rule (reason ``opposite_signal``).
Stops, targets and time limits are the engine's ``[exits]`` policies, the one place for
them (``examples/configs/scalper.toml`` suggests a stop of 8 bps, a target of 12 bps and
30 s); without ``[exits]`` a position is held until the opposite signal.

Every update is O(1) per event except the divergence ring (``divergence_bars`` per
*bar*); nothing is allocated in the kernel. The ATR (``sizing.atr_period`` bars) is
exposed for sizing and exit policies. Imports are absolute so the file also loads as a
user's strategy file (``engine.testing.run_strategy``).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import numpy as np
from attrs import validators as v
from numba import njit

from engine.indicators import (
    atr_state,
    atr_update,
    bbands_state,
    bbands_update,
    ema_state,
    ema_update,
    rsi_state,
    rsi_update,
    sma_state,
    sma_update,
    spread_bps_update,
    trade_ofi_state,
    trade_ofi_update,
)
from engine.messages import Ticks
from engine.strategy import Mode, Strategy, state_slot, store_entry

__all__ = ["SIGNALS", "Scalper", "ScalperParams"]

SIGNALS = (
    "micro_trend",
    "acceleration",
    "volume_spike",
    "order_flow",
    "squeeze_breakout",
    "ema_cross",
    "rsi_divergence",
    "spread",
)
N_SIG = 8
MICRO, ACCEL, VOLUME, OFI, SQUEEZE, CROSS, DIVERGENCE, SPREAD = range(N_SIG)

# Kernel state (float64): scalars, then each signal's vote direction and time.
(
    LAST_BID, LAST_ASK, LAST_MID, SIDE, ENTRY_PRICE, ENTRY_TS, STRENGTH, VOTES,
    BUCKET, BAR_HIGH, BAR_LOW, CLOSE1, CLOSE2, BAR_VOL, BAR_NET, ATR,
    RUN, RUN_DIR, PREV_DIFF, PREV_UP, PREV_LO, PREV_SQUEEZE, DIV_COUNT, DIV_HEAD,
    PREV_SPREAD, HTF_BUCKET, HTF_TREND, SPREAD_AVG, VOL_AVG, EXPANDED, LAST_SIGNAL,
) = range(31)  # fmt: skip
VOTE_DIR = 31
VOTE_TS = VOTE_DIR + N_SIG  # the latest event that cast (or renewed) the vote
VOTE_START = VOTE_TS + N_SIG  # when the vote began (a new direction, or after expiry)
STATE_SIZE = VOTE_START + N_SIG

# Parameters (float64).
(
    P_BAR_NS, P_WINDOW_NS, P_MIN_CONF, P_MIN_STRENGTH, P_ALLOW_SHORT, P_MICRO_TICKS,
    P_VOL_MULT, P_OFI_TH, P_SQUEEZE_RATIO, P_DIV_BARS, P_SPREAD_EXPAND, P_HTF_NS, P_DECAY,
) = range(13)  # fmt: skip
P_WEIGHT = 13
PARAMS_SIZE = P_WEIGHT + N_SIG

_QUOTE = 1
_TRADE = 2


def _check(params: ScalperParams) -> None:
    if params.ema_fast >= params.ema_slow:
        raise ValueError(f"'ema_fast' must be smaller than ema_slow ({params.ema_slow})")
    if not any(getattr(params, f"weight_{name}") > 0.0 for name in SIGNALS):
        raise ValueError("'weight_spread' or another weight_<signal> must be above 0")


@attrs.frozen(kw_only=True)
class ScalperParams:
    """``[strategy.params]`` of the scalper (see the module docstring for each signal)."""

    bar_ms: int = attrs.field(default=1000, validator=v.gt(0))
    min_confirmations: int = attrs.field(default=3, validator=[v.ge(1), v.le(N_SIG)])
    min_strength: float = attrs.field(default=0.3, validator=[v.ge(0), v.le(1)])
    confirm_window_ms: int = attrs.field(default=3000, validator=v.gt(0))
    decay: Literal["linear", "none"] = attrs.field(
        default="linear", validator=v.in_(("linear", "none"))
    )
    allow_short: bool = True
    micro_ticks: int = attrs.field(default=3, validator=v.ge(2))
    volume_mult: float = attrs.field(default=2.0, validator=v.gt(0))
    volume_period: int = attrs.field(default=20, validator=v.ge(2))
    ofi_period: int = attrs.field(default=50, validator=v.ge(1))
    ofi_threshold: float = attrs.field(default=0.6, validator=[v.gt(0), v.le(1)])
    bb_period: int = attrs.field(default=20, validator=v.ge(2))
    bb_dev: float = attrs.field(default=2.0, validator=v.gt(0))
    squeeze_period: int = attrs.field(default=50, validator=v.ge(2))
    squeeze_ratio: float = attrs.field(default=0.8, validator=v.gt(0))
    ema_fast: int = attrs.field(default=5, validator=v.ge(1))
    ema_slow: int = attrs.field(default=20, validator=v.ge(2))
    rsi_period: int = attrs.field(default=14, validator=v.ge(2))
    divergence_bars: int = attrs.field(default=20, validator=v.ge(2))
    spread_period: int = attrs.field(default=200, validator=v.ge(1))
    spread_expand: float = attrs.field(default=1.5, validator=v.gt(1))
    htf_ms: int = attrs.field(default=0, validator=v.ge(0))
    htf_period: int = attrs.field(default=20, validator=v.ge(1))
    # Each signal's weight in the strength (0: the signal is off).
    weight_micro_trend: float = attrs.field(default=1.0, validator=v.ge(0))
    weight_acceleration: float = attrs.field(default=1.0, validator=v.ge(0))
    weight_volume_spike: float = attrs.field(default=1.0, validator=v.ge(0))
    weight_order_flow: float = attrs.field(default=1.0, validator=v.ge(0))
    weight_squeeze_breakout: float = attrs.field(default=1.0, validator=v.ge(0))
    weight_ema_cross: float = attrs.field(default=1.0, validator=v.ge(0))
    weight_rsi_divergence: float = attrs.field(default=1.0, validator=v.ge(0))
    weight_spread: float = attrs.field(default=1.0, validator=v.ge(0))
    # Stops, targets and time limits: ``[exits]``.

    def __attrs_post_init__(self) -> None:
        _check(self)


attrs.resolve_types(ScalperParams)


def pack_params(p: ScalperParams) -> np.ndarray:
    """The parameters as the kernel reads them."""
    out = np.zeros(PARAMS_SIZE)
    out[P_BAR_NS] = p.bar_ms * 1e6
    out[P_WINDOW_NS] = p.confirm_window_ms * 1e6
    out[P_MIN_CONF] = p.min_confirmations
    out[P_MIN_STRENGTH] = p.min_strength
    out[P_ALLOW_SHORT] = 1.0 if p.allow_short else 0.0
    out[P_MICRO_TICKS] = p.micro_ticks
    out[P_VOL_MULT] = p.volume_mult
    out[P_OFI_TH] = p.ofi_threshold
    out[P_SQUEEZE_RATIO] = p.squeeze_ratio
    out[P_DIV_BARS] = p.divergence_bars
    out[P_SPREAD_EXPAND] = p.spread_expand
    out[P_HTF_NS] = p.htf_ms * 1e6
    out[P_DECAY] = 1.0 if p.decay == "linear" else 0.0
    for k, name in enumerate(SIGNALS):
        out[P_WEIGHT + k] = getattr(p, f"weight_{name}")
    return out


def new_state() -> np.ndarray:
    """A fresh kernel state: flat, no bars, no votes."""
    st = np.full(STATE_SIZE, np.nan)
    for i in (SIDE, STRENGTH, VOTES, BAR_VOL, BAR_NET, RUN, RUN_DIR, PREV_SQUEEZE):
        st[i] = 0.0
    for i in (DIV_COUNT, DIV_HEAD, HTF_TREND, EXPANDED):
        st[i] = 0.0
    st[BUCKET] = -1.0
    st[HTF_BUCKET] = -1.0
    st[LAST_SIGNAL] = -1.0
    st[VOTE_DIR : VOTE_DIR + N_SIG] = 0.0
    st[VOTE_TS : VOTE_TS + N_SIG] = 0.0
    st[VOTE_START : VOTE_START + N_SIG] = 0.0
    return st


def new_indicators(p: ScalperParams, atr_period: int) -> tuple[np.ndarray, ...]:
    """The indicator states, in :func:`scan`'s order (and its scratch arrays)."""
    return (
        ema_state(p.ema_fast),
        ema_state(p.ema_slow),
        rsi_state(p.rsi_period),
        bbands_state(p.bb_period, p.bb_dev, p.bb_dev),
        sma_state(p.squeeze_period),
        sma_state(p.volume_period),
        atr_state(atr_period),
        trade_ofi_state(p.ofi_period),
        ema_state(p.spread_period),
        ema_state(p.htf_period),
        np.zeros(2 * p.divergence_bars),  # ring: closes, then RSIs
        np.zeros(3),  # scratch: bands / flow imbalance
    )


@njit(nogil=True, error_model="numpy")
def _vote(st: np.ndarray, k: int, direction: float, t: float, window: float) -> None:
    if st[VOTE_DIR + k] != direction or t - st[VOTE_TS + k] >= window:
        st[VOTE_START + k] = t
    st[VOTE_DIR + k] = direction
    st[VOTE_TS + k] = t


@njit(nogil=True, error_model="numpy")
def _close_bar(st, p, ema_f, ema_s, rsi, bb, bw_sma, vol_sma, atr, div, out, t):
    """Close the bar in ``st`` (its close is the last mid) and cast the bar votes."""
    close = st[LAST_MID]
    st[ATR] = atr_update(atr, st[BAR_HIGH], st[BAR_LOW], close)
    # Acceleration.
    c1 = st[CLOSE1]
    c2 = st[CLOSE2]
    moved = c1 == c1 and close != c1
    if c1 == c1 and c2 == c2:
        r1 = close - c1
        r0 = c1 - c2
        if r0 > 0.0 and r1 > r0:
            _vote(st, ACCEL, 1.0, t, p[P_WINDOW_NS])
        elif r0 < 0.0 and r1 < r0:
            _vote(st, ACCEL, -1.0, t, p[P_WINDOW_NS])
    st[CLOSE2] = c1
    st[CLOSE1] = close
    # Volume: the bar's volume joins the average after the bar.
    st[VOL_AVG] = sma_update(vol_sma, st[BAR_VOL])
    st[BAR_VOL] = 0.0
    st[BAR_NET] = 0.0
    # Squeeze breakout against the previous bar's bands.
    if st[PREV_SQUEEZE] > 0.0:
        if close > st[PREV_UP]:
            _vote(st, SQUEEZE, 1.0, t, p[P_WINDOW_NS])
        elif close < st[PREV_LO]:
            _vote(st, SQUEEZE, -1.0, t, p[P_WINDOW_NS])
    bbands_update(bb, close, out)
    up = out[0]
    mid = out[1]
    lo = out[2]
    st[PREV_SQUEEZE] = 0.0
    if up == up and mid > 0.0:
        bw = (up - lo) / mid
        avg_bw = sma_update(bw_sma, bw)
        if avg_bw == avg_bw and bw < p[P_SQUEEZE_RATIO] * avg_bw:
            st[PREV_SQUEEZE] = 1.0
    st[PREV_UP] = up
    st[PREV_LO] = lo
    # EMA crossover.
    fast = ema_update(ema_f, close)
    slow = ema_update(ema_s, close)
    if fast == fast and slow == slow:
        diff = fast - slow
        prev = st[PREV_DIFF]  # the last non-zero gap: touching is not crossing
        if prev == prev:
            if prev < 0.0 < diff:
                _vote(st, CROSS, 1.0, t, p[P_WINDOW_NS])
            elif prev > 0.0 > diff:
                _vote(st, CROSS, -1.0, t, p[P_WINDOW_NS])
        if diff != 0.0:
            st[PREV_DIFF] = diff
    # RSI divergence against the ring of earlier bars.
    r = rsi_update(rsi, close)
    if r == r:
        n = int(p[P_DIV_BARS])
        count = int(st[DIV_COUNT])
        if count >= n:
            lo_at = 0
            hi_at = 0
            for j in range(1, n):
                if div[j] < div[lo_at]:
                    lo_at = j
                if div[j] > div[hi_at]:
                    hi_at = j
            if close < div[lo_at] and div[n + lo_at] < r < 50.0:
                _vote(st, DIVERGENCE, 1.0, t, p[P_WINDOW_NS])
            elif close > div[hi_at] and 50.0 < r < div[n + hi_at]:
                _vote(st, DIVERGENCE, -1.0, t, p[P_WINDOW_NS])
        head = int(st[DIV_HEAD])
        div[head] = close
        # A bar that did not move is never the reference extreme: its RSI (0 or 100
        # on a flat stretch, by TA-Lib's rule) says nothing about momentum there.
        div[n + head] = r if moved else np.nan
        st[DIV_HEAD] = (head + 1) % n
        st[DIV_COUNT] = min(count + 1, n)


@njit(nogil=True, error_model="numpy")
def _tally(st: np.ndarray, p: np.ndarray, t: float, out: np.ndarray) -> None:
    """Live votes: ``out = (long weight, short weight, long count, short count)`` with
    the weights as shares of the total weight, each side's signals as bits, and each
    side's newest vote time."""
    window = p[P_WINDOW_NS]
    linear = p[P_DECAY] > 0.0
    total = 0.0
    lw = 0.0
    sw = 0.0
    nl = 0.0
    ns = 0.0
    lbits = 0.0
    sbits = 0.0
    lnew = -1.0
    snew = -1.0
    for k in range(N_SIG):
        w = p[P_WEIGHT + k]
        total += w
        d = st[VOTE_DIR + k]
        if w <= 0.0 or d == 0.0:
            continue
        age = t - st[VOTE_TS + k]
        if age >= window:
            st[VOTE_DIR + k] = 0.0
            continue
        x = w * (1.0 - age / window) if linear else w
        if d > 0.0:
            lw += x
            nl += 1.0
            lbits += 2.0**k
            lnew = max(lnew, st[VOTE_START + k])
        else:
            sw += x
            ns += 1.0
            sbits += 2.0**k
            snew = max(snew, st[VOTE_START + k])
    out[0] = lw / total
    out[1] = sw / total
    out[2] = nl
    out[3] = ns
    out[4] = lbits
    out[5] = sbits
    out[6] = lnew
    out[7] = snew


@njit(cache=True, nogil=True, error_model="numpy")
def scan(
    ts, kind, bid, ask, price, qty, buyer_maker, start, stop, mode, st, p,
    ema_f, ema_s, rsi, bb, bw_sma, vol_sma, atr, ofi, spread_ema, htf_ema, div, out,
):  # fmt: skip
    """Advance over events ``start..stop``; ``(index, signal)`` at a signal, else ``(stop, 0)``."""
    n = min(stop, ts.shape[0])
    bar_ns = p[P_BAR_NS]
    htf_ns = p[P_HTF_NS]
    tally = np.empty(8)  # once per call, not per event
    for i in range(start, n):
        k = kind[i]
        if k != _QUOTE and k != _TRADE:
            continue
        t = float(ts[i])
        if st[LAST_MID] == st[LAST_MID]:
            bucket = np.floor(t / bar_ns)
            if bucket > st[BUCKET]:
                if st[BUCKET] >= 0.0:
                    _close_bar(st, p, ema_f, ema_s, rsi, bb, bw_sma, vol_sma, atr, div, out, t)
                st[BUCKET] = bucket
                st[BAR_HIGH] = st[LAST_MID]
                st[BAR_LOW] = st[LAST_MID]
            if htf_ns > 0.0:
                hb = np.floor(t / htf_ns)
                if hb > st[HTF_BUCKET]:
                    if st[HTF_BUCKET] >= 0.0:
                        e = ema_update(htf_ema, st[LAST_MID])
                        if e == e:
                            st[HTF_TREND] = (
                                1.0 if st[LAST_MID] > e else (-1.0 if st[LAST_MID] < e else 0.0)
                            )
                    st[HTF_BUCKET] = hb
        if k == _QUOTE:
            b = bid[i]
            a = ask[i]
            if not (b == b and a == a):
                continue
            mid = 0.5 * (b + a)
            last = st[LAST_MID]
            if last == last and mid != last:
                d = 1.0 if mid > last else -1.0
                st[RUN] = st[RUN] + 1.0 if d == st[RUN_DIR] else 1.0
                st[RUN_DIR] = d
                if st[RUN] >= p[P_MICRO_TICKS]:
                    _vote(st, MICRO, d, t, p[P_WINDOW_NS])
            sp = spread_bps_update(out, b, a)
            avg = st[SPREAD_AVG]  # the EMA before this quote (NaN in warm-up)
            prev_b = st[LAST_BID]
            prev_a = st[LAST_ASK]
            prev_sp = st[PREV_SPREAD]
            if avg == avg and prev_b == prev_b:
                db = b - prev_b
                da = a - prev_a
                if sp > p[P_SPREAD_EXPAND] * avg:
                    if da > 0.0 and db >= 0.0:
                        _vote(st, SPREAD, 1.0, t, p[P_WINDOW_NS])
                    elif db < 0.0 and da <= 0.0:
                        _vote(st, SPREAD, -1.0, t, p[P_WINDOW_NS])
                elif st[EXPANDED] > 0.0 and sp < prev_sp:
                    if db > 0.0:
                        _vote(st, SPREAD, 1.0, t, p[P_WINDOW_NS])
                    elif da < 0.0:
                        _vote(st, SPREAD, -1.0, t, p[P_WINDOW_NS])
            st[EXPANDED] = 1.0 if avg == avg and sp > p[P_SPREAD_EXPAND] * avg else 0.0
            st[SPREAD_AVG] = ema_update(spread_ema, sp)
            st[PREV_SPREAD] = sp
            st[LAST_BID] = b
            st[LAST_ASK] = a
            st[LAST_MID] = mid
            if st[BUCKET] >= 0.0:
                if mid > st[BAR_HIGH]:
                    st[BAR_HIGH] = mid
                if mid < st[BAR_LOW]:
                    st[BAR_LOW] = mid
        else:
            q = qty[i]
            if not (q == q and price[i] == price[i]):
                continue
            side = -1.0 if buyer_maker[i] != 0 else 1.0
            st[BAR_VOL] += q
            st[BAR_NET] += side * q
            trade_ofi_update(ofi, q, side, out)
            imb = out[1]
            if imb == imb:
                if imb >= p[P_OFI_TH]:
                    _vote(st, OFI, 1.0, t, p[P_WINDOW_NS])
                elif imb <= -p[P_OFI_TH]:
                    _vote(st, OFI, -1.0, t, p[P_WINDOW_NS])
            avg_vol = st[VOL_AVG]
            if avg_vol > 0.0 and st[BAR_VOL] > p[P_VOL_MULT] * avg_vol:
                if st[BAR_NET] > 0.0:
                    _vote(st, VOLUME, 1.0, t, p[P_WINDOW_NS])
                elif st[BAR_NET] < 0.0:
                    _vote(st, VOLUME, -1.0, t, p[P_WINDOW_NS])
        if mode == 2 or st[LAST_BID] != st[LAST_BID]:
            continue
        _tally(st, p, t, tally)
        signal = 0
        long_ok = tally[2] >= p[P_MIN_CONF] and tally[0] >= p[P_MIN_STRENGTH]
        long_ok = long_ok and tally[0] > tally[1] and tally[6] > st[LAST_SIGNAL]
        short_ok = tally[3] >= p[P_MIN_CONF] and tally[1] >= p[P_MIN_STRENGTH]
        short_ok = short_ok and tally[1] > tally[0] and tally[7] > st[LAST_SIGNAL]
        if htf_ns > 0.0:
            long_ok = long_ok and st[HTF_TREND] > 0.0
            short_ok = short_ok and st[HTF_TREND] < 0.0
        if mode == 0:
            if long_ok:
                signal = 1
                st[STRENGTH] = tally[0]
                st[VOTES] = tally[4]
            elif short_ok and p[P_ALLOW_SHORT] > 0.0:
                signal = 2
                st[STRENGTH] = tally[1]
                st[VOTES] = tally[5]
        else:
            side = st[SIDE]
            if (side > 0.0 and short_ok) or (side < 0.0 and long_ok):
                signal = 3
                st[VOTES] = tally[5] if side > 0.0 else tally[4]
        if signal != 0:
            if signal <= 3:
                st[LAST_SIGNAL] = t
            return i, signal
    return n, 0


def _warm_up() -> None:
    n = 4
    ts = np.arange(n, dtype=np.int64)
    kind = np.array([1, 2, 1, 2], dtype=np.int8)
    px = np.full(n, 100.0)
    side = np.zeros(n, dtype=np.int8)
    for column in (ts, kind, px, side):
        column.flags.writeable = False  # the columns are read-only: compile that signature
    p = ScalperParams(bar_ms=1, ema_fast=2, ema_slow=3)
    scan(
        ts, kind, px, px, px, px, side, 0, n, 0, new_state(),
        pack_params(p), *new_indicators(p, 2),
    )  # fmt: skip


class Scalper(Strategy):
    """The eight-signal scalper as a :class:`~engine.strategy.Strategy` (``kind = "scalper"``)."""

    kind = "scalper"
    cross_reason = "opposite_signal"
    Params = ScalperParams

    def __init__(self, config: Any, sizing: Any, params: ScalperParams | None = None) -> None:
        self.params = params if params is not None else ScalperParams()
        self._state = new_state()
        self._packed = pack_params(self.params)
        self._indicators = new_indicators(self.params, sizing.atr_period)

    def scan(self, ticks: Ticks, start: int, stop: int, mode: Mode) -> tuple[int, int]:
        return scan(  # type: ignore[no-any-return]
            ticks.ts, ticks.kind, ticks.bid, ticks.ask, ticks.price, ticks.qty,
            ticks.buyer_maker, start, stop, int(mode), self._state, self._packed,
            *self._indicators,
        )  # fmt: skip

    last_bid = state_slot(LAST_BID)
    last_ask = state_slot(LAST_ASK)
    atr = state_slot(ATR)
    strength = state_slot(
        STRENGTH, "The entry's strength: its side's share of the (decayed) vote weight."
    )

    @property
    def votes(self) -> tuple[str, ...]:
        """The signals that agreed with the latest entry or opposite-signal exit."""
        bits = int(self._state[VOTES])
        return tuple(name for k, name in enumerate(SIGNALS) if bits >> k & 1)

    def on_entry_filled(self, side: int, entry_price: float, ts: int) -> None:
        store_entry(self._state, (SIDE, ENTRY_PRICE, ENTRY_TS), side, entry_price, ts)

    @classmethod
    def warm_up(cls) -> None:
        _warm_up()
