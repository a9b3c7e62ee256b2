"""Trend-following averages and stops: DEMA, TEMA, T3, KAMA, HT_TRENDLINE, SAR (TA-Lib).

The TA-Lib C library rounds some statements through a fused multiply-add (its build
contracts ``a * b + c`` inside one statement, as clang does by default); the kernels
below use :func:`~._common.fma` exactly there, so DEMA, TEMA, T3, SAR and HT_TRENDLINE
agree with TA-Lib 0.8.1 to the last bit on real data. KAMA keeps its window sum of
absolute changes re-anchored once per window (see ``_common``) where TA-Lib carries a
running sum from the first sample, so the two agree to ~1e-15.

Every indicator has a state factory, an O(1) ``@njit`` update (HT_TRENDLINE's averages
up to 50 stored prices, its dominant cycle) and a batch function with TA-Lib's name,
parameters, defaults and NaN warm-up whose loop is the update's arithmetic.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
from numba import njit

from ._common import (
    CHAIN_BLOCK,
    check_int,
    fma,
    has_nan,
    is_zero,
    ring_sum_anchor,
    run_batch,
)
from ._overlap import ema_chain_seed, ema_chain_state, ema_chain_update, ema_step


def _fma_py(a: float, b: float, c: float) -> float:
    """``a * b + c`` rounded once (exact rational arithmetic; Python 3.11 has no math.fma)."""
    return float(Fraction(a) * Fraction(b) + Fraction(c))


# --- DEMA / TEMA ---------------------------------------------------------------------
# chained EMA states (two for DEMA, three for TEMA), ema_chain_update's layout


def dema_state(timeperiod: int = 30) -> np.ndarray:
    """Allocate the state of an incremental DEMA."""
    return ema_chain_state(check_int("timeperiod", timeperiod, 1), 2)


@njit(nogil=True, error_model="numpy")
def dema_update(state: np.ndarray, x: float) -> float:
    """Double EMA ``2 e1 - e2``, ``e1 = EMA(x)``, ``e2 = EMA(e1)`` (first value at ``2(n-1)``).

    Each EMA is seeded TA-Lib style with the SMA of its first ``timeperiod`` inputs.
    """
    if x != x:
        return np.nan
    e1, e2, _ = ema_chain_update(state, 0, 2, x)
    return fma(2.0, e1, -e2) if e2 == e2 else np.nan


def tema_state(timeperiod: int = 30) -> np.ndarray:
    """Allocate the state of an incremental TEMA."""
    return ema_chain_state(check_int("timeperiod", timeperiod, 1), 3)


@njit(nogil=True, error_model="numpy")
def tema_update(state: np.ndarray, x: float) -> float:
    """Triple EMA ``3 e1 - 3 e2 + e3`` of chained EMAs (first value at ``3(n-1)``)."""
    if x != x:
        return np.nan
    e1, e2, e3 = ema_chain_update(state, 0, 3, x)
    return e3 + (3.0 * e1 - 3.0 * e2) if e3 == e3 else np.nan


_DEMA_BLOCK = 64
"""DEMA's rows per block (CHAIN_BLOCK's 32 measured 4% slower for it)."""


@njit(nogil=True, error_model="numpy")
def _xema_into(x: np.ndarray, n: int, depth: int, out: np.ndarray) -> bool:
    """DEMA (depth 2) or TEMA (depth 3) of ``x``, as the updates compute it.

    Returns False if ``x`` holds a NaN: every sample feeds the first EMA, which a NaN
    leaves NaN to the end, so that is the check.
    """
    m = x.shape[0]
    first = depth * (n - 1)
    for i in range(min(first, m)):
        out[i] = np.nan
    if m <= first:
        return not has_nan(x)
    k = 2.0 / (n + 1.0)
    e1, e2, e3 = ema_chain_seed(x, n, depth)
    # Offset views indexed from 0 with np.uintp: no negative-index wrap code per access.
    src = x[first + 1 :]
    dst = out[first + 1 :]
    rows = m - first - 1
    # Blocks of rows, as _momentum._trix_fast: the EMA chain (its latency bounds the
    # loop) keeps what the outputs need in two small buffers, then the block's outputs
    # come in a loop LLVM vectorizes. In the chain's loop, the output's last operation
    # (DEMA's FMA, TEMA's add of e3) took FP pipe slots from the chain just as it
    # needed them: DEMA ran 10% slower, TEMA 6%. TEMA's ``3 e1 - 3 e2`` stays in the
    # chain's loop (moving it out too was slower: three stores a row).
    b1 = np.empty(max(CHAIN_BLOCK, _DEMA_BLOCK), dtype=np.float64)
    b2 = np.empty(max(CHAIN_BLOCK, _DEMA_BLOCK), dtype=np.float64)
    if depth == 2:
        out[first] = fma(2.0, e1, -e2)
        for start in range(0, rows, _DEMA_BLOCK):
            size = min(_DEMA_BLOCK, rows - start)
            for j in range(size):
                u = np.uintp(j)
                e1 = ema_step(e1, k, src[np.uintp(start + j)])
                e2 = ema_step(e2, k, e1)
                b1[u] = e1
                b2[u] = e2
            for j in range(size):
                u = np.uintp(j)
                dst[np.uintp(start + j)] = fma(2.0, b1[u], -b2[u])
        return e1 == e1
    out[first] = e3 + (3.0 * e1 - 3.0 * e2)
    for start in range(0, rows, CHAIN_BLOCK):
        size = min(CHAIN_BLOCK, rows - start)
        for j in range(size):
            u = np.uintp(j)
            e1 = ema_step(e1, k, src[np.uintp(start + j)])
            e2 = ema_step(e2, k, e1)
            e3 = ema_step(e3, k, e2)
            b1[u] = 3.0 * e1 - 3.0 * e2
            b2[u] = e3
        for j in range(size):
            u = np.uintp(j)
            dst[np.uintp(start + j)] = b2[u] + b1[u]
    return e1 == e1


@njit(cache=True, nogil=True, error_model="numpy")
def _xema_fast(x: np.ndarray, n: int, depth: int, out: np.ndarray) -> bool:
    return _xema_into(x, n, depth, out[0])


def dema(real: np.ndarray, timeperiod: int = 30) -> np.ndarray:
    """Double exponential moving average, TA-Lib ``DEMA``: ``2 EMA(x) - EMA(EMA(x))``.

    Both EMAs are seeded with the SMA of their first ``timeperiod`` inputs; the first
    value is at row ``2 * (timeperiod - 1)``.
    """
    n = check_int("timeperiod", timeperiod, 1)
    return run_batch(_xema_fast, (real,), 1, (n, 2))[0]


def tema(real: np.ndarray, timeperiod: int = 30) -> np.ndarray:
    """Triple exponential moving average, TA-Lib ``TEMA``: ``3 e1 - 3 e2 + e3``.

    ``e1 = EMA(x)``, ``e2 = EMA(e1)``, ``e3 = EMA(e2)``, each seeded with the SMA of its
    first ``timeperiod`` inputs; the first value is at row ``3 * (timeperiod - 1)``.
    """
    n = check_int("timeperiod", timeperiod, 1)
    return run_batch(_xema_fast, (real,), 1, (n, 3))[0]


# --- T3 -------------------------------------------------------------------------------
# [period, k, 1-k, c1, c2, c3, c4, count, e[6], seed_sum[6]]
_T3_N, _T3_K, _T3_OMK, _T3_C1, _T3_C2, _T3_C3, _T3_C4, _T3_COUNT = range(8)
_T3_E = 8
_T3_S = 14
_T3_SIZE = 20


@functools.lru_cache(maxsize=64)
def _t3_constants(v: float) -> tuple[float, float, float, float]:
    """TA-Lib's T3 coefficients, rounded as its C statements are (one FMA each in c3, c4)."""
    t = v * v
    c1 = -t * v
    c2 = 3.0 * (t - c1)
    c3 = _fma_py(-6.0, t, -(3.0 * (v - c1)))
    c4 = _fma_py(3.0, t, _fma_py(3.0, v, 1.0) - c1)
    return c1, c2, c3, c4


