"""A step's columns (:class:`engine.feeds._columns.Columns`): the values, dtypes, layout
and flags the kernels are compiled for, whatever the step's length, and columns a
consumer cannot write to (some are shared between steps of the same length)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.feeds._capture import BookTicker, MarkPrice, Trade
from engine.feeds._columns import Columns, append_message
from engine.messages import EventKind

QUOTE = BookTicker(symbol="X", bid=10.0, bid_qty=1.5, ask=10.5, ask_qty=2.0, event_time=7)
TRADE = Trade(symbol="X", price=10.2, qty=0.3, buyer_maker=True, event_time=8, trade_id=1)


def _step(cols: Columns, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        append_message(cols, 100 + i, i, QUOTE if i % 2 == 0 else TRADE)


@pytest.mark.parametrize("n", [1, 2, 3, 64, 65, 1000])
def test_columns_hold_the_events_with_the_kernels_dtypes_and_flags(n):
    cols = Columns()
    _step(cols, n)
    ticks = cols.take()
    assert ticks is not None and len(ticks) == n
    assert cols.take() is None  # the buffers were emptied
    assert list(ticks.ts) == [100 + i for i in range(n)]
    assert list(ticks.ts_exchange) == [(7 if i % 2 == 0 else 8) * 1_000_000 for i in range(n)]
    assert list(ticks.kind) == [
        int(EventKind.QUOTE if i % 2 == 0 else EventKind.TRADE) for i in range(n)
    ]
    assert list(ticks.buyer_maker) == [i % 2 for i in range(n)]
    assert ticks.bid[0] == 10.0 and ticks.ask_qty[0] == 2.0 and math.isnan(ticks.price[0])
    if n > 1:
        assert ticks.price[1] == 10.2 and ticks.qty[1] == 0.3 and math.isnan(ticks.bid[1])
    expected = {
        "ts": (np.int64, False),
        "kind": (np.int8, True),  # the strategy kernels are compiled for writeable int8
        "buyer_maker": (np.int8, True),
        "bid": (np.float64, False),
        "index_price": (np.float64, False),
        "funding_rate": (np.float64, False),
        "next_funding_ts": (np.int64, False),
        "book_row": (np.int64, False),
    }
    for name, (dtype, writeable) in expected.items():
        col = getattr(ticks, name)
        assert col.dtype == dtype and col.shape == (n,), name
        assert col.flags.c_contiguous and col.flags.writeable is writeable, name
    assert np.isnan(ticks.index_price).all() and np.isnan(ticks.funding_rate).all()
    assert (ticks.next_funding_ts == 0).all() and (ticks.book_row == -1).all()


def test_columns_shared_between_steps_cannot_be_made_writeable():
    cols = Columns()
    _step(cols, 2)
    first = cols.take()
    _step(cols, 2, start=2)
    second = cols.take()
    assert first is not None and second is not None
    assert list(second.ts) == [102, 103]
    for name in ("index_price", "next_funding_ts", "book_row"):
        with pytest.raises(ValueError):
            getattr(second, name).flags.writeable = True
        with pytest.raises(ValueError):
            getattr(second, name)[0] = 1
    assert np.isnan(first.index_price).all() and (first.book_row == -1).all()


def test_a_mark_row_fills_its_own_columns_and_leaves_later_steps_blank():
    cols = Columns()
    _step(cols, 1)
    mark = MarkPrice(
        symbol="X", mark=10.1, index=10.05, funding_rate=0.0001, next_funding_time=5, event_time=9
    )
    append_message(cols, 200, 9, mark)
    ticks = cols.take()
    assert ticks is not None
    assert math.isnan(ticks.index_price[0]) and ticks.index_price[1] == 10.05
    assert ticks.funding_rate[1] == 0.0001 and ticks.next_funding_ts[1] == 5_000_000
    assert ticks.price[1] == 10.1 and ticks.kind[1] == int(EventKind.MARK)
    _step(cols, 2)
    later = cols.take()
    assert later is not None and np.isnan(later.funding_rate).all()
    assert (later.next_funding_ts == 0).all()
