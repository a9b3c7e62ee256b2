"""Liquidity read from the order book: depth near the mid, and a spoofing signal.

Both consume *book snapshots*: the best levels of each side, best first, as prices and
sizes (what :meth:`engine.book.OrderBook.levels` returns after each depth update). Only
the levels given are seen; the cost per snapshot is O(levels).

Depth within ``bps`` basis points of the mid, ``mid = (best_bid + best_ask) / 2``:
``bid = sum(q_k for bid levels with p_k >= mid (1 - bps / 1e4))`` and
``ask = sum(q_k for ask levels with p_k <= mid (1 + bps / 1e4))``, in base units.

Spoofing signal (large resting orders cancelled as the price approaches them), defined
on two consecutive snapshots ``S0`` (mid ``m0``) and ``S1`` (mid ``m1``). A bid level
of ``S0`` at price ``p`` with size ``q0`` counts as *pulled* when all of these hold:

1. it is *large*: ``q0 >= large * mean(bid sizes of S0)`` (over the levels seen);
2. it is *near*: ``(m0 - p) / m0 <= near_bps / 1e4``;
3. the price *approached* it: ``m1 < m0`` (the mid moved down, toward the bid);
4. it was *not reached*: ``p < best_bid(S1)``, i.e. the level is strictly behind the
   new touch, so no trade can have executed against it (a marketable sell fills the
   best bid first and would have moved the touch to or through ``p``);
5. it is *observable*: ``p >= `` the lowest bid price of ``S1``, so a missing level
   means size 0 rather than a level that scrolled out of view;

and then contributes ``max(q0 - q1, 0)``, ``q1`` its size in ``S1`` (0 if absent).
Asks mirror this (``m1 > m0``, ``p > best_ask(S1)``...). The outputs are the pulled
volumes summed over the last ``timeperiod`` snapshot pairs, per side: a large ``bid``
value means support that kept vanishing as the price fell toward it.

What it can detect: size removed from large levels near the touch while the market
moves toward them, which is the footprint of spoofing and layering. What it cannot:
who placed or pulled the size (level data aggregates every order at a price, so one
spoofer and a crowd of honest traders look alike), intent (a genuine order withdrawn
for good reasons looks the same), orders placed and cancelled between two snapshots,
orders beyond the levels seen, layering split into many small orders below the
``large`` threshold, cancel-and-replace at a nearby price (counted as a pull), and
hidden or iceberg size. Near the touch, a modification that only lowers the size
counts as a pull. It is a feature for models and filters, not evidence of manipulation.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import check_int, window_push2


def _as_levels(*arrays: np.ndarray) -> list[np.ndarray]:
    out = [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]
    if out[0].ndim != 2 or any(a.shape != out[0].shape for a in out[1:]):
        raise ValueError("bid_px, bid_qty, ask_px, ask_qty must be 2-D arrays of one shape")
    return out


@njit(nogil=True, error_model="numpy")
def _has_nan(a: np.ndarray, n: int) -> bool:
    bad = 0
    for k in range(n):
        bad |= a[k] != a[k]
    return bad != 0


@njit(nogil=True, error_model="numpy")
def _sides(
    bid_px: np.ndarray, bid_qty: np.ndarray, ask_px: np.ndarray, ask_qty: np.ndarray, limit: int
) -> tuple[int, int]:
    """Levels used per side (at most ``limit``), or ``(0, 0)`` for an empty side or a NaN."""
    nb = min(limit, bid_px.shape[0], bid_qty.shape[0])
    na = min(limit, ask_px.shape[0], ask_qty.shape[0])
    if (
        nb == 0
        or na == 0
        or _has_nan(bid_px, nb)
        or _has_nan(bid_qty, nb)
        or _has_nan(ask_px, na)
        or _has_nan(ask_qty, na)
    ):
        return 0, 0
    return nb, na


@njit(nogil=True, error_model="numpy")
def _size_within(px: np.ndarray, qty: np.ndarray, n: int, bound: float, sign: float) -> float:
    """Size of the levels, best first, up to ``bound`` (``sign`` +1 bids, -1 asks)."""
    total = 0.0
    for k in range(n):
        if sign * (px[k] - bound) < 0.0:
            break
        total += qty[k]
    return total


# --- depth within N bps ---------------------------------------------------------------


def book_depth_state(bps: float = 10.0) -> np.ndarray:
    """State of a depth-near-the-mid measure: the band half-width in basis points."""
    b = float(bps)
    if not b >= 0.0:
        raise ValueError(f"bps must be >= 0, got {bps!r}")
    return np.array([b], dtype=np.float64)


@njit(nogil=True, error_model="numpy")
def book_depth_update(
    state: np.ndarray,
    bid_px: np.ndarray,
    bid_qty: np.ndarray,
    ask_px: np.ndarray,
    ask_qty: np.ndarray,
    out: np.ndarray,
) -> None:
    """Writes ``(bid, ask)``: sizes within ``bps`` of the mid (NaN: empty side or a NaN)."""
    # Every level given counts: the limit is at least either side's length.
    nb, na = _sides(bid_px, bid_qty, ask_px, ask_qty, max(bid_px.shape[0], ask_px.shape[0]))
    if nb == 0:
        out[0] = out[1] = np.nan
        return
    mid = 0.5 * (bid_px[0] + ask_px[0])
    band = state[0] * 1e-4
    out[0] = _size_within(bid_px, bid_qty, nb, mid * (1.0 - band), 1.0)
    out[1] = _size_within(ask_px, ask_qty, na, mid * (1.0 + band), -1.0)


@njit(cache=True, nogil=True, error_model="numpy")
def _depth_run(
    state: np.ndarray,
    bp: np.ndarray,
    bq: np.ndarray,
    ap: np.ndarray,
    aq: np.ndarray,
    out: np.ndarray,
) -> None:
    for i in range(bp.shape[0]):
        book_depth_update(state, bp[i], bq[i], ap[i], aq[i], out[:, i])


def book_depth(
    bid_px: np.ndarray,
    bid_qty: np.ndarray,
    ask_px: np.ndarray,
    ask_qty: np.ndarray,
    bps: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Depth within ``bps`` of the mid per snapshot: ``(bid, ask)``; inputs ``(n, levels)``."""
    bp, bq, ap, aq = _as_levels(bid_px, bid_qty, ask_px, ask_qty)
    out = np.empty((2, bp.shape[0]), dtype=np.float64)
    _depth_run(book_depth_state(bps), bp, bq, ap, aq, out)
    return out[0], out[1]