def t3_state(timeperiod: int = 5, vfactor: float = 0.7) -> np.ndarray:
    """Allocate the state of an incremental T3 (see :func:`t3`)."""
    n = check_int("timeperiod", timeperiod, 1)
    v = float(vfactor)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"vfactor must be in [0, 1], got {vfactor!r}")
    st = np.zeros(_T3_SIZE, dtype=np.float64)
    st[_T3_N] = n
    st[_T3_K] = 2.0 / (n + 1.0)
    st[_T3_OMK] = 1.0 - st[_T3_K]
    st[_T3_C1 : _T3_C4 + 1] = _t3_constants(v)
    return st


@njit(nogil=True, error_model="numpy")
def t3_update(state: np.ndarray, x: float) -> float:
    """Tillson's T3 after one more sample (first value at ``6 (timeperiod - 1)``).

    Six EMAs in a chain, ``e_j = k e_{j-1} + (1 - k) e_j`` with ``k = 2 / (n + 1)``, each
    seeded with the mean of its first ``n`` inputs; T3 is
    ``c1 e6 + c2 e5 + c3 e4 + c4 e3`` with ``c1 = -v^3``, ``c2 = 3v^2 + 3v^3``,
    ``c3 = -6v^2 - 3v - 3v^3``, ``c4 = 1 + 3v + v^3 + 3v^2`` (``v = vfactor``).
    """
    if x != x:
        return np.nan
    n = state[_T3_N]
    if n == 1.0:
        return x  # TA-Lib copies the input for a period of 1
    k = state[_T3_K]
    omk = state[_T3_OMK]
    count = state[_T3_COUNT] + 1.0
    state[_T3_COUNT] = count
    v = x
    for j in range(6):
        # Stage j consumes the (j-1)th EMA from tick j(n-1)+1 on; its seed is the mean
        # of its first n inputs, then it runs as an EMA.
        seeded_at = (j + 1) * (n - 1) + 1.0
        start = seeded_at - n + 1.0
        if count < start:
            return np.nan
        if count < seeded_at:
            state[_T3_S + j] += v
            return np.nan
        # Stage j's TA-Lib statement k * v + (1 - k) * e contracts to one FMA.
        e = (state[_T3_S + j] + v) / n if count == seeded_at else fma(omk, state[_T3_E + j], k * v)
        state[_T3_E + j] = e
        v = e
    e = state[_T3_E:]
    return fma(
        state[_T3_C4],
        e[2],
        fma(state[_T3_C3], e[3], fma(state[_T3_C1], e[5], state[_T3_C2] * e[4])),
    )


