"""More TA-Lib oscillators: APO, PPO, CMO, ULTOSC, AROONOSC, BOP.

Each has a state factory, an O(1) ``@njit`` update and a batch function with TA-Lib's
name, parameters, defaults (TA-Lib 0.8.1: APO and PPO default to an EMA) and NaN
warm-up; the batch loops are the updates'. APO, PPO (EMA and WMA), CMO, AROONOSC and BOP
follow TA-Lib's arithmetic to the last bit; ULTOSC's window sums are re-anchored once
per window (TA-Lib carries them from the first bar), agreeing to ~1e-15.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import (
    as_f64,
    check_int,
    has_nan,
    is_zero,
    run_batch,
    window_push2,
)
from ._momentum import _aroon_fast, aroon_state, aroon_step
from ._overlap import MA_EMA, ema_chain_seed, ema_step, ma_into, ma_state, ma_update


def _run(kernel, state: np.ndarray, inputs: tuple) -> np.ndarray:  # type: ignore[no-untyped-def]
    arrays = [as_f64(a) for a in inputs]
    n = arrays[0].shape[0]
    if any(a.shape != (n,) for a in arrays):
        raise ValueError("input arrays must be 1-D and of the same length")
    out = np.empty(n, dtype=np.float64)
    kernel(state, *arrays, out)
    return out


# --- APO / PPO ------------------------------------------------------------------------
# [fast, slow, matype, percent, unused, fast_len, slow_len, fast_ma[..], slow_ma[..]]
_PO_FAST, _PO_SLOW, _PO_TYPE, _PO_PCT, _PO_COUNT, _PO_FLEN, _PO_SLEN = range(7)
_PO_MA = 7


def _po_state(fastperiod: int, slowperiod: int, matype: int, percent: bool) -> np.ndarray:
    fast = check_int("fastperiod", fastperiod, 2)
    slow = check_int("slowperiod", slowperiod, 2)
    if slow < fast:  # TA-Lib swaps them rather than rejecting
        fast, slow = slow, fast
    f = ma_state(fast, matype)
    s = ma_state(slow, matype)
    st = np.zeros(_PO_MA + f.shape[0] + s.shape[0], dtype=np.float64)
    st[_PO_FAST] = fast
    st[_PO_SLOW] = slow
    st[_PO_TYPE] = matype
    st[_PO_PCT] = 1.0 if percent else 0.0
    st[_PO_FLEN] = f.shape[0]
    st[_PO_SLEN] = s.shape[0]
    st[_PO_MA : _PO_MA + f.shape[0]] = f
    st[_PO_MA + f.shape[0] :] = s
    return st


def apo_state(fastperiod: int = 12, slowperiod: int = 26, matype: int = 1) -> np.ndarray:
    """Allocate the state of an incremental APO (MA types 0 SMA, 1 EMA, 2 WMA)."""
    return _po_state(fastperiod, slowperiod, matype, False)


def ppo_state(fastperiod: int = 12, slowperiod: int = 26, matype: int = 1) -> np.ndarray:
    """Allocate the state of an incremental PPO (MA types 0 SMA, 1 EMA, 2 WMA)."""
    return _po_state(fastperiod, slowperiod, matype, True)


@njit(nogil=True, error_model="numpy")
def _po_value(fast: float, slow: float, pct: bool) -> float:
    """APO ``fast - slow``, or PPO in percent of ``slow`` (0 when ``slow`` is about 0)."""
    if not pct:
        return fast - slow
    return ((fast - slow) / slow) * 100.0 if not is_zero(slow) else 0.0


@njit(nogil=True, error_model="numpy")
def po_update(state: np.ndarray, x: float) -> float:
    """APO ``MA_fast - MA_slow`` or PPO ``(MA_fast - MA_slow) / MA_slow * 100``.

    Both MAs start at the first sample (unlike MACD's fast EMA, TA-Lib seeds APO's with
    the mean of its own first ``fastperiod`` samples). PPO is 0 when the slow MA is
    within ``1e-14`` of 0. First value at row ``slowperiod - 1``.
    """
    if x != x:
        return np.nan
    matype = int(state[_PO_TYPE])
    fl = int(state[_PO_FLEN])
    sl = int(state[_PO_SLEN])
    fast = ma_update(state[_PO_MA : _PO_MA + fl], matype, x)
    slow = ma_update(state[_PO_MA + fl : _PO_MA + fl + sl], matype, x)
    if slow != slow:
        return np.nan
    return _po_value(fast, slow, state[_PO_PCT] != 0.0)


apo_update = po_update
ppo_update = po_update


@njit(nogil=True, error_model="numpy")
def _po_ema_into(x: np.ndarray, fast: int, slow: int, pct: bool, row: np.ndarray) -> bool:
    """APO/PPO of two EMAs in one pass, as :func:`po_update` computes them.

    One loop steps both EMAs and writes the output: the two chains are independent, so
    they run side by side in the time of one EMA's latency chain, where TA-Lib runs two
    EMA passes and a combining pass. Returns False if ``x`` holds a NaN: every sample
    feeds the slow EMA, which a NaN leaves NaN to the end (no pass of its own).
    """
    m = x.shape[0]
    for i in range(min(slow - 1, m)):
        row[i] = np.nan
    if m < slow:
        return not has_nan(x)
    # Seeds as ema_update's: the mean of each EMA's first ``period`` samples, then the
    # fast EMA steps on alone up to the slow one's first value.
    ef = ema_chain_seed(x, fast, 1)[0]
    kf = 2.0 / (fast + 1.0)
    for i in range(fast, slow):
        ef = ema_step(ef, kf, x[i])
    es = ema_chain_seed(x, slow, 1)[0]
    ks = 2.0 / (slow + 1.0)
    row[slow - 1] = _po_value(ef, es, pct)
    # Offset views indexed from 0 with np.uintp: no negative-index wrap code per access.
    src = x[slow:]
    dst = row[slow:]
    for i in range(m - slow):
        u = np.uintp(i)
        v = src[u]
        ef = ema_step(ef, kf, v)
        es = ema_step(es, ks, v)
        dst[u] = _po_value(ef, es, pct)
    return es == es


@njit(cache=True, nogil=True, error_model="numpy")
def _po_fast(x: np.ndarray, fast: int, slow: int, matype: int, pct: bool, out: np.ndarray) -> bool:
    row = out[0]
    if matype == MA_EMA:
        return _po_ema_into(x, fast, slow, pct, row)
    if has_nan(x):
        return False
    quick = np.empty(x.shape[0], dtype=np.float64)
    ma_into(x, 0, fast, matype, quick)
    ma_into(x, 0, slow, matype, row)
    for i in range(x.shape[0]):
        row[i] = _po_value(quick[i], row[i], pct)
    return True


def _po(real: np.ndarray, fastperiod: int, slowperiod: int, matype: int, pct: bool) -> np.ndarray:
    st = _po_state(fastperiod, slowperiod, matype, pct)
    params = (int(st[_PO_FAST]), int(st[_PO_SLOW]), int(st[_PO_TYPE]), pct)
    return run_batch(_po_fast, (real,), 1, params)[0]


def apo(
    real: np.ndarray, fastperiod: int = 12, slowperiod: int = 26, matype: int = 1
) -> np.ndarray:
    """Absolute price oscillator, TA-Lib ``APO``: ``MA(fast) - MA(slow)``."""
    return _po(real, fastperiod, slowperiod, matype, False)


def ppo(
    real: np.ndarray, fastperiod: int = 12, slowperiod: int = 26, matype: int = 1
) -> np.ndarray:
    """Percentage price oscillator, TA-Lib ``PPO``: ``(MA(fast) - MA(slow)) / MA(slow) * 100``."""
    return _po(real, fastperiod, slowperiod, matype, True)


# --- CMO ------------------------------------------------------------------------------
# [period, count, prev, gain, loss]
_CMO_N, _CMO_COUNT, _CMO_PREV, _CMO_GAIN, _CMO_LOSS = range(5)


def cmo_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental CMO."""
    st = np.zeros(5, dtype=np.float64)
    st[_CMO_N] = check_int("timeperiod", timeperiod, 2)
    return st


