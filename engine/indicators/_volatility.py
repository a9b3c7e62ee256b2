"""Range-based indicators: ATR, NATR, ADX, ADXR, DX, PLUS_DI, MINUS_DI (TA-Lib compatible).

All use Wilder's smoothing and TA-Lib's true range (from the second bar on, against the
previous close). ADX and the DIs agree with TA-Lib 0.8.1 to the last bit; ATR/NATR to
~1e-15 (one FMA on the smoothing chain, for speed). The batch loops reuse the updates'
arithmetic; the tests check both against TA-Lib and against each other bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import check_int, fma, has_nan, is_zero, run_batch, true_range

# Rows per block where a serial loop is split from a vectorizable one (fits L1).
_BLOCK = 512

# --- ATR / NATR -----------------------------------------------------------------------
# [period, count, prev_close, atr]
_ATR_N, _ATR_COUNT, _ATR_PREVC, _ATR_VALUE = range(4)
_ATR_SIZE = 4


def atr_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental ATR (or NATR)."""
    n = check_int("timeperiod", timeperiod, 1)
    st = np.zeros(_ATR_SIZE, dtype=np.float64)
    st[_ATR_N] = n
    return st


natr_state = atr_state


@njit(nogil=True, error_model="numpy")
def _wilder(prev: float, x: float, n: float) -> float:
    """Wilder's smoothing ``(prev * (n - 1) + x) / n`` as ``fma(prev, (n-1)/n, x * (1/n))``.

    Keeps one FMA (not a division) on the loop-carried chain, as TA-Lib 0.8 does; the
    result is within an ulp or two of the divided form.
    """
    return fma(prev, (n - 1.0) / n, x * (1.0 / n))


@njit(nogil=True, error_model="numpy")
def atr_update(state: np.ndarray, high: float, low: float, close: float) -> float:
    """Average true range after one more bar.

    TA-Lib: the first value (bar ``timeperiod``) is the plain mean of the true ranges of
    bars ``1..timeperiod`` (bar 0 has no previous close), then Wilder's
    ``atr = (atr * (n - 1) + tr) / n``, evaluated as one fused multiply-add (see
    :func:`_wilder`).
    """
    if high != high or low != low or close != close:
        return np.nan
    n = state[_ATR_N]
    count = state[_ATR_COUNT]
    state[_ATR_COUNT] = count + 1.0
    prev = state[_ATR_PREVC]
    state[_ATR_PREVC] = close
    if count == 0.0:
        return np.nan
    tr = true_range(high, low, prev)
    if count < n:
        state[_ATR_VALUE] += tr
        return np.nan
    v = (state[_ATR_VALUE] + tr) / n if count == n else _wilder(state[_ATR_VALUE], tr, n)
    state[_ATR_VALUE] = v
    return v


@njit(nogil=True, error_model="numpy")
def natr_update(state: np.ndarray, high: float, low: float, close: float) -> float:
    """Normalized ATR ``atr / close * 100`` (0 when ``close`` is within TA-Lib's epsilon)."""
    v = atr_update(state, high, low, close)
    if v != v:
        return v
    return (v / close) * 100.0 if not is_zero(close) else 0.0


@njit(nogil=True, error_model="numpy")
def _atr_rows(
    h1: np.ndarray,
    l1: np.ndarray,
    c0: np.ndarray,
    dst: np.ndarray,
    start: int,
    stop: int,
    v: float,
    a: float,
    b: float,
) -> tuple[float, float]:
    """Wilder's chain over rows ``start:stop`` of the offset views; ``(atr, sum of c0)``.

    The NaN check rides on arithmetic the loop does anyway. :func:`true_range` is
    ``max(max(h - l, |h - pc|), |l - pc|)`` and numba's ``max`` keeps Python's rule (a
    NaN *first* argument wins), so a NaN high or low makes the true range NaN, and the
    chain then stays NaN to the end. A NaN previous close only touches the last two
    terms, which ``max`` may drop: the running sum of the previous closes (one add, off
    the chain) catches it. An inf - inf trips the check too; run_batch then finds no NaN
    input and keeps the run. This replaced a per-row compare-and-OR on all three inputs
    (7 uops a row through mask registers) and the block loop around it: 3-4% of ATR.
    """
    chk = 0.0
    for i in range(start, stop):
        u = np.uintp(i)
        pc = c0[u]
        chk += pc
        v = fma(v, a, true_range(h1[u], l1[u], pc) * b)
        dst[u] = v
    return v, chk


