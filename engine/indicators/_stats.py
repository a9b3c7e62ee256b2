"""Rolling statistics: VAR, STDDEV and the linear regression family (TA-Lib compatible).

VAR and STDDEV are the *population* variance and deviation of the last ``timeperiod``
samples. They come from running sums of ``x - shift`` and ``(x - shift)^2`` with the
shift inside the recent price range (the BBANDS arithmetic of ``_overlap``), rebuilt
from additions only each time the ring of samples turns: O(1) per sample, no
catastrophic cancellation at BTC price levels, no drift. TA-Lib 0.8.1 is also accurate
there; the two agree to ~1e-12 relative.

The regression family fits ``y = b + m t`` by least squares to the last ``timeperiod``
samples (``t = 0`` the oldest, ``n - 1`` the newest): LINEARREG is the fit at the newest
sample ``b + m (n - 1)``, LINEARREG_SLOPE ``m``, LINEARREG_INTERCEPT ``b``,
LINEARREG_ANGLE ``atan(m)`` in degrees and TSF the one-step forecast ``b + m n``. TA-Lib
recomputes its sums over the whole window at every sample (O(n)); here the sums
``S = sum(y - k)`` and ``T = sum(age (y - k))`` slide in O(1) (a new sample ages every
other by one: ``T' = T + S - n y_evicted``) and are re-anchored once per window, and
the slope is taken from the shifted sums, which is more accurate than TA-Lib's raw-price
formula; results agree to ~1e-11 relative on prices, and the slope to ~1e-11 of the
price level.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._common import check_int, fma, run_batch

# --- rolling moments ------------------------------------------------------------------
# [period, count, pos, shift, s1, s2, next_shift, f1, f2, prev, run, turn,
#  turns_per_anchor, ring[period]]
_MO_N, _MO_COUNT, _MO_POS, _MO_K, _MO_S1, _MO_S2, _MO_KN, _MO_F1, _MO_F2 = range(9)
_MO_PREV, _MO_RUN, _MO_TURN, _MO_TURNS = 9, 10, 11, 12
_MO_RING = 13


def _anchor_turns(n: int) -> int:
    """Ring turns between re-anchorings: every turn, or ~32 samples for short windows.

    Rebuilding the add-only sums costs four operations per sample; for a window of 5
    they need not be rebuilt more often than every 35 samples to keep the rounding of
    the sliding sums negligible.
    """
    return max(1, (32 + n - 1) // n)


def _moments_state(n: int) -> np.ndarray:
    st = np.zeros(_MO_RING + n, dtype=np.float64)
    st[_MO_N] = n
    st[_MO_TURNS] = _anchor_turns(n)
    return st


@njit(nogil=True, error_model="numpy")
def moments_push(state: np.ndarray, x: float) -> float:
    """Push ``x`` into a rolling window; returns its population variance (NaN in warm-up).

    A window of ``n`` equal samples reads exactly 0 (the sums may keep rounding residue
    of earlier samples); below ``1e-12`` of the mean square deviation from the shift,
    the variance is under the rounding of the sums and reads 0 as well.
    """
    n = state[_MO_N]
    ni = int(n)
    count = state[_MO_COUNT] + 1.0
    state[_MO_COUNT] = count
    pos = int(state[_MO_POS])
    slot = _MO_RING + pos
    old = state[slot]
    state[slot] = x
    if count == 1.0:
        state[_MO_K] = x
    # Only the turn that ends in a re-anchoring builds the add-only sums.
    active = state[_MO_TURN] == state[_MO_TURNS] - 1.0
    if active:
        if pos == 0:
            state[_MO_KN] = x
            state[_MO_F1] = 0.0
            state[_MO_F2] = 0.0
        d = x - state[_MO_KN]
        state[_MO_F1] += d
        state[_MO_F2] += d * d
    k = state[_MO_K]
    d = x - k
    if count > n:
        s1, s2 = _moments_slide(state[_MO_S1], state[_MO_S2], d, old - k)
    else:
        s1 = state[_MO_S1] + d
        s2 = state[_MO_S2] + d * d
    pos += 1
    if pos == ni:
        pos = 0
        if active:
            state[_MO_K] = state[_MO_KN]
            s1 = state[_MO_F1]
            s2 = state[_MO_F2]
            state[_MO_TURN] = 0.0
        else:
            state[_MO_TURN] += 1.0
    state[_MO_POS] = pos
    state[_MO_S1] = s1
    state[_MO_S2] = s2
    run = state[_MO_RUN] + 1.0 if x == state[_MO_PREV] else 1.0
    state[_MO_RUN] = run
    state[_MO_PREV] = x
    if count < n:
        return np.nan
    return _variance(s1, s2, 1.0 / n, run >= n)


@njit(nogil=True, error_model="numpy")
def _moments_slide(s1: float, s2: float, d: float, e: float) -> tuple[float, float]:
    """Slide the shifted sums: ``d`` enters, ``e`` leaves (both less the shift).

    One add on each sum's chain (the sample's change of the sums, then the sum), and
    ``d^2 - e^2`` as ``(d - e)(d + e)``: one product, no cancellation between two.
    """
    return s1 + (d - e), s2 + (d - e) * (d + e)


@njit(nogil=True, error_model="numpy")
def _variance(s1: float, s2: float, inv: float, flat: bool) -> float:
    # n var = sum(d^2) - sum(d)^2 / n, one rounding for the product and the difference.
    t = fma(-s1, s1 * inv, s2)
    return 0.0 if flat or not t > 1e-12 * s2 else t * inv


@njit(nogil=True, error_model="numpy")
def _moment_out(s1: float, s2: float, inv: float, flat: bool, nbdev: float, mode: int) -> float:
    var = _variance(s1, s2, inv, flat)
    if mode == 0:
        return var
    return math.sqrt(var) * nbdev if var > 0.0 else 0.0


@njit(nogil=True, error_model="numpy")
def _moments_into(
    x: np.ndarray, n: int, turns: int, nbdev: float, mode: int, out: np.ndarray
) -> bool:
    """VAR (mode 0) or STDDEV (mode 1) of ``x``: :func:`moments_push` with registers.

    Walks the ring turns of the update: the first turn only adds; each later one slides
    its sums and, at its end, replaces them by the add-only sums of the turn. Returns
    False when ``x`` holds a NaN (the caller then drops those rows).
    """
    m = x.shape[0]
    for i in range(min(n - 1, m)):
        out[i] = np.nan
    inv = 1.0 / n
    k = x[0] if m else 0.0
    s1 = 0.0
    s2 = 0.0
    prev = 0.0
    run = 0
    bad = 0
    # First turn: shift x[0] for both pairs of sums, so they are the same sums.
    for i in range(min(n, m)):
        v = x[i]
        bad |= v != v
        d = v - k
        s1 += d
        s2 += d * d
        run = run + 1 if v == prev else 1
        prev = v
        if i == n - 1:
            out[i] = _moment_out(s1, s2, inv, run >= n, nbdev, mode)
    # (Had the first turn re-anchored, its add-only sums would be these very sums.)
    # From here the update's run of equal samples is kept as the row where it started.
    start = n - run
    turn = 0 if turns == 1 else 1
    # Later turns, whole ring turns per block: no ring position to test per row.
    # Views made once (slicing per turn costs reference counting); unsigned indices
    # spare numba's negative-index wrap.
    cur = x[n:]
    old = x[: max(m - n, 0)]
    dst = out[n:]
    rows = m - n
    start_j = 0
    while start_j < rows:
        # Every turn up to the next re-anchoring in one loop: no per-turn overhead.
        span = (turns - turn) * n
        stop_j = min(start_j + span, rows)
        for j in range(start_j, stop_j):
            u = np.uintp(j)
            v = cur[u]
            bad |= v != v
            s1, s2 = _moments_slide(s1, s2, v - k, old[u] - k)
            if v != prev:
                start = j + n
            prev = v
            dst[u] = _moment_out(s1, s2, inv, j + 1 >= start, nbdev, mode)
        if stop_j - start_j == span:
            # The ring turned: the add-only sums of the last turn, shifted by its first
            # sample (a second pass over n rows still in L1), take over from its last
            # row on, whose output the update computes after the swap.
            first = stop_j - n
            k = cur[np.uintp(first)]
            s1 = 0.0
            s2 = 0.0
            for j in range(first, stop_j):
                d = cur[np.uintp(j)] - k
                s1 += d
                s2 += d * d
            turn = 0
            last = stop_j - 1
            dst[np.uintp(last)] = _moment_out(s1, s2, inv, last + 1 >= start, nbdev, mode)
        start_j = stop_j
    return bad == 0


def var_state(timeperiod: int = 5, nbdev: float = 1.0) -> np.ndarray:
    """Allocate the state of an incremental VAR (``nbdev`` is accepted and unused, as in TA-Lib)."""
    return _moments_state(check_int("timeperiod", timeperiod, 1))


@njit(nogil=True, error_model="numpy")
def var_update(state: np.ndarray, x: float) -> float:
    """Population variance ``mean((x - mean)^2)`` of the last ``timeperiod`` samples."""
    if x != x:
        return np.nan
    return moments_push(state, x)


# [nbdev, moments...]
def stddev_state(timeperiod: int = 5, nbdev: float = 1.0) -> np.ndarray:
    """Allocate the state of an incremental STDDEV."""
    mo = _moments_state(check_int("timeperiod", timeperiod, 1))
    return np.concatenate((np.array([float(nbdev)]), mo))


@njit(nogil=True, error_model="numpy")
def stddev_update(state: np.ndarray, x: float) -> float:
    """``nbdev * sqrt(VAR)`` of the last ``timeperiod`` samples (0 for a flat window)."""
    if x != x:
        return np.nan
    v = moments_push(state[1:], x)
    if v != v:
        return np.nan
    return math.sqrt(v) * state[0] if v > 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _moments_fast(
    x: np.ndarray, n: int, turns: int, nbdev: float, mode: int, out: np.ndarray
) -> bool:
    return _moments_into(x, n, turns, nbdev, mode, out[0])


def _moments_batch(real: np.ndarray, timeperiod: int, nbdev: float, mode: int) -> np.ndarray:
    n = check_int("timeperiod", timeperiod, 1)
    return run_batch(_moments_fast, (real,), 1, (n, _anchor_turns(n), float(nbdev), mode))[0]


def var(real: np.ndarray, timeperiod: int = 5, nbdev: float = 1.0) -> np.ndarray:
    """Population variance, TA-Lib ``VAR`` (``nbdev`` unused, as in TA-Lib; from row n-1)."""
    return _moments_batch(real, timeperiod, nbdev, 0)


def stddev(real: np.ndarray, timeperiod: int = 5, nbdev: float = 1.0) -> np.ndarray:
    """Population standard deviation times ``nbdev``, TA-Lib ``STDDEV`` (from row n-1)."""
    return _moments_batch(real, timeperiod, nbdev, 1)


# --- linear regression ----------------------------------------------------------------
# [period, mode, count, pos, shift, S, T, next_shift, S_fresh, T_fresh, turn,
#  turns_per_anchor, sum_x, 1 / (sum_x^2 - n sum_x2), 1 / n, ring[period]]
_LR_N, _LR_MODE, _LR_COUNT, _LR_POS, _LR_K, _LR_S, _LR_T, _LR_KN, _LR_SF, _LR_TF = range(10)
_LR_TURN, _LR_TURNS, _LR_SX, _LR_IDEN, _LR_INVN = range(10, 15)
_LR_RING = 15
LR_VALUE, LR_SLOPE, LR_ANGLE, LR_INTERCEPT, LR_TSF = range(5)
_RAD2DEG = 180.0 / math.pi


@njit(nogil=True, error_model="numpy")
def _lr_constants(n: float) -> tuple[float, float, float]:
    """``sum(t)``, ``1 / (sum(t)^2 - n sum(t^2))`` and ``1 / n`` over ``t = 0..n-1``."""
    sum_x = n * (n - 1.0) * 0.5
    sum_x2 = n * (n - 1.0) * (2.0 * n - 1.0) / 6.0
    return sum_x, 1.0 / (sum_x * sum_x - n * sum_x2), 1.0 / n


def _lr_state(timeperiod: int, mode: int) -> np.ndarray:
    n = check_int("timeperiod", timeperiod, 2)
    st = np.zeros(_LR_RING + n, dtype=np.float64)
    st[_LR_N] = n
    st[_LR_MODE] = mode
    st[_LR_TURNS] = _anchor_turns(n)
    st[_LR_SX], st[_LR_IDEN], st[_LR_INVN] = _lr_constants.py_func(float(n))
    return st


@njit(nogil=True, error_model="numpy")
def linreg_update(state: np.ndarray, x: float) -> float:
    """Feed one sample to a regression state; returns the output its mode selects.

    Least squares over the last ``n`` samples, ``t = 0`` the oldest: with ``X = n (n-1)
    / 2``, ``X2 = n (n-1) (2n-1) / 6`` and the sums over ages ``a = n - 1 - t``
    (``S = sum(y - k)``, ``T = sum(a (y - k))``): ``m = (n T - X S) / (X^2 - n X2)``,
    ``b = k + (S - m X) / n``. LINEARREG ``b + m (n - 1)``, SLOPE ``m``, ANGLE
    ``atan(m) 180 / pi``, INTERCEPT ``b``, TSF ``b + m n``. The sums are re-anchored
    from add-only sums every ring turn (every few turns for short windows, see
    :func:`_anchor_turns`).
    """
    if x != x:
        return np.nan
    n = state[_LR_N]
    ni = int(n)
    count = state[_LR_COUNT] + 1.0
    state[_LR_COUNT] = count
    pos = int(state[_LR_POS])
    slot = _LR_RING + pos
    old = state[slot]
    state[slot] = x
    if count == 1.0:
        state[_LR_K] = x
    active = state[_LR_TURN] == state[_LR_TURNS] - 1.0
    if active:
        if pos == 0:
            state[_LR_KN] = x
            state[_LR_SF] = 0.0
            state[_LR_TF] = 0.0
        # Add-only sums of this ring turn: every earlier sample ages by one.
        sf = state[_LR_SF]
        state[_LR_TF] += sf
        state[_LR_SF] = sf + (x - state[_LR_KN])
    k = state[_LR_K]
    s = state[_LR_S]
    if count > n:
        e = old - k
        t = state[_LR_T] + (s - n * e)
        s = s + ((x - k) - e)
    else:
        t = state[_LR_T] + s
        s = s + (x - k)
    pos += 1
    if pos == ni:
        pos = 0
        if active:
            k = state[_LR_KN]
            state[_LR_K] = k
            s = state[_LR_SF]
            t = state[_LR_TF]
            state[_LR_TURN] = 0.0
        else:
            state[_LR_TURN] += 1.0
    state[_LR_POS] = pos
    state[_LR_S] = s
    state[_LR_T] = t
    if count < n:
        return np.nan
    return _lr_output(
        n, state[_LR_SX], state[_LR_IDEN], state[_LR_INVN], s, t, k, int(state[_LR_MODE])
    )


@njit(nogil=True, error_model="numpy")
def _lr_output(
    n: float, sum_x: float, iden: float, invn: float, s: float, t: float, k: float, mode: int
) -> float:
    m = (n * t - sum_x * s) * iden
    if mode == LR_SLOPE:
        return m
    if mode == LR_ANGLE:
        return math.atan(m) * _RAD2DEG
    b_rel = (s - m * sum_x) * invn
    if mode == LR_INTERCEPT:
        return k + b_rel
    if mode == LR_TSF:
        return k + fma(m, n, b_rel)
    return k + fma(m, n - 1.0, b_rel)


# Rows of the batch loop per block: its sums are buffered (in L1), then turned into
# outputs in a loop per mode (ANGLE's atan calls do not spill the serial loop's state).
_LR_BLOCK = 256


@njit(nogil=True, error_model="numpy")
def _lr_rows(
    dst: np.ndarray,
    sb: np.ndarray,
    tb: np.ndarray,
    kb: np.ndarray,
    cnt: int,
    fn: float,
    sum_x: float,
    iden: float,
    invn: float,
    mode: int,
) -> None:
    """``dst[:cnt]`` from buffered sums: :func:`_lr_output` with the mode out of the loop."""
    if mode == LR_ANGLE:
        for j in range(cnt):
            u = np.uintp(j)
            sb[u] = _lr_output(fn, sum_x, iden, invn, sb[u], tb[u], kb[u], LR_SLOPE)
        for j in range(cnt):
            u = np.uintp(j)
            dst[u] = math.atan(sb[u]) * _RAD2DEG
    elif mode == LR_SLOPE:
        for j in range(cnt):
            u = np.uintp(j)
            dst[u] = _lr_output(fn, sum_x, iden, invn, sb[u], tb[u], kb[u], LR_SLOPE)
    elif mode == LR_INTERCEPT:
        for j in range(cnt):
            u = np.uintp(j)
            dst[u] = _lr_output(fn, sum_x, iden, invn, sb[u], tb[u], kb[u], LR_INTERCEPT)
    elif mode == LR_TSF:
        for j in range(cnt):
            u = np.uintp(j)
            dst[u] = _lr_output(fn, sum_x, iden, invn, sb[u], tb[u], kb[u], LR_TSF)
    else:
        for j in range(cnt):
            u = np.uintp(j)
            dst[u] = _lr_output(fn, sum_x, iden, invn, sb[u], tb[u], kb[u], LR_VALUE)


@njit(cache=True, nogil=True, error_model="numpy")
def _lr_fast(x: np.ndarray, n: int, turns: int, mode: int, out: np.ndarray) -> bool:
    """:func:`linreg_update` over ``x`` with the state in registers (False on a NaN).

    Per block of rows, the serial loop only slides the sums (buffering ``S``, ``T`` and
    the shift ``k``); :func:`_lr_rows` then computes the block's outputs.
    """
    row = out[0]
    m = x.shape[0]
    fn = float(n)
    sum_x, iden, invn = _lr_constants(fn)
    for i in range(min(n - 1, m)):
        row[i] = np.nan
    k = x[0] if m else 0.0
    s = 0.0
    t = 0.0
    bad = 0
    # First turn: additions only, shift x[0] for both pairs of sums (so they agree).
    for i in range(min(n, m)):
        v = x[i]
        bad |= v != v
        t += s
        s += v - k
    if m >= n:
        row[n - 1] = _lr_output(fn, sum_x, iden, invn, s, t, k, mode)
    turn = 0 if turns == 1 else 1
    cur = x[n:]
    old = x[: max(m - n, 0)]
    dst = row[n:]
    kn = 0.0
    sf = 0.0
    tf = 0.0
    pos = 0
    rows = m - n
    # SLOPE's three operations per row cost less in the serial loop than a buffer pass.
    direct = mode == LR_SLOPE
    buf = np.empty((3, _LR_BLOCK), dtype=np.float64)
    sb = buf[0]
    tb = buf[1]
    kb = buf[2]
    for start in range(0, rows, _LR_BLOCK):
        cnt = min(_LR_BLOCK, rows - start)
        s0 = np.uintp(start)
        for j in range(cnt):
            u = np.uintp(j)
            v = cur[s0 + u]
            bad |= v != v
            active = turn == turns - 1
            if active:
                if pos == 0:
                    kn = v
                    sf = 0.0
                    tf = 0.0
                tf += sf
                sf += v - kn
            e = old[s0 + u] - k
            t += s - fn * e
            s += (v - k) - e
            pos += 1
            if pos == n:
                pos = 0
                if active:
                    k = kn
                    s = sf
                    t = tf
                    turn = 0
                else:
                    turn += 1
            if direct:
                dst[s0 + u] = _lr_output(fn, sum_x, iden, invn, s, t, k, LR_SLOPE)
            else:
                sb[u] = s
                tb[u] = t
                kb[u] = k
        if not direct:
            _lr_rows(dst[start:], sb, tb, kb, cnt, fn, sum_x, iden, invn, mode)
    return bad == 0


def linearreg_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental LINEARREG."""
    return _lr_state(timeperiod, LR_VALUE)