@njit(nogil=True, error_model="numpy")
def cmo_update(state: np.ndarray, x: float) -> float:
    """Chande momentum oscillator ``100 (G - L) / (G + L)`` (first value at row n).

    ``G``/``L`` are TA-Lib's Wilder-smoothed gains and losses (as RSI, but divided by
    the period where TA-Lib's RSI multiplies by its reciprocal); 0 while ``G + L`` is
    exactly 0 (TA-Lib 0.8.1: over a flat stretch after a move the last ratio holds).
    """
    if x != x:
        return np.nan
    n = state[_CMO_N]
    count = state[_CMO_COUNT]
    state[_CMO_COUNT] = count + 1.0
    prev = state[_CMO_PREV]
    state[_CMO_PREV] = x
    if count == 0.0:
        return np.nan
    d = x - prev
    gain = state[_CMO_GAIN]
    loss = state[_CMO_LOSS]
    if count < n:
        state[_CMO_GAIN], state[_CMO_LOSS] = _cmo_add(gain, loss, d)
        return np.nan
    if count > n:
        loss *= n - 1.0
        gain *= n - 1.0
    gain, loss = _cmo_add(gain, loss, d)
    loss /= n
    gain /= n
    state[_CMO_GAIN] = gain
    state[_CMO_LOSS] = loss
    return _cmo_value(gain, loss)