@njit(nogil=True, error_model="numpy")
def _t3_skewed_step(e: np.ndarray, d: np.ndarray, x: float, k: float, omk: float, lo: int) -> None:
    """One iteration of :func:`_t3_fast`'s skewed loop on arrays, for its ramps.

    Moves the stages ``j >= lo`` (0-based; ``lo < 0``: stages ``j < -lo``) one row on,
    the last first, so that each reads its feeder's row of the iteration before; ``d``
    keeps ``e4`` one row back and ``e3`` one and two rows back.
    """
    d[2] = d[1]
    d[1] = e[2]
    d[0] = e[3]
    for j in range(5, -1, -1):
        if (j >= lo) if lo >= 0 else (j < -lo):
            e[j] = fma(omk, e[j], k * (e[j - 1] if j else x))


@njit(cache=True, nogil=True, error_model="numpy")
def _t3_fast(x: np.ndarray, n: int, k: float, omk: float, c: np.ndarray, out: np.ndarray) -> bool:
    """:func:`t3_update` over ``x``: staged seeds, then six EMAs in registers.

    The six stages run skewed: iteration ``t`` takes stage ``j`` (1-based) to row
    ``t - j + 1`` from its feeder's value of the iteration before, and finishes row
    ``t - 5``. The operations and their operands are those of the plain order (results
    bit for bit the same), but no stage waits for another of the same iteration: six
    independent multiply-FMA steps instead of one chain of six that the CPU must overlap
    across iterations (measured 13% faster; ``tools/bench indicators``). A NaN sample
    leaves the first EMA NaN to the end, which is the NaN check.
    """
    row = out[0]
    m = x.shape[0]
    if n == 1:
        row[:] = x
        return True
    first = 6 * (n - 1)
    for i in range(min(first, m)):
        row[i] = np.nan
    if m <= first:
        return not has_nan(x)
    e = np.zeros(6)
    # Warm-up, as the update does it: stage j sums its first n inputs, then runs.
    for i in range(first + 1):
        v = x[i]
        for j in range(6):
            seeded = (j + 1) * (n - 1)
            if i < seeded - n + 1:
                break
            if i < seeded:
                e[j] += v
                break
            e[j] = (e[j] + v) / n if i == seeded else fma(omk, e[j], k * v)
            v = e[j]
    c1, c2, c3, c4 = c[0], c[1], c[2], c[3]
    row[first] = fma(c4, e[2], fma(c3, e[3], fma(c1, e[5], c2 * e[4])))
    if m - first <= 6:
        for i in range(first + 1, m):
            v = x[i]
            for j in range(6):
                e[j] = fma(omk, e[j], k * v)
                v = e[j]
            row[i] = fma(c4, e[2], fma(c3, e[3], fma(c1, e[5], c2 * e[4])))
        return e[0] == e[0]
    # Ramp up: stage j (0-based) starts at iteration j + 1.
    d = np.zeros(3)
    for s in range(1, 6):
        _t3_skewed_step(e, d, x[first + s], k, omk, -s)
    e1, e2, e3, e4, e5, e6 = e[0], e[1], e[2], e[3], e[4], e[5]
    d4, d31, d32 = d[0], d[1], d[2]
    src = x[first + 6 :]
    dst = row[first + 1 :]
    for i in range(m - first - 6):
        u = np.uintp(i)
        e6 = fma(omk, e6, k * e5)
        dst[u] = fma(c4, d32, fma(c3, d4, fma(c1, e6, c2 * e5)))
        d32 = d31
        d31 = e3
        d4 = e4
        e5 = fma(omk, e5, k * e4)
        e4 = fma(omk, e4, k * e3)
        e3 = fma(omk, e3, k * e2)
        e2 = fma(omk, e2, k * e1)
        e1 = fma(omk, e1, k * src[u])
    e[0], e[1], e[2], e[3], e[4], e[5] = e1, e2, e3, e4, e5, e6
    d[0], d[1], d[2] = d4, d31, d32
    # Ramp down: the last five rows, stage j (0-based) stopping after iteration j.
    for s in range(1, 6):
        e6 = fma(omk, e[5], k * e[4])
        row[m - 6 + s] = fma(c4, d[2], fma(c3, d[0], fma(c1, e6, c2 * e[4])))
        _t3_skewed_step(e, d, 0.0, k, omk, s)
    return e1 == e1