@njit(cache=True, nogil=True, error_model="numpy")
def _atr_fast(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int, norm: bool, out: np.ndarray
) -> bool:
    m = close.shape[0]
    row = out[0]
    for i in range(min(n, m)):
        row[i] = np.nan
    if m <= n:
        return not (has_nan(high) or has_nan(low) or has_nan(close))
    bad = 0
    for i in range(n + 1):
        bad |= (high[i] != high[i]) | (low[i] != low[i]) | (close[i] != close[i])
    fn = float(n)
    s = 0.0
    for i in range(1, n):
        s += true_range(high[i], low[i], close[i - 1])
    v = (s + true_range(high[n], low[n], close[n - 1])) / fn
    a = (fn - 1.0) / fn
    b = 1.0 / fn
    # Offset views rather than close[i - 1]: non-negative indices, tighter loop.
    h1 = high[n + 1 :]
    l1 = low[n + 1 :]
    c1 = close[n + 1 :]
    c0 = close[n : m - 1]
    dst = row[n + 1 :]
    c = close[n]
    row[n] = ((v / c) * 100.0 if not is_zero(c) else 0.0) if norm else v
    rows = m - n - 1
    if not norm:
        v, chk = _atr_rows(h1, l1, c0, dst, 0, rows, v, a, b)
    else:
        # Blocks of the serial chain, each then divided by its closes in a loop of its
        # own, which LLVM vectorizes (a division per row otherwise bounds the loop).
        chk = 0.0
        for start in range(0, rows, _BLOCK):
            stop = min(start + _BLOCK, rows)
            v, part = _atr_rows(h1, l1, c0, dst, start, stop, v, a, b)
            chk += part
            for i in range(start, stop):
                u = np.uintp(i)
                c = c1[u]
                r = (dst[u] / c) * 100.0
                dst[u] = 0.0 if is_zero(c) else r
    last = close[m - 1]
    return bad == 0 and v == v and chk == chk and last == last


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Average true range, TA-Lib ``ATR`` (Wilder; first value at row ``timeperiod``)."""
    n = check_int("timeperiod", timeperiod, 1)
    return run_batch(_atr_fast, (high, low, close), 1, (n, False))[0]


def natr(high: np.ndarray, low: np.ndarray, close: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Normalized ATR, TA-Lib ``NATR``: ``ATR / close * 100``."""
    n = check_int("timeperiod", timeperiod, 1)
    return run_batch(_atr_fast, (high, low, close), 1, (n, True))[0]


# --- Directional movement -------------------------------------------------------------
# [period, count, prev_high, prev_low, prev_close, plus_dm, minus_dm, tr, sum_dx, adx]
(
    _DM_N,
    _DM_COUNT,
    _DM_PH,
    _DM_PL,
    _DM_PC,
    _DM_PLUS,
    _DM_MINUS,
    _DM_TR,
    _DM_SUMDX,
    _DM_ADX,
) = range(10)
_DM_SIZE = 10


def _dm_state(timeperiod: int) -> np.ndarray:
    n = check_int("timeperiod", timeperiod, 2)
    st = np.zeros(_DM_SIZE, dtype=np.float64)
    st[_DM_N] = n
    return st


def adx_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental ADX."""
    return _dm_state(timeperiod)


def plus_di_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental PLUS_DI."""
    return _dm_state(timeperiod)


