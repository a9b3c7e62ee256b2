"""Volume accumulators: OBV and the Chaikin A/D line (TA-Lib compatible)."""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import run_batch

# OBV: [count, prev_close, obv]
_OBV_COUNT, _OBV_PREV, _OBV_VALUE = range(3)


def obv_state() -> np.ndarray:
    """Allocate the state of an incremental OBV."""
    return np.zeros(3, dtype=np.float64)


@njit(nogil=True)
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
    v = state[_OBV_VALUE]
    prev = state[_OBV_PREV]
    if close > prev:
        v += volume
    elif close < prev:
        v -= volume
    state[_OBV_PREV] = close
    state[_OBV_VALUE] = v
    return v


@njit(cache=True, nogil=True)
def _obv_fast(close: np.ndarray, volume: np.ndarray, out: np.ndarray) -> bool:
    m = close.shape[0]
    bad = 0
    for i in range(m):
        bad |= (close[i] != close[i]) | (volume[i] != volume[i])
    if bad:
        return False
    if m == 0:
        return True
    v = volume[0]
    prev = close[0]
    row = out[0]
    for i in range(m):
        c = close[i]
        if c > prev:
            v += volume[i]
        elif c < prev:
            v -= volume[i]
        prev = c
        row[i] = v
    return True


def obv(real: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """On-balance volume, TA-Lib ``OBV`` (``real`` is the close; starts at volume[0])."""
    return run_batch(_obv_fast, (real, volume), 1)[0]


# AD: [ad]
def ad_state() -> np.ndarray:
    """Allocate the state of an incremental A/D line."""
    return np.zeros(1, dtype=np.float64)


@njit(nogil=True)
def _ad_step(ad: float, high: float, low: float, close: float, volume: float) -> float:
    rng = high - low
    if rng > 0.0:
        ad += (((close - low) - (high - close)) / rng) * volume
    return ad


@njit(nogil=True)
def ad_update(state: np.ndarray, high: float, low: float, close: float, volume: float) -> float:
    """Chaikin A/D after one more bar: adds the close location value times volume."""
    if high != high or low != low or close != close or volume != volume:
        return np.nan
    v = _ad_step(state[0], high, low, close, volume)
    state[0] = v
    return v


@njit(cache=True, nogil=True)
def _ad_fast(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, out: np.ndarray
) -> bool:
    v = 0.0
    row = out[0]
    bad = 0
    for i in range(close.shape[0]):
        h = high[i]
        lo = low[i]
        c = close[i]
        q = volume[i]
        bad |= (h != h) | (lo != lo) | (c != c) | (q != q)
        v = _ad_step(v, h, lo, c, q)
        row[i] = v
    return bad == 0


def ad(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """Chaikin accumulation/distribution line, TA-Lib ``AD`` (bars with high == low add 0)."""
    return run_batch(_ad_fast, (high, low, close, volume), 1)[0]