def t3(real: np.ndarray, timeperiod: int = 5, vfactor: float = 0.7) -> np.ndarray:
    """Tillson's T3 moving average, TA-Lib ``T3`` (first value at ``6 * (timeperiod - 1)``)."""
    st = t3_state(timeperiod, vfactor)
    params = (int(st[_T3_N]), st[_T3_K], st[_T3_OMK], st[_T3_C1 : _T3_C4 + 1].copy())
    return run_batch(_t3_fast, (real,), 1, params)[0]


# --- KAMA -----------------------------------------------------------------------------
# [period, count, price_pos, diff_pos, sum, fresh, kama, prev, diff_ring[n], price_ring[n]]
_KA_N, _KA_COUNT, _KA_PPOS, _KA_DPOS, _KA_SUM, _KA_FRESH, _KA_VALUE, _KA_PREV = range(8)
_KA_RING = 8
# TA-Lib's constants: fastest = 2 / (2 + 1), slowest = 2 / (30 + 1).
_KA_SLOW = 2.0 / (30.0 + 1.0)
_KA_DIFF = 2.0 / (2.0 + 1.0) - _KA_SLOW


def kama_state(timeperiod: int = 30) -> np.ndarray:
    """Allocate the state of an incremental KAMA."""
    n = check_int("timeperiod", timeperiod, 1)
    st = np.zeros(_KA_RING + 2 * n, dtype=np.float64)
    st[_KA_N] = n
    return st


@njit(nogil=True, error_model="numpy")
def _kama_step(prev: float, x: float, roc: float, total: float) -> float:
    er = 1.0 if total <= roc or is_zero(total) else abs(roc / total)
    sc = fma(er, _KA_DIFF, _KA_SLOW)
    sc *= sc
    return fma(x - prev, sc, prev)


@njit(nogil=True, error_model="numpy")
def kama_update(state: np.ndarray, x: float) -> float:
    """Kaufman's adaptive moving average after one more sample (first value at row n).

    Efficiency ratio ``er = |x - x[-n]| / sum(|x[i] - x[i-1]|)`` over the last ``n``
    changes (1 when that sum is 0 or the move is monotonic up, as in TA-Lib), smoothing
    constant ``sc = (er (2/3 - 2/31) + 2/31)^2`` and ``kama += sc (x - kama)``, seeded
    with the previous sample. The sum of changes is re-anchored once per window.
    """
    if x != x:
        return np.nan
    n = int(state[_KA_N])
    if n == 1:
        return x  # TA-Lib copies the input for a period of 1
    count = state[_KA_COUNT] + 1.0
    state[_KA_COUNT] = count
    prev_x = state[_KA_PREV]
    state[_KA_PREV] = x
    pos = int(state[_KA_PPOS])
    slot = _KA_RING + n + pos
    trailing = state[slot]  # x[-n] once the ring has turned
    state[slot] = x
    pos += 1
    state[_KA_PPOS] = 0 if pos == n else pos
    if count == 1.0:
        return np.nan
    dpos = int(state[_KA_DPOS])
    d = abs(x - prev_x)
    slot = _KA_RING + dpos
    old = state[slot] if count > n + 1.0 else 0.0
    state[slot] = d
    # One add on the sum's chain (the change of the window sum, then the sum).
    state[_KA_SUM] += d - old
    state[_KA_FRESH] += d
    dpos += 1
    if dpos == n:
        dpos = 0
        ring_sum_anchor(state, _KA_SUM)
    state[_KA_DPOS] = dpos
    if count <= n:
        return np.nan
    prev = prev_x if count == n + 1.0 else state[_KA_VALUE]
    v = _kama_step(prev, x, x - trailing, state[_KA_SUM])
    state[_KA_VALUE] = v
    return v


