"""Order-flow indicators on trades: cumulative volume delta and Kyle's lambda.

Side is the exchange's aggressor flag: +1 when the buyer took liquidity (Binance
``m == false``), -1 when the seller did.

* Cumulative volume delta (CVD, "order-flow delta"): ``sum(side_i q_i)`` since the
  session start (``session_ns = 0``: since the first trade), compensated (Neumaier) so it
  does not drift.
* Kyle's lambda (Kyle, "Continuous Auctions and Insider Trading", Econometrica 53(6),
  1985; estimated as in Hasbrouck, "Empirical Market Microstructure", 2007, ch. 5): the
  least-squares slope ``lambda`` of ``dp_i = c + lambda x_i + e_i`` over the last
  ``timeperiod`` trades, ``dp_i = p_i - p_{i-1}`` the trade-to-trade price change and
  ``x_i = side_i q_i`` the signed size: price impact per unit of base quantity,
  ``(n sum(x dp) - sum(x) sum(dp)) / (n sum(x^2) - sum(x)^2)``; 0 when the window's
  signed sizes do not vary. Measured on trade prices (the fused set feeds no quotes to
  trade kernels), so the estimate includes the bid-ask bounce: a taker that crosses a
  spread of ``s`` moves the trade price by up to ``s`` whatever its size; it is an
  upper bound of the mid-quote impact on a thin book and close to it on a deep one.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import as_f64, check_int, window_push2

# --- CVD ------------------------------------------------------------------------------
# [session_ns, session_id, started, sum, compensation]
_CVD_LEN, _CVD_ID, _CVD_STARTED, _CVD_SUM, _CVD_COMP = range(5)


def cvd_state(session_ns: int = 0) -> np.ndarray:
    """Allocate the state of a cumulative volume delta.

    Args:
        session_ns: reset length in nanoseconds (UTC-aligned, e.g. one day); 0 never resets.
    """
    if isinstance(session_ns, bool) or int(session_ns) != session_ns or not 0 <= session_ns < 2**53:
        raise ValueError(f"session_ns must be an integer in [0, 2**53), got {session_ns!r}")
    st = np.zeros(5, dtype=np.float64)
    st[_CVD_LEN] = session_ns
    return st


@njit(nogil=True, error_model="numpy")
def cvd_update(state: np.ndarray, ts: int, qty: float, side: float) -> float:
    """Signed volume ``sum(side q)`` since the session start, after one more trade."""
    if qty != qty or side != side:
        return np.nan
    length = np.int64(state[_CVD_LEN])
    sid = float(ts // length) if length > 0 else 0.0
    if state[_CVD_STARTED] == 0.0 or sid != state[_CVD_ID]:
        state[_CVD_STARTED] = 1.0
        state[_CVD_ID] = sid
        state[_CVD_SUM] = 0.0
        state[_CVD_COMP] = 0.0
    x = side * qty
    total = state[_CVD_SUM]
    t = total + x
    if abs(total) >= abs(x):
        state[_CVD_COMP] += (total - t) + x
    else:
        state[_CVD_COMP] += (x - t) + total
    state[_CVD_SUM] = t
    return t + state[_CVD_COMP]


@njit(cache=True, nogil=True, error_model="numpy")
def _cvd_run(
    state: np.ndarray, ts: np.ndarray, qty: np.ndarray, side: np.ndarray, out: np.ndarray
) -> None:
    for i in range(qty.shape[0]):
        out[i] = cvd_update(state, ts[i], qty[i], side[i])


def cvd(ts: np.ndarray, volume: np.ndarray, side: np.ndarray, session_ns: int = 0) -> np.ndarray:
    """Cumulative volume delta of trades (see :func:`cvd_update`)."""
    t = np.ascontiguousarray(ts, dtype=np.int64)
    q, s = as_f64(volume), as_f64(side)
    if not t.shape == q.shape == s.shape or q.ndim != 1:
        raise ValueError("input arrays must be 1-D and of the same length")
    out = np.empty(q.shape[0], dtype=np.float64)
    _cvd_run(cvd_state(session_ns), t, q, s, out)
    return out


# --- Kyle's lambda --------------------------------------------------------------------
# [started, prev_price, block1 (x, dp), block2 (x^2, x dp)]; each block is a window_push2
# header [n, count, pos, A, A', B, B'] followed by its two rings.
_KL_STARTED, _KL_PREV = range(2)
_KL_B1 = 2


def kyle_lambda_state(timeperiod: int = 100) -> np.ndarray:
    """Allocate the state of Kyle's lambda over ``timeperiod`` trades."""
    n = check_int("timeperiod", timeperiod, 2, 10_000_000)
    block = 7 + 2 * n
    st = np.zeros(_KL_B1 + 2 * block, dtype=np.float64)
    st[_KL_B1] = n
    st[_KL_B1 + block] = n
    return st


@njit(nogil=True, error_model="numpy")
def kyle_lambda_update(state: np.ndarray, price: float, qty: float, side: float) -> float:
    """Kyle's lambda of the last ``timeperiod`` trades (first value after ``n + 1`` trades)."""
    if price != price or qty != qty or side != side:
        return np.nan
    if state[_KL_STARTED] == 0.0:
        state[_KL_STARTED] = 1.0
        state[_KL_PREV] = price
        return np.nan
    dp = price - state[_KL_PREV]
    state[_KL_PREV] = price
    x = side * qty
    n = state[_KL_B1]
    b2 = _KL_B1 + 7 + 2 * int(n)
    window_push2(state, _KL_B1, _KL_B1 + 7, x, dp)
    if not window_push2(state, b2, b2 + 7, x * x, x * dp):
        return np.nan
    sx = state[_KL_B1 + 3]
    sdp = state[_KL_B1 + 5]
    den = n * state[b2 + 3] - sx * sx
    # Below 1e-12 of n sum(x^2), the spread of the sizes is under the sums' rounding.
    if not den > 1e-12 * n * state[b2 + 3]:
        return 0.0
    return (n * state[b2 + 5] - sx * sdp) / den


@njit(cache=True, nogil=True, error_model="numpy")
def _kyle_run(
    state: np.ndarray, price: np.ndarray, qty: np.ndarray, side: np.ndarray, out: np.ndarray
) -> None:
    for i in range(price.shape[0]):
        out[i] = kyle_lambda_update(state, price[i], qty[i], side[i])


def kyle_lambda(
    price: np.ndarray, volume: np.ndarray, side: np.ndarray, timeperiod: int = 100
) -> np.ndarray:
    """Kyle's lambda of trades: price change per unit of signed size (see module doc)."""
    p, q, s = as_f64(price), as_f64(volume), as_f64(side)
    if not p.shape == q.shape == s.shape or p.ndim != 1:
        raise ValueError("input arrays must be 1-D and of the same length")
    out = np.empty(p.shape[0], dtype=np.float64)
    _kyle_run(kyle_lambda_state(timeperiod), p, q, s, out)
    return out
