"""Momentum oscillators: RSI, MACD, ROC, MOM, TRIX, STOCH, STOCHRSI, WILLR, CCI, AROON, MFI.

TA-Lib compatible batch functions plus O(1) incremental updates (CCI excepted: see
:func:`cci_update`). The arithmetic follows the TA-Lib 0.8 C sources operation for
operation: RSI, ROC, MOM, TRIX, MACD, CCI, AROON, MFI and STOCHRSI's %K agree with TA-Lib
0.8.1 to the last bit (its build rounds an EMA step through one FMA: so do we, see
``_overlap.ema_step``); STOCH and WILLR within ~1e-15 (re-anchored moving averages;
WILLR takes one division where TA-Lib takes two). Where TA-Lib's definition is unusual
the docstring says so. Batch loops and updates share their arithmetic, and agree bit for
bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import (
    CHAIN_BLOCK,
    as_f64,
    block_suffix,
    check_int,
    deque_expire,
    deque_front,
    deque_front_seq,
    deque_push,
    deque_size,
    has_nan,
    is_zero_scaled,
    run_batch,
)
from ._overlap import (
    EMA_STATE_SIZE,
    ema_chain_seed,
    ema_chain_state,
    ema_chain_update,
    ema_state,
    ema_step,
    ema_update,
    ma_into,
    ma_state,
    ma_update,
)

# --- RSI ------------------------------------------------------------------------------
# [period, count, prev, avg_gain, avg_loss, value]
_RSI_N, _RSI_COUNT, _RSI_PREV, _RSI_GAIN, _RSI_LOSS, _RSI_VALUE = range(6)
RSI_STATE_SIZE = 6


def rsi_state(period: int) -> np.ndarray:
    """Allocate the state of an incremental RSI (Wilder smoothing).

    Args:
        period: look-back in samples (TA-Lib default 14, range 2..100000).

    Returns:
        A float64 array to pass to :func:`rsi_update`.
    """
    n = check_int("period", period, 2)
    state = np.zeros(RSI_STATE_SIZE, dtype=np.float64)
    state[_RSI_N] = n
    state[_RSI_PREV] = np.nan
    state[_RSI_VALUE] = np.nan
    return state


@njit(nogil=True, error_model="numpy")
def rsi_update(state: np.ndarray, x: float) -> float:
    """Feed one sample to an RSI; returns the new value (NaN during warm-up).

    Matches TA-Lib: the first average gain/loss is the simple mean of the first
    ``period`` changes (value available at index ``period``), then Wilder's smoothing
    ``avg = (avg * (period - 1) + change) * (1 / period)`` (TA-Lib 0.8's reciprocal). The RSI is
    ``100 * (gain / (gain + loss))``, and 0 once both averages are exactly 0 (TA-Lib 0.8.1:
    over a flat stretch the last ratio holds until the averages underflow). A NaN sample
    is skipped.
    """
    if x != x:
        return np.nan
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
    # TA-Lib 0.8 multiplies by the reciprocal of the period rather than dividing.
    inv = 1.0 / n
    if count == n:
        avg_gain = (state[_RSI_GAIN] + gain) * inv
        avg_loss = (state[_RSI_LOSS] + loss) * inv
    else:
        avg_gain = (state[_RSI_GAIN] * (n - 1.0) + gain) * inv
        avg_loss = (state[_RSI_LOSS] * (n - 1.0) + loss) * inv
    state[_RSI_GAIN] = avg_gain
    state[_RSI_LOSS] = avg_loss
    total = avg_gain + avg_loss
    value = 100.0 * (avg_gain / total) if total != 0.0 else 0.0
    state[_RSI_VALUE] = value
    return value


@njit(cache=True, nogil=True, error_model="numpy")
def _rsi_fast(x: np.ndarray, n: int, out: np.ndarray) -> bool:
    m = x.shape[0]
    fn = float(n)
    nm1 = fn - 1.0
    for i in range(min(n, m)):
        out[0, i] = np.nan
    if m <= n:
        return not has_nan(x)
    # A NaN change adds to neither sum: the NaN check rides along (bad), no pass of its own.
    bad = 0
    g = 0.0
    lo = 0.0
    for i in range(1, n + 1):
        d = x[i] - x[i - 1]
        bad |= d != d
        g += d if d > 0.0 else 0.0
        lo += -d if d < 0.0 else 0.0
    inv = 1.0 / fn
    g *= inv
    lo *= inv
    t = g + lo
    out[0, n] = 100.0 * (g / t) if t != 0.0 else 0.0
    for i in range(n + 1, m):
        d = x[i] - x[i - 1]
        bad |= d != d
        g = (g * nm1 + (d if d > 0.0 else 0.0)) * inv
        lo = (lo * nm1 + (-d if d < 0.0 else 0.0)) * inv
        t = g + lo
        out[0, i] = 100.0 * (g / t) if t != 0.0 else 0.0
    return bad == 0


def rsi(real: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Relative strength index, TA-Lib ``RSI``.

    Wilder smoothing seeded with the plain mean of the first ``timeperiod`` changes, so
    the first value is at row ``timeperiod``. Reads 0 (not 50) on a series flat from the
    start; after a move, a flat stretch keeps the last value.
    """
    n = check_int("timeperiod", timeperiod, 2)
    return run_batch(_rsi_fast, (real,), 1, (n,))[0]


# --- MACD -----------------------------------------------------------------------------
# [fast, slow, signal, count, fast_ema[5], slow_ema[5], signal_ema[5]]
_MACD_FAST, _MACD_SLOW, _MACD_SIGNAL, _MACD_COUNT = range(4)
_MACD_E1 = 4
_MACD_E2 = _MACD_E1 + EMA_STATE_SIZE
_MACD_E3 = _MACD_E2 + EMA_STATE_SIZE


def _macd_periods(fast: int, slow: int, signal: int) -> tuple[int, int, int]:
    fast = check_int("fastperiod", fast, 2)
    slow = check_int("slowperiod", slow, 2)
    signal = check_int("signalperiod", signal, 1)
    # TA-Lib swaps the periods rather than rejecting them.
    return (slow, fast, signal) if slow < fast else (fast, slow, signal)


def macd_state(fastperiod: int = 12, slowperiod: int = 26, signalperiod: int = 9) -> np.ndarray:
    """Allocate the state of an incremental MACD (see :func:`macd`)."""
    fast, slow, signal = _macd_periods(fastperiod, slowperiod, signalperiod)
    st = np.zeros(_MACD_E3 + EMA_STATE_SIZE, dtype=np.float64)
    st[_MACD_FAST] = fast
    st[_MACD_SLOW] = slow
    st[_MACD_SIGNAL] = signal
    st[_MACD_E1:_MACD_E2] = ema_state(fast)
    st[_MACD_E2:_MACD_E3] = ema_state(slow)
    st[_MACD_E3:] = ema_state(signal)
    return st


@njit(nogil=True, error_model="numpy")
def macd_update(state: np.ndarray, x: float, out: np.ndarray) -> None:
    """Feed one sample; writes ``(macd, macdsignal, macdhist)`` into ``out[:3]``."""
    if x != x:
        out[0] = out[1] = out[2] = np.nan
        return
    count = state[_MACD_COUNT] + 1.0
    state[_MACD_COUNT] = count
    slow_v = ema_update(state[_MACD_E2:_MACD_E3], x)
    fast_v = np.nan
    # TA-Lib starts the fast EMA where the slow one becomes valid, not at sample 0.
    if count > state[_MACD_SLOW] - state[_MACD_FAST]:
        fast_v = ema_update(state[_MACD_E1:_MACD_E2], x)
    if slow_v != slow_v:
        out[0] = out[1] = out[2] = np.nan
        return
    line = fast_v - slow_v
    sig = ema_update(state[_MACD_E3 : _MACD_E3 + EMA_STATE_SIZE], line)
    if sig != sig:
        out[0] = out[1] = out[2] = np.nan
        return
    out[0] = line
    out[1] = sig
    out[2] = line - sig


@njit(cache=True, nogil=True, error_model="numpy")
def _macd_fast(x: np.ndarray, fast: int, slow: int, signal: int, out: np.ndarray) -> bool:
    # Every sample feeds the slow EMA, so a NaN leaves it NaN to the end: that is the
    # NaN check, with no pass of its own.
    m = x.shape[0]
    for r in range(3):
        for i in range(min(slow + signal - 2, m)):
            out[r, i] = np.nan
    if m < slow + signal - 1:
        return not has_nan(x)
    kf = 2.0 / (fast + 1.0)
    ks = 2.0 / (slow + 1.0)
    kg = 2.0 / (signal + 1.0)
    ss = 0.0
    for i in range(slow):
        ss += x[i]
    es = ss / slow
    sf = 0.0
    for i in range(slow - fast, slow):
        sf += x[i]
    ef = sf / fast
    # Seed the signal with the mean of the first `signal` MACD values.
    sg = ef - es
    for i in range(slow, slow + signal - 1):
        v = x[i]
        es = ema_step(es, ks, v)
        ef = ema_step(ef, kf, v)
        sg += ef - es
    i0 = slow + signal - 2
    eg = sg / signal
    line = ef - es
    out[0, i0] = line
    out[1, i0] = eg
    out[2, i0] = line - eg
    # Offset views indexed from 0 with np.uintp: no negative-index wrap code per access.
    src = x[i0 + 1 :]
    d0 = out[0, i0 + 1 :]
    d1 = out[1, i0 + 1 :]
    d2 = out[2, i0 + 1 :]
    # Blocks, as in _trix_fast: the three EMA chains bound the loop by their latency,
    # and the histogram (a subtract and a store per row, off the chains) in the same
    # loop took FP pipe slots from them (6% of MACD). Each block runs the chains, then
    # the histogram in a loop LLVM vectorizes, overlapped with the next block's chains.
    rows = m - i0 - 1
    for start in range(0, rows, CHAIN_BLOCK):
        size = min(CHAIN_BLOCK, rows - start)
        for j in range(size):
            u = np.uintp(start + j)
            v = src[u]
            es = ema_step(es, ks, v)
            ef = ema_step(ef, kf, v)
            line = ef - es
            eg = ema_step(eg, kg, line)
            d0[u] = line
            d1[u] = eg
        for j in range(size):
            u = np.uintp(start + j)
            d2[u] = d0[u] - d1[u]
    return es == es


def macd(
    real: np.ndarray, fastperiod: int = 12, slowperiod: int = 26, signalperiod: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD, TA-Lib ``MACD``: ``(macd, macdsignal, macdhist)``.

    TA-Lib oddity reproduced: the *fast* EMA is seeded with the mean of the ``fastperiod``
    samples ending where the slow EMA's seed ends (row ``slowperiod - 1``), not with the
    first ``fastperiod`` samples, so its value differs from ``ema(real, fastperiod)`` for
    a while. The signal is an EMA of the MACD line seeded with its first
    ``signalperiod`` values; all three outputs start at row
    ``slowperiod + signalperiod - 2``. Periods are swapped if ``slowperiod < fastperiod``.
    """
    fast, slow, signal = _macd_periods(fastperiod, slowperiod, signalperiod)
    out = run_batch(_macd_fast, (real,), 3, (fast, slow, signal))
    return out[0], out[1], out[2]


# --- ROC and MOM ----------------------------------------------------------------------
# [period, count, pos, ring[period]]
_LAG_N, _LAG_COUNT, _LAG_POS = range(3)
_LAG_RING = 3


def _lag_state(n: int) -> np.ndarray:
    st = np.zeros(_LAG_RING + n, dtype=np.float64)
    st[_LAG_N] = n
    return st


@njit(nogil=True, error_model="numpy")
def _lag_push(state: np.ndarray, x: float) -> float:
    """Store ``x``; return the sample ``period`` ticks back (NaN before there is one)."""
    count = state[_LAG_COUNT] + 1.0
    state[_LAG_COUNT] = count
    pos = int(state[_LAG_POS])
    slot = _LAG_RING + pos
    prev = state[slot] if count > state[_LAG_N] else np.nan
    state[slot] = x
    pos += 1
    if pos == int(state[_LAG_N]):
        pos = 0
    state[_LAG_POS] = pos
    return prev


def roc_state(timeperiod: int = 10) -> np.ndarray:
    """Allocate the state of an incremental ROC."""
    return _lag_state(check_int("timeperiod", timeperiod, 1))


@njit(nogil=True, error_model="numpy")
def _roc_value(x: float, prev: float) -> float:
    return ((x / prev) - 1.0) * 100.0 if prev != 0.0 else 0.0


@njit(nogil=True, error_model="numpy")
def roc_update(state: np.ndarray, x: float) -> float:
    """Rate of change ``(x / x[-n] - 1) * 100``; 0 when ``x[-n]`` is 0, as in TA-Lib."""
    if x != x:
        return np.nan
    prev = _lag_push(state, x)
    if prev != prev:
        return np.nan
    return _roc_value(x, prev)


@njit(nogil=True, error_model="numpy")
def _lagged(x: np.ndarray, n: int, row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x[n:]``, ``x[:-n]`` and ``row[n:]`` after NaN-filling ``row[:n]`` (``len(x) > n``).

    Offset views rather than ``x[i - n]``: non-negative indices let LLVM vectorize.
    """
    m = x.shape[0]
    for i in range(n):
        row[i] = np.nan
    return x[n:], x[: m - n], row[n:]


@njit(cache=True, nogil=True, error_model="numpy")
def _roc_fast(x: np.ndarray, n: int, out: np.ndarray) -> bool:
    if x.shape[0] <= n:
        out[0, :] = np.nan
        return not has_nan(x)
    cur, prev, dst = _lagged(x, n, out[0])
    bad = 0
    for i in range(cur.shape[0]):
        p = prev[i]
        c = cur[i]
        dst[i] = ((c / p) - 1.0) * 100.0 if p != 0.0 else 0.0
        bad |= (c != c) | (p != p)
    return bad == 0


def roc(real: np.ndarray, timeperiod: int = 10) -> np.ndarray:
    """Rate of change, TA-Lib ``ROC``: ``(real / real[-n] - 1) * 100``, 0 on a 0 base."""
    n = check_int("timeperiod", timeperiod, 1)
    return run_batch(_roc_fast, (real,), 1, (n,))[0]


def mom_state(timeperiod: int = 10) -> np.ndarray:
    """Allocate the state of an incremental MOM."""
    return _lag_state(check_int("timeperiod", timeperiod, 1))


@njit(nogil=True, error_model="numpy")
def mom_update(state: np.ndarray, x: float) -> float:
    """Momentum ``x - x[-n]``."""
    if x != x:
        return np.nan
    return x - _lag_push(state, x)


@njit(cache=True, nogil=True, error_model="numpy")
def _mom_fast(x: np.ndarray, n: int, out: np.ndarray) -> bool:
    if x.shape[0] <= n:
        out[0, :] = np.nan
        return not has_nan(x)
    cur, prev, dst = _lagged(x, n, out[0])
    bad = 0
    for i in range(cur.shape[0]):
        d = cur[i] - prev[i]
        dst[i] = d
        bad |= d != d
    # A NaN difference may also come from inf - inf; run_batch then checks the inputs.
    return bad == 0


def mom(real: np.ndarray, timeperiod: int = 10) -> np.ndarray:
    """Momentum, TA-Lib ``MOM``: ``real - real[-timeperiod]``."""
    n = check_int("timeperiod", timeperiod, 1)
    return run_batch(_mom_fast, (real,), 1, (n,))[0]


# --- TRIX -----------------------------------------------------------------------------
# [period, prev_ema3, three chained EMA states (ema_chain_update's layout)]
_TRIX_N, _TRIX_PREV = range(2)
_TRIX_E = 2


def trix_state(timeperiod: int = 30) -> np.ndarray:
    """Allocate the state of an incremental TRIX."""
    n = check_int("timeperiod", timeperiod, 1)
    return np.concatenate((np.array([n, np.nan]), ema_chain_state(n, 3)))


@njit(nogil=True, error_model="numpy")
def trix_update(state: np.ndarray, x: float) -> float:
    """One-period ROC of a triple EMA, each EMA seeded TA-Lib style (SMA of its input)."""
    if x != x:
        return np.nan
    e = ema_chain_update(state, _TRIX_E, 3, x)[2]
    if e != e:
        return np.nan
    prev = state[_TRIX_PREV]
    state[_TRIX_PREV] = e
    if prev != prev:
        return np.nan
    return _roc_value(e, prev)


@njit(cache=True, nogil=True, error_model="numpy")
def _trix_fast(x: np.ndarray, n: int, out: np.ndarray) -> bool:
    # A NaN sample leaves the first EMA NaN to the end: the NaN check (as _macd_fast).
    m = x.shape[0]
    lb = 3 * (n - 1) + 1
    for i in range(min(lb, m)):
        out[0, i] = np.nan
    if m <= lb:
        return not has_nan(x)
    k = 2.0 / (n + 1.0)
    e1, e2, e3 = ema_chain_seed(x, n, 3)
    # Why blocks: the loop is bound by the EMA chain's latency (a subtract and an FMA
    # per row), and a division per row in the same loop took FP pipe slots from the
    # chain (TRIX ran 13% over the bare chain, 2% over TA-Lib's identical fused loop).
    # So each block of rows first runs the chain alone, keeping the third EMA in
    # ``e3s`` (with the previous row's value in front), then turns it into the ROC in a
    # loop LLVM vectorizes. Short blocks let the out-of-order core run one block's
    # divisions while the next block's chain waits on its latency.
    e3s = np.empty(CHAIN_BLOCK + 1, dtype=np.float64)
    # Offset views indexed from 0 with np.uintp: no negative-index wrap code per access.
    src = x[lb:]
    dst = out[0, lb:]
    rows = m - lb
    for start in range(0, rows, CHAIN_BLOCK):
        size = min(CHAIN_BLOCK, rows - start)
        e3s[0] = e3
        for j in range(size):
            e1 = ema_step(e1, k, src[np.uintp(start + j)])
            e2 = ema_step(e2, k, e1)
            e3 = ema_step(e3, k, e2)
            e3s[np.uintp(j + 1)] = e3
        for j in range(size):
            u = np.uintp(j)
            dst[np.uintp(start + j)] = _roc_value(e3s[u + np.uintp(1)], e3s[u])
    return e1 == e1


def trix(real: np.ndarray, timeperiod: int = 30) -> np.ndarray:
    """TRIX, TA-Lib ``TRIX``: 1-period rate of change (in %) of EMA(EMA(EMA(real))).

    Each of the three EMAs is seeded TA-Lib style with the SMA of its first
    ``timeperiod`` inputs, so the first value is at row ``3 * (timeperiod - 1) + 1``.
    """
    n = check_int("timeperiod", timeperiod, 1)
    return run_batch(_trix_fast, (real,), 1, (n,))[0]


# --- Stochastics ----------------------------------------------------------------------
# STOCH/STOCHF: [fastk, p1, t1, p2, t2, count, len1, len2, max_deque, min_deque,
#  ma1[len1], ma2[len2]]; STOCH smooths fast %K twice (slow %K, slow %D), STOCHF once.
(
    _ST_K,
    _ST_P1,
    _ST_T1,
    _ST_P2,
    _ST_T2,
    _ST_COUNT,
    _ST_LEN1,
    _ST_LEN2,
) = range(8)
_ST_DQ = 8


def _stoch_build(fastk: int, p1: int, t1: int, p2: int, t2: int) -> np.ndarray:
    ma1 = ma_state(p1, t1)
    ma2 = ma_state(p2, t2)
    ma_at = _ST_DQ + 2 * deque_size(fastk)
    st = np.zeros(ma_at + ma1.shape[0] + ma2.shape[0], dtype=np.float64)
    st[_ST_K] = fastk
    st[_ST_P1] = p1
    st[_ST_T1] = t1
    st[_ST_P2] = p2
    st[_ST_T2] = t2
    st[_ST_LEN1] = ma1.shape[0]
    st[_ST_LEN2] = ma2.shape[0]
    st[ma_at : ma_at + ma1.shape[0]] = ma1
    st[ma_at + ma1.shape[0] :] = ma2
    return st


@njit(nogil=True, error_model="numpy")
def _fast_k(state: np.ndarray, high: float, low: float, close: float) -> float:
    """Raw %K over the last ``fastk`` bars; NaN before it exists.

    TA-Lib 0.8: 0 when the range is within ``1e-14`` of its own extremes (a machine-flat
    window), else ``(close - LL) / (HH - LL) * 100``.
    """
    n = int(state[_ST_K])
    count = state[_ST_COUNT] + 1.0
    state[_ST_COUNT] = count
    hi_at = _ST_DQ
    lo_at = _ST_DQ + 2 + 2 * n
    # Expire first: the deque has room for exactly one window.
    oldest = count - n + 1.0
    deque_expire(state, hi_at, n, oldest)
    deque_expire(state, lo_at, n, oldest)
    deque_push(state, hi_at, n, high, count, True)
    deque_push(state, lo_at, n, low, count, False)
    if count < n:
        return np.nan
    lowest = deque_front(state, lo_at, n)
    highest = deque_front(state, hi_at, n)
    rng = highest - lowest
    if is_zero_scaled(rng, abs(highest) + abs(lowest)):
        return 0.0
    return ((close - lowest) / rng) * 100.0


@njit(nogil=True, error_model="numpy")
def _stoch_step(state: np.ndarray, high: float, low: float, close: float, out: np.ndarray) -> None:
    k = _fast_k(state, high, low, close)
    ma_at = _ST_DQ + 2 * (2 + 2 * int(state[_ST_K]))
    l1 = int(state[_ST_LEN1])
    l2 = int(state[_ST_LEN2])
    v1 = np.nan
    if k == k:
        v1 = ma_update(state[ma_at : ma_at + l1], int(state[_ST_T1]), k)
    v2 = np.nan
    if v1 == v1:
        v2 = ma_update(state[ma_at + l1 : ma_at + l1 + l2], int(state[_ST_T2]), v1)
    if v2 == v2:
        out[0] = v1
        out[1] = v2
    else:
        out[0] = out[1] = np.nan


def stoch_state(
    fastk_period: int = 5,
    slowk_period: int = 3,
    slowk_matype: int = 0,
    slowd_period: int = 3,
    slowd_matype: int = 0,
) -> np.ndarray:
    """Allocate the state of an incremental STOCH (see :func:`stoch`)."""
    fk = check_int("fastk_period", fastk_period, 1)
    sk = check_int("slowk_period", slowk_period, 1)
    sd = check_int("slowd_period", slowd_period, 1)
    return _stoch_build(fk, sk, slowk_matype, sd, slowd_matype)


@njit(nogil=True, error_model="numpy")
def stoch_update(state: np.ndarray, high: float, low: float, close: float, out: np.ndarray) -> None:
    """Feed one bar; writes ``(slowk, slowd)`` into ``out[:2]`` (NaN until slowd exists)."""
    if high != high or low != low or close != close:
        out[0] = out[1] = np.nan
        return
    _stoch_step(state, high, low, close, out)


_OSC_FASTK, _OSC_WILLR = 0, 1


@njit(nogil=True, error_model="numpy")
def _hl_oscillator(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, w: int, mode: int, out: np.ndarray
) -> bool:
    """Fast %K (mode 0) or Williams' %R (mode 1) of every row ``>= w - 1`` into ``out``.

    The rolling extremes come from a van Herk / Gil-Werman block walk (see ``_common``)
    fused with the formula, so no full-length scratch array is needed. Returns False if
    an input holds a NaN (checked on the way).
    """
    m = close.shape[0]
    bad = 0
    for i in range(min(w - 1, m)):
        out[i] = np.nan
    # Suffix extremes of the previous block; slot w is a neutral sentinel, so that the
    # window ending a block (which starts with it) needs no branch.
    suf_h = np.empty(w + 1, dtype=np.float64)
    suf_l = np.empty(w + 1, dtype=np.float64)
    suf_h[w] = -np.inf
    suf_l[w] = np.inf
    ph = high[0] if m else 0.0
    pl = low[0] if m else 0.0
    for i in range(min(w, m)):
        h = high[i]
        lo = low[i]
        bad |= (h != h) | (lo != lo) | (close[i] != close[i])
        ph = max(ph, h)
        pl = min(pl, lo)
    if m >= w:
        out[w - 1] = _hl_value(ph, pl, close[w - 1], mode)
        block_suffix(high, low, 0, w, suf_h, suf_l)
    for bs in range(w, m, w):
        be = min(bs + w, m)
        ph = high[bs]
        pl = low[bs]
        for i in range(bs, be):
            # Unsigned indices spare numba's negative-index wrap.
            u = np.uintp(i)
            h = high[u]
            lo = low[u]
            c = close[u]
            bad |= (h != h) | (lo != lo) | (c != c)
            ph = max(ph, h)
            pl = min(pl, lo)
            # The window starts at row i - w + 1, slot i - bs + 1 of the previous block.
            k = np.uintp(i - bs + 1)
            out[u] = _hl_value(max(suf_h[k], ph), min(suf_l[k], pl), c, mode)
        if be - bs == w:
            block_suffix(high, low, bs, be, suf_h, suf_l)
    return bad == 0


@njit(nogil=True, error_model="numpy")
def _hl_value(hh: float, ll: float, close: float, mode: int) -> float:
    if mode == _OSC_FASTK:
        rng = hh - ll
        if is_zero_scaled(rng, abs(hh) + abs(ll)):
            return 0.0
        return ((close - ll) / rng) * 100.0
    return _willr_value(hh, ll, close)


@njit(nogil=True, error_model="numpy")
def _willr_value(hh: float, ll: float, close: float) -> float:
    """``-100 (HH - close) / (HH - LL)``, 0 on a flat window.

    One division where TA-Lib's ``(HH - close) / ((HH - LL) / -100)`` takes two (they
    agree to ~1e-16 relative).
    """
    rng = hh - ll
    return ((hh - close) / rng) * (-100.0) if rng != 0.0 else 0.0


@njit(nogil=True, error_model="numpy")
def _fast_k_into(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, start: int, n: int, out: np.ndarray
) -> None:
    """Raw %K of rows ``start:`` into ``out`` (NaN before ``start + n - 1``)."""
    m = close.shape[0]
    for i in range(min(start, m)):
        out[i] = np.nan
    if start < m:
        _hl_oscillator(high[start:], low[start:], close[start:], n, _OSC_FASTK, out[start:])


@njit(nogil=True, error_model="numpy")
def _stoch_into(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    start: int,
    fk: int,
    p1: int,
    t1: int,
    p2: int,
    t2: int,
    out: np.ndarray,
) -> None:
    # fast %K, its MA, and the MA of that; both outputs start where the last one does.
    k = np.empty(close.shape[0], dtype=np.float64)
    _fast_k_into(high, low, close, start, fk, k)
    ma_into(k, start + fk - 1, p1, t1, out[0])
    first = start + fk - 1 + p1 - 1
    ma_into(out[0], first, p2, t2, out[1])
    for i in range(min(first + p2 - 1, close.shape[0])):
        out[0, i] = np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def _stoch_fast(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    fk: int,
    p1: int,
    t1: int,
    p2: int,
    t2: int,
    out: np.ndarray,
) -> bool:
    if has_nan(high) or has_nan(low) or has_nan(close):
        return False
    _stoch_into(high, low, close, 0, fk, p1, t1, p2, t2, out)
    return True


def stoch(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    fastk_period: int = 5,
    slowk_period: int = 3,
    slowk_matype: int = 0,
    slowd_period: int = 3,
    slowd_matype: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Slow stochastic, TA-Lib ``STOCH``: ``(slowk, slowd)``.

    Fast %K is ``(close - LL) / (HH - LL) * 100`` over ``fastk_period`` bars (0 when the
    range is machine-flat), slow %K its ``slowk_period`` MA and slow %D the
    ``slowd_period`` MA of slow %K. As in TA-Lib both outputs start together, where slow %D
    becomes valid. MA types: 0 SMA (default), 1 EMA, 2 WMA.
    """
    st = stoch_state(fastk_period, slowk_period, slowk_matype, slowd_period, slowd_matype)
    params = (
        int(st[_ST_K]),
        int(st[_ST_P1]),
        int(st[_ST_T1]),
        int(st[_ST_P2]),
        int(st[_ST_T2]),
    )
    out = run_batch(_stoch_fast, (high, low, close), 2, params)
    return out[0], out[1]


# STOCHRSI: [rsi[6], stochf[...]]
_SRSI_RSI = 0


def stochrsi_state(
    timeperiod: int = 14, fastk_period: int = 5, fastd_period: int = 3, fastd_matype: int = 0
) -> np.ndarray:
    """Allocate the state of an incremental STOCHRSI (see :func:`stochrsi`)."""
    r = rsi_state(check_int("timeperiod", timeperiod, 2))
    fk = check_int("fastk_period", fastk_period, 1)
    fd = check_int("fastd_period", fastd_period, 1)
    # STOCHF: fast %K straight (an MA of period 1 is a copy), then fast %D.
    sf = _stoch_build(fk, 1, 0, fd, fastd_matype)
    st = np.zeros(_SRSI_RSI + RSI_STATE_SIZE + sf.shape[0], dtype=np.float64)
    st[_SRSI_RSI : _SRSI_RSI + RSI_STATE_SIZE] = r
    st[_SRSI_RSI + RSI_STATE_SIZE :] = sf
    return st


@njit(nogil=True, error_model="numpy")
def stochrsi_update(state: np.ndarray, x: float, out: np.ndarray) -> None:
    """Feed one sample; writes ``(fastk, fastd)`` into ``out[:2]``."""
    if x != x:
        out[0] = out[1] = np.nan
        return
    r = rsi_update(state[_SRSI_RSI : _SRSI_RSI + RSI_STATE_SIZE], x)
    if r != r:
        out[0] = out[1] = np.nan
        return
    _stoch_step(state[_SRSI_RSI + RSI_STATE_SIZE :], r, r, r, out)


@njit(cache=True, nogil=True, error_model="numpy")
def _stochrsi_fast(x: np.ndarray, n: int, fk: int, fd: int, td: int, out: np.ndarray) -> bool:
    r = np.empty((1, x.shape[0]), dtype=np.float64)
    if not _rsi_fast(x, n, r):
        return False
    rsi_row = r[0]
    _stoch_into(rsi_row, rsi_row, rsi_row, min(n, x.shape[0]), fk, 1, 0, fd, td, out)
    return True


def stochrsi(
    real: np.ndarray,
    timeperiod: int = 14,
    fastk_period: int = 5,
    fastd_period: int = 3,
    fastd_matype: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic RSI, TA-Lib ``STOCHRSI``: ``(fastk, fastd)``.

    TA-Lib's definition: ``STOCHF`` applied to ``RSI(real, timeperiod)`` used as high, low
    and close, i.e. fast %K of the RSI over ``fastk_period`` and its ``fastd_period`` MA.
    """
    stochrsi_state(timeperiod, fastk_period, fastd_period, fastd_matype)  # validates
    params = (int(timeperiod), int(fastk_period), int(fastd_period), int(fastd_matype))
    out = run_batch(_stochrsi_fast, (real,), 2, params)
    return out[0], out[1]


# --- WILLR ----------------------------------------------------------------------------
# [period, count, max_deque, min_deque]
_WR_N, _WR_COUNT = range(2)
_WR_DQ = 2


def willr_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental WILLR."""
    n = check_int("timeperiod", timeperiod, 2)
    st = np.zeros(_WR_DQ + 2 * deque_size(n), dtype=np.float64)
    st[_WR_N] = n
    return st


@njit(nogil=True, error_model="numpy")
def willr_update(state: np.ndarray, high: float, low: float, close: float) -> float:
    """Williams' %R ``-100 (HH - close) / (HH - LL)`` over ``timeperiod`` bars (0 if flat)."""
    if high != high or low != low or close != close:
        return np.nan
    n = int(state[_WR_N])
    count = state[_WR_COUNT] + 1.0
    state[_WR_COUNT] = count
    hi_at = _WR_DQ
    lo_at = _WR_DQ + 2 + 2 * n
    # Expire first: the deque has room for exactly one window.
    oldest = count - n + 1.0
    deque_expire(state, hi_at, n, oldest)
    deque_expire(state, lo_at, n, oldest)
    deque_push(state, hi_at, n, high, count, True)
    deque_push(state, lo_at, n, low, count, False)
    if count < n:
        return np.nan
    return _willr_value(deque_front(state, hi_at, n), deque_front(state, lo_at, n), close)


@njit(cache=True, nogil=True, error_model="numpy")
def _willr_fast(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int, out: np.ndarray
) -> bool:
    return _hl_oscillator(high, low, close, n, _OSC_WILLR, out[0])


def willr(high: np.ndarray, low: np.ndarray, close: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Williams' %R, TA-Lib ``WILLR`` (range -100..0; 0 when ``HH == LL``)."""
    n = check_int("timeperiod", timeperiod, 2)
    return run_batch(_willr_fast, (high, low, close), 1, (n,))[0]


# --- CCI ------------------------------------------------------------------------------
# [period, count, pos, ring[period]]
_CCI_N, _CCI_COUNT, _CCI_POS = range(3)
_CCI_RING = 3


def cci_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental CCI."""
    n = check_int("timeperiod", timeperiod, 2)
    st = np.zeros(_CCI_RING + n, dtype=np.float64)
    st[_CCI_N] = n
    return st


@njit(nogil=True, error_model="numpy")
def _cci_value(tp: float, avg: float, mad: float) -> float:
    t = tp - avg
    scale = abs(avg)
    if not is_zero_scaled(t, scale) and not is_zero_scaled(mad, scale):
        return t / (0.015 * mad)
    return 0.0


@njit(nogil=True, error_model="numpy")
def cci_update(state: np.ndarray, high: float, low: float, close: float) -> float:
    """Commodity channel index of one more bar.

    ``(tp - mean) / (0.015 * mean|tp - mean|)`` with ``tp = (h + l + c) / 3``, where the
    sums run over the ring in storage order exactly as TA-Lib's circular buffer does, and
    0 when either difference is within ``1e-14 * |mean|`` (a flat window; TA-Lib 0.8).
    This is the one O(timeperiod) update of the package: the mean absolute deviation
    about a moving mean has no exact O(1) recurrence (TA-Lib does the same two passes).
    """
    if high != high or low != low or close != close:
        return np.nan
    n = int(state[_CCI_N])
    count = state[_CCI_COUNT] + 1.0
    state[_CCI_COUNT] = count
    pos = int(state[_CCI_POS])
    tp = (high + low + close) / 3.0
    state[_CCI_RING + pos] = tp
    pos += 1
    if pos == n:
        pos = 0
    state[_CCI_POS] = pos
    if count < n:
        return np.nan
    avg = 0.0
    for j in range(n):
        avg += state[_CCI_RING + j]
    avg /= n
    mad = 0.0
    for j in range(n):
        mad += abs(state[_CCI_RING + j] - avg)
    return _cci_value(tp, avg, mad / n)


@njit(nogil=True, error_model="numpy")
def _cci_lanes(
    ring: np.ndarray,
    j: int,
    r0: int,
    r1: int,
    r2: int,
    r3: int,
    t0: float,
    t1: float,
    t2: float,
    t3: float,
) -> tuple[float, float, float, float]:
    """Slot ``j`` of the rings after rows ``i .. i + 3`` (slots ``r0 .. r3``, prices ``t``).

    ``ring`` is the ring after row ``i - 1``; each later row overwrites its own slot, so
    a chain of selects gives every lane the newest value (also when slots repeat, n < 4).
    """
    v0 = t0 if j == r0 else ring[j]
    v1 = t1 if j == r1 else v0
    v2 = t2 if j == r2 else v1
    v3 = t3 if j == r3 else v2
    return v0, v1, v2, v3


@njit(cache=True, nogil=True, error_model="numpy")
def _cci_fast(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int, out: np.ndarray
) -> bool:
    """:func:`cci_update` over bars, four rows at a time.

    Every row sums its window in ring-slot order, as the update (and TA-Lib) does: a
    chain of ``n`` dependent additions per sum. Four rows walk the ring together, each
    with its own chains in its own exact order, so the additions overlap.
    """
    if has_nan(high) or has_nan(low) or has_nan(close):
        return False
    m = close.shape[0]
    row = out[0]
    for i in range(min(n - 1, m)):
        row[i] = np.nan
    ring = np.zeros(n, dtype=np.float64)
    for i in range(min(n - 1, m)):
        ring[i] = (high[i] + low[i] + close[i]) / 3.0
    fn = float(n)
    i = n - 1
    while i < m:
        lanes = min(4, m - i)
        t0 = (high[i] + low[i] + close[i]) / 3.0
        t1 = t2 = t3 = t0
        r0 = i % n
        r1 = r2 = r3 = -1
        if lanes > 1:
            t1 = (high[i + 1] + low[i + 1] + close[i + 1]) / 3.0
            r1 = (i + 1) % n
        if lanes > 2:
            t2 = (high[i + 2] + low[i + 2] + close[i + 2]) / 3.0
            r2 = (i + 2) % n
        if lanes > 3:
            t3 = (high[i + 3] + low[i + 3] + close[i + 3]) / 3.0
            r3 = (i + 3) % n
        a0 = a1 = a2 = a3 = 0.0
        for j in range(n):
            v0, v1, v2, v3 = _cci_lanes(ring, j, r0, r1, r2, r3, t0, t1, t2, t3)
            a0 += v0
            a1 += v1
            a2 += v2
            a3 += v3
        a0 /= fn
        a1 /= fn
        a2 /= fn
        a3 /= fn
        d0 = d1 = d2 = d3 = 0.0
        for j in range(n):
            v0, v1, v2, v3 = _cci_lanes(ring, j, r0, r1, r2, r3, t0, t1, t2, t3)
            d0 += abs(v0 - a0)
            d1 += abs(v1 - a1)
            d2 += abs(v2 - a2)
            d3 += abs(v3 - a3)
        row[i] = _cci_value(t0, a0, d0 / fn)
        ring[r0] = t0
        if lanes > 1:
            row[i + 1] = _cci_value(t1, a1, d1 / fn)
            ring[r1] = t1
        if lanes > 2:
            row[i + 2] = _cci_value(t2, a2, d2 / fn)
            ring[r2] = t2
        if lanes > 3:
            row[i + 3] = _cci_value(t3, a3, d3 / fn)
            ring[r3] = t3
        i += lanes
    return True


def cci(high: np.ndarray, low: np.ndarray, close: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Commodity channel index, TA-Lib ``CCI`` (constant 0.015, mean absolute deviation).

    0 when the typical price or the deviation is within ``1e-14 * |mean|`` of 0.
    """
    n = check_int("timeperiod", timeperiod, 2)
    return run_batch(_cci_fast, (high, low, close), 1, (n,))[0]


# --- AROON ----------------------------------------------------------------------------
# [period, count, max_deque(cap period+1), min_deque(cap period+1)]
_AR_N, _AR_COUNT = range(2)
_AR_DQ = 2


def aroon_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental AROON."""
    n = check_int("timeperiod", timeperiod, 2)
    st = np.zeros(_AR_DQ + 2 * deque_size(n + 1), dtype=np.float64)
    st[_AR_N] = n
    return st


@njit(nogil=True, error_model="numpy")
def aroon_step(state: np.ndarray, high: float, low: float) -> tuple[int, float, float]:
    """Push a bar into an AROON state (also AROONOSC's): ``(n, hi_age, lo_age)``.

    The ages are the bars since the highest high and the lowest low of the last ``n + 1``
    bars (the most recent on ties), NaN until that window is full or for a NaN bar.
    """
    n = int(state[_AR_N])
    if high != high or low != low:
        return n, np.nan, np.nan
    cap = n + 1
    count = state[_AR_COUNT] + 1.0
    state[_AR_COUNT] = count
    hi_at = _AR_DQ
    lo_at = _AR_DQ + 2 + 2 * cap
    oldest = count - n
    deque_expire(state, hi_at, cap, oldest)
    deque_expire(state, lo_at, cap, oldest)
    deque_push(state, hi_at, cap, high, count, True)
    deque_push(state, lo_at, cap, low, count, False)
    if count <= n:
        return n, np.nan, np.nan
    return n, count - deque_front_seq(state, hi_at, cap), count - deque_front_seq(state, lo_at, cap)


@njit(nogil=True, error_model="numpy")
def aroon_update(state: np.ndarray, high: float, low: float, out: np.ndarray) -> None:
    """Feed one bar; writes ``(aroondown, aroonup)`` into ``out[:2]``.

    The window is ``timeperiod + 1`` bars (TA-Lib); on ties the most recent extreme counts.
    """
    n, hi_age, lo_age = aroon_step(state, high, low)
    if hi_age != hi_age:
        out[0] = out[1] = np.nan
        return
    factor = 100.0 / n
    out[0] = factor * float(n - int(lo_age))
    out[1] = factor * float(n - int(hi_age))


@njit(cache=True, nogil=True, error_model="numpy")
def _aroon_fast(high: np.ndarray, low: np.ndarray, n: int, osc: bool, out: np.ndarray) -> bool:
    """AROON's two rows, or with ``osc`` AROONOSC's ``100 / n * (i_high - i_low)`` in row 0."""
    if has_nan(high) or has_nan(low):
        return False
    # The index form of _hl_oscillator's block walk, over a window of n + 1 rows; values
    # ride along with their indices to keep the loads off the comparison chain.
    m = high.shape[0]
    w = n + 1
    factor = 100.0 / n
    for i in range(min(n, m)):
        out[0, i] = np.nan
        if not osc:
            out[1, i] = np.nan
    suf_hi = np.empty(w, dtype=np.int64)
    suf_li = np.empty(w, dtype=np.int64)
    suf_hv = np.empty(w, dtype=np.float64)
    suf_lv = np.empty(w, dtype=np.float64)
    down = out[0]
    up = out[out.shape[0] - 1]
    for bs in range(0, m, w):
        be = min(bs + w, m)
        ph = bs
        pl = bs
        phv = high[bs]
        plv = low[bs]
        for i in range(bs, be):
            h = high[i]
            lo = low[i]
            if h >= phv:
                ph = i
                phv = h
            if lo <= plv:
                pl = i
                plv = lo
            j = i - w + 1
            if j < 0:
                continue
            hi_at = ph
            lo_at = pl
            if j < bs:
                k = j - bs + w
                if suf_hv[k] > phv:
                    hi_at = suf_hi[k]
                if suf_lv[k] < plv:
                    lo_at = suf_li[k]
            if osc:
                down[i] = factor * float(hi_at - lo_at)
            else:
                down[i] = factor * float(n - (i - lo_at))
                up[i] = factor * float(n - (i - hi_at))
        if be - bs == w:
            ih = be - 1
            il = be - 1
            hv = high[ih]
            lv = low[il]
            for i in range(be - 1, bs - 1, -1):
                # Strict comparisons: scanning leftwards, a tie keeps the later index.
                if high[i] > hv:
                    ih = i
                    hv = high[i]
                if low[i] < lv:
                    il = i
                    lv = low[i]
                suf_hi[i - bs] = ih
                suf_hv[i - bs] = hv
                suf_li[i - bs] = il
                suf_lv[i - bs] = lv
    return True


def aroon(high: np.ndarray, low: np.ndarray, timeperiod: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """Aroon, TA-Lib ``AROON``: ``(aroondown, aroonup)``, first value at row ``timeperiod``.

    The window is ``timeperiod + 1`` bars; on ties the most recent extreme counts.
    """
    n = check_int("timeperiod", timeperiod, 2)
    out = run_batch(_aroon_fast, (high, low), 2, (n, False))
    return out[0], out[1]


# --- MFI ------------------------------------------------------------------------------
# [period, count, pos, prev_tp, pos_sum, neg_sum, null_run, pos_ring[n], neg_ring[n]]
_MFI_N, _MFI_COUNT, _MFI_POS, _MFI_PREV, _MFI_PSUM, _MFI_NSUM, _MFI_NULL = range(7)
_MFI_RING = 7


def mfi_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental MFI."""
    n = check_int("timeperiod", timeperiod, 2)
    st = np.zeros(_MFI_RING + 2 * n, dtype=np.float64)
    st[_MFI_N] = n
    return st


@njit(nogil=True, error_model="numpy")
def mfi_update(state: np.ndarray, high: float, low: float, close: float, volume: float) -> float:
    """Money flow index of one more bar (TA-Lib 0.8 arithmetic).

    A bar's money flow ``tp * volume`` counts as positive when the typical price rose,
    negative when it fell, and not at all when it moved by less than ``1e-14`` of its
    magnitude. After ``timeperiod`` empty bars the running sums are reset to exactly 0,
    the numerator is clamped into ``[0, total]`` and an empty window reads 0, all as
    TA-Lib does.
    """
    if high != high or low != low or close != close or volume != volume:
        return np.nan
    n = int(state[_MFI_N])
    count = state[_MFI_COUNT] + 1.0
    state[_MFI_COUNT] = count
    tp = (high + low + close) / 3.0
    if count == 1.0:
        state[_MFI_PREV] = tp
        return np.nan
    pos = int(state[_MFI_POS])
    pslot = _MFI_RING + pos
    nslot = pslot + n
    psum = state[_MFI_PSUM] - state[pslot]
    nsum = state[_MFI_NSUM] - state[nslot]
    prev = state[_MFI_PREV]
    diff = tp - prev
    scale = abs(tp) + abs(prev)
    state[_MFI_PREV] = tp
    flow = tp * volume
    money = 0.0 if abs(diff) <= 1e-14 * scale else flow
    pflow = 0.0 if diff < 0.0 else money
    nflow = money if diff < 0.0 else 0.0
    state[pslot] = pflow
    state[nslot] = nflow
    psum += pflow
    nsum += nflow
    null_run = state[_MFI_NULL] + 1.0 if money == 0.0 else 0.0
    if null_run >= n:
        null_run = n
        psum = 0.0
        nsum = 0.0
    state[_MFI_NULL] = null_run
    state[_MFI_PSUM] = psum
    state[_MFI_NSUM] = nsum
    pos += 1
    if pos == n:
        pos = 0
    state[_MFI_POS] = pos
    if count <= n:
        return np.nan
    total = psum + nsum
    clamped = 0.0 if psum < 0.0 else (total if psum > total else psum)
    return 100.0 * (clamped / total) if total > 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _mfi_run(
    state: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    out: np.ndarray,
) -> None:
    for i in range(close.shape[0]):
        out[0, i] = mfi_update(state, high[i], low[i], close[i], volume[i])


def mfi(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    timeperiod: int = 14,
) -> np.ndarray:
    """Money flow index, TA-Lib ``MFI`` (first value at row ``timeperiod``)."""
    arrays = [as_f64(a) for a in (high, low, close, volume)]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("input arrays must have the same length")
    out = np.empty((1, arrays[0].shape[0]), dtype=np.float64)
    _mfi_run(mfi_state(timeperiod), *arrays, out)
    return out[0]