def linearreg_slope_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental LINEARREG_SLOPE."""
    return _lr_state(timeperiod, LR_SLOPE)


def linearreg_angle_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental LINEARREG_ANGLE."""
    return _lr_state(timeperiod, LR_ANGLE)


def linearreg_intercept_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental LINEARREG_INTERCEPT."""
    return _lr_state(timeperiod, LR_INTERCEPT)


def tsf_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental TSF."""
    return _lr_state(timeperiod, LR_TSF)


# The updates differ only by the mode stored in the state; each gets its own name.
linearreg_update = linreg_update
linearreg_slope_update = linreg_update
linearreg_angle_update = linreg_update
linearreg_intercept_update = linreg_update
tsf_update = linreg_update


def _lr_batch(real: np.ndarray, timeperiod: int, mode: int) -> np.ndarray:
    n = check_int("timeperiod", timeperiod, 2)
    return run_batch(_lr_fast, (real,), 1, (n, _anchor_turns(n), mode))[0]


def linearreg(real: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Linear regression value at the newest sample, TA-Lib ``LINEARREG`` (from row n-1)."""
    return _lr_batch(real, timeperiod, LR_VALUE)


def linearreg_slope(real: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Slope ``m`` of the regression line per sample, TA-Lib ``LINEARREG_SLOPE``."""
    return _lr_batch(real, timeperiod, LR_SLOPE)


def linearreg_angle(real: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Angle of the regression line in degrees ``atan(m) 180 / pi``, TA-Lib ``LINEARREG_ANGLE``."""
    return _lr_batch(real, timeperiod, LR_ANGLE)


def linearreg_intercept(real: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Value of the regression line at the oldest sample, TA-Lib ``LINEARREG_INTERCEPT``."""
    return _lr_batch(real, timeperiod, LR_INTERCEPT)


def tsf(real: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Time series forecast ``b + m n`` (one sample ahead), TA-Lib ``TSF``."""
    return _lr_batch(real, timeperiod, LR_TSF)