@njit(nogil=True, error_model="numpy")
def _cmo_add(gain: float, loss: float, d: float) -> tuple[float, float]:
    """Add a change to the gains, or its magnitude to the losses (a NaN to the gains)."""
    if d < 0.0:
        return gain, loss - d
    return gain + d, loss


@njit(nogil=True, error_model="numpy")
def _cmo_value(gain: float, loss: float) -> float:
    total = gain + loss
    return 100.0 * ((gain - loss) / total) if total != 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _cmo_fast(x: np.ndarray, n: int, out: np.ndarray) -> bool:
    """:func:`cmo_update` over ``x``, the state in registers.

    A NaN change goes to the gains (``d < 0`` is False), which it leaves NaN to the
    end: that is the NaN check.
    """
    row = out[0]
    m = x.shape[0]
    for i in range(min(n, m)):
        row[i] = np.nan
    if m <= n:
        return not has_nan(x)
    fn = float(n)
    nm1 = fn - 1.0
    gain = 0.0
    loss = 0.0
    for i in range(1, n + 1):
        gain, loss = _cmo_add(gain, loss, x[i] - x[i - 1])
    loss /= fn
    gain /= fn
    row[n] = _cmo_value(gain, loss)
    for i in range(n + 1, m):
        gain, loss = _cmo_add(gain * nm1, loss * nm1, x[i] - x[i - 1])
        loss /= fn
        gain /= fn
        row[i] = _cmo_value(gain, loss)
    return gain == gain


