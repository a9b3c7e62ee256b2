"""Pieces shared by the indicator kernels.

* TA-Lib's zero tests, with the epsilon of the TA-Lib release we match (0.8.x: ``1e-14``).
* The NaN input policy and the batch driver that enforces it for the fast batch loops.
* Ring-buffer sums that are re-anchored once per window, so rounding cannot drift.
* Monotonic deques (rolling max/min in amortized O(1)) laid out inside a float64 state,
  and the block suffixes of the van Herk / Gil-Werman rolling extremes used in batch.
* Time stamps: int64 nanoseconds kept exactly inside float64 state arrays.
* ``fma`` and reference-free array views for the hot loops.

Compilation policy: only entry points called from Python (the batch loops and the fused
set kernels) are ``cache=True``; every ``*_update`` and helper is compiled with whichever
entry point calls it, so LLVM can inline it there (a call into separately cached code is
opaque and costs ~10-20 ns per indicator per tick). Numba, however, ties a cached kernel to
its own file only, so :func:`drop_stale_kernel_cache` clears the package's cache whenever
any of its modules changes. Every kernel uses ``error_model="numpy"``: a float division by
zero gives inf or NaN, as in C (TA-Lib), instead of raising, which also spares a branch
per division and lets LLVM vectorize loops that divide. Hot loops index with
``np.uintp`` where the index is not a plain ``range`` from 0: numba wraps negative
signed indices, a compare and select per access that also blocks vectorization.

NaN input policy (every indicator in the package): a tick whose inputs contain a NaN is
*skipped*. Its output is NaN and the indicator's state is left exactly as it was, as if
the tick had never arrived. So for a batch ``f``, ``f(x)[ok] == f(x[ok])[...]`` where
``ok`` marks the NaN-free rows, and leading NaNs behave as in the TA-Lib Python wrapper
(which also starts after them). Infinities are ordinary values and propagate.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


def package_digest(package_dir: Path, also: Sequence[Path] = ()) -> str:
    """SHA-256 of every module of the package (and of the packages in ``also``)."""
    sources = sorted(package_dir.glob("*.py"))
    for other in also:
        sources.extend(sorted(other.glob("*.py")))
    digest = hashlib.sha256()
    for path in sources:
        digest.update(str(path.relative_to(package_dir.parent)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def drop_stale_kernel_cache(package_dir: Path, also: Sequence[Path] = ()) -> None:
    """Delete the package's numba cache when any of its sources changed.

    Numba keys a cached kernel on its own source file only, while our kernels inline
    helpers from sibling modules: after an edit or an upgrade that touches only
    ``_overlap.py``, say, ``_momentum.py``'s cached loops would silently keep the old
    arithmetic. A digest of every module of the package, stored beside the cache, tells.
    Only the default cache location (``__pycache__`` next to the sources) is handled;
    the generated modules of indicator sets (``__pycache__/sets``, see ``_specialize``)
    and their caches go too.
    ``also``: other packages whose kernels this package's kernels inline.
    """
    digest = package_digest(package_dir, also)
    cache_dir = package_dir / "__pycache__"
    stamp = cache_dir / "numba-kernels.sha256"
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    try:
        cache_dir.mkdir(exist_ok=True)
        for path in cache_dir.glob("*.nb[ic]"):
            path.unlink(missing_ok=True)
        sets = cache_dir / "sets"
        for pattern in ("set_*.py", "__pycache__/*.nb[ic]", "__pycache__/set_*.pyc"):
            for path in sets.glob(pattern):
                path.unlink(missing_ok=True)
        tmp = cache_dir / f"numba-kernels.sha256.{os.getpid()}"
        tmp.write_text(digest)
        tmp.replace(stamp)
    except OSError:
        # A read-only install cannot have stale entries we wrote; nothing to do.
        pass


CHAIN_BLOCK = 32
"""Rows per block where a batch loop splits a latency-bound EMA chain from its outputs.