@njit(cache=True, nogil=True, error_model="numpy")
def _kama_fast(x: np.ndarray, n: int, out: np.ndarray) -> bool:
    """:func:`kama_update` over ``x``, the window sum re-anchored alike.

    Every sample feeds the KAMA recurrence, so a NaN anywhere leaves the last value NaN:
    that is the NaN check (False then), with no pass of its own.
    """
    row = out[0]
    m = x.shape[0]
    if n == 1:
        row[:] = x
        return True
    for i in range(min(n, m)):
        row[i] = np.nan
    # First turn of the ring of changes (rows 1..n): additions only.
    total = 0.0
    for i in range(1, min(n + 1, m)):
        total += abs(x[i] - x[i - 1])
    if m <= n:
        return not has_nan(x)
    v = _kama_step(x[n - 1], x[n], x[n] - x[0], total)
    row[n] = v
    # Later rows, one ring turn (n rows) per block: the change of row i evicts that of
    # row i - n, and a full block's add-only sum replaces the sliding one. Views make
    # row i index j = i - n - 1; unsigned indices spare numba's negative-index wrap.
    now = x[n + 1 :]
    lag = x[1 : m - n]
    dst = row[n + 1 :]
    rows = m - n - 1
    prev = x[n]
    lag_prev = x[0]
    start = 0
    while start < rows:
        stop = min(start + n, rows)
        fresh = 0.0
        for j in range(start, stop):
            u = np.uintp(j)
            xi = now[u]
            xl = lag[u]
            d = abs(xi - prev)
            total += d - abs(xl - lag_prev)
            fresh += d
            prev = xi
            lag_prev = xl
            v = _kama_step(v, xi, xi - xl, total)
            dst[u] = v
        if stop - start == n:
            total = fresh
        start = stop
    return v == v


def kama(real: np.ndarray, timeperiod: int = 30) -> np.ndarray:
    """Kaufman adaptive moving average, TA-Lib ``KAMA`` (first value at row ``timeperiod``).

    See :func:`kama_update` for the formula.
    """
    n = check_int("timeperiod", timeperiod, 1)
    return run_batch(_kama_fast, (real,), 1, (n,))[0]


# --- SAR ------------------------------------------------------------------------------
# [acceleration, maximum, count, is_long, sar, ep, af, prev_high, prev_low]
_SAR_ACC, _SAR_MAX, _SAR_COUNT, _SAR_LONG, _SAR_SAR, _SAR_EP, _SAR_AF, _SAR_PH, _SAR_PL = range(9)
_SAR_SIZE = 9


def sar_state(acceleration: float = 0.02, maximum: float = 0.2) -> np.ndarray:
    """Allocate the state of an incremental parabolic SAR."""
    acc = float(acceleration)
    mx = float(maximum)
    if not (acc >= 0.0 and mx >= 0.0 and math.isfinite(acc) and math.isfinite(mx)):
        raise ValueError(
            f"acceleration and maximum must be >= 0, got {acceleration!r}, {maximum!r}"
        )
    st = np.zeros(_SAR_SIZE, dtype=np.float64)
    # TA-Lib lowers the step to the cap when it starts above it.
    st[_SAR_ACC] = min(acc, mx)
    st[_SAR_MAX] = mx
    return st


