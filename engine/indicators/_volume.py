"""Volume indicators: OBV and the Chaikin A/D line (TA-Lib), VPT and VWMA (not in TA-Lib).

Volume price trend (a.k.a. price-volume trend; Granville's OBV weighted by the relative
price change): ``VPT_t = VPT_{t-1} + volume_t (close_t - close_{t-1}) / close_{t-1}``.
VWMA: ``sum(close volume) / sum(volume)`` over the last ``timeperiod`` bars.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import check_int, run_batch, window_push3

# OBV: [count, prev_close, obv]
_OBV_COUNT, _OBV_PREV, _OBV_VALUE = range(3)


def obv_state() -> np.ndarray:
    """Allocate the state of an incremental OBV."""
    return np.zeros(3, dtype=np.float64)


@njit(nogil=True, error_model="numpy")
def obv_update(state: np.ndarray, close: float, volume: float) -> float:
    """On-balance volume after one more bar.

    TA-Lib starts the line at the first bar's volume (not 0), then adds the volume on an
    up close and subtracts it on a down close.
    """
    if close != close or volume != volume:
        return np.nan
    if state[_OBV_COUNT] == 0.0:
        state[_OBV_COUNT] = 1.0
        state[_OBV_PREV] = close
        state[_OBV_VALUE] = volume
        return volume
    v = state[_OBV_VALUE] + _obv_sign(close, state[_OBV_PREV]) * volume
    state[_OBV_PREV] = close
    state[_OBV_VALUE] = v
    return v


@njit(nogil=True, error_model="numpy")
def _obv_sign(close: float, prev: float) -> float:
    """+1, -1 or 0 as arithmetic, not a branch: the direction of a random walk defeats
    the branch predictor (a mispredicted branch per bar cost 4x the whole loop).
    ``obv + sign * volume`` is exactly ``obv + volume``, ``obv - volume`` or ``obv``."""
    return np.float64(np.int64(close > prev) - np.int64(close < prev))


@njit(cache=True, nogil=True, error_model="numpy")
def _obv_fast(close: np.ndarray, volume: np.ndarray, out: np.ndarray) -> bool:
    m = close.shape[0]
    if m == 0:
        return True
    row = out[0]
    v = volume[0]
    prev = close[0]
    bad = (prev != prev) | (v != v)
    for i in range(m):
        c = close[i]
        q = volume[i]
        bad |= (c != c) | (q != q)
        v += _obv_sign(c, prev) * q
        prev = c
        row[i] = v
    return not bad


def obv(real: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """On-balance volume, TA-Lib ``OBV`` (``real`` is the close; starts at volume[0])."""
    return run_batch(_obv_fast, (real, volume), 1)[0]


# AD: [ad]
def ad_state() -> np.ndarray:
    """Allocate the state of an incremental A/D line."""
    return np.zeros(1, dtype=np.float64)


@njit(nogil=True, error_model="numpy")
def _ad_step(ad: float, high: float, low: float, close: float, volume: float) -> float:
    rng = high - low
    if rng > 0.0:
        ad += (((close - low) - (high - close)) / rng) * volume
    return ad


@njit(nogil=True, error_model="numpy")
def ad_update(state: np.ndarray, high: float, low: float, close: float, volume: float) -> float:
    """Chaikin A/D after one more bar: adds the close location value times volume."""
    if high != high or low != low or close != close or volume != volume:
        return np.nan
    v = _ad_step(state[0], high, low, close, volume)
    state[0] = v
    return v


@njit(cache=True, nogil=True, error_model="numpy")
def _ad_fast(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, out: np.ndarray
) -> bool:
    """:func:`ad_update` over bars, a block at a time: the terms (a division each) in a
    loop LLVM vectorizes, then their running sum (a bar with ``high <= low`` adds 0.0,
    which leaves the sum's value as the update's skipping it does)."""
    v = 0.0
    row = out[0]
    bad = 0
    m = close.shape[0]
    terms = np.empty(_AD_BLOCK, dtype=np.float64)
    for start in range(0, m, _AD_BLOCK):
        base = np.uintp(start)
        rows = min(_AD_BLOCK, m - start)
        for i in range(rows):
            u = base + np.uintp(i)
            h = high[u]
            lo = low[u]
            c = close[u]
            q = volume[u]
            bad |= (h != h) | (lo != lo) | (c != c) | (q != q)
            rng = h - lo
            t = (((c - lo) - (h - c)) / rng) * q
            terms[i] = t if rng > 0.0 else 0.0
        for i in range(rows):
            v += terms[i]
            row[base + np.uintp(i)] = v
    return bad == 0


_AD_BLOCK = 256  # rows per block of the batch (fits L1)


def ad(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """Chaikin accumulation/distribution line, TA-Lib ``AD`` (bars with high == low add 0)."""
    return run_batch(_ad_fast, (high, low, close, volume), 1)[0]


# --- VPT ------------------------------------------------------------------------------
# [count, prev_close, vpt, compensation]
_VPT_COUNT, _VPT_PREV, _VPT_VALUE, _VPT_COMP = range(4)


def vpt_state() -> np.ndarray:
    """Allocate the state of an incremental volume price trend."""
    return np.zeros(4, dtype=np.float64)


@njit(nogil=True, error_model="numpy")
def vpt_update(state: np.ndarray, close: float, volume: float) -> float:
    """Volume price trend ``VPT += volume * (close - prev) / prev`` (0 at the first bar).

    A bar whose previous close is 0 adds nothing. The running sum is compensated
    (Neumaier), so it does not drift over long runs.
    """
    if close != close or volume != volume:
        return np.nan
    if state[_VPT_COUNT] == 0.0:
        state[_VPT_COUNT] = 1.0
        state[_VPT_PREV] = close
        return 0.0
    prev = state[_VPT_PREV]
    state[_VPT_PREV] = close
    term = volume * ((close - prev) / prev) if prev != 0.0 else 0.0
    total = state[_VPT_VALUE]
    t = total + term
    if abs(total) >= abs(term):
        state[_VPT_COMP] += (total - t) + term
    else:
        state[_VPT_COMP] += (term - t) + total
    state[_VPT_VALUE] = t
    return t + state[_VPT_COMP]


@njit(cache=True, nogil=True, error_model="numpy")
def _vpt_run(state: np.ndarray, close: np.ndarray, volume: np.ndarray, out: np.ndarray) -> None:
    for i in range(close.shape[0]):
        out[i] = vpt_update(state, close[i], volume[i])


def _run2(kernel, state: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    x = np.ascontiguousarray(a, dtype=np.float64)
    y = np.ascontiguousarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("input arrays must be 1-D and of the same length")
    out = np.empty(x.shape[0], dtype=np.float64)
    kernel(state, x, y, out)
    return out


def vpt(real: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """Volume price trend of closes ``real`` (see :func:`vpt_update`); not in TA-Lib."""
    return _run2(_vpt_run, vpt_state(), real, volume)


# --- VWMA -----------------------------------------------------------------------------
# [n, count, pos, pv, pv', v, v', p, p', pv_ring[n], v_ring[n], p_ring[n]]
_VWMA_RING = 9


def vwma_state(timeperiod: int = 20) -> np.ndarray:
    """Allocate the state of an incremental volume-weighted moving average."""
    n = check_int("timeperiod", timeperiod, 1)
    st = np.zeros(_VWMA_RING + 3 * n, dtype=np.float64)
    st[0] = n
    return st


@njit(nogil=True, error_model="numpy")
def vwma_update(state: np.ndarray, close: float, volume: float) -> float:
    """``sum(close * volume) / sum(volume)`` over the last ``timeperiod`` bars.

    A window without volume gives the plain mean of its closes. NaN during warm-up (the
    first value is at row ``timeperiod - 1``). Window sums are re-anchored once per window.
    """
    if close != close or volume != volume:
        return np.nan
    if not window_push3(state, _VWMA_RING, close * volume, volume, close):
        return np.nan
    v = state[5]
    return state[3] / v if v > 0.0 else state[7] / state[0]


@njit(cache=True, nogil=True, error_model="numpy")
def _vwma_run(state: np.ndarray, close: np.ndarray, volume: np.ndarray, out: np.ndarray) -> None:
    for i in range(close.shape[0]):
        out[i] = vwma_update(state, close[i], volume[i])


def vwma(real: np.ndarray, volume: np.ndarray, timeperiod: int = 20) -> np.ndarray:
    """Volume-weighted moving average of bars (see :func:`vwma_update`); not in TA-Lib."""
    return _run2(_vwma_run, vwma_state(timeperiod), real, volume)