def minus_di_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental MINUS_DI."""
    return _dm_state(timeperiod)


@njit(nogil=True, error_model="numpy")
def _dm_step(state: np.ndarray, high: float, low: float, close: float) -> float:
    """Advance +DM, -DM and TR by one bar; returns the bar number (0-based).

    The first ``n - 1`` movements are summed, later ones Wilder-smoothed as TA-Lib writes
    it: ``dm = dm - dm / n + today's dm``.
    """
    count = state[_DM_COUNT]
    state[_DM_COUNT] = count + 1.0
    ph = state[_DM_PH]
    pl = state[_DM_PL]
    pc = state[_DM_PC]
    state[_DM_PH] = high
    state[_DM_PL] = low
    state[_DM_PC] = close
    if count == 0.0:
        return count
    n = state[_DM_N]
    diff_p = high - ph
    diff_m = pl - low
    tr = true_range(high, low, pc)
    plus = state[_DM_PLUS]
    minus = state[_DM_MINUS]
    if count < n:
        if diff_m > 0.0 and diff_p < diff_m:
            minus += diff_m
        elif diff_p > 0.0 and diff_p > diff_m:
            plus += diff_p
        state[_DM_TR] += tr
    else:
        minus -= minus / n
        plus -= plus / n
        if diff_m > 0.0 and diff_p < diff_m:
            minus += diff_m
        elif diff_p > 0.0 and diff_p > diff_m:
            plus += diff_p
        t = state[_DM_TR]
        state[_DM_TR] = t - t / n + tr
    state[_DM_PLUS] = plus
    state[_DM_MINUS] = minus
    return count


@njit(nogil=True, error_model="numpy")
def plus_di_update(state: np.ndarray, high: float, low: float, close: float) -> float:
    """+DI after one more bar: ``100 * (+DM / TR)``, first value at bar ``timeperiod``.

    0 only while the smoothed TR is exactly 0: as in TA-Lib 0.8.1, a flat stretch after a
    move keeps the ratio (+DM and TR decay together).
    """
    return _di_update(state, high, low, close, _DM_PLUS)


@njit(nogil=True, error_model="numpy")
def minus_di_update(state: np.ndarray, high: float, low: float, close: float) -> float:
    """-DI after one more bar: ``100 * (-DM / TR)``, first value at bar ``timeperiod``."""
    return _di_update(state, high, low, close, _DM_MINUS)


@njit(nogil=True, error_model="numpy")
def _di_update(state: np.ndarray, high: float, low: float, close: float, dm: int) -> float:
    """``100 * (DM / TR)`` of the directional movement at ``state[dm]`` after one more bar."""
    if high != high or low != low or close != close:
        return np.nan
    count = _dm_step(state, high, low, close)
    if count < state[_DM_N]:
        return np.nan
    tr = state[_DM_TR]
    return 100.0 * (state[dm] / tr) if tr != 0.0 else 0.0


@njit(nogil=True, error_model="numpy")
def adx_update(state: np.ndarray, high: float, low: float, close: float) -> float:
    """Average directional index after one more bar (first value at bar ``2n - 1``).

    TA-Lib: the first ADX is the mean of the first ``n`` DX values, then Wilder-smoothed;
    a bar whose smoothed TR or ``+DI + -DI`` is 0 leaves the ADX unchanged (and adds
    nothing to the seed sum).
    """
    if high != high or low != low or close != close:
        return np.nan
    count = _dm_step(state, high, low, close)
    n = state[_DM_N]
    if count < n:
        return np.nan
    tr = state[_DM_TR]
    dx = np.nan
    if tr != 0.0:
        minus_di = 100.0 * (state[_DM_MINUS] / tr)
        plus_di = 100.0 * (state[_DM_PLUS] / tr)
        t = minus_di + plus_di
        if t != 0.0:
            dx = 100.0 * (abs(minus_di - plus_di) / t)
    if count < 2.0 * n - 1.0:
        if dx == dx:
            state[_DM_SUMDX] += dx
        return np.nan
    if count == 2.0 * n - 1.0:
        if dx == dx:
            state[_DM_SUMDX] += dx
        v = state[_DM_SUMDX] / n
    else:
        v = state[_DM_ADX]
        if dx == dx:
            v = (v * (n - 1.0) + dx) / n
    state[_DM_ADX] = v
    return v


@njit(cache=True, nogil=True, error_model="numpy")
def _dm_fast(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int, kind: int, out: np.ndarray
) -> bool:
    # The arithmetic of _dm_step and the three updates, with the state in registers.
    m = close.shape[0]
    # NaN check on the way (no pass of its own); row 0 is only read as "yesterday".
    bad = 0
    if m:
        bad = (high[0] != high[0]) | (low[0] != low[0]) | (close[0] != close[0])
    row = out[0]
    fn = float(n)
    adx_like = kind == 0 or kind == 4
    first = 2 * n - 1 if adx_like else n
    for i in range(min(first, m)):
        row[i] = np.nan
    plus = 0.0
    minus = 0.0
    tr = 0.0
    sum_dx = 0.0
    adx = 0.0
    last_dx = 0.0
    for i in range(1, m):
        bad |= (high[i] != high[i]) | (low[i] != low[i]) | (close[i] != close[i])
        diff_p = high[i] - high[i - 1]
        diff_m = low[i - 1] - low[i]
        t = true_range(high[i], low[i], close[i - 1])
        if i < n:
            if diff_m > 0.0 and diff_p < diff_m:
                minus += diff_m
            elif diff_p > 0.0 and diff_p > diff_m:
                plus += diff_p
            tr += t
            continue
        minus -= minus / fn
        plus -= plus / fn
        if diff_m > 0.0 and diff_p < diff_m:
            minus += diff_m
        elif diff_p > 0.0 and diff_p > diff_m:
            plus += diff_p
        tr = tr - tr / fn + t
        if kind == 1:
            row[i] = 100.0 * (plus / tr) if tr != 0.0 else 0.0
            continue
        if kind == 2:
            row[i] = 100.0 * (minus / tr) if tr != 0.0 else 0.0
            continue
        if kind == 3:
            if tr != 0.0:
                minus_di = 100.0 * (minus / tr)
                plus_di = 100.0 * (plus / tr)
                s = minus_di + plus_di
                if s != 0.0:
                    last_dx = 100.0 * (abs(minus_di - plus_di) / s)
            row[i] = last_dx
            continue
        dx = np.nan
        if tr != 0.0:
            minus_di = 100.0 * (minus / tr)
            plus_di = 100.0 * (plus / tr)
            s = minus_di + plus_di
            if s != 0.0:
                dx = 100.0 * (abs(minus_di - plus_di) / s)
        if i < 2 * n - 1:
            if dx == dx:
                sum_dx += dx
            continue
        if i == 2 * n - 1:
            if dx == dx:
                sum_dx += dx
            adx = sum_dx / fn
        elif dx == dx:
            adx = (adx * (fn - 1.0) + dx) / fn
        row[i] = adx
    if bad:
        return False
    if kind == 4:
        # ADXR from the ADX row, backwards so each ADX is read before it is replaced.
        lag = n - 1
        for i in range(m - 1, min(3 * n - 2, m) - 1, -1):
            row[i] = (row[i] + row[i - lag]) / 2.0
        for i in range(min(3 * n - 2, m)):
            row[i] = np.nan
    return True


def _directional(kind: int, high, low, close, timeperiod: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    n = check_int("timeperiod", timeperiod, 2)
    return run_batch(_dm_fast, (high, low, close), 1, (n, kind))[0]


def adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Average directional movement index, TA-Lib ``ADX`` (first value at ``2n - 1``)."""
    return _directional(0, high, low, close, timeperiod)


