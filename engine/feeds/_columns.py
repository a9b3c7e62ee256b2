"""Building :class:`~engine.messages.Ticks` batches from decoded market messages."""

from __future__ import annotations

import attrs
import numpy as np

from ..messages import EventKind, Ticks
from ._capture import AggTrade, BookTicker, DepthUpdate, Kline, MarketMessage, MarkPrice, Trade

NAN = float("nan")
QUOTE = int(EventKind.QUOTE)
TRADE = int(EventKind.TRADE)
DEPTH = int(EventKind.DEPTH)
KLINE = int(EventKind.KLINE)
MARK = int(EventKind.MARK)
N_INT = 5  # ts, ts_exchange, seq, kind, buyer_maker
N_FLOAT = 6  # bid, bid_qty, ask, ask_qty, price, qty
_MAX_CACHED = 64  # the longest step whose constant columns are kept (live steps are short)
# The (empty, read-only) book state arrays of a batch without a book: Ticks' own
# default, given explicitly (four default factories cost ~0.4 us a batch).
_NO_BOOK = attrs.fields(Ticks).book_bid_px.default.factory()


class Columns:
    """Flat row-major buffers for one symbol's step; turned into columns once per step."""

    # Python lists and one numpy conversion per step: appending to lists costs
    # ~0.1 us per event, numpy item assignment several times that.

    # MARK rows are rare (one a second per symbol at most), so their three extra
    # columns are kept sparse, ``(row, index_price, funding_rate, next_funding_ns)``,
    # and spread into full columns once per step.

    # A live step holds a few events, and each numpy allocation costs about a
    # microsecond there: the columns that are constant without MARK rows (index
    # price and funding rate NaN, next funding 0, no book) are read-only views of
    # arrays kept per length, and ``kind`` and ``buyer_maker`` come from one
    # conversion.

    __slots__ = ("_blank", "floats", "ints", "marks")

    def __init__(self) -> None:
        self.ints: list[int] = []
        self.floats: list[float] = []
        self.marks: list[tuple[int, float, float, int]] = []
        self._blank: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _constant(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read-only views of all-NaN (float), all-0 and all--1 (int64) columns of length n."""
        cached = self._blank.get(n)
        if cached is None:
            full = (np.full(n, NAN), np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64))
            for arr in full:
                arr.flags.writeable = False
            # Views of read-only arrays cannot be made writeable again: the same
            # views serve every step of this length.
            cached = (full[0][:], full[1][:], full[2][:])
            if n <= _MAX_CACHED:
                self._blank[n] = cached
        return cached

    def take(self) -> Ticks | None:
        ints_list = self.ints
        if not ints_list:
            return None
        n = len(ints_list) // N_INT
        ints = np.array(ints_list, dtype=np.int64)
        floats = np.array(self.floats, dtype=np.float64)
        ints_list.clear()
        self.floats.clear()
        if n > 1:  # rows to columns (one row is laid out as its column already)
            ints = ints.reshape(n, N_INT).T.copy()
            floats = floats.reshape(n, N_FLOAT).T.copy()
        # On the arrays that own the data: no column can be made writeable again.
        ints.flags.writeable = False
        floats.flags.writeable = False
        if n == 1:
            ints = ints.reshape(N_INT, 1)
            floats = floats.reshape(N_FLOAT, 1)
        small = ints[3:5].astype(np.int8)  # kind, buyer_maker (writeable, as kernels expect)
        nan, zero, no_book = self._constant(n)
        if self.marks:
            index_price = np.full(n, NAN)
            funding_rate = np.full(n, NAN)
            next_funding = np.zeros(n, dtype=np.int64)
            rows, index, rate, next_ns = zip(*self.marks, strict=True)
            index_price[list(rows)] = index
            funding_rate[list(rows)] = rate
            next_funding[list(rows)] = next_ns
            self.marks.clear()
            for arr in (index_price, funding_rate, next_funding):
                arr.flags.writeable = False
        else:
            index_price = funding_rate = nan  # both all NaN, and read-only: one array serves
            next_funding = zero
        return Ticks(
            ts=ints[0],
            ts_exchange=ints[1],
            seq=ints[2],
            kind=small[0],
            buyer_maker=small[1],
            bid=floats[0],
            bid_qty=floats[1],
            ask=floats[2],
            ask_qty=floats[3],
            price=floats[4],
            qty=floats[5],
            index_price=index_price,
            funding_rate=funding_rate,
            next_funding_ts=next_funding,
            book_row=no_book,
            book_bid_px=_NO_BOOK,
            book_bid_qty=_NO_BOOK,
            book_ask_px=_NO_BOOK,
            book_ask_qty=_NO_BOOK,
        )


def append_other(cols: Columns, ts: int, ex: int, seq: int, msg: MarketMessage) -> None:
    """Append the rarer event kinds (depth, kline, mark price)."""
    if isinstance(msg, DepthUpdate):
        cols.ints.extend((ts, ex, seq, DEPTH, 0))
        cols.floats.extend((NAN, NAN, NAN, NAN, NAN, NAN))
    elif isinstance(msg, Kline):
        cols.ints.extend((ts, ex, seq, KLINE, 0))
        cols.floats.extend((NAN, NAN, NAN, NAN, msg.bar.close, msg.bar.volume))
    elif isinstance(msg, MarkPrice):
        row = len(cols.ints) // N_INT
        cols.ints.extend((ts, ex, seq, MARK, 0))
        cols.floats.extend((NAN, NAN, NAN, NAN, msg.mark, NAN))
        cols.marks.append((row, msg.index, msg.funding_rate, msg.next_funding_time * 1_000_000))
    else:  # pragma: no cover - the decoder only produces the types above
        raise TypeError(f"unexpected market message {type(msg).__name__}")


def append_message(cols: Columns, ts: int, seq: int, msg: MarketMessage) -> None:
    """Append one message (any kind) to a symbol's step buffer."""
    kind = type(msg)
    ex = msg.event_time * 1_000_000
    if kind is BookTicker:
        cols.ints.extend((ts, ex, seq, QUOTE, 0))
        cols.floats.extend((msg.bid, msg.bid_qty, msg.ask, msg.ask_qty, NAN, NAN))
    elif kind is Trade or kind is AggTrade:
        cols.ints.extend((ts, ex, seq, TRADE, 1 if msg.buyer_maker else 0))
        cols.floats.extend((NAN, NAN, NAN, NAN, msg.price, msg.qty))
    else:
        append_other(cols, ts, ex, seq, msg)
