"""Price-level indicators TA-Lib does not have: Ichimoku and a rolling market profile.

Ichimoku Kinko Hyo (Goichi Hosoda, 1969; as documented by e.g. Patel, "Trading with
Ichimoku Clouds", Wiley 2010), with ``HH_n``/``LL_n`` the highest high/lowest low of the
last ``n`` bars:

* tenkan-sen ``(HH_9 + LL_9) / 2``, kijun-sen ``(HH_26 + LL_26) / 2``;
* senkou span A ``(tenkan + kijun) / 2`` and senkou span B ``(HH_52 + LL_52) / 2``, both
  plotted ``displacement`` (26) bars ahead: the value reported at bar ``t`` is the one
  computed at ``t - displacement``, i.e. the cloud that applies *now*;
* chikou span: the close plotted ``displacement`` bars back. Its value "at bar t" is a
  future close, which no causal indicator can know; we report the close of bar ``t``
  (the newest chikou point, to be compared with price ``displacement`` bars ago).

Market profile (volume at price; Steidlmayer's CBOT Market Profile, see Dalton, Jones and
Dalton, "Mind Over Markets", 1990) over a rolling window of ``timeperiod`` trades or bars:
prices are binned to multiples of ``bin_size``; the point of control (POC) is the bin with
the most volume (ties: the one nearest the window's mid-range, then the lower); the value
area grows from the POC one bin at a time toward the side holding more volume (ties go
up) until it holds ``value_area`` (70 %) of the window's volume, and its top and bottom
bins are VAH and VAL. Volumes are counted in integer multiples of ``lot_size`` so adding
and removing trades is exact.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import (
    as_f64,
    check_int,
    deque_expire,
    deque_front,
    deque_push,
    deque_size,
)

# --- Ichimoku -------------------------------------------------------------------------
# [tenkan, kijun, senkou, displacement, count, pos, 6 deques (hi/lo x 3 periods),
#  span_a_ring[max(d,1)], span_b_ring[max(d,1)]]
_IC_T, _IC_K, _IC_S, _IC_D, _IC_COUNT, _IC_POS = range(6)
_IC_DQ = 6


def ichimoku_state(
    tenkan_period: int = 9,
    kijun_period: int = 26,
    senkou_period: int = 52,
    displacement: int = 26,
) -> np.ndarray:
    """Allocate the state of an incremental Ichimoku (see the module docstring)."""
    t = check_int("tenkan_period", tenkan_period, 1)
    k = check_int("kijun_period", kijun_period, 1)
    s = check_int("senkou_period", senkou_period, 1)
    d = check_int("displacement", displacement, 0)
    size = _IC_DQ + 2 * (deque_size(t) + deque_size(k) + deque_size(s)) + 2 * max(d, 1)
    st = np.zeros(size, dtype=np.float64)
    st[_IC_T] = t
    st[_IC_K] = k
    st[_IC_S] = s
    st[_IC_D] = d
    return st


@njit(nogil=True, error_model="numpy")
def _mid_range(state: np.ndarray, at: int, n: int, count: float, high: float, low: float) -> float:
    """Push a bar into the max/min deque pair at ``at``; return ``(HH + LL) / 2`` or NaN."""
    lo_at = at + 2 + 2 * n
    oldest = count - n + 1.0
    deque_expire(state, at, n, oldest)
    deque_expire(state, lo_at, n, oldest)
    deque_push(state, at, n, high, count, True)
    deque_push(state, lo_at, n, low, count, False)
    if count < n:
        return np.nan
    return (deque_front(state, at, n) + deque_front(state, lo_at, n)) / 2.0


@njit(nogil=True, error_model="numpy")
def ichimoku_update(
    state: np.ndarray, high: float, low: float, close: float, out: np.ndarray
) -> None:
    """Feed one bar; writes ``(tenkan, kijun, senkou_a, senkou_b, chikou)`` into ``out``."""
    if high != high or low != low or close != close:
        for j in range(5):
            out[j] = np.nan
        return
    t = int(state[_IC_T])
    k = int(state[_IC_K])
    s = int(state[_IC_S])
    d = int(state[_IC_D])
    count = state[_IC_COUNT] + 1.0
    state[_IC_COUNT] = count
    at = _IC_DQ
    tenkan = _mid_range(state, at, t, count, high, low)
    at += 2 * (2 + 2 * t)
    kijun = _mid_range(state, at, k, count, high, low)
    at += 2 * (2 + 2 * k)
    span_b = _mid_range(state, at, s, count, high, low)
    at += 2 * (2 + 2 * s)
    span_a = (tenkan + kijun) / 2.0
    if d == 0:
        out[2] = span_a
        out[3] = span_b
    else:
        pos = int(state[_IC_POS])
        old_a = state[at + pos]
        old_b = state[at + d + pos]
        state[at + pos] = span_a
        state[at + d + pos] = span_b
        pos += 1
        if pos == d:
            pos = 0
        state[_IC_POS] = pos
        ready = count > d
        out[2] = old_a if ready else np.nan
        out[3] = old_b if ready else np.nan
    out[0] = tenkan
    out[1] = kijun
    out[4] = close


@njit(cache=True, nogil=True, error_model="numpy")
def _ichimoku_run(
    state: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    cloud: bool,
    out: np.ndarray,
) -> None:
    for i in range(close.shape[0]):
        if cloud:
            ichimoku_cloud_update(state, high[i], low[i], close[i], out[:, i])
        else:
            ichimoku_update(state, high[i], low[i], close[i], out[:, i])


def _ichimoku_batch(
    state: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, cloud: bool
) -> np.ndarray:
    """Feed every bar to an Ichimoku (or cloud) state; one output row per line."""
    h, lo, c = as_f64(high), as_f64(low), as_f64(close)
    if not h.shape == lo.shape == c.shape:
        raise ValueError("input arrays must have the same length")
    out = np.empty((2 if cloud else 5, c.shape[0]), dtype=np.float64)
    _ichimoku_run(state, h, lo, c, cloud, out)
    return out


def ichimoku(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    tenkan_period: int = 9,
    kijun_period: int = 26,
    senkou_period: int = 52,
    displacement: int = 26,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ichimoku: ``(tenkan, kijun, senkou_a, senkou_b, chikou)``, causal (see module doc).

    tenkan starts at row ``tenkan_period - 1``, kijun at ``kijun_period - 1``, senkou A at
    ``kijun_period - 1 + displacement`` (with the default periods), senkou B at
    ``senkou_period - 1 + displacement``; chikou is the close.
    """
    st = ichimoku_state(tenkan_period, kijun_period, senkou_period, displacement)
    out = _ichimoku_batch(st, high, low, close, False)
    return out[0], out[1], out[2], out[3], out[4]