def plus_di(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, timeperiod: int = 14
) -> np.ndarray:
    """Plus directional indicator, TA-Lib ``PLUS_DI`` (``timeperiod`` >= 2).

    TA-Lib accepts ``timeperiod=1`` and then returns an unscaled ratio; that quirk is not
    reproduced, the period must be at least 2.
    """
    return _directional(1, high, low, close, timeperiod)


def minus_di(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, timeperiod: int = 14
) -> np.ndarray:
    """Minus directional indicator, TA-Lib ``MINUS_DI`` (``timeperiod`` >= 2)."""
    return _directional(2, high, low, close, timeperiod)


# --- DX / ADXR ------------------------------------------------------------------------
# DX: [directional movement state[10], last dx]
_DX_LAST = _DM_SIZE


def dx_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental DX."""
    return np.concatenate((_dm_state(timeperiod), np.zeros(1)))


@njit(nogil=True, error_model="numpy")
def _dx_value(state: np.ndarray, last: float) -> float:
    """DX from the smoothed movements; ``last`` when TR or ``+DI + -DI`` is 0 (TA-Lib)."""
    tr = state[_DM_TR]
    if tr == 0.0:
        return last
    minus_di = 100.0 * (state[_DM_MINUS] / tr)
    plus_di = 100.0 * (state[_DM_PLUS] / tr)
    t = minus_di + plus_di
    if t == 0.0:
        return last
    return 100.0 * (abs(minus_di - plus_di) / t)


@njit(nogil=True, error_model="numpy")
def dx_update(state: np.ndarray, high: float, low: float, close: float) -> float:
    """Directional movement index ``100 |+DI - -DI| / (+DI + -DI)`` (first value at row n).

    +DI, -DI as :func:`plus_di_update`; a bar whose smoothed TR or DI sum is 0 repeats
    the previous DX (0 before there is one), as TA-Lib does.
    """
    if high != high or low != low or close != close:
        return np.nan
    count = _dm_step(state, high, low, close)
    if count < state[_DM_N]:
        return np.nan
    v = _dx_value(state, state[_DX_LAST])
    state[_DX_LAST] = v
    return v


def dx(high: np.ndarray, low: np.ndarray, close: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Directional movement index, TA-Lib ``DX`` (see :func:`dx_update`)."""
    return _directional(3, high, low, close, timeperiod)