@njit(nogil=True, error_model="numpy")
def sar_update(state: np.ndarray, high: float, low: float) -> float:
    """Parabolic SAR after one more bar (Wilder, 1978; TA-Lib's rules, first value at row 1).

    The first trend is short when bar 1's -DM (``low[0] - low[1]``) is positive and larger
    than its +DM, long otherwise; the SAR starts at bar 0's low (long) or high (short)
    and the extreme point at bar 1's high (low). Each bar outputs the SAR computed the
    bar before, unless the bar penetrates it: then the trend flips, the SAR becomes the
    extreme point and the step resets. After output: ``ep`` moves to a new extreme with
    ``af += acceleration`` (capped at ``maximum``), ``sar += af (ep - sar)``, clipped to
    the last two bars' lows (long) or highs (short).
    """
    if high != high or low != low:
        return np.nan
    count = state[_SAR_COUNT] + 1.0
    state[_SAR_COUNT] = count
    if count == 1.0:
        state[_SAR_PH] = high
        state[_SAR_PL] = low
        return np.nan
    acc = state[_SAR_ACC]
    mx = state[_SAR_MAX]
    if count == 2.0:
        diff_m = state[_SAR_PL] - low
        diff_p = high - state[_SAR_PH]
        is_long = not (diff_m > 0.0 and diff_p < diff_m)
        if is_long:
            ep = high
            sar = state[_SAR_PL]
        else:
            ep = low
            sar = state[_SAR_PH]
        af = acc
        # TA-Lib's first step compares with bar 1 as both "yesterday" and "today".
        prev_high = high
        prev_low = low
    else:
        is_long = state[_SAR_LONG] != 0.0
        sar = state[_SAR_SAR]
        ep = state[_SAR_EP]
        af = state[_SAR_AF]
        prev_high = state[_SAR_PH]
        prev_low = state[_SAR_PL]
    if is_long:
        if low <= sar:
            is_long = False
            sar = max(ep, prev_high, high)
            out = sar
            af = acc
            ep = low
            sar = max(fma(af, ep - sar, sar), prev_high, high)
        else:
            out = sar
            if high > ep:
                ep = high
                af = min(af + acc, mx)
            sar = min(fma(af, ep - sar, sar), prev_low, low)
    elif high >= sar:
        is_long = True
        sar = min(ep, prev_low, low)
        out = sar
        af = acc
        ep = high
        sar = min(fma(af, ep - sar, sar), prev_low, low)
    else:
        out = sar
        if low < ep:
            ep = low
            af = min(af + acc, mx)
        sar = max(fma(af, ep - sar, sar), prev_high, high)
    state[_SAR_LONG] = 1.0 if is_long else 0.0
    state[_SAR_SAR] = sar
    state[_SAR_EP] = ep
    state[_SAR_AF] = af
    state[_SAR_PH] = high
    state[_SAR_PL] = low
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _sar_fast(high: np.ndarray, low: np.ndarray, acc: float, mx: float, out: np.ndarray) -> bool:
    """:func:`sar_update` over bars, the state in registers (False if one holds a NaN)."""
    row = out[0]
    m = high.shape[0]
    if m == 0:
        return True
    row[0] = np.nan
    # Too short for the loop's NaN check to see every bar?
    if m <= 2 and (has_nan(high) or has_nan(low)):
        return False
    if m == 1:
        return True
    bad = (high[0] != high[0]) | (low[0] != low[0])
    diff_m = low[0] - low[1]
    diff_p = high[1] - high[0]
    is_long = not (diff_m > 0.0 and diff_p < diff_m)
    if is_long:
        ep = high[1]
        sar = low[0]
    else:
        ep = low[1]
        sar = high[0]
    af = acc
    prev_high = high[1]
    prev_low = low[1]
    for i in range(1, m):
        h = high[i]
        lo = low[i]
        bad |= (h != h) | (lo != lo)
        if is_long:
            if lo <= sar:
                is_long = False
                sar = max(ep, prev_high, h)
                row[i] = sar
                af = acc
                ep = lo
                sar = max(fma(af, ep - sar, sar), prev_high, h)
            else:
                row[i] = sar
                if h > ep:
                    ep = h
                    af = min(af + acc, mx)
                sar = min(fma(af, ep - sar, sar), prev_low, lo)
        elif h >= sar:
            is_long = True
            sar = min(ep, prev_low, lo)
            row[i] = sar
            af = acc
            ep = h
            sar = min(fma(af, ep - sar, sar), prev_low, lo)
        else:
            row[i] = sar
            if lo < ep:
                ep = lo
                af = min(af + acc, mx)
            sar = max(fma(af, ep - sar, sar), prev_high, h)
        prev_high = h
        prev_low = lo
    return not bad


def sar(
    high: np.ndarray, low: np.ndarray, acceleration: float = 0.02, maximum: float = 0.2
) -> np.ndarray:
    """Parabolic SAR, TA-Lib ``SAR`` (see :func:`sar_update`; first value at row 1)."""
    st = sar_state(acceleration, maximum)
    return run_batch(_sar_fast, (high, low), 1, (st[_SAR_ACC], st[_SAR_MAX]))[0]


# --- HT_TRENDLINE ---------------------------------------------------------------------
# Ehlers' Hilbert-transform instantaneous trendline, TA-Lib's arithmetic. Layout:
# [count, wma_sub, wma_sum, wma_trailing, hilbert_idx, period, smooth_period, prev_q2,
#  prev_i2, re, im, i1_odd_prev2, i1_odd_prev3, i1_even_prev2, i1_even_prev3, itrend1,
#  itrend2, itrend3, 4 Hilbert groups of 10, price ring of 64]
(
    _HT_COUNT,
    _HT_SUB,
    _HT_SUM,
    _HT_TRAIL,
    _HT_IDX,
    _HT_PERIOD,
    _HT_SMOOTH,
    _HT_Q2,
    _HT_I2,
    _HT_RE,
    _HT_IM,
    _HT_ODD2,
    _HT_ODD3,
    _HT_EVEN2,
    _HT_EVEN3,
    _HT_T1,
    _HT_T2,
    _HT_T3,
) = range(18)
_HT_DET, _HT_Q1, _HT_JI, _HT_JQ = 18, 28, 38, 48
_HT_RING = 58
_HT_RING_LEN = 64  # >= 50, the longest dominant cycle averaged; a power of two
_HT_SIZE = _HT_RING + _HT_RING_LEN
_HT_LOOKBACK = 63
_HT_A = 0.0962
_HT_B = 0.5769
_HT_RAD2DEG = 45.0 / math.atan(1.0)


