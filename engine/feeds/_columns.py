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

    __slots__ = ("floats", "ints")

    def __init__(self) -> None:
        self.ints: list[int] = []
        self.floats: list[float] = []

    def take(self) -> Ticks | None:
        if not self.ints:
            return None
        ints = np.array(self.ints, dtype=np.int64).reshape(-1, N_INT).T.copy()
        floats = np.array(self.floats, dtype=np.float64).reshape(-1, N_FLOAT).T.copy()
        self.ints.clear()
        self.floats.clear()
        ints.flags.writeable = False
        floats.flags.writeable = False
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
        cols.ints.extend((ts, ex, seq, MARK, 0))
        cols.floats.extend((NAN, NAN, NAN, NAN, msg.mark, NAN))
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