# ADXR: [directional movement state[10], pos, adx_ring[period - 1]]
_AR_POS = _DM_SIZE
_AR_RING = _DM_SIZE + 1


def adxr_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental ADXR."""
    st = _dm_state(timeperiod)
    return np.concatenate((st, np.zeros(1 + int(st[_DM_N]) - 1)))


@njit(nogil=True, error_model="numpy")
def adxr_update(state: np.ndarray, high: float, low: float, close: float) -> float:
    """ADX rating ``(ADX + ADX[-(n-1)]) / 2`` (first value at row ``3n - 2``)."""
    if high != high or low != low or close != close:
        return np.nan
    a = adx_update(state, high, low, close)
    if a != a:
        return np.nan
    lag = int(state[_DM_N]) - 1
    pos = int(state[_AR_POS])
    slot = _AR_RING + pos
    old = state[slot]
    state[slot] = a
    pos += 1
    state[_AR_POS] = 0 if pos == lag else pos
    # The ADX starts at bar 2n - 1; its value n - 1 bars back exists from bar 3n - 2.
    if state[_DM_COUNT] < 3.0 * state[_DM_N] - 1.0:
        return np.nan
    return (a + old) / 2.0


def adxr(high: np.ndarray, low: np.ndarray, close: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Average directional movement rating, TA-Lib ``ADXR`` (see :func:`adxr_update`)."""
    return _directional(4, high, low, close, timeperiod)