# --- spoofing -------------------------------------------------------------------------
# [levels, near_bps, large, has_prev, prev_mid, prev_nb, prev_na,
#  prev_bid_px[L], prev_bid_qty[L], prev_ask_px[L], prev_ask_qty[L],
#  window block: [n, count, pos, bid, bid', ask, ask', bid_ring[n], ask_ring[n]]]
_SP_L, _SP_NEAR, _SP_LARGE, _SP_HAS, _SP_MID, _SP_NB, _SP_NA = range(7)
_SP_LEVELS = 7


def spoofing_state(
    levels: int = 20, near_bps: float = 10.0, large: float = 5.0, timeperiod: int = 100
) -> np.ndarray:
    """Allocate the state of the spoofing signal (see the module docstring).

    Args:
        levels: book levels per side compared between snapshots.
        near_bps: how close to the mid (basis points) a level must be to count.
        large: size multiple of the side's mean level size that makes a level large.
        timeperiod: number of snapshot pairs summed.
    """
    L = check_int("levels", levels, 1, 10_000)
    n = check_int("timeperiod", timeperiod, 1, 10_000_000)
    if not float(near_bps) >= 0.0 or not float(large) > 0.0:
        raise ValueError(f"near_bps must be >= 0 and large > 0, got {near_bps!r}, {large!r}")
    win = _SP_LEVELS + 4 * L
    st = np.zeros(win + 7 + 2 * n, dtype=np.float64)
    st[_SP_L] = L
    st[_SP_NEAR] = near_bps
    st[_SP_LARGE] = large
    st[win] = n
    return st


