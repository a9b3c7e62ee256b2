"""Moving averages and Bollinger Bands: SMA, EMA, WMA, BBANDS (TA-Lib compatible).

Each indicator has a state factory (``*_state``) returning one float64 array, an
``@njit`` update that consumes one sample in O(1) without allocating, and a batch
function with TA-Lib's name, parameters and NaN warm-up. The batch functions run dedicated
loops whose arithmetic is the update's, operation for operation; the tests check that the
two agree bit for bit and that both agree with TA-Lib.

Running window sums (SMA, WMA, BBANDS) are re-anchored once per window from accumulators
that only add, so their rounding error is bounded by one window however long they run.
TA-Lib carries its sums from the first sample instead; on ordinary data the two agree to
~1e-15, and after a large outlier leaves the window ours is the exact one.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._common import as_f64, check_int, fma, has_nan, run_batch

# --- SMA ------------------------------------------------------------------------------
# [period, count, pos, sum, fresh, ring[period]]
_SMA_N, _SMA_COUNT, _SMA_POS, _SMA_SUM, _SMA_FRESH = range(5)
_SMA_RING = 5


def sma_state(timeperiod: int = 30) -> np.ndarray:
    """Allocate the state of an incremental SMA.

    Args:
        timeperiod: window length (TA-Lib range 1..100000).

    Returns:
        A float64 array to pass to :func:`sma_update`.
    """
    n = check_int("timeperiod", timeperiod, 1)
    st = np.zeros(_SMA_RING + n, dtype=np.float64)
    st[_SMA_N] = n
    return st


@njit(nogil=True, error_model="numpy")
def sma_update(state: np.ndarray, x: float) -> float:
    """Feed one sample to an SMA; returns the mean of the last ``timeperiod`` samples.

    A running window sum, ``sum += x - x[-n]`` (one add on the loop-carried chain),
    except that whenever the window is exactly one turn of the ring its sum is taken
    from an accumulator that only ever added, so rounding cannot build up past one
    window (TA-Lib carries its sum from the first sample; the two agree to ~1e-15).
    NaN during warm-up and for a skipped NaN.
    """
    if x != x:
        return np.nan
    n = state[_SMA_N]
    ni = int(n)
    if ni == 1:
        return x
    count = state[_SMA_COUNT] + 1.0
    state[_SMA_COUNT] = count
    pos = int(state[_SMA_POS])
    slot = _SMA_RING + pos
    old = state[slot]  # 0.0 (the initial ring) until the window is full
    state[slot] = x
    fresh = (0.0 if pos == 0 else state[_SMA_FRESH]) + x
    state[_SMA_FRESH] = fresh
    s = fresh if pos == ni - 1 else state[_SMA_SUM] + (x - old)
    state[_SMA_SUM] = s
    pos += 1
    state[_SMA_POS] = 0 if pos == ni else pos
    if count < n:
        return np.nan
    return s / n


@njit(nogil=True, error_model="numpy")
def _sma_into(x: np.ndarray, start: int, n: int, out: np.ndarray) -> bool:
    """SMA of ``x[start:]`` into ``out`` (NaN before ``start + n - 1``), as sma_update.

    Returns False if ``x[start:]`` holds a NaN (checked on the way, no pass of its own).
    """
    m = x.shape[0]
    for i in range(min(start + n - 1, m)):
        out[i] = np.nan
    bad = 0
    if n == 1:
        for i in range(start, m):
            v = x[i]
            bad |= v != v
            out[i] = v
        return bad == 0
    if m < start + n:
        for i in range(start, m):
            bad |= x[i] != x[i]
        return bad == 0
    s = 0.0
    for i in range(start, start + n):
        v = x[i]
        bad |= v != v
        s += v
    out[start + n - 1] = s / n
    # Later samples, one flat loop (views keep the indices non-negative).
    cur = x[start + n :]
    old = x[start : m - n]
    dst = out[start + n :]
    fresh = 0.0
    pos = 0
    for j in range(m - start - n):
        v = cur[j]
        bad |= v != v
        fresh = (0.0 if pos == 0 else fresh) + v
        pos += 1
        if pos == n:
            pos = 0
            s = fresh
        else:
            s = s + (v - old[j])
        dst[j] = s / n
    return bad == 0


@njit(cache=True, nogil=True, error_model="numpy")
def _sma_fast(x: np.ndarray, n: int, out: np.ndarray) -> bool:
    return _sma_into(x, 0, n, out[0])


def sma(real: np.ndarray, timeperiod: int = 30) -> np.ndarray:
    """Simple moving average, TA-Lib ``SMA``: NaN for the first ``timeperiod - 1`` rows."""
    n = check_int("timeperiod", timeperiod, 1)
    return run_batch(_sma_fast, (real,), 1, (n,))[0]


# --- EMA ------------------------------------------------------------------------------
# [period, alpha, count, seed_sum, value]
_EMA_N, _EMA_ALPHA, _EMA_COUNT, _EMA_SUM, _EMA_VALUE = range(5)
EMA_STATE_SIZE = 5


def ema_state(period: int) -> np.ndarray:
    """Allocate the state of an incremental EMA.

    Args:
        period: number of samples; the smoothing factor is ``2 / (period + 1)``.

    Returns:
        A float64 array to pass to :func:`ema_update`.
    """
    n = check_int("period", period, 1)
    state = np.zeros(EMA_STATE_SIZE, dtype=np.float64)
    state[_EMA_N] = n
    state[_EMA_ALPHA] = 2.0 / (n + 1.0)
    state[_EMA_VALUE] = np.nan
    return state


@njit(nogil=True, error_model="numpy")
def ema_step(value: float, alpha: float, x: float) -> float:
    """One EMA step ``value + alpha * (x - value)``, as TA-Lib 0.8.1's build rounds it.

    Its C statement ``((x - prev) * k) + prev`` is compiled to one fused multiply-add;
    doing the same makes EMA, MACD (signal included), TRIX, DEMA and TEMA bit-exact to
    TA-Lib, and shortens the loop-carried chain by one rounding step.
    """
    return fma(x - value, alpha, value)


@njit(nogil=True, error_model="numpy")
def ema_update(state: np.ndarray, x: float) -> float:
    """Feed one sample to an EMA; returns the new value (NaN during warm-up).

    Seeded like TA-Lib's default (``TA_COMPATIBILITY_DEFAULT``): the first value is the
    simple mean of the first ``period`` samples, then ``ema += alpha * (x - ema)`` (one
    fused multiply-add, see :func:`ema_step`). A NaN
    sample is skipped (NaN out, state unchanged).
    """
    if x != x:
        return np.nan
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
    value = ema_step(value, state[_EMA_ALPHA], x)
    state[_EMA_VALUE] = value
    return value


@njit(nogil=True, error_model="numpy")
def _ema_into(x: np.ndarray, start: int, n: int, out: np.ndarray) -> None:
    """TA-Lib EMA of ``x[start:]`` into ``out[start + n - 1:]`` (NaN before), no NaN check."""
    m = x.shape[0]
    alpha = 2.0 / (n + 1.0)
    for i in range(min(start + n - 1, m)):
        out[i] = np.nan
    if m < start + n:
        return
    s = 0.0
    for i in range(start, start + n - 1):
        s += x[i]
    v = (s + x[start + n - 1]) / n
    out[start + n - 1] = v
    for i in range(start + n, m):
        v = ema_step(v, alpha, x[i])
        out[i] = v


@njit(nogil=True, error_model="numpy")
def ema_chain_update(
    state: np.ndarray, at: int, depth: int, x: float
) -> tuple[float, float, float]:
    """Feed ``x`` to ``depth`` (1 to 3) chained EMAs, each feeding the next.

    The EMA states lie one after the other from ``state[at]``. Returns ``(e1, e2, e3)``,
    NaN from the first stage still warming up on (DEMA, TEMA and TRIX are such chains).
    """
    e1 = ema_update(state[at : at + EMA_STATE_SIZE], x)
    if depth == 1 or e1 != e1:
        return e1, np.nan, np.nan
    at += EMA_STATE_SIZE
    e2 = ema_update(state[at : at + EMA_STATE_SIZE], e1)
    if depth == 2 or e2 != e2:
        return e1, e2, np.nan
    at += EMA_STATE_SIZE
    return e1, e2, ema_update(state[at : at + EMA_STATE_SIZE], e2)


def ema_chain_state(n: int, depth: int) -> np.ndarray:
    """States of ``depth`` chained EMAs of period ``n``, for :func:`ema_chain_update`."""
    return np.concatenate([ema_state(n) for _ in range(depth)])


@njit(nogil=True, error_model="numpy")
def ema_chain_seed(x: np.ndarray, n: int, depth: int) -> tuple[float, float, float]:
    """Warm up ``depth`` (1 to 3) chained EMAs of period ``n`` over ``x``, as the updates do.

    Each stage is seeded with the mean of its first ``n`` inputs. Returns ``(e1, e2, e3)``
    after row ``depth * (n - 1)``, where the last stage has its first value (unused
    stages NaN); ``x`` must hold at least ``depth * (n - 1) + 1`` rows.
    """
    k = 2.0 / (n + 1.0)
    fn = float(n)
    s = 0.0
    for i in range(n):
        s += x[i]
    e1 = s / fn
    if depth == 1:
        return e1, np.nan, np.nan
    s = e1
    for i in range(n, 2 * n - 1):
        e1 = ema_step(e1, k, x[i])
        s += e1
    e2 = s / fn
    if depth == 2:
        return e1, e2, np.nan
    s = e2
    for i in range(2 * n - 1, 3 * n - 2):
        e1 = ema_step(e1, k, x[i])
        e2 = ema_step(e2, k, e1)
        s += e2
    return e1, e2, s / fn


@njit(cache=True, nogil=True, error_model="numpy")
def _ema_fast(x: np.ndarray, n: int, out: np.ndarray) -> bool:
    # Every sample feeds the chain, so a NaN leaves it NaN to the end: the last value is
    # the NaN check (an inf - inf also trips it; run_batch then finds no NaN input and
    # keeps this run). No per-row test or branch in the loop, and offset views indexed
    # from 0 with np.uintp: no negative-index wrap code (4 integer ops per access).
    m = x.shape[0]
    row = out[0]
    for i in range(min(n - 1, m)):
        row[i] = np.nan
    if m < n:
        return not has_nan(x)
    s = 0.0
    for i in range(n - 1):
        s += x[i]
    v = (s + x[n - 1]) / n
    row[n - 1] = v
    alpha = 2.0 / (n + 1.0)
    src = x[n:]
    dst = row[n:]
    for i in range(m - n):
        u = np.uintp(i)
        v = ema_step(v, alpha, src[u])
        dst[u] = v
    return v == v


def ema(real: np.ndarray, timeperiod: int = 30) -> np.ndarray:
    """Exponential moving average, TA-Lib ``EMA``.

    TA-Lib's seed: the first value (row ``timeperiod - 1``) is the SMA of the first
    ``timeperiod`` samples, not the first sample; rows before it are NaN.
    """
    n = check_int("timeperiod", timeperiod, 1)
    return run_batch(_ema_fast, (real,), 1, (n,))[0]


# --- WMA ------------------------------------------------------------------------------
# [period, count, pos, weighted_sum, plain_sum, fresh_weighted, fresh_plain, ring[period]]
_WMA_N, _WMA_COUNT, _WMA_POS, _WMA_SUM, _WMA_SUB, _WMA_FSUM, _WMA_FSUB = range(7)
_WMA_RING = 7


def wma_state(timeperiod: int = 30) -> np.ndarray:
    """Allocate the state of an incremental WMA (linear weights ``1..timeperiod``)."""
    n = check_int("timeperiod", timeperiod, 1)
    st = np.zeros(_WMA_RING + n, dtype=np.float64)
    st[_WMA_N] = n
    return st


@njit(nogil=True, error_model="numpy")
def wma_update(state: np.ndarray, x: float) -> float:
    """Feed one sample to a WMA; returns the weighted mean (NaN during warm-up).

    TA-Lib's O(1) form: ``sub`` is the plain window sum and ``sum`` the weighted one;
    each step adds ``x * n`` to ``sum``, outputs ``sum / (n (n + 1) / 2)`` and then
    removes ``sub`` from ``sum``. Both sums are re-anchored from add-only accumulators
    each time the window is one turn of the ring, so their rounding cannot drift (TA-Lib
    0.8 also stays within ~1e-14 of the exact WMA; its arithmetic differs in the last bits).
    """
    if x != x:
        return np.nan
    n = state[_WMA_N]
    ni = int(n)
    if ni == 1:
        return x
    count = state[_WMA_COUNT] + 1.0
    state[_WMA_COUNT] = count
    pos = int(state[_WMA_POS])
    trailing = state[_WMA_RING + pos] if count > n else 0.0
    state[_WMA_RING + pos] = x
    fsub = (0.0 if pos == 0 else state[_WMA_FSUB]) + x
    fsum = (0.0 if pos == 0 else state[_WMA_FSUM]) + x * float(pos + 1)
    state[_WMA_FSUB] = fsub
    state[_WMA_FSUM] = fsum
    if pos == ni - 1:
        sub = fsub
        s = fsum
    else:
        sub = state[_WMA_SUB] + x - trailing
        s = state[_WMA_SUM] + x * n
    pos += 1
    if pos == ni:
        pos = 0
    state[_WMA_POS] = pos
    state[_WMA_SUB] = sub
    if count < n:
        state[_WMA_SUM] = s
        return np.nan
    state[_WMA_SUM] = s - sub
    return s / float((ni * (ni + 1)) >> 1)


@njit(nogil=True, error_model="numpy")
def _wma_into(x: np.ndarray, start: int, n: int, out: np.ndarray) -> None:
    """WMA of ``x[start:]`` into ``out`` (NaN before ``start + n - 1``), as wma_update."""
    m = x.shape[0]
    for i in range(min(start + n - 1, m)):
        out[i] = np.nan
    if n == 1:
        for i in range(start, m):
            out[i] = x[i]
        return
    if m < start + n:
        return
    divider = float((n * (n + 1)) >> 1)
    fn = float(n)
    # First turn of the ring: the add-only sums are the window's.
    fsub = 0.0
    fsum = 0.0
    for p in range(n):
        v = x[start + p]
        fsub += v
        fsum += v * float(p + 1)
    out[start + n - 1] = fsum / divider
    sub = fsub
    s = fsum - sub
    # Later turns: TA-Lib's sliding sums, replaced at each turn's end by the add-only ones.
    cur = x[start + n :]
    old = x[start : m - n]
    dst = out[start + n :]
    k = 0
    while k < m - start - n:
        fsub = 0.0
        fsum = 0.0
        first = k
        for p in range(min(n, m - start - n - k)):
            u = np.uintp(k)
            v = cur[u]
            fsub += v
            fsum += v * float(p + 1)
            if p == n - 1:
                sub = fsub
                s = fsum
            else:
                sub = sub + v - old[u]
                s = s + v * fn
            dst[u] = s
            s -= sub
            k += 1
        # The divisions of the turn in a loop of their own, which LLVM vectorizes.
        for j in range(first, k):
            u = np.uintp(j)
            dst[u] = dst[u] / divider


@njit(cache=True, nogil=True, error_model="numpy")
def _wma_fast(x: np.ndarray, n: int, out: np.ndarray) -> bool:
    if has_nan(x):
        return False
    _wma_into(x, 0, n, out[0])
    return True


def wma(real: np.ndarray, timeperiod: int = 30) -> np.ndarray:
    """Weighted moving average, TA-Lib ``WMA`` (weights 1..timeperiod, newest heaviest)."""
    n = check_int("timeperiod", timeperiod, 1)
    return run_batch(_wma_fast, (real,), 1, (n,))[0]


# --- MA dispatch (TA-Lib MAType) ------------------------------------------------------
MA_SMA, MA_EMA, MA_WMA = 0, 1, 2
_MA_SUPPORTED = (MA_SMA, MA_EMA, MA_WMA)


def ma_state(timeperiod: int, matype: int) -> np.ndarray:
    """State of a TA-Lib ``MA`` of type ``matype`` (0 SMA, 1 EMA, 2 WMA).

    Raises:
        ValueError: for the TA-Lib MA types this package does not implement (3..8).
    """
    if matype not in _MA_SUPPORTED:
        raise ValueError(f"matype {matype!r} not supported (0=SMA, 1=EMA, 2=WMA)")
    if matype == MA_SMA:
        return sma_state(timeperiod)
    if matype == MA_EMA:
        return ema_state(timeperiod)
    return wma_state(timeperiod)


@njit(nogil=True, error_model="numpy")
def ma_update(state: np.ndarray, matype: int, x: float) -> float:
    """Update a TA-Lib ``MA``. A period of 1 copies its input, as ``TA_MA`` does."""
    if state[0] == 1.0:
        return x
    if matype == MA_SMA:
        return sma_update(state, x)
    if matype == MA_EMA:
        return ema_update(state, x)
    return wma_update(state, x)


@njit(nogil=True, error_model="numpy")
def ma_into(x: np.ndarray, start: int, n: int, matype: int, out: np.ndarray) -> None:
    """Batch TA-Lib ``MA`` of ``x[start:]`` into ``out`` (NaN before ``start + n - 1``).

    Same arithmetic as :func:`ma_update` fed ``x[start:]``; ``x`` must be NaN-free there.
    """
    if n == 1:
        for i in range(start):
            out[i] = np.nan
        for i in range(start, x.shape[0]):
            out[i] = x[i]
    elif matype == MA_SMA:
        _sma_into(x, start, n, out)
    elif matype == MA_EMA:
        _ema_into(x, start, n, out)
    else:
        _wma_into(x, start, n, out)


# --- BBANDS ---------------------------------------------------------------------------
# [period, nbdevup, nbdevdn, matype, count, pos, shift, s1, s2, next_shift, f1, f2,
#  ma_len, run, ring[period], ma_state[ma_len]]
(
    _BB_N,
    _BB_UP,
    _BB_DN,
    _BB_MATYPE,
    _BB_COUNT,
    _BB_POS,
    _BB_K,
    _BB_S1,
    _BB_S2,
    _BB_KN,
    _BB_F1,
    _BB_F2,
    _BB_MALEN,
    _BB_RUN,  # how many of the last samples are equal to the last one
) = range(14)
_BB_RING = 14


def bbands_state(
    timeperiod: int = 20, nbdevup: float = 2.0, nbdevdn: float = 2.0, matype: int = 0
) -> np.ndarray:
    """Allocate the state of incremental Bollinger Bands (see :func:`bbands`)."""
    n = check_int("timeperiod", timeperiod, 2)
    ma = ma_state(n, matype) if matype != MA_SMA else np.zeros(0)
    st = np.zeros(_BB_RING + n + ma.shape[0], dtype=np.float64)
    st[_BB_N] = n
    st[_BB_UP] = nbdevup
    st[_BB_DN] = nbdevdn
    st[_BB_MATYPE] = matype
    st[_BB_MALEN] = ma.shape[0]
    st[_BB_RING + n :] = ma
    return st


@njit(nogil=True, error_model="numpy")
def bbands_update(state: np.ndarray, x: float, out: np.ndarray) -> None:
    """Feed one sample; writes ``(upperband, middleband, lowerband)`` into ``out[:3]``.

    NaN during warm-up and for a skipped NaN sample. See :func:`bbands` for the numerics.
    """
    if x != x:
        out[0] = out[1] = out[2] = np.nan
        return
    n = state[_BB_N]
    ni = int(n)
    matype = int(state[_BB_MATYPE])
    middle = np.nan
    if matype != MA_SMA:
        ma_at = _BB_RING + ni
        middle = ma_update(state[ma_at : ma_at + int(state[_BB_MALEN])], matype, x)
    count = state[_BB_COUNT] + 1.0
    state[_BB_COUNT] = count
    pos = int(state[_BB_POS])
    slot = _BB_RING + pos
    old = state[slot]
    prev = state[_BB_RING + (pos - 1 if pos > 0 else ni - 1)]
    run = state[_BB_RUN] + 1.0 if count > 1.0 and x == prev else 1.0
    state[_BB_RUN] = run
    state[slot] = x
    # Deviation from sums of (x - shift): with the shift inside the recent price range
    # the sums stay at the scale of the deviations, and x - shift is exact. A second
    # pair of sums, taken against the first sample of the current ring cycle, replaces
    # the sliding pair each time the ring wraps, so the rounding of the sliding
    # subtractions never outlives one window.
    if pos == 0:
        state[_BB_KN] = x
        state[_BB_F1] = 0.0
        state[_BB_F2] = 0.0
        if count == 1.0:
            state[_BB_K] = x
    d = x - state[_BB_KN]
    state[_BB_F1] += d
    state[_BB_F2] += d * d
    k = state[_BB_K]
    d = x - k
    s1 = state[_BB_S1] + d
    s2 = state[_BB_S2] + d * d
    if count > n:
        d = old - k
        s1 -= d
        s2 -= d * d
    pos += 1
    if pos == ni:
        pos = 0
        k = state[_BB_KN]
        state[_BB_K] = k
        s1 = state[_BB_F1]
        s2 = state[_BB_F2]
    state[_BB_POS] = pos
    state[_BB_S1] = s1
    state[_BB_S2] = s2
    if count < n:
        out[0] = out[1] = out[2] = np.nan
        return
    inv = 1.0 / n
    m1 = s1 * inv
    if matype == MA_SMA:
        # The window mean from the shifted sum: as exact as a re-anchored plain sum.
        middle = k + m1
    msq = s2 * inv
    var = msq - m1 * m1
    # Below 1e-12 of the mean square, the spread is under the rounding of the sums; a
    # window of equal samples has none (the sliding sums' rounding may remain when the
    # shift is that value: their mean square is then that rounding too).
    std = math.sqrt(var) if var > 1e-12 * msq and run < n else 0.0
    out[0] = middle + std * state[_BB_UP]
    out[1] = middle
    out[2] = middle - std * state[_BB_DN]


@njit(cache=True, nogil=True, error_model="numpy")
def _bbands_run(state: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        bbands_update(state, x[i], out[:, i])


@njit(cache=True, nogil=True, error_model="numpy")
def _bbands_fast(x: np.ndarray, n: int, up: float, dn: float, out: np.ndarray) -> bool:
    # The arithmetic of bbands_update for matype 0, with the state in registers.
    m = x.shape[0]
    fn = float(n)
    k = 0.0
    kn = 0.0
    s1 = 0.0
    s2 = 0.0
    f1 = 0.0
    f2 = 0.0
    inv = 1.0 / fn
    pos = 0
    run = 0
    for i in range(m):
        v = x[i]
        if v != v:
            return False
        run = run + 1 if i > 0 and v == x[i - 1] else 1
        if pos == 0:
            kn = v
            f1 = 0.0
            f2 = 0.0
            if i == 0:
                k = v
        d = v - kn
        f1 += d
        f2 += d * d
        d = v - k
        s1 += d
        s2 += d * d
        if i >= n:
            d = x[i - n] - k
            s1 -= d
            s2 -= d * d
        pos += 1
        if pos == n:
            pos = 0
            k = kn
            s1 = f1
            s2 = f2
        if i < n - 1:
            out[0, i] = out[1, i] = out[2, i] = np.nan
            continue
        m1 = s1 * inv
        middle = k + m1
        msq = s2 * inv
        var = msq - m1 * m1
        std = math.sqrt(var) if var > 1e-12 * msq and run < n else 0.0
        out[0, i] = middle + std * up
        out[1, i] = middle
        out[2, i] = middle - std * dn
    return True


def bbands(
    real: np.ndarray,
    timeperiod: int = 20,
    nbdevup: float = 2.0,
    nbdevdn: float = 2.0,
    matype: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bollinger Bands, TA-Lib ``BBANDS``: ``(upperband, middleband, lowerband)``.

    The middle band is the MA (for ``matype=0`` the window mean, ``shift + sum(x - shift)
    / n`` from the sums below rather than TA-Lib's running sum; they agree to ~1e-16
    relative), the bands add
    ``nbdev`` *population* standard deviations of the same window (around its plain mean,
    whatever the MA type, as in TA-Lib). The deviation is not TA-Lib's arithmetic but
    agrees with TA-Lib >= 0.8 to ~1e-12 relative: both avoid ``E[x^2] - E[x]^2`` of raw
    prices, which cancels catastrophically at BTC price levels. Ours keeps running sums
    of ``x - shift`` and ``(x - shift)^2`` with the shift inside the recent price range,
    rebuilt from additions only every ``timeperiod`` samples (when the ring wraps), so
    it stays O(1) per sample and its rounding cannot drift; a variance below ``1e-12`` of
    the mean square deviation is read as 0. Defaults follow TA-Lib 0.8
    (``timeperiod=20``).

    Args:
        real: input series.
        timeperiod: window (2..100000).
        nbdevup: deviations above the middle band.
        nbdevdn: deviations below the middle band.
        matype: middle band MA type, 0 (SMA), 1 (EMA) or 2 (WMA).
    """
    st = bbands_state(timeperiod, nbdevup, nbdevdn, matype)
    if matype == MA_SMA:
        params = (int(st[_BB_N]), float(nbdevup), float(nbdevdn))
        out = run_batch(_bbands_fast, (real,), 3, params)
    else:
        x = as_f64(real)
        out = np.empty((3, x.shape[0]), dtype=np.float64)
        _bbands_run(st, x, out)
    return out[0], out[1], out[2]
