"""A whole replay's market data as columns: the tape the replay drivers read.

A :class:`Tape` holds one :class:`~engine.messages.Ticks` per requested symbol,
covering the whole run: contiguous, read-only numpy columns (memory-mapped when
they come from the tick store, :mod:`engine.feeds._store`). ``seq`` is each
event's position in the merged stream of the requested symbols, exactly the
numbering of ``enumerate(merge_captures(paths, stats, frozenset(symbols)))``, so a
driver that walks the tape in ``seq`` order sees the events the readers passed on,
in their order.

:func:`load_tape` parses the sources (or reads the store) and leaves the reader
counters (:class:`~engine.feeds.CaptureStats`) as the parse leaves them, whichever
way the tape was loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np

from ..messages import Ticks
from ._bookcols import BOOK_LEVELS, BookColumns, BookRebuild
from ._capture import (
    AggTrade,
    BookTicker,
    CaptureLimits,
    CaptureStats,
    DepthUpdate,
    Trade,
    merge_captures,
)
from ._columns import N_INT, NAN, QUOTE, TRADE, Columns, append_other
from ._fastcap import fast_path_for, forget, read_capture_columns

if TYPE_CHECKING:
    from ._store import TickStore

#: The columns of a :class:`~engine.messages.Ticks`, in order, with their dtypes.
COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("ts", np.dtype(np.int64)),
    ("ts_exchange", np.dtype(np.int64)),
    ("seq", np.dtype(np.int64)),
    ("kind", np.dtype(np.int8)),
    ("buyer_maker", np.dtype(np.int8)),
    ("bid", np.dtype(np.float64)),
    ("bid_qty", np.dtype(np.float64)),
    ("ask", np.dtype(np.float64)),
    ("ask_qty", np.dtype(np.float64)),
    ("price", np.dtype(np.float64)),
    ("qty", np.dtype(np.float64)),
    ("index_price", np.dtype(np.float64)),
    ("funding_rate", np.dtype(np.float64)),
    ("next_funding_ts", np.dtype(np.int64)),
)
COLUMN_NAMES = tuple(name for name, _dtype in COLUMNS)

#: The optional book columns of a :class:`~engine.messages.Ticks`: ``book_row`` per
#: row, the others ``(n_states, BOOK_LEVELS)`` (see :mod:`engine.feeds._bookcols`).
BOOK_COLUMNS = ("book_row", "book_bid_px", "book_bid_qty", "book_ask_px", "book_ask_qty")

# The row buffers are turned into arrays every 2**14 events (all symbols together):
# Python lists of a whole day would take ten times the memory of the final columns.
_FLUSH_MASK = (1 << 14) - 1


@attrs.frozen(kw_only=True, eq=False)
class Tape:
    """A replay's market data: per symbol, every event of the run as columns.

    Attributes:
        symbols: the requested symbols, in the order given.
        ticks: per symbol, its events (zero-length columns when it has none).
        first_ts: replay time of the first event (None: no events).
        last_ts: replay time of the last event (None: no events).
        book_counts: per symbol, the counters of its book rebuild
            (:class:`~engine.feeds._bookcols.BookColumns`; empty when not built).
    """

    symbols: tuple[str, ...]
    ticks: Mapping[str, Ticks]
    first_ts: int | None
    last_ts: int | None
    book_counts: Mapping[str, Mapping[str, int]] = attrs.Factory(dict)

    def __len__(self) -> int:
        return sum(len(t) for t in self.ticks.values())

    def merged_ts(self) -> np.ndarray:
        """Replay time of every event in ``seq`` order (non-decreasing)."""
        out = np.empty(len(self), dtype=np.int64)
        for ticks in self.ticks.values():
            out[ticks.seq] = ticks.ts
        out.flags.writeable = False
        return out


def slice_ticks(ticks: Ticks, start: int, stop: int) -> Ticks:
    """Rows ``start:stop`` of ``ticks`` as a batch (views: nothing is copied).

    The book state arrays are passed on whole (``book_row`` indexes them).
    """
    return ticks.rows(start, stop)


def tape_from_columns(
    symbols: Iterable[str],
    columns: Mapping[str, Mapping[str, np.ndarray]],
    book_counts: Mapping[str, Mapping[str, int]] | None = None,
) -> Tape:
    """Build a tape from per-symbol columns (every name of :data:`COLUMNS`, and
    optionally those of :data:`BOOK_COLUMNS`)."""
    order = tuple(symbols)
    ticks = {
        s: Ticks(
            **{name: columns[s][name] for name in COLUMN_NAMES + BOOK_COLUMNS if name in columns[s]}
        )
        for s in order
    }
    first_ts: int | None = None
    last_ts: int | None = None
    last_seq = -1
    for t in ticks.values():
        if not len(t):
            continue
        if t.seq[0] == 0:
            first_ts = int(t.ts[0])
        if t.seq[-1] > last_seq:
            last_seq = int(t.seq[-1])
            last_ts = int(t.ts[-1])
    return Tape(
        symbols=order,
        ticks=ticks,
        first_ts=first_ts,
        last_ts=last_ts,
        book_counts=dict(book_counts or {}),
    )


def restrict_tape(tape: Tape, start: int | None, end: int | None) -> Tape:
    """The events of ``tape`` with replay time in ``[start, end)`` (None: no bound).

    The merged stream is in replay-time order, so the window is one contiguous run
    of it: every column but ``seq`` stays a view, and ``seq`` is renumbered from 0 so
    the result is the tape a capture of just that window would give.
    """
    if start is None and end is None:
        return tape
    merged = tape.merged_ts()
    lo = 0 if start is None else int(np.searchsorted(merged, start, side="left"))
    hi = len(merged) if end is None else int(np.searchsorted(merged, end, side="left"))
    hi = max(hi, lo)
    columns: dict[str, dict[str, np.ndarray]] = {}
    for symbol, ticks in tape.ticks.items():
        a = int(np.searchsorted(ticks.seq, lo, side="left"))
        b = int(np.searchsorted(ticks.seq, hi, side="left"))
        part = slice_ticks(ticks, a, b)
        cols = {name: getattr(part, name) for name in COLUMN_NAMES + BOOK_COLUMNS}
        seq = cols["seq"] - lo
        seq.flags.writeable = False
        cols["seq"] = seq
        columns[symbol] = cols
    return tape_from_columns(tape.symbols, columns, tape.book_counts)


def parse_tape(
    paths: list[Path],
    symbols: Iterable[str],
    *,
    limits: CaptureLimits | None = None,
    stats: CaptureStats,
    book: bool = False,
) -> Tape:
    """Read the sources into a tape (no store).

    Args:
        paths: capture or CSV files, merged by replay time.
        symbols: the symbols to keep (events of others are skipped and counted).
        limits: bounds of the readers' time checks.
        stats: counters the readers update.
        book: rebuild each symbol's order book from its depth diffs into the
            :data:`BOOK_COLUMNS` (for strategies that read the book: it costs about
            as much as the rest of the parse).

    Raises:
        DataError: a source cannot be read or fails the readers' checks.
    """
    order = tuple(dict.fromkeys(symbols))
    if len(paths) == 1 and fast_path_for(paths[0], book):
        # One capture, no book: parsed into columns by the compiled reader.
        read = read_capture_columns(paths[0], stats, frozenset(order), limits or CaptureLimits())
        if read is not None:
            return _tape_of_columns(order, *read)
    forget()  # (what a scan kept for the compiled reader)
    buffers = {s: Columns() for s in order}
    parts: dict[str, dict[str, list[np.ndarray]]] = {
        s: {name: [] for name in COLUMN_NAMES} for s in order
    }
    # Depth diffs are rare next to quotes and trades: each goes to its symbol's
    # book as it comes (keeping the diffs for later would hold their levels).
    books: dict[str, BookRebuild] = {}
    flushed = dict.fromkeys(order, 0)
    snapshots = stats.snapshots
    seen = len(snapshots)  # snapshots handed to the books

    def book_of(symbol: str) -> BookRebuild:
        nonlocal seen
        # A snapshot's symbol is set when its file's next event is read, which is
        # before any event at or after its time is passed on.
        while seen < len(snapshots) and snapshots[seen][0] is not None:
            sym, recv, snapshot = snapshots[seen]
            seen += 1
            if sym not in books and sym in flushed:
                books[sym] = BookRebuild(sym, levels=BOOK_LEVELS)
            if sym in books:
                books[sym].snapshot(recv, snapshot)
        if symbol not in books:
            books[symbol] = BookRebuild(symbol, levels=BOOK_LEVELS)
        return books[symbol]

    def flush() -> None:
        for symbol, cols in buffers.items():
            chunk = cols.take()
            if chunk is not None:
                flushed[symbol] += len(chunk)
                for name, arrays in parts[symbol].items():
                    arrays.append(getattr(chunk, name))

    events = merge_captures(paths, stats, frozenset(order), limits=limits)
    for seq, (ts, msg) in enumerate(events):
        # The append is inlined as in the replay feed it replaces (an if-chain on
        # the exact type): it runs once per event.
        cols = buffers[msg.symbol]
        kind = type(msg)
        ex = msg.event_time * 1_000_000
        if kind is BookTicker:
            cols.ints.extend((ts, ex, seq, QUOTE, 0))
            cols.floats.extend((msg.bid, msg.bid_qty, msg.ask, msg.ask_qty, NAN, NAN))
        elif kind is Trade or kind is AggTrade:
            cols.ints.extend((ts, ex, seq, TRADE, 1 if msg.buyer_maker else 0))
            cols.floats.extend((NAN, NAN, NAN, NAN, msg.price, msg.qty))
        else:
            if book and kind is DepthUpdate:
                row = flushed[msg.symbol] + len(cols.ints) // N_INT
                book_of(msg.symbol).diff(row, ts, msg)
            append_other(cols, ts, ex, seq, msg)
        if seq & _FLUSH_MASK == _FLUSH_MASK:
            flush()
    flush()
    columns: dict[str, dict[str, np.ndarray]] = {}
    for symbol in order:
        out: dict[str, np.ndarray] = {}
        for name, dtype in COLUMNS:
            # One column at a time, its chunks dropped as soon as it is whole: the
            # peak stays near the final columns' size.
            arrays = parts[symbol][name]
            whole = np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)
            arrays.clear()
            whole.flags.writeable = False
            out[name] = whole
        columns[symbol] = out
    counts: dict[str, dict[str, int]] = {}
    for symbol in order:
        if symbol in books:  # (a symbol without depth rows has no book columns)
            book = books.pop(symbol).finish(len(columns[symbol]["ts"]))
            columns[symbol].update(book_columns(book))
            counts[symbol] = book.counts
    return tape_from_columns(order, columns, counts)


def _tape_of_columns(
    order: tuple[str, ...], cols: dict[str, np.ndarray], symbol: np.ndarray, names: list[str]
) -> Tape:
    """The tape of one file's events in order (``symbol``: an index into ``names``)."""
    columns: dict[str, dict[str, np.ndarray]] = {}
    for name in order:
        sid = names.index(name) if name in names else -1
        rows = np.flatnonzero(symbol == sid)
        out: dict[str, np.ndarray] = {}
        for column, dtype in COLUMNS:
            whole = rows if column == "seq" else cols[column][rows]
            whole = whole.astype(dtype, copy=False)
            whole.flags.writeable = False
            out[column] = whole
        columns[name] = out
    return tape_from_columns(order, columns, {})