def ht_trendline_state() -> np.ndarray:
    """Allocate the state of an incremental HT_TRENDLINE."""
    return np.zeros(_HT_SIZE, dtype=np.float64)


@njit(nogil=True, error_model="numpy")
def _ht_stage(st: np.ndarray, g: int, even: bool, idx: int, u: float, adj: float) -> float:
    """One of the four Hilbert FIR stages (TA-Lib's odd/even circular buffers of 3)."""
    h = _HT_A * u
    side = 3 if even else 0
    v = 0.0 - st[g + side + idx]
    st[g + side + idx] = h
    v += h
    prev = g + 6 + (1 if even else 0)
    prev_in = g + 8 + (1 if even else 0)
    v -= st[prev]
    st[prev] = _HT_B * st[prev_in]
    v += st[prev]
    st[prev_in] = u
    return v * adj


@njit(nogil=True, error_model="numpy")
def ht_trendline_update(state: np.ndarray, x: float) -> float:
    """Hilbert-transform instantaneous trendline after one more sample (from row 63).

    Ehlers, "Rocket Science for Traders" (2001), ch. 10: a 4-bar WMA smooths the price,
    a Hilbert transform of it gives the in-phase and quadrature components, their phase
    rate the dominant cycle period (clamped to 6..50 bars and smoothed), and the
    trendline is ``(4 t0 + 3 t1 + 2 t2 + t3) / 10`` of ``t`` = the mean of the raw price
    over the last ``int(smooth_period + 0.5)`` bars. O(1) apart from that mean (at most
    50 stored prices, summed newest first as TA-Lib does).
    """
    if x != x:
        return np.nan
    k = _ht_core(state, x)
    if k < 0:
        return np.nan
    st = state
    t = int(st[_HT_COUNT]) - 1
    mean = 0.0
    for j in range(k):
        mean += st[_HT_RING + ((t - j) & (_HT_RING_LEN - 1))]
    if k > 0:
        mean = mean / float(k)
    return _ht_trend(st, mean, t)


@njit(nogil=True, error_model="numpy")
def _ht_trend(st: np.ndarray, mean: float, t: int) -> float:
    """The trendline from this row's mean and the last three (kept in the state)."""
    t1 = st[_HT_T1]
    t2 = st[_HT_T2]
    trend = (fma(2.0, t2, fma(4.0, mean, 3.0 * t1)) + st[_HT_T3]) / 10.0
    st[_HT_T3] = t2
    st[_HT_T2] = t1
    st[_HT_T1] = mean
    return trend if t >= _HT_LOOKBACK else np.nan


@njit(nogil=True, error_model="numpy")
def _ht_core(st: np.ndarray, x: float) -> int:
    """All of :func:`ht_trendline_update` but the trendline (``x`` is not NaN).

    Returns:
        How many of the latest prices the trendline averages (from row 37), else -1.
    """
    t = int(st[_HT_COUNT])
    st[_HT_COUNT] = t + 1.0
    st[_HT_RING + (t & (_HT_RING_LEN - 1))] = x
    if t == 0:
        st[_HT_SUB] = x
        st[_HT_SUM] = x
        return -1
    if t < 3:
        st[_HT_SUB] += x
        st[_HT_SUM] = fma(x, t + 1.0, st[_HT_SUM])
        return -1
    sub = st[_HT_SUB] + x - st[_HT_TRAIL]
    wsum = fma(x, 4.0, st[_HT_SUM])
    st[_HT_TRAIL] = st[_HT_RING + ((t - 3) & (_HT_RING_LEN - 1))]
    smoothed = wsum * 0.1
    st[_HT_SUB] = sub
    st[_HT_SUM] = wsum - sub
    if t < 37:
        return -1
    period = st[_HT_PERIOD]
    adj = fma(0.075, period, 0.54)
    idx = int(st[_HT_IDX])
    even = t % 2 == 0
    i1_prev3 = st[_HT_EVEN3] if even else st[_HT_ODD3]
    detrender = _ht_stage(st, _HT_DET, even, idx, smoothed, adj)
    q1 = _ht_stage(st, _HT_Q1, even, idx, detrender, adj)
    ji = _ht_stage(st, _HT_JI, even, idx, i1_prev3, adj)
    jq = _ht_stage(st, _HT_JQ, even, idx, q1, adj)
    prev_q2 = st[_HT_Q2]
    prev_i2 = st[_HT_I2]
    q2 = fma(0.2, q1 + ji, 0.8 * prev_q2)
    i2 = fma(0.2, i1_prev3 - jq, 0.8 * prev_i2)
    if even:
        idx += 1
        st[_HT_IDX] = 0.0 if idx == 3 else idx
        st[_HT_ODD3] = st[_HT_ODD2]
        st[_HT_ODD2] = detrender
    else:
        st[_HT_EVEN3] = st[_HT_EVEN2]
        st[_HT_EVEN2] = detrender
    re = fma(0.2, fma(i2, prev_i2, q2 * prev_q2), 0.8 * st[_HT_RE])
    im = fma(0.2, fma(i2, prev_q2, -(q2 * prev_i2)), 0.8 * st[_HT_IM])
    st[_HT_RE] = re
    st[_HT_IM] = im
    st[_HT_Q2] = q2
    st[_HT_I2] = i2
    last = period
    if im != 0.0 and re != 0.0:
        period = 360.0 / (math.atan(im / re) * _HT_RAD2DEG)
    cap = 1.5 * last
    if period > cap:
        period = cap
    cap = 0.67 * last
    if period < cap:
        period = cap
    if period < 6.0:
        period = 6.0
    elif period > 50.0:
        period = 50.0
    period = fma(0.2, period, 0.8 * last)
    st[_HT_PERIOD] = period
    smooth = fma(0.33, period, 0.67 * st[_HT_SMOOTH])
    st[_HT_SMOOTH] = smooth
    return int(smooth + 0.5)