# --- market profile -------------------------------------------------------------------
# [n, bin_size, lot_size, value_area, n_bins, count, pos, total_lots, hist_mask,
#  bin_ring[n], lot_ring[n], max_deque, min_deque, hist[hist_mask + 1]]
# The histogram is a ring of a power-of-two size >= n_bins, indexed by bin & mask (a
# modulo by any n_bins would cost an integer division per bin scanned).
_MP_N, _MP_BIN, _MP_LOT, _MP_VA, _MP_NB, _MP_COUNT, _MP_POS, _MP_TOTAL, _MP_MASK = range(9)
_MP_RING = 9


def market_profile_state(
    bin_size: float,
    timeperiod: int = 500,
    value_area: float = 0.7,
    lot_size: float = 1e-8,
    n_bins: int = 4096,
) -> np.ndarray:
    """Allocate the state of a rolling market profile (see the module docstring).

    Args:
        bin_size: price width of one profile bin (e.g. the tick size, or a multiple).
        timeperiod: window length in trades (or bars).
        value_area: fraction of the window volume the value area must hold.
        lot_size: volume quantum; the window's volume in lots must stay below 2**53.
        n_bins: histogram size; when the window's price range spans ``n_bins`` bins or
            more the outputs are NaN. The per-update cost is O(bins in the range).
    """
    n = check_int("timeperiod", timeperiod, 1, 10_000_000)
    nb = check_int("n_bins", n_bins, 1, 10_000_000)
    if not bin_size > 0.0 or not lot_size > 0.0:
        raise ValueError("bin_size and lot_size must be > 0")
    if not 0.0 < value_area <= 1.0:
        raise ValueError(f"value_area must be in (0, 1], got {value_area!r}")
    size = 1 << (nb - 1).bit_length()
    st = np.zeros(_MP_RING + 2 * n + 2 * deque_size(n) + size, dtype=np.float64)
    st[_MP_MASK] = size - 1
    st[_MP_N] = n
    st[_MP_BIN] = bin_size
    st[_MP_LOT] = lot_size
    st[_MP_VA] = value_area
    st[_MP_NB] = nb
    return st


