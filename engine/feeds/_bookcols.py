"""The local order book as columns: top levels per depth event, readable in O(1).

Replay rebuilds each symbol's book from the capture with :mod:`engine.book`
(REST snapshot + ``depthUpdate`` diffs, the same :class:`~engine.book.BookSync`
rules as the live feed: a gap drops the book until the next snapshot in the
capture) and keeps, after every ``depthUpdate`` row at which the book is synced,
one *book state*: the best :data:`BOOK_LEVELS` levels a side. The states are the
rows of four 2-D arrays, and every row of the symbol's :class:`~engine.messages.Ticks`
says which state was current then, so a numba kernel reads the book at any row
with two indexings::

    s = book_row[i]                      # -1: no synced book at this row
    if s >= 0:
        best_bid = book_bid_px[s, 0]
        bid_qty_5 = book_bid_qty[s, :5].sum()

Missing levels (a side thinner than :data:`BOOK_LEVELS`) are NaN price, 0 qty.
:func:`book_state` turns a live :class:`~engine.book.OrderBook` into the same row.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

import attrs
import numpy as np

from ..book import BookError, BookSync, DepthSnapshot, OrderBook, Side

#: Levels a side kept per book state; fixed at import (part of the tick-store format).
BOOK_LEVELS = 10


@attrs.frozen(kw_only=True, eq=False)
class BookColumns:
    """One symbol's book states and the per-row index into them.

    Attributes:
        book_row: per tick row, the latest book state at or before it (-1: none,
            before the first synced book or while resyncing after a gap).
        bid_px, bid_qty, ask_px, ask_qty: ``(n_states, levels)`` float64, best first.
        counts: ``diffs`` (depth rows), ``states``, ``unsynced_rows`` (depth rows
            without a synced book), ``gaps``, ``snapshots`` (loaded),
            ``snapshots_unused`` (arrived while the book was synced),
            ``bad_levels`` (diffs or snapshots the book refused).
    """

    book_row: np.ndarray
    bid_px: np.ndarray
    bid_qty: np.ndarray
    ask_px: np.ndarray
    ask_qty: np.ndarray
    counts: dict[str, int]


def book_state(book: OrderBook, levels: int = BOOK_LEVELS) -> np.ndarray:
    """The book's best ``levels`` a side as one state row, ``(4, levels)`` float64.

    Rows: bid price, bid qty, ask price, ask qty (NaN price / 0 qty past a thin
    side). The live feed calls this after applying a diff to a synced book and
    appends the row to the step's book arrays, exactly as replay does per
    ``depthUpdate`` row.
    """
    out = np.empty((4, levels), dtype=np.float64)
    out[0] = np.nan
    out[1] = 0.0
    out[2] = np.nan
    out[3] = 0.0
    bp, bq = book.levels(Side.BID, levels)
    ap, aq = book.levels(Side.ASK, levels)
    out[0, : bp.shape[0]] = bp
    out[1, : bq.shape[0]] = bq
    out[2, : ap.shape[0]] = ap
    out[3, : aq.shape[0]] = aq
    return out


class BookRebuild:
    """One symbol's book rebuilt row by row as the tape is parsed.

    Feed every ``depthUpdate`` row, in row order, to :meth:`diff` and every REST
    snapshot of the symbol, in time order, to :meth:`snapshot` (before the first
    diff at or after its time); :meth:`finish` gives the columns. Diffs go through
    :class:`~engine.book.BookSync`, so the rules are the live feed's: buffered
    until a snapshot, applied while they chain, and after a gap buffered again
    until the capture's next snapshot.

    Args:
        symbol: for the book's messages.
        levels: levels a side per state.
        max_book_levels: the book's bound (the live feed's snapshot depth).
    """

    __slots__ = ("_book", "_counts", "_levels", "_marks", "_pending", "_states", "_sync")

    def __init__(
        self, symbol: str = "", *, levels: int = BOOK_LEVELS, max_book_levels: int | None = 1000
    ) -> None:
        self._book = OrderBook(symbol, max_levels=max_book_levels)
        self._sync = BookSync(self._book)
        self._levels = levels
        self._counts: Counter[str] = Counter()
        self._states: list[np.ndarray] = []
        self._marks: list[tuple[int, int]] = []  # (row, state or -1) per depth row
        self._pending: deque[tuple[int, DepthSnapshot]] = deque()

    def snapshot(self, ts: int, snapshot: DepthSnapshot) -> None:
        """A snapshot received at ``ts``: loaded before the first diff at or after
        ``ts`` if the book then needs one (else counted as unused)."""
        self._pending.append((ts, snapshot))

    def diff(self, row: int, ts: int, diff: object) -> None:
        """The ``depthUpdate`` at ``row`` (a diff has ``first_id``, ``last_id``,
        ``prev_last_id``, ``bids``, ``asks``, ``tx_time``)."""
        counts, sync, book = self._counts, self._sync, self._book
        counts["diffs"] += 1
        pending = self._pending
        while pending and pending[0][0] <= ts:
            _ts, snapshot = pending.popleft()
            if not sync.needs_snapshot:
                counts["snapshots_unused"] += 1
                continue
            try:
                sync.on_snapshot(snapshot)
            except BookError:
                counts["bad_levels"] += 1
            else:
                counts["snapshots"] += 1
        try:
            sync.on_diff(diff)  # type: ignore[arg-type]
        except BookError:
            counts["bad_levels"] += 1
        if book.synced and not sync.needs_snapshot:
            self._marks.append((row, len(self._states)))
            self._states.append(book_state(book, self._levels))
        else:
            self._marks.append((row, -1))
            counts["unsynced_rows"] += 1

    def finish(self, n_rows: int) -> BookColumns:
        """The columns, for a symbol of ``n_rows`` tick rows."""
        counts = self._counts
        counts["snapshots_unused"] += len(self._pending)
        counts["gaps"] = self._sync.stats.gaps
        counts["states"] = len(self._states)
        marks = np.full(n_rows, -2, dtype=np.int64)  # -2: not a depth row
        if self._marks:
            rows, states = zip(*self._marks, strict=True)
            marks[list(rows)] = states
        # Forward fill: each row takes the mark of the latest depth row at or before it.
        idx = np.where(marks != -2, np.arange(n_rows), -1)
        np.maximum.accumulate(idx, out=idx)
        book_row = np.where(idx >= 0, marks[np.maximum(idx, 0)], -1).astype(np.int64)
        levels = self._levels
        # (n_states, 4, levels), then one contiguous array per row kind.
        stacked = (
            np.stack(self._states) if self._states else np.empty((0, 4, levels), dtype=np.float64)
        )
        self._states = []
        cols = [np.ascontiguousarray(stacked[:, k, :]) for k in range(4)]
        for arr in (book_row, *cols):
            arr.flags.writeable = False
        return BookColumns(
            book_row=book_row,
            bid_px=cols[0],
            bid_qty=cols[1],
            ask_px=cols[2],
            ask_qty=cols[3],
            counts=dict(counts),
        )


def build_book_columns(
    n_rows: int,
    depth: Iterable[tuple[int, int, object]],
    snapshots: Iterable[tuple[int, DepthSnapshot]],
    *,
    symbol: str = "",
    levels: int = BOOK_LEVELS,
    max_book_levels: int | None = 1000,
) -> BookColumns:
    """One symbol's book columns from its depth rows and snapshots at once.

    Args:
        n_rows: rows of the symbol's ticks.
        depth: ``(row, ts, diff)`` of each ``depthUpdate`` row, in row order.
        snapshots: ``(ts, snapshot)`` of the symbol's REST snapshots, in time order.
        symbol, levels, max_book_levels: as :class:`BookRebuild`.
    """
    rebuild = BookRebuild(symbol, levels=levels, max_book_levels=max_book_levels)
    for ts, snapshot in snapshots:
        rebuild.snapshot(ts, snapshot)
    for row, ts, diff in depth:
        rebuild.diff(row, ts, diff)
    return rebuild.finish(n_rows)
