"""Building :class:`~engine.messages.Ticks` batches from decoded market messages."""

from __future__ import annotations

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


class Columns:
    """Flat row-major buffers for one symbol's step; turned into columns once per step."""

    # Python lists and one numpy conversion per step: appending to lists costs
    # ~0.1 us per event, numpy item assignment several times that.

    # MARK rows are rare (one a second per symbol at most), so their three extra
    # columns are kept sparse, ``(row, index_price, funding_rate, next_funding_ns)``,
    # and spread into full columns once per step.

    __slots__ = ("floats", "ints", "marks")

    def __init__(self) -> None:
        self.ints: list[int] = []
        self.floats: list[float] = []
        self.marks: list[tuple[int, float, float, int]] = []

    def take(self) -> Ticks | None:
        if not self.ints:
            return None
        ints = np.array(self.ints, dtype=np.int64).reshape(-1, N_INT).T.copy()
        floats = np.array(self.floats, dtype=np.float64).reshape(-1, N_FLOAT).T.copy()
        self.ints.clear()
        self.floats.clear()
        ints.flags.writeable = False
        floats.flags.writeable = False
        n = ints.shape[1]
        index_price = np.full(n, NAN)
        next_funding = np.zeros(n, dtype=np.int64)
        if self.marks:
            funding_rate = np.full(n, NAN)
            rows, index, rate, next_ns = zip(*self.marks, strict=True)
            index_price[list(rows)] = index
            funding_rate[list(rows)] = rate
            next_funding[list(rows)] = next_ns
            self.marks.clear()
            funding_rate.flags.writeable = False
        else:
            funding_rate = index_price  # both all NaN, and read-only: one array serves
        index_price.flags.writeable = False
        next_funding.flags.writeable = False
        return Ticks(
            ts=ints[0],
            ts_exchange=ints[1],
            seq=ints[2],
            kind=ints[3].astype(np.int8),
            buyer_maker=ints[4].astype(np.int8),
            bid=floats[0],
            bid_qty=floats[1],
            ask=floats[2],
            ask_qty=floats[3],
            price=floats[4],
            qty=floats[5],
            index_price=index_price,
            funding_rate=funding_rate,
            next_funding_ts=next_funding,
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