MACD, TRIX, DEMA and TEMA run their EMA chains over a block of rows, then the block's
outputs in a loop of their own (out of the chain's way: see ``_momentum._trix_fast``).
Short enough that out-of-order execution overlaps a block's output loop with the next
block's chain: 256 rows lost half the gain; 32 and 64 kept it, 32 better for TEMA (0.92
of TA-Lib's time against 0.97), 64 for DEMA (``_trend._DEMA_BLOCK``).
"""

TA_EPSILON = 1e-14
"""TA-Lib's ``TA_EPSILON`` (ta_utility.h): the zero band of ``TA_IS_ZERO``."""

NS_PER_S = 1e9


@njit(nogil=True, error_model="numpy")
def is_zero(v: float) -> bool:
    """TA-Lib's ``TA_IS_ZERO``: ``-1e-14 < v < 1e-14``."""
    return -TA_EPSILON < v < TA_EPSILON


@njit(nogil=True, error_model="numpy")
def is_zero_scaled(v: float, scale: float) -> bool:
    """TA-Lib 0.8's ``TA_IS_ZERO_SCALED``: ``|v| <= 1e-14 * scale`` (about 90 ulp)."""
    return abs(v) <= TA_EPSILON * scale


@njit(nogil=True, error_model="numpy")
def has_nan(x: np.ndarray) -> bool:
    """Whether ``x`` holds a NaN (an integer OR-reduction LLVM vectorizes)."""
    bad = 0
    for i in range(x.shape[0]):
        bad |= x[i] != x[i]
    return bad != 0


@njit(nogil=True, error_model="numpy")
def true_range(high: float, low: float, prev_close: float) -> float:
    """TA-Lib's true range, compared in TA-Lib's order (ties keep the earlier term)."""
    # max() rather than if/assign: compiles to branch-free maxsd (ties are equal values).
    return max(max(high - low, abs(high - prev_close)), abs(low - prev_close))


def as_f64(a: object) -> np.ndarray:
    """Contiguous float64 view or copy of an input array."""
    return np.ascontiguousarray(a, dtype=np.float64)


def check_int(name: str, value: int, low: int, high: int = 100_000) -> int:
    """Validate an integer parameter against TA-Lib's accepted range.

    Raises:
        ValueError: if ``value`` is not an integer within ``[low, high]``.
    """
    if isinstance(value, bool) or int(value) != value or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def nan_rows(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """Mask of the rows holding a NaN in any of ``arrays``, or None when there is none."""
    bad = np.zeros(arrays[0].shape[0], dtype=np.bool_)
    for a in arrays:
        bad |= np.isnan(a)
    return bad if bad.any() else None


def run_batch(
    kernel: Callable[..., bool],
    inputs: Sequence[object],
    n_out: int,
    params: tuple = (),
) -> np.ndarray:
    """Run a fast batch kernel under the package NaN policy.

    ``kernel(*inputs, *params, out)`` fills ``out`` (shape ``(n_out, n)``) and returns
    False if it met a NaN (it may stop there). Only then are the rows holding a NaN
    removed, the kernel rerun on the rest, and those rows set to NaN, which is what the
    incremental updates do when they skip such a tick. So the common all-finite case
    costs no extra pass over the inputs.

    Returns:
        The ``(n_out, n)`` float64 output.
    """
    arrays = [as_f64(a) for a in inputs]
    n = arrays[0].shape[0]
    for a in arrays[1:]:
        if a.shape != (n,):
            raise ValueError("input arrays must be 1-D and of the same length")
    out = np.empty((n_out, n), dtype=np.float64)
    if kernel(*arrays, *params, out):
        return out
    bad = nan_rows(arrays)
    if bad is None:
        # A NaN born of inf - inf, not of the inputs: the first run stands.
        return out
    good = ~bad
    sub = np.empty((n_out, int(good.sum())), dtype=np.float64)
    kernel(*[np.ascontiguousarray(a[good]) for a in arrays], *params, sub)
    out[:] = np.nan
    out[:, good] = sub
    return out


@intrinsic
def fma(typingctx, a, b, c):  # type: ignore[no-untyped-def]
    """Fused multiply-add ``a * b + c`` with one rounding (LLVM ``llvm.fma.f64``)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        d = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d]))
        return builder.call(
            fn,
            [
                context.cast(builder, v, t, types.float64)
                for v, t in zip(args, signature.args, strict=True)
            ],
        )

    return sig, codegen


# --- rolling extremes for the batch loops ---------------------------------------------
#
# van Herk / Gil-Werman: cut the series into blocks of the window length ``w``; a window
# ending in block ``k`` spans the tail of block ``k - 1`` and the head of block ``k``, so its
# extreme is the larger of a suffix extreme of block ``k - 1`` and the running prefix
# extreme of block ``k``. O(1) per element with no data-dependent branches, and O(w)
# scratch memory: the batch loops (``_momentum``) walk the blocks, keeping the previous
# block's suffixes. The values equal the incremental deques' exactly (a max is a max).


@njit(nogil=True, error_model="numpy")
def block_suffix(
    high: np.ndarray, low: np.ndarray, start: int, end: int, suf_h: np.ndarray, suf_l: np.ndarray
) -> None:
    """``suf_h[j] = max(high[start + j : end])`` and ``suf_l`` likewise with min."""
    h = high[end - 1]
    lo = low[end - 1]
    suf_h[end - 1 - start] = h
    suf_l[end - 1 - start] = lo
    for i in range(end - 2, start - 1, -1):
        h = max(h, high[i])
        lo = min(lo, low[i])
        suf_h[i - start] = h
        suf_l[i - start] = lo


# --- rolling sums ---------------------------------------------------------------------
#
# A rolling sum over a ring of ``n`` slots keeps two accumulators: ``total`` (updated by
# adding the new value and subtracting the evicted one) and ``fresh`` (only additions,
# since the ring last wrapped). When the write position wraps to slot 0, every slot was
# written during the cycle that just ended, so ``fresh`` is the window sum computed from
# scratch and replaces ``total``. Rounding from the subtractions therefore lives at most
# one window: the "periodic exact recompute" costs O(1) per update, never O(n).


@njit(nogil=True, error_model="numpy")
def ring_sum_push(
    st: np.ndarray, total: int, ring: int, n: int, pos: int, full: bool, v: float
) -> None:
    """Push ``v`` into the ring at ``st[ring:ring+n]`` (slot ``pos``), updating its sums.

    ``st[total]`` is the window sum and ``st[total+1]`` the since-last-wrap sum. The
    caller advances ``pos``; when the new ``pos`` is 0 it calls :func:`ring_sum_anchor`.
    """
    old = st[ring + pos] if full else 0.0
    st[ring + pos] = v
    st[total] = st[total] + v - old
    st[total + 1] += v


@njit(nogil=True, error_model="numpy")
def ring_sum_anchor(st: np.ndarray, total: int) -> None:
    """Replace the drifting window sum by the one built from additions only."""
    st[total] = st[total + 1]
    st[total + 1] = 0.0


# --- windows of re-anchored ring sums ---------------------------------------------------
#
# Header ``[n, count, pos, A, A', B, B', C, C']`` then one ring of ``n`` per sum.


@njit(nogil=True, error_model="numpy")
def window_push1(state: np.ndarray, ring: int, a: float) -> bool:
    """One re-anchored ring sum; header ``[n, count, pos, A, A']``. Returns window full."""
    n = int(state[0])
    count = state[1] + 1.0
    state[1] = count
    pos = int(state[2])
    ring_sum_push(state, 3, ring, n, pos, count > n, a)
    pos += 1
    if pos == n:
        pos = 0
        ring_sum_anchor(state, 3)
    state[2] = pos
    return count >= n


@njit(nogil=True, error_model="numpy")
def window_push2(state: np.ndarray, hdr: int, ring: int, a: float, b: float) -> bool:
    """Push ``(a, b)`` into two re-anchored ring sums; header ``[n, count, pos, A, A', B, B']``.

    Returns whether the window is full.
    """
    n = int(state[hdr])
    count = state[hdr + 1] + 1.0
    state[hdr + 1] = count
    pos = int(state[hdr + 2])
    full = count > n
    ring_sum_push(state, hdr + 3, ring, n, pos, full, a)
    ring_sum_push(state, hdr + 5, ring + n, n, pos, full, b)
    pos += 1
    if pos == n:
        pos = 0
        ring_sum_anchor(state, hdr + 3)
        ring_sum_anchor(state, hdr + 5)
    state[hdr + 2] = pos
    return count >= n


@njit(nogil=True, error_model="numpy")
def window_push3(state: np.ndarray, ring: int, a: float, b: float, c: float) -> bool:
    """:func:`window_push2` with a third sum (header at 0, third sums at 7 and 8)."""
    n = int(state[0])
    count = state[1] + 1.0
    state[1] = count
    pos = int(state[2])
    full = count > n
    ring_sum_push(state, 3, ring, n, pos, full, a)
    ring_sum_push(state, 5, ring + n, n, pos, full, b)
    ring_sum_push(state, 7, ring + 2 * n, n, pos, full, c)
    pos += 1
    if pos == n:
        pos = 0
        ring_sum_anchor(state, 3)
        ring_sum_anchor(state, 5)
        ring_sum_anchor(state, 7)
    state[2] = pos
    return count >= n


# --- monotonic deques -----------------------------------------------------------------
#
# Layout at ``base``: [head, size, values[cap], seqs[cap]]. Entries are kept in strictly
# decreasing (max) or increasing (min) order of value, so the front is the extreme of the
# window; ``seq`` is the tick number, used to expire entries and (AROON) to know *when*
# the extreme happened. A new value evicts older entries it ties with, so the front is the
# most recent extreme, as TA-Lib's AROON reports it.


def deque_size(cap: int) -> int:
    """Number of float64 slots a deque of capacity ``cap`` needs."""
    return 2 + 2 * cap


@njit(nogil=True, error_model="numpy")
def deque_push(st: np.ndarray, base: int, cap: int, value: float, seq: float, is_max: bool) -> None:
    """Append ``(value, seq)`` and drop the entries it dominates."""
    head = int(st[base])
    size = int(st[base + 1])
    vals = base + 2
    while size > 0:
        tail = head + size - 1
        if tail >= cap:
            tail -= cap
        v = st[vals + tail]
        if (v <= value) if is_max else (v >= value):
            size -= 1
        else:
            break
    tail = head + size
    if tail >= cap:
        tail -= cap
    st[vals + tail] = value
    st[vals + cap + tail] = seq
    st[base + 1] = size + 1


@njit(nogil=True, error_model="numpy")
def deque_expire(st: np.ndarray, base: int, cap: int, oldest_seq: float) -> None:
    """Drop front entries whose tick number is below ``oldest_seq``."""
    head = int(st[base])
    size = int(st[base + 1])
    while size > 0 and st[base + 2 + cap + head] < oldest_seq:
        head += 1
        if head == cap:
            head = 0
        size -= 1
    st[base] = head
    st[base + 1] = size


@njit(nogil=True, error_model="numpy")
def deque_front(st: np.ndarray, base: int, cap: int) -> float:
    """Value at the front: the window's max (or min)."""
    return st[base + 2 + int(st[base])]


@njit(nogil=True, error_model="numpy")
def deque_front_seq(st: np.ndarray, base: int, cap: int) -> float:
    """Tick number of the front entry."""
    return st[base + 2 + cap + int(st[base])]


# --- time stamps ----------------------------------------------------------------------
#
# Epoch nanoseconds (~1.7e18) do not fit a float64 mantissa. States keep the first time
# stamp split in two exact halves and store later ones as float offsets from it, which
# stay exact for 2**53 ns (104 days) and degrade by one nanosecond per doubling after.

_TWO32 = 4294967296


@njit(nogil=True, error_model="numpy")
def put_ts(st: np.ndarray, at: int, ts: int) -> None:
    """Store int64 ``ts`` exactly in ``st[at]`` and ``st[at+1]``."""
    hi = ts // _TWO32
    st[at] = float(hi)
    st[at + 1] = float(ts - hi * _TWO32)


@njit(nogil=True, error_model="numpy")
def get_ts(st: np.ndarray, at: int) -> int:
    """Read back a time stamp stored by :func:`put_ts`."""
    return np.int64(st[at]) * _TWO32 + np.int64(st[at + 1])


# --- borrowed views -------------------------------------------------------------------


@intrinsic
def borrowed_view(typingctx, arr, offset, length):  # type: ignore[no-untyped-def]
    """``arr[offset:offset + length]`` for a 1-D C float64 array, without a reference.

    A numba slice carries the parent's reference count, and passing it to a function
    LLVM does not inline costs two atomic operations per call. The fused set kernels
    slice one state array per indicator per tick, always while the parent argument is
    alive, so they use this reference-free view instead.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.float64):
        return None
    rettype = types.Array(types.float64, 1, "C")
    sig = rettype(arr, types.intp, types.intp)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        src = context.make_array(signature.args[0])(context, builder, args[0])
        out = context.make_array(rettype)(context, builder)
        itemsize = context.get_constant(types.intp, 8)
        context.populate_array(
            out,
            data=builder.gep(src.data, [args[1]]),
            shape=cgutils.pack_array(builder, [args[2]]),
            strides=cgutils.pack_array(builder, [itemsize]),
            itemsize=itemsize,
            meminfo=None,
        )
        return out._getvalue()

    return sig, codegen