def book_columns(book: BookColumns) -> dict[str, np.ndarray]:
    """The :data:`BOOK_COLUMNS` of a rebuilt book, by name."""
    return {
        "book_row": book.book_row,
        "book_bid_px": book.bid_px,
        "book_bid_qty": book.bid_qty,
        "book_ask_px": book.ask_px,
        "book_ask_qty": book.ask_qty,
    }


def load_tape(
    paths: list[Path],
    symbols: Iterable[str],
    *,
    limits: CaptureLimits | None = None,
    stats: CaptureStats,
    store: TickStore | None = None,
    book: bool = False,
) -> Tape:
    """The tape of ``paths``: from the tick store when it holds them, else parsed.

    With a store, a first load parses and writes the columns there; later loads
    map them without parsing. Either way ``stats`` ends up as the parse leaves it.

    Args:
        paths: capture or CSV files, merged by replay time.
        symbols: the symbols to keep.
        limits: bounds of the readers' time checks.
        stats: counters to update (as a parse would).
        store: the tick store (None: always parse).
        book: with the order book columns (see :func:`parse_tape`).

    Raises:
        DataError: a source cannot be read or fails the readers' checks.
    """
    bounds = limits or CaptureLimits()
    if store is None:
        return parse_tape(paths, symbols, limits=bounds, stats=stats, book=book)
    return store.load(paths, symbols, limits=bounds, stats=stats, book=book)