@njit(nogil=True, error_model="numpy")
def market_profile_update(state: np.ndarray, price: float, qty: float, out: np.ndarray) -> None:
    """Feed one trade (or bar close and volume); writes ``(poc, vah, val)`` prices."""
    if price != price or qty != qty:
        out[0] = out[1] = out[2] = np.nan
        return
    n = int(state[_MP_N])
    nb = int(state[_MP_NB])
    mask = np.int64(state[_MP_MASK])
    bin_size = state[_MP_BIN]
    b = np.floor(price / bin_size + 0.5)
    lots = np.floor(qty / state[_MP_LOT] + 0.5) if qty > 0.0 else 0.0
    count = state[_MP_COUNT] + 1.0
    state[_MP_COUNT] = count
    pos = int(state[_MP_POS])
    dq_hi = _MP_RING + 2 * n
    dq_lo = dq_hi + 2 + 2 * n
    hist = dq_lo + 2 + 2 * n
    total = state[_MP_TOTAL]
    if count > n:
        old_b = np.int64(state[_MP_RING + pos])
        old_lots = state[_MP_RING + n + pos]
        state[hist + (old_b & mask)] -= old_lots
        total -= old_lots
    state[hist + (np.int64(b) & mask)] += lots
    total += lots
    state[_MP_TOTAL] = total
    state[_MP_RING + pos] = b
    state[_MP_RING + n + pos] = lots
    pos += 1
    if pos == n:
        pos = 0
    state[_MP_POS] = pos
    oldest = count - n + 1.0
    deque_expire(state, dq_hi, n, oldest)
    deque_expire(state, dq_lo, n, oldest)
    deque_push(state, dq_hi, n, b, count, True)
    deque_push(state, dq_lo, n, b, count, False)
    lo = np.int64(deque_front(state, dq_lo, n))
    hi = np.int64(deque_front(state, dq_hi, n))
    if count < n or hi - lo >= nb or not total > 0.0:
        out[0] = out[1] = out[2] = np.nan
        return
    # Point of control: most volume; ties to the bin nearest the mid-range, then lower.
    mid2 = lo + hi
    poc = lo
    best = -1.0
    for k in range(lo, hi + 1):
        v = state[hist + (k & mask)]
        if v > best or (v == best and abs(2 * k - mid2) < abs(2 * poc - mid2)):
            best = v
            poc = k
    target = state[_MP_VA] * total
    acc = best
    va_lo = poc
    va_hi = poc
    while acc < target:
        up = state[hist + ((va_hi + 1) & mask)] if va_hi < hi else -1.0
        down = state[hist + ((va_lo - 1) & mask)] if va_lo > lo else -1.0
        if up < 0.0 and down < 0.0:
            break
        if up >= down:
            va_hi += 1
            acc += up
        else:
            va_lo -= 1
            acc += down
    out[0] = poc * bin_size
    out[1] = va_hi * bin_size
    out[2] = va_lo * bin_size


@njit(cache=True, nogil=True, error_model="numpy")
def _mp_run(state: np.ndarray, price: np.ndarray, qty: np.ndarray, out: np.ndarray) -> None:
    for i in range(price.shape[0]):
        market_profile_update(state, price[i], qty[i], out[:, i])


def market_profile(
    real: np.ndarray,
    volume: np.ndarray,
    bin_size: float,
    timeperiod: int = 500,
    value_area: float = 0.7,
    lot_size: float = 1e-8,
    n_bins: int = 4096,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rolling market profile: ``(poc, vah, val)`` prices; first value at ``timeperiod - 1``."""
    p, q = as_f64(real), as_f64(volume)
    if p.shape != q.shape:
        raise ValueError("input arrays must have the same length")
    out = np.empty((3, p.shape[0]), dtype=np.float64)
    _mp_run(market_profile_state(bin_size, timeperiod, value_area, lot_size, n_bins), p, q, out)
    return out[0], out[1], out[2]


# --- Ichimoku cloud position ----------------------------------------------------------
# [scratch[5], ichimoku state[...]]
_CL_OUT = 5


def ichimoku_cloud_state(
    tenkan_period: int = 9,
    kijun_period: int = 26,
    senkou_period: int = 52,
    displacement: int = 26,
) -> np.ndarray:
    """Allocate the state of an incremental Ichimoku cloud position."""
    ic = ichimoku_state(tenkan_period, kijun_period, senkou_period, displacement)
    return np.concatenate((np.zeros(_CL_OUT), ic))


@njit(nogil=True, error_model="numpy")
def ichimoku_cloud_update(
    state: np.ndarray, high: float, low: float, close: float, out: np.ndarray
) -> None:
    """Feed one bar; writes ``(position, thickness)`` of the close against today's cloud.

    The cloud that applies now is senkou spans A and B computed ``displacement`` bars ago
    (see :func:`ichimoku`). ``position`` is +1 when the close is above both spans, -1
    below both, 0 inside the cloud or on its edge; ``thickness`` is ``span_a - span_b``
    (positive: a rising, "bullish" cloud). NaN until both spans exist.
    """
    if high != high or low != low or close != close:
        out[0] = out[1] = np.nan
        return
    lines = state[:_CL_OUT]
    ichimoku_update(state[_CL_OUT:], high, low, close, lines)
    a = lines[2]
    b = lines[3]
    if a != a or b != b:
        out[0] = out[1] = np.nan
        return
    top = max(a, b)
    bottom = min(a, b)
    out[0] = 1.0 if close > top else (-1.0 if close < bottom else 0.0)
    out[1] = a - b


def ichimoku_cloud(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    tenkan_period: int = 9,
    kijun_period: int = 26,
    senkou_period: int = 52,
    displacement: int = 26,
) -> tuple[np.ndarray, np.ndarray]:
    """Position of the close against the Ichimoku cloud: ``(position, thickness)``.

    See :func:`ichimoku_cloud_update`; the first value is at row
    ``senkou_period - 1 + displacement``.
    """
    st = ichimoku_cloud_state(tenkan_period, kijun_period, senkou_period, displacement)
    out = _ichimoku_batch(st, high, low, close, True)
    return out[0], out[1]
