"""EMA and RSI: batch functions matching TA-Lib, and O(1) incremental updates.

The incremental form keeps its state in a small preallocated float64 array, so a
symbol actor can call the ``*_update`` functions from inside one fused njit kernel
without allocating. The batch functions are defined by the incremental ones, so
the two can never disagree.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# EMA state layout: [period, alpha, count, seed_sum, value]
_EMA_N, _EMA_ALPHA, _EMA_COUNT, _EMA_SUM, _EMA_VALUE = range(5)
EMA_STATE_SIZE = 5

# RSI state layout: [period, count, prev, avg_gain, avg_loss, value]
_RSI_N, _RSI_COUNT, _RSI_PREV, _RSI_GAIN, _RSI_LOSS, _RSI_VALUE = range(6)
RSI_STATE_SIZE = 6


def ema_state(period: int) -> np.ndarray:
    """Allocate the state of an incremental EMA.

    Args:
        period: number of samples; the smoothing factor is ``2 / (period + 1)``.

    Returns:
        A float64 array to pass to :func:`ema_update`.
    """
    if period < 1:
        raise ValueError(f"ema period must be >= 1, got {period}")
    state = np.zeros(EMA_STATE_SIZE, dtype=np.float64)
    state[_EMA_N] = period
    state[_EMA_ALPHA] = 2.0 / (period + 1.0)
    state[_EMA_VALUE] = np.nan
    return state


@njit(cache=True, nogil=True)
def ema_update(state: np.ndarray, x: float) -> float:
    """Feed one sample to an EMA; returns the new value (NaN during warm-up).

    Seeded like TA-Lib's default (``TA_COMPATIBILITY_DEFAULT``): the first value is
    the simple mean of the first ``period`` samples, then
    ``ema += alpha * (x - ema)``.
    """
    n = state[_EMA_N]
    count = state[_EMA_COUNT] + 1.0
    state[_EMA_COUNT] = count
    if count < n:
        state[_EMA_SUM] += x
        return np.nan
    if count == n:
        state[_EMA_VALUE] = (state[_EMA_SUM] + x) / n
        return state[_EMA_VALUE]
    value = state[_EMA_VALUE]
    value = value + state[_EMA_ALPHA] * (x - value)
    state[_EMA_VALUE] = value
    return value


def rsi_state(period: int) -> np.ndarray:
    """Allocate the state of an incremental RSI (Wilder smoothing).

    Args:
        period: look-back in samples (TA-Lib default 14).

    Returns:
        A float64 array to pass to :func:`rsi_update`.
    """
    if period < 2:
        raise ValueError(f"rsi period must be >= 2, got {period}")
    state = np.zeros(RSI_STATE_SIZE, dtype=np.float64)
    state[_RSI_N] = period
    state[_RSI_PREV] = np.nan
    state[_RSI_VALUE] = np.nan
    return state


@njit(cache=True, nogil=True)
def rsi_update(state: np.ndarray, x: float) -> float:
    """Feed one sample to an RSI; returns the new value (NaN during warm-up).

    Matches TA-Lib: the first average gain/loss is the simple mean of the first
    ``period`` changes (value available at index ``period``), then Wilder's
    smoothing ``avg = (avg * (period - 1) + change) / period``. When both averages
    are zero the RSI is 0, as in TA-Lib.
    """
    n = state[_RSI_N]
    count = state[_RSI_COUNT]
    state[_RSI_COUNT] = count + 1.0
    prev = state[_RSI_PREV]
    state[_RSI_PREV] = x
    if count == 0.0:
        return np.nan
    diff = x - prev
    gain = diff if diff > 0.0 else 0.0
    loss = -diff if diff < 0.0 else 0.0
    if count < n:
        state[_RSI_GAIN] += gain
        state[_RSI_LOSS] += loss
        return np.nan
    if count == n:
        avg_gain = (state[_RSI_GAIN] + gain) / n
        avg_loss = (state[_RSI_LOSS] + loss) / n
    else:
        avg_gain = (state[_RSI_GAIN] * (n - 1.0) + gain) / n
        avg_loss = (state[_RSI_LOSS] * (n - 1.0) + loss) / n
    state[_RSI_GAIN] = avg_gain
    state[_RSI_LOSS] = avg_loss
    total = avg_gain + avg_loss
    value = 100.0 * avg_gain / total if total != 0.0 else 0.0
    state[_RSI_VALUE] = value
    return value


@njit(cache=True, nogil=True)
def _run_ema(x: np.ndarray, state: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=np.float64)
    for i in range(x.shape[0]):
        out[i] = ema_update(state, x[i])
    return out


@njit(cache=True, nogil=True)
def _run_rsi(x: np.ndarray, state: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=np.float64)
    for i in range(x.shape[0]):
        out[i] = rsi_update(state, x[i])
    return out


def ema(real: np.ndarray, timeperiod: int = 30) -> np.ndarray:
    """Exponential moving average, TA-Lib ``EMA`` (same seed, same NaN warm-up)."""
    return _run_ema(np.ascontiguousarray(real, dtype=np.float64), ema_state(timeperiod))


def rsi(real: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Relative strength index, TA-Lib ``RSI`` (Wilder smoothing, NaN warm-up)."""
    return _run_rsi(np.ascontiguousarray(real, dtype=np.float64), rsi_state(timeperiod))