@njit(nogil=True, error_model="numpy")
def _pulled(
    old_px: np.ndarray,
    old_qty: np.ndarray,
    new_px: np.ndarray,
    new_qty: np.ndarray,
    mid0: float,
    near: float,
    large: float,
    sign: float,
) -> float:
    """Pulled size of one side; ``sign`` +1 for bids (prices descending), -1 for asks."""
    n0 = old_px.shape[0]
    n1 = new_px.shape[0]
    mean = 0.0
    for j in range(n0):
        mean += old_qty[j]
    threshold = large * (mean / n0)
    best = new_px[0]
    worst = new_px[n1 - 1]
    total = 0.0
    k = 0
    for j in range(n0):
        p = old_px[j]
        q0 = old_qty[j]
        if q0 < threshold or sign * (mid0 - p) > near * mid0:
            continue
        # Strictly behind the new touch, and not beyond the new snapshot's last level.
        if not (sign * (best - p) > 0.0 and sign * (p - worst) >= 0.0):
            continue
        while k < n1 and sign * (new_px[k] - p) > 0.0:
            k += 1
        q1 = new_qty[k] if k < n1 and new_px[k] == p else 0.0
        if q0 > q1:
            total += q0 - q1
    return total


@njit(nogil=True, error_model="numpy")
def spoofing_update(
    state: np.ndarray,
    bid_px: np.ndarray,
    bid_qty: np.ndarray,
    ask_px: np.ndarray,
    ask_qty: np.ndarray,
    out: np.ndarray,
) -> None:
    """Feed one book snapshot; writes ``(bid, ask)`` pulled volumes over the window.

    NaN until ``timeperiod`` snapshot pairs were compared; a snapshot with an empty side
    or a NaN is skipped.
    """
    L = int(state[_SP_L])
    nb, na = _sides(bid_px, bid_qty, ask_px, ask_qty, L)
    if nb == 0:
        out[0] = out[1] = np.nan
        return
    mid = 0.5 * (bid_px[0] + ask_px[0])
    pb = _SP_LEVELS
    qb = pb + L
    pa = qb + L
    qa = pa + L
    win = qa + L
    ready = False
    if state[_SP_HAS] != 0.0:
        mid0 = state[_SP_MID]
        near = state[_SP_NEAR] * 1e-4
        large = state[_SP_LARGE]
        n0b = int(state[_SP_NB])
        n0a = int(state[_SP_NA])
        bid = 0.0
        ask = 0.0
        if mid < mid0:
            bid = _pulled(
                state[pb : pb + n0b], state[qb : qb + n0b], bid_px[:nb], bid_qty[:nb],
                mid0, near, large, 1.0,
            )  # fmt: skip
        elif mid > mid0:
            ask = _pulled(
                state[pa : pa + n0a], state[qa : qa + n0a], ask_px[:na], ask_qty[:na],
                mid0, near, large, -1.0,
            )  # fmt: skip
        ready = window_push2(state, win, win + 7, bid, ask)
    for k in range(nb):
        state[pb + k] = bid_px[k]
        state[qb + k] = bid_qty[k]
    for k in range(na):
        state[pa + k] = ask_px[k]
        state[qa + k] = ask_qty[k]
    state[_SP_NB] = nb
    state[_SP_NA] = na
    state[_SP_MID] = mid
    state[_SP_HAS] = 1.0
    if ready:
        out[0] = state[win + 3]
        out[1] = state[win + 5]
    else:
        out[0] = out[1] = np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def _spoof_run(
    state: np.ndarray,
    bp: np.ndarray,
    bq: np.ndarray,
    ap: np.ndarray,
    aq: np.ndarray,
    out: np.ndarray,
) -> None:
    for i in range(bp.shape[0]):
        spoofing_update(state, bp[i], bq[i], ap[i], aq[i], out[:, i])


def spoofing(
    bid_px: np.ndarray,
    bid_qty: np.ndarray,
    ask_px: np.ndarray,
    ask_qty: np.ndarray,
    levels: int = 20,
    near_bps: float = 10.0,
    large: float = 5.0,
    timeperiod: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Spoofing signal of book snapshots ``(n, levels)``: ``(bid, ask)`` (see module doc)."""
    bp, bq, ap, aq = _as_levels(bid_px, bid_qty, ask_px, ask_qty)
    out = np.empty((2, bp.shape[0]), dtype=np.float64)
    _spoof_run(spoofing_state(levels, near_bps, large, timeperiod), bp, bq, ap, aq, out)
    return out[0], out[1]