# Rows per block of the batch: their counts, then their means, in buffers that stay in L1.
_HT_BLOCK = 256


@njit(cache=True, nogil=True, error_model="numpy")
def _ht_fast(x: np.ndarray, out: np.ndarray) -> bool:
    """:func:`ht_trendline_update` over a series (False, early, at a NaN).

    Per block of rows: first the serial recurrence (:func:`_ht_core`) for each row,
    then the means, four rows at a time. Each mean is still summed newest first, one
    add after another, but four independent sums run side by side instead of one
    chain of up to 50 dependent adds per row.
    """
    row = out[0]
    m = x.shape[0]
    st = ht_trendline_state_nb()
    counts = np.empty(_HT_BLOCK, dtype=np.int64)
    means = np.empty(_HT_BLOCK, dtype=np.float64)
    for lo in range(0, m, _HT_BLOCK):
        hi = min(lo + _HT_BLOCK, m)
        for i in range(lo, hi):
            v = x[i]
            if v != v:
                return False
            counts[i - lo] = _ht_core(st, v)
        i = lo
        # Before row 64, prices before row 0 read 0.0 (the update's ring starts zeroed).
        while i < hi and i < _HT_RING_LEN:
            k = counts[i - lo]
            mean = 0.0
            for j in range(max(k, 0)):
                mean += x[i - j] if i - j >= 0 else 0.0
            means[i - lo] = mean / float(k) if k > 0 else mean
            i += 1
        while i + 4 <= hi:
            q = i - lo
            k0 = counts[q]
            k1 = counts[q + 1]
            k2 = counts[q + 2]
            k3 = counts[q + 3]
            m0 = m1 = m2 = m3 = 0.0
            for j in range(min(min(k0, k1), min(k2, k3))):
                u = np.uintp(i - j)
                m0 += x[u]
                m1 += x[u + np.uintp(1)]
                m2 += x[u + np.uintp(2)]
                m3 += x[u + np.uintp(3)]
            c = min(min(k0, k1), min(k2, k3))
            for j in range(c, k0):
                m0 += x[np.uintp(i - j)]
            for j in range(c, k1):
                m1 += x[np.uintp(i + 1 - j)]
            for j in range(c, k2):
                m2 += x[np.uintp(i + 2 - j)]
            for j in range(c, k3):
                m3 += x[np.uintp(i + 3 - j)]
            means[q] = m0 / float(k0) if k0 > 0 else m0
            means[q + 1] = m1 / float(k1) if k1 > 0 else m1
            means[q + 2] = m2 / float(k2) if k2 > 0 else m2
            means[q + 3] = m3 / float(k3) if k3 > 0 else m3
            i += 4
        while i < hi:
            k = counts[i - lo]
            mean = 0.0
            for j in range(k):
                mean += x[np.uintp(i - j)]
            means[i - lo] = mean / float(k) if k > 0 else mean
            i += 1
        for i in range(lo, hi):
            row[i] = _ht_trend(st, means[i - lo], i) if counts[i - lo] >= 0 else np.nan
    return True


@njit(nogil=True, error_model="numpy")
def ht_trendline_state_nb() -> np.ndarray:
    """:func:`ht_trendline_state` inside njit code."""
    return np.zeros(_HT_SIZE, dtype=np.float64)


def ht_trendline(real: np.ndarray) -> np.ndarray:
    """Hilbert transform instantaneous trendline, TA-Lib ``HT_TRENDLINE`` (from row 63).

    See :func:`ht_trendline_update` for the method.
    """
    return run_batch(_ht_fast, (real,), 1)[0]
