"""Market-microstructure indicators TA-Lib does not have.

Each comes as a state factory, an O(1) ``@njit`` update and a batch function defined by
the update (so batch and incremental cannot disagree). Windows are counted in ticks (or
bars), never in time: a time window has no bound on how many ticks it holds, so it could
not live in a preallocated ring.

Rolling sums are re-anchored once per window from sums built only by additions (see
``_common``), so their rounding is bounded by one window however long the process runs.
Cumulative sums use Neumaier's compensated summation.

Formulas and sources:

* Session VWAP: ``sum(p q) / sum(q)`` since the session start; sessions are
  ``floor((ts - offset_ns) / session_ns)`` (UTC days by default). Berkowitz, Logue and
  Noser, "The Total Cost of Transactions on the NYSE", J. Finance 43(1), 1988.
* Rolling VWAP: the same over the last ``timeperiod`` trades.
* TWAP: time-weighted average price over the last ``timeperiod`` inter-trade intervals;
  each price is weighted by how long it stood (``sum(p_i dt_i) / sum(dt_i)``, with
  ``dt_i = ts_{i+1} - ts_i``); the plain mean of those prices when they all share one
  time stamp. Standard execution benchmark (Kissell, "The Science of Algorithmic
  Trading and Portfolio Management", 2013, ch. 3).
* Realized volatility: ``sqrt(sum(r_i^2))`` of the last ``timeperiod`` log returns
  ``r_i = ln(p_i / p_{i-1})``, not annualized. Andersen and Bollerslev, "Answering the
  skeptics", Int. Econ. Review 39(4), 1998; Barndorff-Nielsen and Shephard, JRSS B 64,
  2002.
* Tick momentum (volume weighted): ``sum(s_i q_i) / sum(q_i)`` over the last
  ``timeperiod`` trades, ``s_i`` the tick-test sign of the trade (+1 uptick, -1
  downtick, a zero tick keeps the previous sign, 0 before the first move), in [-1, 1].
  Tick test: Lee and Ready, "Inferring Trade Direction from Intraday Data", J. Finance
  46(2), 1991.
* Price velocity and acceleration: ``v_t = (p_t - p_{t-n}) / (ts_t - ts_{t-n})`` in price
  units per second and ``a_t = (v_t - v_{t-n}) / (ts_t - ts_{t-n})`` per second squared,
  backward finite differences over ``n = timeperiod`` ticks; when the ``n`` ticks share a
  time stamp the previous value is kept.
* Trade order-flow imbalance: ``sum(side_i q_i)`` and ``sum(side_i q_i) / sum(q_i)`` over
  the last ``timeperiod`` trades, side from the exchange's aggressor flag (+1 buyer is
  taker, -1 seller). Chordia and Subrahmanyam, "Order imbalance and individual stock
  returns", J. Financial Economics 72, 2004; cf. Cont, Kukanov and Stoikov, "The Price
  Impact of Order Book Events", J. Financial Econometrics 12(1), 2014 (quote-based OFI).
* Top-of-book imbalance: ``(Qb - Qa) / (Qb + Qa)`` of the best bid/ask sizes; N-level:
  ``sum(w_k (Qb_k - Qa_k)) / sum(w_k (Qb_k + Qa_k))`` over the first ``levels`` levels
  with ``w_k = decay**k``. Cao, Hansch and Wang, "The information content of an open
  limit-order book", J. Futures Markets 29(1), 2009.
* Spread in basis points: ``1e4 * (ask - bid) / ((ask + bid) / 2)``.
* VPIN: trades fill equal-volume buckets of ``bucket_volume`` (a trade crossing a bucket
  boundary is split); VPIN is ``sum(|V_sell - V_buy|) / (n V)`` over the last
  ``n = timeperiod`` buckets. Buy/sell volume comes from the aggressor flag rather than
  the paper's bulk volume classification. Easley, Lopez de Prado and O'Hara, "Flow
  Toxicity and Liquidity in a High-frequency World", Rev. Financial Studies 25(5), 2012.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._common import (
    NS_PER_S,
    as_f64,
    check_int,
    get_ts,
    put_ts,
    window_push1,
    window_push2,
    window_push3,
)

_DEFAULT_SESSION_NS = 86_400_000_000_000


def _as_i64(a: object) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def _same_length(*arrays: np.ndarray) -> int:
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays[1:]):
        raise ValueError("input arrays must have the same length")
    return n


@njit(nogil=True, error_model="numpy")
def _neumaier(total: float, comp: float, x: float) -> tuple[float, float]:
    t = total + x
    if abs(total) >= abs(x):
        comp += (total - t) + x
    else:
        comp += (x - t) + total
    return t, comp


# --- session VWAP ---------------------------------------------------------------------
# [session_ns, offset_ns, session_id, started, pv, pv_comp, v, v_comp]
_SV_LEN, _SV_OFF, _SV_ID, _SV_STARTED, _SV_PV, _SV_PVC, _SV_V, _SV_VC = range(8)


def vwap_state(session_ns: int = _DEFAULT_SESSION_NS, offset_ns: int = 0) -> np.ndarray:
    """Allocate the state of a session VWAP.

    Args:
        session_ns: session length in nanoseconds (default one UTC day).
        offset_ns: session boundary offset from the epoch, in nanoseconds.
    """
    if session_ns <= 0 or session_ns >= 2**53 or abs(offset_ns) >= 2**53:
        raise ValueError("session_ns must be in (0, 2**53) and |offset_ns| < 2**53")
    st = np.zeros(8, dtype=np.float64)
    st[_SV_LEN] = session_ns
    st[_SV_OFF] = offset_ns
    return st


@njit(nogil=True, error_model="numpy")
def vwap_update(state: np.ndarray, ts: int, price: float, qty: float) -> float:
    """Session VWAP after one more trade (the trade's price while the session has no volume)."""
    if price != price or qty != qty:
        return np.nan
    sid = float((ts - np.int64(state[_SV_OFF])) // np.int64(state[_SV_LEN]))
    if state[_SV_STARTED] == 0.0 or sid != state[_SV_ID]:
        state[_SV_STARTED] = 1.0
        state[_SV_ID] = sid
        state[_SV_PV] = state[_SV_PVC] = state[_SV_V] = state[_SV_VC] = 0.0
    pv, pvc = _neumaier(state[_SV_PV], state[_SV_PVC], price * qty)
    v, vc = _neumaier(state[_SV_V], state[_SV_VC], qty)
    state[_SV_PV] = pv
    state[_SV_PVC] = pvc
    state[_SV_V] = v
    state[_SV_VC] = vc
    vol = v + vc
    return (pv + pvc) / vol if vol > 0.0 else price


@njit(cache=True, nogil=True, error_model="numpy")
def _vwap_run(
    state: np.ndarray, ts: np.ndarray, price: np.ndarray, qty: np.ndarray, out: np.ndarray
) -> None:
    for i in range(price.shape[0]):
        out[i] = vwap_update(state, ts[i], price[i], qty[i])


def vwap(
    ts: np.ndarray,
    price: np.ndarray,
    volume: np.ndarray,
    session_ns: int = _DEFAULT_SESSION_NS,
    offset_ns: int = 0,
) -> np.ndarray:
    """Session VWAP of trades (``ts`` in int64 epoch nanoseconds)."""
    t, p, q = _as_i64(ts), as_f64(price), as_f64(volume)
    out = np.empty(_same_length(t, p, q), dtype=np.float64)
    _vwap_run(vwap_state(session_ns, offset_ns), t, p, q, out)
    return out


# --- rolling VWAP ---------------------------------------------------------------------
# [n, count, pos, pv_sum, pv_fresh, v_sum, v_fresh, pv_ring[n], v_ring[n]]
_RV_N, _RV_COUNT, _RV_POS, _RV_PV, _RV_V = 0, 1, 2, 3, 5
_RV_RING = 7


def rolling_vwap_state(timeperiod: int = 100) -> np.ndarray:
    """Allocate the state of a rolling VWAP over ``timeperiod`` trades."""
    n = check_int("timeperiod", timeperiod, 1, 10_000_000)
    st = np.zeros(_RV_RING + 2 * n, dtype=np.float64)
    st[_RV_N] = n
    return st


@njit(nogil=True, error_model="numpy")
def rolling_vwap_update(state: np.ndarray, price: float, qty: float) -> float:
    """VWAP of the last ``timeperiod`` trades (NaN until there are that many)."""
    if price != price or qty != qty:
        return np.nan
    if not window_push2(state, 0, _RV_RING, price * qty, qty):
        return np.nan
    v = state[_RV_V]
    return state[_RV_PV] / v if v > 0.0 else price


@njit(cache=True, nogil=True, error_model="numpy")
def _rolling_vwap_run(
    state: np.ndarray, price: np.ndarray, qty: np.ndarray, out: np.ndarray
) -> None:
    for i in range(price.shape[0]):
        out[i] = rolling_vwap_update(state, price[i], qty[i])


def rolling_vwap(price: np.ndarray, volume: np.ndarray, timeperiod: int = 100) -> np.ndarray:
    """Rolling VWAP over the last ``timeperiod`` trades (or bars, with a typical price)."""
    p, q = as_f64(price), as_f64(volume)
    out = np.empty(_same_length(p, q), dtype=np.float64)
    _rolling_vwap_run(rolling_vwap_state(timeperiod), p, q, out)
    return out


# --- TWAP -----------------------------------------------------------------------------
# [n, count, pos, pdt_sum, pdt_fresh, dt_sum, dt_fresh, p_sum, p_fresh, started,
#  origin_hi, origin_lo, prev_t, prev_p, pdt_ring[n], dt_ring[n], p_ring[n]]
_TW_P, _TW_STARTED, _TW_ORIGIN, _TW_PREVT, _TW_PREVP = 7, 9, 10, 12, 13
_TW_RING = 14


def twap_state(timeperiod: int = 100) -> np.ndarray:
    """Allocate the state of a TWAP over ``timeperiod`` inter-trade intervals."""
    n = check_int("timeperiod", timeperiod, 1, 10_000_000)
    st = np.zeros(_TW_RING + 3 * n, dtype=np.float64)
    st[0] = n
    return st


@njit(nogil=True, error_model="numpy")
def twap_update(state: np.ndarray, ts: int, price: float) -> float:
    """TWAP after one more trade; a time stamp going backwards counts as no time."""
    if price != price:
        return np.nan
    if state[_TW_STARTED] == 0.0:
        state[_TW_STARTED] = 1.0
        put_ts(state, _TW_ORIGIN, ts)
        state[_TW_PREVT] = 0.0
        state[_TW_PREVP] = price
        return np.nan
    # Offsets from the first time stamp are exact in a float64 for 2**53 ns (104 days).
    t = float(ts - get_ts(state, _TW_ORIGIN))
    dt = t - state[_TW_PREVT]
    if dt < 0.0:
        dt = 0.0
    prev_p = state[_TW_PREVP]
    state[_TW_PREVT] = t
    state[_TW_PREVP] = price
    if not window_push3(state, _TW_RING, prev_p * dt, dt, prev_p):
        return np.nan
    span = state[5]
    return state[3] / span if span > 0.0 else state[_TW_P] / state[0]


@njit(cache=True, nogil=True, error_model="numpy")
def _twap_run(state: np.ndarray, ts: np.ndarray, price: np.ndarray, out: np.ndarray) -> None:
    for i in range(price.shape[0]):
        out[i] = twap_update(state, ts[i], price[i])


def twap(ts: np.ndarray, price: np.ndarray, timeperiod: int = 100) -> np.ndarray:
    """Time-weighted average price over the last ``timeperiod`` inter-trade intervals.

    The first value is at row ``timeperiod`` (it needs ``timeperiod + 1`` trades).
    """
    t, p = _as_i64(ts), as_f64(price)
    out = np.empty(_same_length(t, p), dtype=np.float64)
    _twap_run(twap_state(timeperiod), t, p, out)
    return out


# --- realized volatility --------------------------------------------------------------
# [n, count, pos, sum, fresh, started, prev, ring[n]]
_RVOL_STARTED, _RVOL_PREV = 5, 6
_RVOL_RING = 7


def realized_vol_state(timeperiod: int = 100) -> np.ndarray:
    """Allocate the state of a realized volatility over ``timeperiod`` returns."""
    n = check_int("timeperiod", timeperiod, 1, 10_000_000)
    st = np.zeros(_RVOL_RING + n, dtype=np.float64)
    st[0] = n
    return st


@njit(nogil=True, error_model="numpy")
def realized_vol_update(state: np.ndarray, x: float) -> float:
    """Realized volatility after one more price; non-positive prices are skipped like NaN."""
    if not x > 0.0:
        return np.nan
    if state[_RVOL_STARTED] == 0.0:
        state[_RVOL_STARTED] = 1.0
        state[_RVOL_PREV] = x
        return np.nan
    r = math.log(x / state[_RVOL_PREV])
    state[_RVOL_PREV] = x
    if not window_push1(state, _RVOL_RING, r * r):
        return np.nan
    s = state[3]
    return math.sqrt(s) if s > 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _rvol_run(state: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        out[i] = realized_vol_update(state, x[i])


def realized_vol(real: np.ndarray, timeperiod: int = 100) -> np.ndarray:
    """Realized volatility: root sum of squared log returns over ``timeperiod`` returns.

    First value at row ``timeperiod``; not annualized (multiply by
    ``sqrt(periods per year / timeperiod)`` for that).
    """
    x = as_f64(real)
    out = np.empty(x.shape[0], dtype=np.float64)
    _rvol_run(realized_vol_state(timeperiod), x, out)
    return out


# --- tick momentum --------------------------------------------------------------------
# [n, count, pos, sq_sum, sq_fresh, q_sum, q_fresh, started, prev, sign, sq_ring, q_ring]
_TM_STARTED, _TM_PREV, _TM_SIGN = 7, 8, 9
_TM_RING = 10


def tick_momentum_state(timeperiod: int = 50) -> np.ndarray:
    """Allocate the state of a volume-weighted tick momentum over ``timeperiod`` trades."""
    n = check_int("timeperiod", timeperiod, 1, 10_000_000)
    st = np.zeros(_TM_RING + 2 * n, dtype=np.float64)
    st[0] = n
    return st


@njit(nogil=True, error_model="numpy")
def tick_momentum_update(state: np.ndarray, price: float, qty: float) -> float:
    """Volume-weighted tick-test sign of the last ``timeperiod`` trades, in [-1, 1]."""
    if price != price or qty != qty:
        return np.nan
    sign = state[_TM_SIGN]
    if state[_TM_STARTED] == 0.0:
        state[_TM_STARTED] = 1.0
    elif price > state[_TM_PREV]:
        sign = 1.0
    elif price < state[_TM_PREV]:
        sign = -1.0
    state[_TM_SIGN] = sign
    state[_TM_PREV] = price
    if not window_push2(state, 0, _TM_RING, sign * qty, qty):
        return np.nan
    v = state[5]
    # The two sums round separately; keep the ratio in its [-1, 1] range.
    return min(1.0, max(-1.0, state[3] / v)) if v > 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _tm_run(state: np.ndarray, price: np.ndarray, qty: np.ndarray, out: np.ndarray) -> None:
    for i in range(price.shape[0]):
        out[i] = tick_momentum_update(state, price[i], qty[i])


def tick_momentum(price: np.ndarray, volume: np.ndarray, timeperiod: int = 50) -> np.ndarray:
    """Volume-weighted tick momentum (Lee-Ready tick test) over ``timeperiod`` trades."""
    p, q = as_f64(price), as_f64(volume)
    out = np.empty(_same_length(p, q), dtype=np.float64)
    _tm_run(tick_momentum_state(timeperiod), p, q, out)
    return out


# --- velocity and acceleration --------------------------------------------------------
# [n, count, pos, origin_hi, origin_lo, velocity, acceleration, t_ring, p_ring, v_ring]
_VL_ORIGIN, _VL_V, _VL_A = 3, 5, 6
_VL_RING = 7


def velocity_state(timeperiod: int = 20) -> np.ndarray:
    """Allocate the state of price velocity/acceleration over ``timeperiod`` ticks."""
    n = check_int("timeperiod", timeperiod, 1, 10_000_000)
    st = np.zeros(_VL_RING + 3 * n, dtype=np.float64)
    st[0] = n
    st[_VL_V] = np.nan
    st[_VL_A] = np.nan
    return st


@njit(nogil=True, error_model="numpy")
def velocity_update(state: np.ndarray, ts: int, price: float, out: np.ndarray) -> None:
    """Feed one tick; writes ``(velocity, acceleration)`` (per second, per second^2)."""
    if price != price:
        out[0] = out[1] = np.nan
        return
    n = int(state[0])
    count = state[1]
    if count == 0.0:
        put_ts(state, _VL_ORIGIN, ts)
    state[1] = count + 1.0
    t = float(ts - get_ts(state, _VL_ORIGIN))
    pos = int(state[2])
    ts_at = _VL_RING + pos
    v = np.nan
    a = np.nan
    if count >= n:
        dt = (t - state[ts_at]) / NS_PER_S
        v = (price - state[ts_at + n]) / dt if dt > 0.0 else state[_VL_V]
        if count >= 2 * n:
            a = (v - state[ts_at + 2 * n]) / dt if dt > 0.0 else state[_VL_A]
    state[ts_at] = t
    state[ts_at + n] = price
    state[ts_at + 2 * n] = v
    state[_VL_V] = v
    state[_VL_A] = a
    pos += 1
    if pos == n:
        pos = 0
    state[2] = pos
    out[0] = v
    out[1] = a


@njit(cache=True, nogil=True, error_model="numpy")
def _vel_run(state: np.ndarray, ts: np.ndarray, price: np.ndarray, out: np.ndarray) -> None:
    for i in range(price.shape[0]):
        velocity_update(state, ts[i], price[i], out[:, i])


def velocity(
    ts: np.ndarray, price: np.ndarray, timeperiod: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Price velocity and acceleration over ``timeperiod`` ticks: ``(velocity, acceleration)``.

    Velocity starts at row ``timeperiod``, acceleration at ``2 * timeperiod``.
    """
    t, p = _as_i64(ts), as_f64(price)
    out = np.empty((2, _same_length(t, p)), dtype=np.float64)
    _vel_run(velocity_state(timeperiod), t, p, out)
    return out[0], out[1]


# --- trade order-flow imbalance -------------------------------------------------------
# [n, count, pos, sv_sum, sv_fresh, v_sum, v_fresh, sv_ring, v_ring]
_OFI_RING = 7


def trade_ofi_state(timeperiod: int = 100) -> np.ndarray:
    """Allocate the state of a trade order-flow imbalance over ``timeperiod`` trades."""
    n = check_int("timeperiod", timeperiod, 1, 10_000_000)
    st = np.zeros(_OFI_RING + 2 * n, dtype=np.float64)
    st[0] = n
    return st


@njit(nogil=True, error_model="numpy")
def trade_ofi_update(state: np.ndarray, qty: float, side: float, out: np.ndarray) -> None:
    """Feed one trade; writes ``(net signed volume, imbalance in [-1, 1])``."""
    if qty != qty or side != side:
        out[0] = out[1] = np.nan
        return
    if not window_push2(state, 0, _OFI_RING, side * qty, qty):
        out[0] = out[1] = np.nan
        return
    net = state[3]
    v = state[5]
    out[0] = net
    # The two sums round separately; keep the ratio in its [-1, 1] range.
    out[1] = min(1.0, max(-1.0, net / v)) if v > 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _ofi_run(state: np.ndarray, qty: np.ndarray, side: np.ndarray, out: np.ndarray) -> None:
    for i in range(qty.shape[0]):
        trade_ofi_update(state, qty[i], side[i], out[:, i])


def trade_ofi(
    volume: np.ndarray, side: np.ndarray, timeperiod: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Order-flow imbalance of the last ``timeperiod`` trades: ``(net, imbalance)``.

    ``side`` is +1 when the buyer was the aggressor (Binance ``m == false``), -1 otherwise.
    """
    q, sd = as_f64(volume), as_f64(side)
    out = np.empty((2, _same_length(q, sd)), dtype=np.float64)
    _ofi_run(trade_ofi_state(timeperiod), q, sd, out)
    return out[0], out[1]


# --- book imbalance and spread --------------------------------------------------------


def book_imbalance_state() -> np.ndarray:
    """Top-of-book imbalance is stateless; its state is empty (kept for uniformity)."""
    return np.zeros(0, dtype=np.float64)


@njit(nogil=True, error_model="numpy")
def book_imbalance_update(state: np.ndarray, bid_qty: float, ask_qty: float) -> float:
    """``(bid_qty - ask_qty) / (bid_qty + ask_qty)``; 0 for an empty book."""
    if bid_qty != bid_qty or ask_qty != ask_qty:
        return np.nan
    total = bid_qty + ask_qty
    return (bid_qty - ask_qty) / total if total > 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _bi_run(bid_qty: np.ndarray, ask_qty: np.ndarray, out: np.ndarray) -> None:
    st = np.zeros(0, dtype=np.float64)
    for i in range(bid_qty.shape[0]):
        out[i] = book_imbalance_update(st, bid_qty[i], ask_qty[i])


def book_imbalance(bid_qty: np.ndarray, ask_qty: np.ndarray) -> np.ndarray:
    """Top-of-book size imbalance in [-1, 1]."""
    b, a = as_f64(bid_qty), as_f64(ask_qty)
    out = np.empty(_same_length(b, a), dtype=np.float64)
    _bi_run(b, a, out)
    return out


def book_imbalance_n_state(levels: int = 5, decay: float = 1.0) -> np.ndarray:
    """State of an N-level imbalance: the level weights ``decay**k``.

    Args:
        levels: number of price levels per side used (from the best).
        decay: weight ratio between consecutive levels, in (0, 1].
    """
    n = check_int("levels", levels, 1, 1000)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay!r}")
    return decay ** np.arange(n, dtype=np.float64)


@njit(nogil=True, error_model="numpy")
def book_imbalance_n_update(state: np.ndarray, bid_qty: np.ndarray, ask_qty: np.ndarray) -> float:
    """Weighted imbalance of the first ``levels`` sizes of each side (NaN if any is NaN)."""
    num = 0.0
    den = 0.0
    m = min(state.shape[0], bid_qty.shape[0], ask_qty.shape[0])
    for k in range(m):
        b = bid_qty[k]
        a = ask_qty[k]
        if b != b or a != a:
            return np.nan
        w = state[k]
        num += w * (b - a)
        den += w * (b + a)
    return num / den if den > 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _bin_run(state: np.ndarray, bid: np.ndarray, ask: np.ndarray, out: np.ndarray) -> None:
    for i in range(bid.shape[0]):
        out[i] = book_imbalance_n_update(state, bid[i], ask[i])


def book_imbalance_n(
    bid_qty: np.ndarray, ask_qty: np.ndarray, levels: int = 5, decay: float = 1.0
) -> np.ndarray:
    """N-level book imbalance; ``bid_qty``/``ask_qty`` are ``(n, L)`` sizes, best first."""
    b = np.ascontiguousarray(bid_qty, dtype=np.float64)
    a = np.ascontiguousarray(ask_qty, dtype=np.float64)
    if b.ndim != 2 or a.shape != b.shape:
        raise ValueError("bid_qty and ask_qty must be 2-D arrays of one shape")
    out = np.empty(b.shape[0], dtype=np.float64)
    _bin_run(book_imbalance_n_state(levels, decay), b, a, out)
    return out


def spread_bps_state() -> np.ndarray:
    """The spread is stateless; its state is empty (kept for uniformity)."""
    return np.zeros(0, dtype=np.float64)


@njit(nogil=True, error_model="numpy")
def spread_bps_update(state: np.ndarray, bid: float, ask: float) -> float:
    """``1e4 * (ask - bid) / mid``; NaN when the mid is not positive."""
    if bid != bid or ask != ask:
        return np.nan
    mid = 0.5 * (bid + ask)
    return 1e4 * (ask - bid) / mid if mid > 0.0 else np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def _sp_run(bid: np.ndarray, ask: np.ndarray, out: np.ndarray) -> None:
    st = np.zeros(0, dtype=np.float64)
    for i in range(bid.shape[0]):
        out[i] = spread_bps_update(st, bid[i], ask[i])


def spread_bps(bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """Quoted spread in basis points of the mid price."""
    b, a = as_f64(bid), as_f64(ask)
    out = np.empty(_same_length(b, a), dtype=np.float64)
    _sp_run(b, a, out)
    return out


# --- VPIN -----------------------------------------------------------------------------
# [n, count, pos, sum, fresh, bucket_volume, filled, buy, sell, ring[n]]
_VP_V, _VP_FILLED, _VP_BUY, _VP_SELL = 5, 6, 7, 8
_VP_RING = 9


def vpin_state(bucket_volume: float, timeperiod: int = 50) -> np.ndarray:
    """Allocate the state of a VPIN over ``timeperiod`` buckets of ``bucket_volume``."""
    n = check_int("timeperiod", timeperiod, 1, 10_000_000)
    if not bucket_volume > 0.0:
        raise ValueError(f"bucket_volume must be > 0, got {bucket_volume!r}")
    st = np.zeros(_VP_RING + n, dtype=np.float64)
    st[0] = n
    st[_VP_V] = bucket_volume
    return st


@njit(nogil=True, error_model="numpy")
def vpin_update(state: np.ndarray, qty: float, side: float) -> float:
    """VPIN after one more trade (NaN until ``timeperiod`` buckets are complete).

    O(1) per bucket the trade completes: a trade larger than a bucket fills several.
    """
    if qty != qty or side != side:
        return np.nan
    bucket = state[_VP_V]
    rest = qty if qty > 0.0 else 0.0
    buy = side > 0.0
    while rest > 0.0:
        room = bucket - state[_VP_FILLED]
        if rest < room:
            state[_VP_FILLED] += rest
            if buy:
                state[_VP_BUY] += rest
            else:
                state[_VP_SELL] += rest
            break
        # The trade completes this bucket; decide by comparison, not by the float sum
        # reaching the bucket size exactly.
        if buy:
            state[_VP_BUY] += room
        else:
            state[_VP_SELL] += room
        rest -= room
        window_push1(state, _VP_RING, abs(state[_VP_SELL] - state[_VP_BUY]))
        state[_VP_FILLED] = 0.0
        state[_VP_BUY] = 0.0
        state[_VP_SELL] = 0.0
    if state[1] < state[0]:
        return np.nan
    return min(1.0, state[3] / (state[0] * bucket))


@njit(cache=True, nogil=True, error_model="numpy")
def _vpin_run(state: np.ndarray, qty: np.ndarray, side: np.ndarray, out: np.ndarray) -> None:
    for i in range(qty.shape[0]):
        out[i] = vpin_update(state, qty[i], side[i])


def vpin(
    volume: np.ndarray, side: np.ndarray, bucket_volume: float, timeperiod: int = 50
) -> np.ndarray:
    """VPIN over the last ``timeperiod`` volume buckets (aggressor-side classification)."""
    q, sd = as_f64(volume), as_f64(side)
    out = np.empty(_same_length(q, sd), dtype=np.float64)
    _vpin_run(vpin_state(bucket_volume, timeperiod), q, sd, out)
    return out