def cmo(real: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Chande momentum oscillator, TA-Lib ``CMO`` (see :func:`cmo_update`)."""
    n = check_int("timeperiod", timeperiod, 2)
    return run_batch(_cmo_fast, (real,), 1, (n,))[0]


# --- ULTOSC ---------------------------------------------------------------------------
# [count, prev_close, p1, p2, p3, then for each period a _window_push2 block:
#  [n, count, pos, a, a', b, b', a_ring[n], b_ring[n]]]
_UO_COUNT, _UO_PREV = range(2)
_UO_P = 2
_UO_BLOCKS = 5
# Rows per block of the batch loop: their bp, tr and window sums are buffered (8 x 2 KiB,
# in L1) between its three loops.
_UO_BLOCK = 256


def ultosc_state(timeperiod1: int = 7, timeperiod2: int = 14, timeperiod3: int = 28) -> np.ndarray:
    """Allocate the state of an incremental ULTOSC (periods sorted, as TA-Lib does)."""
    periods = sorted(
        check_int(name, p, 1)
        for name, p in (
            ("timeperiod1", timeperiod1),
            ("timeperiod2", timeperiod2),
            ("timeperiod3", timeperiod3),
        )
    )
    size = _UO_BLOCKS + sum(7 + 2 * p for p in periods)
    st = np.zeros(size, dtype=np.float64)
    at = _UO_BLOCKS
    for j, p in enumerate(periods):
        st[_UO_P + j] = at
        st[at] = p
        at += 7 + 2 * p
    return st


@njit(nogil=True, error_model="numpy")
def ultosc_update(state: np.ndarray, high: float, low: float, close: float) -> float:
    """Ultimate oscillator after one more bar (Williams, 1985; first value at row max(p)).

    Buying pressure ``bp = close - min(low, prev_close)``, true range ``tr``; with
    ``A_p = sum(bp) / sum(tr)`` over the last ``p`` bars (a term counts only when its
    ``sum(tr)`` is not within ``1e-14`` of 0), ULTOSC is
    ``100 (4 A_short + 2 A_mid + A_long) / 7``.
    """
    if high != high or low != low or close != close:
        return np.nan
    count = state[_UO_COUNT] + 1.0
    state[_UO_COUNT] = count
    prev = state[_UO_PREV]
    state[_UO_PREV] = close
    if count == 1.0:
        return np.nan
    true_low = min(low, prev)
    bp = close - true_low
    tr = high - low
    t = abs(prev - high)
    if t > tr:
        tr = t
    t = abs(prev - low)
    if t > tr:
        tr = t
    ready = True
    for j in range(3):
        ready &= window_push2(state, int(state[_UO_P + j]), int(state[_UO_P + j]) + 7, bp, tr)
    if not ready:
        return np.nan
    s1 = int(state[_UO_P])
    s2 = int(state[_UO_P + 1])
    s3 = int(state[_UO_P + 2])
    return _uo_value(
        state[s1 + 3], state[s1 + 5], state[s2 + 3], state[s2 + 5], state[s3 + 3], state[s3 + 5]
    )


@njit(nogil=True, error_model="numpy")
def _uo_value(a1: float, b1: float, a2: float, b2: float, a3: float, b3: float) -> float:
    """``100 (4 a1/b1 + 2 a2/b2 + a3/b3) / 7``, a term left out when its ``b`` is ~0."""
    o = 0.0 + (0.0 if is_zero(b1) else 4.0 * (a1 / b1))
    o += 0.0 if is_zero(b2) else 2.0 * (a2 / b2)
    o += 0.0 if is_zero(b3) else 1.0 * (a3 / b3)
    return 100.0 * (o / 7.0)


@njit(cache=True, nogil=True, error_model="numpy")
def _ultosc_fast(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    p1: int,
    p2: int,
    p3: int,
    out: np.ndarray,
) -> bool:
    """:func:`ultosc_update` over bars: three re-anchored window sums in registers.

    Per block of rows, three loops: buying pressure and true range (and the NaN check),
    which LLVM vectorizes; the serial window sums, whose ``bp`` and ``tr`` go to two
    rings that stay in L1 (no temporaries the size of the input, whose page faults and
    cache misses cost more than the sums); the four divisions per row, vectorized too.
    """
    row = out[0]
    m = close.shape[0]
    for i in range(min(p3, m)):
        row[i] = np.nan
    if m <= p3:
        return not (has_nan(high) or has_nan(low) or has_nan(close))
    bad = (high[0] != high[0]) | (low[0] != low[0]) | (close[0] != close[0])
    # Slots of rows <= 0 read 0.0 (a filling window subtracts nothing): with a ring of
    # at least 2 * (p3 + 1) no row written before them lands on them.
    size = 64
    while size < 2 * (p3 + 1):
        size *= 2
    mask = np.uintp(size - 1)
    ring_bp = np.zeros(size, dtype=np.float64)
    ring_tr = np.zeros(size, dtype=np.float64)
    sums = np.empty((8, _UO_BLOCK), dtype=np.float64)
    bps = sums[6]
    trs = sums[7]
    # Per window: sums of a and b, their add-only twins, the ring position; push j is row j.
    a1 = f1 = b1 = g1 = a2 = f2 = b2 = g2 = a3 = f3 = b3 = g3 = 0.0
    pos1 = pos2 = pos3 = 0
    # Rows 1 on; block row j is row start + j + 1.
    h1 = high[1:]
    l1 = low[1:]
    c1 = close[1:]
    c0 = close[: m - 1]
    rows = m - 1
    for start in range(0, rows, _UO_BLOCK):
        cnt = min(_UO_BLOCK, rows - start)
        s0 = np.uintp(start)
        for j in range(cnt):
            u = np.uintp(j)
            h = h1[s0 + u]
            lo = l1[s0 + u]
            c = c1[s0 + u]
            prev = c0[s0 + u]
            bad |= (h != h) | (lo != lo) | (c != c)
            b = h - lo
            t = abs(prev - h)
            if t > b:
                b = t
            t = abs(prev - lo)
            if t > b:
                b = t
            bps[u] = c - min(lo, prev)
            trs[u] = b
        for j in range(cnt):
            u = np.uintp(j)
            a = bps[u]
            b = trs[u]
            i = start + j + 1
            k = np.uintp(i) & mask
            ring_bp[k] = a
            ring_tr[k] = b
            k = np.uintp(i - p1) & mask
            a1 = a1 + a - ring_bp[k]
            b1 = b1 + b - ring_tr[k]
            f1 += a
            g1 += b
            pos1 += 1
            if pos1 == p1:
                pos1 = 0
                a1, b1, f1, g1 = f1, g1, 0.0, 0.0
            k = np.uintp(i - p2) & mask
            a2 = a2 + a - ring_bp[k]
            b2 = b2 + b - ring_tr[k]
            f2 += a
            g2 += b
            pos2 += 1
            if pos2 == p2:
                pos2 = 0
                a2, b2, f2, g2 = f2, g2, 0.0, 0.0
            k = np.uintp(i - p3) & mask
            a3 = a3 + a - ring_bp[k]
            b3 = b3 + b - ring_tr[k]
            f3 += a
            g3 += b
            pos3 += 1
            if pos3 == p3:
                pos3 = 0
                a3, b3, f3, g3 = f3, g3, 0.0, 0.0
            sums[0, u] = a1
            sums[1, u] = b1
            sums[2, u] = a2
            sums[3, u] = b2
            sums[4, u] = a3
            sums[5, u] = b3
        # The first output is row p3, block row p3 - 1 - start.
        for j in range(max(0, p3 - 1 - start), cnt):
            u = np.uintp(j)
            row[s0 + u + np.uintp(1)] = _uo_value(
                sums[0, u], sums[1, u], sums[2, u], sums[3, u], sums[4, u], sums[5, u]
            )
    return not bad


def ultosc(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    timeperiod1: int = 7,
    timeperiod2: int = 14,
    timeperiod3: int = 28,
) -> np.ndarray:
    """Ultimate oscillator, TA-Lib ``ULTOSC`` (see :func:`ultosc_update`)."""
    st = ultosc_state(timeperiod1, timeperiod2, timeperiod3)
    periods = tuple(int(st[int(st[_UO_P + j])]) for j in range(3))
    return run_batch(_ultosc_fast, (high, low, close), 1, periods)[0]


# --- AROONOSC -------------------------------------------------------------------------
# AROON's state (see _momentum.aroon_step)


def aroonosc_state(timeperiod: int = 14) -> np.ndarray:
    """Allocate the state of an incremental AROONOSC."""
    return aroon_state(timeperiod)


@njit(nogil=True, error_model="numpy")
def aroonosc_update(state: np.ndarray, high: float, low: float) -> float:
    """Aroon oscillator ``100 / n * (i_high - i_low)`` (first value at row n).

    ``i_high``/``i_low``: bar numbers of the highest high and lowest low of the last
    ``n + 1`` bars (the most recent on ties); equals ``aroonup - aroondown``.
    """
    n, hi_age, lo_age = aroon_step(state, high, low)
    # i_high - i_low == lo_age - hi_age, in the bar numbers TA-Lib subtracts.
    return (100.0 / n) * (lo_age - hi_age)


def aroonosc(high: np.ndarray, low: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Aroon oscillator, TA-Lib ``AROONOSC`` (see :func:`aroonosc_update`)."""
    n = check_int("timeperiod", timeperiod, 2)
    return run_batch(_aroon_fast, (high, low), 1, (n, True))[0]


# --- BOP ------------------------------------------------------------------------------


def bop_state() -> np.ndarray:
    """Balance of power is stateless; its state is empty (kept for uniformity)."""
    return np.zeros(0, dtype=np.float64)


@njit(nogil=True, error_model="numpy")
def bop_update(state: np.ndarray, open_: float, high: float, low: float, close: float) -> float:
    """Balance of power ``(close - open) / (high - low)``; 0 when ``high - low < 1e-14``."""
    if open_ != open_ or high != high or low != low or close != close:
        return np.nan
    rng = high - low
    return (close - open_) / rng if rng >= 1e-14 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _bop_run(
    state: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    out: np.ndarray,
) -> None:
    for i in range(close.shape[0]):
        out[i] = bop_update(state, open_[i], high[i], low[i], close[i])


def bop(open: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Balance of power, TA-Lib ``BOP`` (see :func:`bop_update`)."""
    return _run(_bop_run, bop_state(), (open, high, low, close))
