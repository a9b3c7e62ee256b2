"""The shipped order-book imbalance scalper: lean with the side of the book that is heavier.

The imbalance of the local order book over its best ``levels`` levels a side is
``(sum w_k * bid_qty_k - sum w_k * ask_qty_k) / (sum w_k * (bid_qty_k + ask_qty_k))``
with ``w_k = decay**k`` (``k = 0`` the best level; ``decay = 1``: a plain sum,
below 1: depth-weighted, nearer levels count more). It is computed by
``engine.indicators.book_imbalance_n_update`` on every book state: one per
``depthUpdate`` row at which the local book is synced (see
:mod:`engine.feeds._bookcols`; replay rebuilds the book from the capture's depth
diffs and REST snapshots, paper and live from the feed's). A depth row without a
synced book (a gap, waiting for a snapshot) clears the imbalance until the book
is back; other rows leave it as the last state set it.

A *run* is a stretch of consecutive book states on one side of the thresholds:
imbalance at or above ``long_threshold`` (long), at or below ``-short_threshold``
(short). Entry (FLAT): a run that has lasted at least ``persist_updates`` book
states and ``persist_ms`` since its first state (checked on every quote and book state,
so time alone can complete it), confirmed when ``confirm`` asks for it:

- ``trade_flow``: the order-flow imbalance of the last ``flow_period`` trades
  (``trade_ofi_update``: buyer-aggressor volume minus seller-aggressor volume over
  their sum) above ``flow_min`` for a long, below ``-flow_min`` for a short (no
  entry before ``flow_period`` trades have been seen);
- ``micro_price``: the micro-price of the latest quote,
  ``(bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty)``, on the entry side of
  the mid by more than ``micro_min`` half-spreads (``(micro - mid) / (spread / 2)``
  is the top-of-book size imbalance, in [-1, 1]);
- ``both``: the two; ``none``: neither.

A run signals once: an entry refused (risk, the ML filter) or closed is not raised
again until the imbalance has left the run and come back. The signal's strength
(for ``sizing`` by strength) is the imbalance's magnitude.

Exits (HOLDING): a run on the other side meeting the same persistence (reason
``opposite_signal``; no confirmation needed to leave), and the strategy's own stop
and target in bps of the entry price (marked at the side the position would close
at) and time limit, checked on quotes (0 turns each off; the engine-wide ``[exits]``
policies compose on top).

Data: the strategy reads the book columns of :class:`~engine.messages.Ticks` and
the quotes (bookTicker) for prices, like the simulated venue. Data without depth
updates (candles, trades only) has no book: a replay refuses it before it starts
(:func:`engine._report.data_notes`). Every update is O(``levels``) per book state
and O(1) otherwise; nothing is allocated in the kernel. Imports are absolute so the
file also loads as a user's strategy file (``strategy.path``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import attrs
import numpy as np
from attrs import validators as v
from numba import njit

from engine.indicators import (
    book_imbalance_n_state,
    book_imbalance_n_update,
    trade_ofi_state,
    trade_ofi_update,
)
from engine.messages import Ticks
from engine.strategy import Mode, Strategy, state_slot, store_entry

__all__ = ["BookImbalance", "BookImbalanceParams"]

#: Levels a side the book columns keep (engine.feeds._bookcols.BOOK_LEVELS).
MAX_LEVELS = 10
CONFIRMS = ("none", "trade_flow", "micro_price", "both")

# Kernel state (float64).
(
    LAST_BID, LAST_ASK, MICRO, FLOW, IMB, SIDE, ENTRY_PRICE, ENTRY_TS, STRENGTH,
    RUN_DIR, RUN_START, RUN_UPDATES, RUN_USED, STATES, LOST,
) = range(15)  # fmt: skip
STATE_SIZE = 15

# Parameters (float64).
(
    P_LONG_TH, P_SHORT_TH, P_PERSIST_NS, P_PERSIST_UPDATES, P_CONFIRM_FLOW, P_CONFIRM_MICRO,
    P_FLOW_MIN, P_MICRO_MIN, P_ALLOW_SHORT, P_STOP, P_TAKE, P_MAX_HOLD_NS,
) = range(12)  # fmt: skip
PARAMS_SIZE = 12

_QUOTE = 1
_TRADE = 2
_DEPTH = 3


@attrs.frozen(kw_only=True)
class BookImbalanceParams:
    """``[strategy.params]`` of the book-imbalance strategy (see the module docstring)."""

    levels: int = attrs.field(default=5, validator=[v.ge(1), v.le(MAX_LEVELS)])
    decay: float = attrs.field(default=1.0, validator=[v.gt(0), v.le(1)])
    long_threshold: float = attrs.field(default=0.5, validator=[v.gt(0), v.le(1)])
    short_threshold: float = attrs.field(default=0.5, validator=[v.gt(0), v.le(1)])
    persist_ms: int = attrs.field(default=500, validator=v.ge(0))
    persist_updates: int = attrs.field(default=3, validator=v.ge(1))
    confirm: Literal["none", "trade_flow", "micro_price", "both"] = attrs.field(
        default="trade_flow", validator=v.in_(CONFIRMS)
    )
    flow_period: int = attrs.field(default=50, validator=v.ge(1))
    flow_min: float = attrs.field(default=0.0, validator=[v.ge(0), v.lt(1)])
    micro_min: float = attrs.field(default=0.0, validator=[v.ge(0), v.lt(1)])
    allow_short: bool = True
    # The strategy's own exits (0: off): stop and target in bps, a time limit.
    stop_bps: float = attrs.field(default=10.0, validator=v.ge(0))
    take_bps: float = attrs.field(default=10.0, validator=v.ge(0))
    max_hold_ms: int = attrs.field(default=30_000, validator=v.ge(0))


attrs.resolve_types(BookImbalanceParams)


def pack_params(p: BookImbalanceParams) -> np.ndarray:
    """The parameters as the kernel reads them."""
    out = np.zeros(PARAMS_SIZE)
    out[P_LONG_TH] = p.long_threshold
    out[P_SHORT_TH] = p.short_threshold
    out[P_PERSIST_NS] = p.persist_ms * 1e6
    out[P_PERSIST_UPDATES] = p.persist_updates
    out[P_CONFIRM_FLOW] = 1.0 if p.confirm in ("trade_flow", "both") else 0.0
    out[P_CONFIRM_MICRO] = 1.0 if p.confirm in ("micro_price", "both") else 0.0
    out[P_FLOW_MIN] = p.flow_min
    out[P_MICRO_MIN] = p.micro_min
    out[P_ALLOW_SHORT] = 1.0 if p.allow_short else 0.0
    out[P_STOP] = p.stop_bps * 1e-4
    out[P_TAKE] = p.take_bps * 1e-4
    out[P_MAX_HOLD_NS] = p.max_hold_ms * 1e6
    return out


def new_state() -> np.ndarray:
    """A fresh kernel state: flat, no book, no quote, no run."""
    st = np.full(STATE_SIZE, np.nan)
    for i in (SIDE, STRENGTH, RUN_DIR, RUN_START, RUN_UPDATES, RUN_USED, STATES, LOST):
        st[i] = 0.0
    return st


@njit(cache=True, nogil=True, error_model="numpy")
def scan(
    ts, kind, bid, bid_qty, ask, ask_qty, qty, buyer_maker,
    book_row, book_bid_qty, book_ask_qty, start, stop, mode, st, p, weights, ofi, out,
):  # fmt: skip
    """Advance over events ``start..stop``; ``(index, signal)`` at a signal, else ``(stop, 0)``."""
    n = min(stop, ts.shape[0])
    for i in range(start, n):
        k = kind[i]
        t = float(ts[i])
        if k == _DEPTH:
            s = book_row[i]
            if s >= 0:
                imb = book_imbalance_n_update(weights, book_bid_qty[s], book_ask_qty[s])
                st[IMB] = imb
                st[STATES] += 1.0
                d = 0.0
                if imb >= p[P_LONG_TH]:
                    d = 1.0
                elif imb <= -p[P_SHORT_TH]:
                    d = -1.0
                if d != st[RUN_DIR]:
                    st[RUN_DIR] = d
                    st[RUN_START] = t
                    st[RUN_UPDATES] = 1.0
                    st[RUN_USED] = 0.0
                else:
                    st[RUN_UPDATES] += 1.0
            else:  # the book is out of sync: no imbalance until it is back
                st[IMB] = np.nan
                st[RUN_DIR] = 0.0
                st[RUN_UPDATES] = 0.0
                st[LOST] += 1.0
        elif k == _QUOTE:
            b = bid[i]
            a = ask[i]
            if not (b == b and a == a):
                continue
            st[LAST_BID] = b
            st[LAST_ASK] = a
            bq = bid_qty[i]
            aq = ask_qty[i]
            if bq == bq and aq == aq and bq + aq > 0.0:
                st[MICRO] = (bq - aq) / (bq + aq)  # (micro - mid) / (spread / 2)
        elif k == _TRADE:
            q = qty[i]
            if q == q:
                side = -1.0 if buyer_maker[i] != 0 else 1.0
                trade_ofi_update(ofi, q, side, out)
                st[FLOW] = out[1]
            continue  # a trade moves no price the strategy reads: nothing to decide
        else:
            continue
        if mode == 2 or st[LAST_BID] != st[LAST_BID]:
            continue
        d = st[RUN_DIR]
        ready = (
            d != 0.0
            and st[RUN_USED] == 0.0
            and st[RUN_UPDATES] >= p[P_PERSIST_UPDATES]
            and t - st[RUN_START] >= p[P_PERSIST_NS]
        )
        signal = 0
        if mode == 0:
            if ready and (d > 0.0 or p[P_ALLOW_SHORT] > 0.0):
                ok = True
                if p[P_CONFIRM_FLOW] > 0.0:
                    f = st[FLOW]
                    ok = f == f and d * f > p[P_FLOW_MIN]
                if ok and p[P_CONFIRM_MICRO] > 0.0:
                    m = st[MICRO]
                    ok = m == m and d * m > p[P_MICRO_MIN]
                if ok:
                    signal = 1 if d > 0.0 else 2
                    st[STRENGTH] = min(1.0, abs(st[IMB]))
        else:
            side = st[SIDE]
            if ready and d == -side:
                signal = 3
            elif k == _QUOTE:
                exit_px = st[LAST_BID] if side > 0.0 else st[LAST_ASK]
                ret = side * (exit_px - st[ENTRY_PRICE]) / st[ENTRY_PRICE]
                if p[P_STOP] > 0.0 and ret <= -p[P_STOP]:
                    signal = 4
                elif p[P_TAKE] > 0.0 and ret >= p[P_TAKE]:
                    signal = 5
                elif p[P_MAX_HOLD_NS] > 0.0 and t - st[ENTRY_TS] >= p[P_MAX_HOLD_NS]:
                    signal = 6
        if signal != 0:
            if signal <= 3:
                st[RUN_USED] = 1.0
            return i, signal
    return n, 0


if __name__ != "engine.strategy._book_imbalance":
    # Loaded from its file as a user's strategy (``strategy.path``): run the
    # engine module's kernel. numba keeps one cache per source file, and an entry
    # compiled here would name this module, which no other process can import.
    from engine.strategy._book_imbalance import scan


def _warm_up() -> None:
    n = 4
    ts = np.arange(n, dtype=np.int64)
    kind = np.array([3, 1, 2, 3], dtype=np.int8)
    px = np.full(n, 100.0)
    book = np.ones((2, MAX_LEVELS))
    rows = np.array([0, 0, 0, 1], dtype=np.int64)
    for arr in (ts, kind, px, book, rows):
        arr.flags.writeable = False  # the columns are read-only: compile that signature
    p = BookImbalanceParams()
    scan(
        ts, kind, px, px, px, px, px, np.zeros(n, dtype=np.int8), rows, book, book, 0, n, 0,
        new_state(), pack_params(p), book_imbalance_n_state(p.levels, p.decay),
        trade_ofi_state(p.flow_period), np.zeros(2),
    )  # fmt: skip


class BookImbalance(Strategy):
    """N-level order-book imbalance as a :class:`~engine.strategy.Strategy`
    (``kind = "book_imbalance"``)."""

    kind = "book_imbalance"
    cross_reason = "opposite_signal"
    Params = BookImbalanceParams
    uses_book: ClassVar[bool] = True
    """It reads the local order book: data without depth updates is refused."""

    def __init__(self, config: Any, sizing: Any, params: BookImbalanceParams | None = None) -> None:
        self.params = params if params is not None else BookImbalanceParams()
        self._state = new_state()
        self._packed = pack_params(self.params)
        self._weights = book_imbalance_n_state(self.params.levels, self.params.decay)
        self._ofi = trade_ofi_state(self.params.flow_period)
        self._out = np.zeros(2)

    def scan(self, ticks: Ticks, start: int, stop: int, mode: Mode) -> tuple[int, int]:
        return scan(  # type: ignore[no-any-return]
            ticks.ts, ticks.kind, ticks.bid, ticks.bid_qty, ticks.ask, ticks.ask_qty,
            ticks.qty, ticks.buyer_maker, ticks.book_row, ticks.book_bid_qty,
            ticks.book_ask_qty, start, stop, int(mode), self._state, self._packed,
            self._weights, self._ofi, self._out,
        )  # fmt: skip

    last_bid = state_slot(LAST_BID)
    last_ask = state_slot(LAST_ASK)
    strength = state_slot(
        STRENGTH, "The entry's strength: the imbalance's magnitude when it signalled."
    )
    imbalance = state_slot(
        IMB, "The latest book state's imbalance (NaN: no synced book yet, or a gap)."
    )

    @property
    def book_states(self) -> int:
        """Book states the kernel has read (depth rows with a synced book)."""
        return int(self._state[STATES])

    def on_entry_filled(self, side: int, entry_price: float, ts: int) -> None:
        store_entry(self._state, (SIDE, ENTRY_PRICE, ENTRY_TS), side, entry_price, ts)

    @classmethod
    def warm_up(cls) -> None:
        _warm_up()
