"""The live feed applies a read's depth diffs to its local book after the read's step
(when no step carries book columns), and ends every read with the book the eager
path builds.

Two feeds get the same reads: one runs (``feeds.inline``, ``book_levels`` 0: its read
loop passes diffs with ``BookSync.on_diff(defer=True)`` and applies their levels after
the step), the other takes each read through the eager path (``_on_messages`` as
before: every diff applied as it is decoded). Both fetch their snapshots from the
same REST replies. After every read the two books (levels, ids, sync state, counters),
the resyncs and the step's columns must be equal, and during each step the running
feed must still hold the read's connecting diffs unapplied. The diffs within a read
rewrite the same levels, so applying them out of order or dropping one changes the
book. Every wait is for a condition (a read handed over, a snapshot loaded).

Then ``BookSync``'s deferral alone: levels that cannot be applied leave the book
needing a snapshot (fail closed: its ids are past them), and a snapshot or an eager
diff applies what waits first.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import trio
import trio.testing

from engine._config import FeedsSection
from engine.book import ApplyResult, Side, SyncState
from engine.feeds._live import LiveFeed, market_data_client
from engine.messages import MarketBatch, MarketStep
from engine.testing import quiet_logger

SYMBOL = "BTCUSDT"
STREAM = "btcusdt@depth@0ms"
T0 = 1_723_136_400_000


def _diff(
    first: int, last: int, prev: int, bids: Sequence[Any] = (), asks: Sequence[Any] = ()
) -> bytes:
    data = {
        "e": "depthUpdate",
        "E": T0 + last,
        "T": T0 + last,
        "s": SYMBOL,
        "U": first,
        "u": last,
        "pu": prev,
        "b": list(bids),
        "a": list(asks),
    }
    return orjson.dumps({"stream": STREAM, "data": data})


def _quote(update_id: int, bid: float) -> bytes:
    data = {
        "e": "bookTicker",
        "u": update_id,
        "E": T0 + update_id,
        "T": T0 + update_id,
        "s": SYMBOL,
        "b": repr(bid),
        "B": "1.5",
        "a": repr(bid + 0.1),
        "A": "2.5",
    }
    return orjson.dumps({"stream": "btcusdt@bookTicker", "data": data})


SNAPSHOTS = [
    orjson.dumps(
        {
            "lastUpdateId": 97,
            "E": T0 + 97,
            "T": T0 + 97,
            "bids": [["100.0", "5"], ["99.9", "2"]],
            "asks": [["100.1", "3"], ["100.2", "4"]],
        }
    ),
    orjson.dumps(
        {
            "lastUpdateId": 116,
            "E": T0 + 116,
            "T": T0 + 116,
            "bids": [["100.0", "1"], ["99.8", "2"], ["99.7", "4"]],
            "asks": [["100.1", "6"], ["100.5", "1"]],
        }
    ),
]

# (snapshots loaded before this read, the read's messages, diffs it leaves unapplied
# during its step)
READS: list[tuple[int, list[bytes], int]] = [
    # Before any snapshot: buffered (then stale against the first snapshot).
    (0, [_diff(91, 95, 90, bids=[["100.0", "1"]]), _quote(1, 100.0)], 0),
    # The bridge, then two that continue it, each rewriting the 100.0 bid.
    (
        1,
        [
            _diff(96, 99, 95, bids=[["100.0", "6"]], asks=[["100.1", "0"]]),
            _quote(2, 100.0),
            _diff(100, 102, 99, bids=[["100.0", "7"], ["99.8", "1"]]),
            _diff(103, 104, 102, bids=[["100.0", "0"]], asks=[["100.2", "9"]]),
        ],
        3,
    ),
    # A repeat (dropped by update id), one that continues the chain, a quote.
    (
        1,
        [
            _diff(103, 104, 102, bids=[["100.0", "3"]]),
            _diff(105, 107, 104, asks=[["100.3", "2"], ["100.2", "8"]]),
            _quote(3, 99.9),
        ],
        1,
    ),
    # One applied, then a gap (resync), then one buffered for the next snapshot.
    (
        1,
        [
            _diff(108, 110, 107, bids=[["99.9", "3"]], asks=[["100.2", "1"]]),
            _diff(112, 115, 111, bids=[["99.9", "0"]]),
            _diff(116, 118, 115, bids=[["99.7", "5"]]),
        ],
        1,
    ),
    # After the second snapshot (which the buffered diff bridged).
    (
        2,
        [
            _diff(119, 120, 118, bids=[["99.7", "0"]], asks=[["100.4", "1"]]),
            _quote(4, 99.8),
            _diff(121, 123, 120, asks=[["100.4", "2"], ["100.5", "0"]]),
        ],
        2,
    ),
]


def _rest(released: list[trio.Event]) -> httpx.AsyncClient:
    """A REST root whose ``n``-th depth reply is ``SNAPSHOTS[n]``, once ``released[n]``."""
    served = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal served
        assert request.url.path == "/fapi/v1/depth"
        n = served
        served += 1
        await released[n].wait()
        return httpx.Response(200, content=SNAPSHOTS[n])

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def _book_state(feed: LiveFeed) -> dict[str, Any]:
    state = feed.state[SYMBOL]
    sync = state.book
    assert sync.deferred == 0  # nothing left behind after the read's step
    book = sync.book
    return {
        "bids": dict(book.depth(Side.BID)),
        "asks": dict(book.depth(Side.ASK)),
        "best": (book.best_bid(), book.best_ask()),
        "last_update_id": book.last_update_id,
        "tx_time": book.tx_time,
        "synced": book.synced,
        "sync_state": sync.state,
        "results": dict(sync.stats.results),
        "buffered": sync.buffered,
        "resyncs": state.resyncs,
        "book_gaps": state.book_gaps,
        "duplicates": state.duplicates,
        "last_depth_u": state.last_depth_u,
    }


def _assert_same_ticks(got: Any, want: Any) -> None:
    assert (got is None) == (want is None)
    if got is None:
        return
    for name in ("ts", "ts_exchange", "seq", "kind", "bid", "ask", "price", "book_row"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


async def test_deferred_depth_diffs_leave_the_book_the_eager_path_builds() -> None:
    settings = FeedsSection(
        ws_url="ws://feed.invalid",
        rest_url="http://rest.invalid",
        streams=("bookTicker", "depth@0ms"),
        stale_ms=3_600_000,
        min_step_ms=0.0,
    )
    released = [trio.Event() for _ in SNAPSHOTS]
    eager_released = [trio.Event() for _ in SNAPSHOTS]
    stop = trio.Event()
    done = trio.Event()
    during_step: list[int] = []  # the running feed's unapplied diffs in each step
    stepped: list[Any] = []  # each step's ticks of the symbol
    compared: list[int] = []
    feed: LiveFeed
    eager: LiveFeed

    async def inline(batches: dict[str, MarketBatch], market: MarketStep) -> None:
        if batches[SYMBOL].ticks is not None:
            during_step.append(feed.state[SYMBOL].book.deferred)
            stepped.append(batches[SYMBOL].ticks)

    def new_feed(rest_http: httpx.AsyncClient, **kw: Any) -> LiveFeed:
        market_tx, _ = trio.open_memory_channel[MarketBatch](math.inf)
        step_tx, _ = trio.open_memory_channel[MarketStep](math.inf)
        return LiveFeed(
            settings=settings,
            symbols=[SYMBOL],
            step_ns=3_600 * 10**9,
            symbol_channels={SYMBOL: market_tx},
            execution_channel=step_tx,
            rest=market_data_client(rest_http, settings.rest_url),
            log=quiet_logger(),
            stop=stop,
            **kw,
        )

    async def snapshots_loaded(n: int) -> None:
        for events in (released, eager_released):
            for event in events[:n]:
                event.set()
        while feed.state[SYMBOL].resyncs < n or eager.state[SYMBOL].resyncs < n:
            await trio.testing.wait_all_tasks_blocked()

    class Scripted:
        """Hands the feed one scripted read per call, the eager feed the same read."""

        def __init__(self) -> None:
            self.i = 0
            self.received_ns = 0

        async def get_message(self) -> bytes:  # pragma: no cover - get_messages is used
            raise AssertionError("the feed takes whole reads")

        async def get_messages(self) -> list[bytes]:
            if self.i:  # the previous read's step is done: compare the two feeds
                _assert_same_ticks(stepped[-1], eager._take(SYMBOL))
                assert _book_state(feed) == _book_state(eager), f"after read {self.i - 1}"
                compared.append(self.i - 1)
            if self.i == len(READS):
                done.set()
                await trio.sleep_forever()
            loaded, texts, _ = READS[self.i]
            await snapshots_loaded(loaded)
            self.received_ns = (T0 + 1000 + self.i) * 1_000_000
            eager._on_messages(texts, self.received_ns)  # the eager path, as before
            self.i += 1
            return list(texts)

    @contextlib.asynccontextmanager
    async def connect(url: str) -> AsyncIterator[Scripted]:
        yield Scripted()

    with trio.fail_after(30):
        async with _rest(released) as http, _rest(eager_released) as eager_http:
            feed = new_feed(http, connect=connect, inline=inline)
            eager = new_feed(eager_http)
            eager._resync_requests, eager._resync_receive = trio.open_memory_channel[str](math.inf)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(eager._resync_worker)
                eager._request_resync(SYMBOL)
                nursery.start_soon(feed.run)
                await done.wait()
                nursery.cancel_scope.cancel()

    assert compared == list(range(len(READS)))
    assert during_step == [unapplied for _, _, unapplied in READS]
    final = _book_state(feed)
    assert final["resyncs"] == 2 and final["book_gaps"] == 1 and final["duplicates"] == 1
    assert final["sync_state"] is SyncState.SYNCED
    assert final["results"][ApplyResult.APPLIED] == 8


def _sync() -> Any:
    from engine.book import BookSync, OrderBook, decode_snapshot

    sync = BookSync(OrderBook(symbol=SYMBOL))
    sync.on_snapshot(decode_snapshot(SNAPSHOTS[0]))
    return sync


def _depth(raw: bytes) -> Any:
    from engine.feeds._capture import _ENVELOPE

    return _ENVELOPE.decode(raw).data


def test_deferred_levels_that_cannot_be_applied_leave_the_book_needing_a_snapshot() -> None:
    from engine.book import BookDecodeError, BookPriceError

    for bad, error in (([["100.0001", "1"]], BookPriceError), ([["100.0"]], BookDecodeError)):
        sync = _sync()
        ok = _depth(_diff(96, 99, 95, bids=[["100.0", "6"]]))
        broken = _depth(_diff(100, 102, 99, bids=bad))
        assert sync.on_diff(ok, defer=True) is ApplyResult.APPLIED
        assert sync.on_diff(broken, defer=True) is ApplyResult.APPLIED  # ids only, so far
        assert sync.deferred == 2 and sync.state is SyncState.SYNCED
        with pytest.raises(error):
            sync.apply_deferred()
        # Fail closed: the ids moved past levels that are not in the book.
        assert sync.deferred == 0 and sync.needs_snapshot
        assert not sync.book.synced
        assert sync.book.depth(Side.BID)[1000] == 6.0  # the diff before it went in


def test_a_snapshot_or_an_eager_diff_applies_the_deferred_levels_first() -> None:
    from engine.book import decode_snapshot

    sync = _sync()
    sync.on_diff(_depth(_diff(96, 99, 95, bids=[["100.0", "6"]])), defer=True)
    sync.on_diff(_depth(_diff(100, 102, 99, bids=[["100.0", "7"]])))  # eager: in order
    assert sync.deferred == 0 and sync.book.depth(Side.BID)[1000] == 7.0
    sync.on_diff(_depth(_diff(103, 104, 102, asks=[["100.1", "0"]])), defer=True)
    sync.on_diff(_depth(_diff(106, 107, 105)), defer=True)  # a gap: buffered from here
    assert sync.needs_snapshot and sync.deferred == 1
    replayed = sync.on_snapshot(decode_snapshot(SNAPSHOTS[1]))
    assert sync.deferred == 0
    assert [r for _d, r in replayed] == [ApplyResult.STALE_DROPPED]
    assert dict(sync.book.depth(Side.ASK)) == {1001: 6.0, 1005: 1.0}  # the snapshot's


@pytest.mark.parametrize("defer", [False, True], ids=["eager", "deferred"])
async def test_malformed_depth_levels_are_counted_and_resynced_not_fatal(defer: bool) -> None:
    """Bad levels in a depth diff (a price off the grid, a level without its
    quantity) are bad input, not the end of the feed: counted (``malformed``, the
    symbol's ``book_errors``), logged, and the book resynced from a snapshot; the
    messages around them still pass."""
    settings = FeedsSection(
        ws_url="ws://feed.invalid",
        rest_url="http://rest.invalid",
        streams=("bookTicker", "depth@0ms"),
        stale_ms=3_600_000,
    )
    market_tx, _ = trio.open_memory_channel[MarketBatch](math.inf)
    step_tx, _ = trio.open_memory_channel[MarketStep](math.inf)
    released = [trio.Event() for _ in SNAPSHOTS]
    async with _rest(released) as http:
        feed = LiveFeed(
            settings=settings,
            symbols=[SYMBOL],
            step_ns=3_600 * 10**9,
            symbol_channels={SYMBOL: market_tx},
            execution_channel=step_tx,
            rest=market_data_client(http, settings.rest_url),
            log=quiet_logger(),
            stop=trio.Event(),
        )
        feed._resync_requests, feed._resync_receive = trio.open_memory_channel[str](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed._resync_worker)
            feed._request_resync(SYMBOL)
            released[0].set()
            while feed.state[SYMBOL].resyncs < 1:
                await trio.testing.wait_all_tasks_blocked()
            state = feed.state[SYMBOL]
            for i, bad in enumerate(([["100.0001", "1"]], [["100.0"]])):
                first = (96, 115)[i]  # each bridges the snapshot loaded before it
                texts = [
                    _diff(first, first + 3, first - 1, bids=bad),
                    _quote(10 + i, 100.0),
                ]
                feed._on_messages(texts, (T0 + 2000 + i) * 1_000_000, defer_books=defer)
                feed._apply_deferred_books()  # the read loop's after-step work
                assert feed.stats.malformed == i + 1
                assert state.book_errors == i + 1
                # Resynced either way: a bad price leaves the book unsynced; levels that
                # do not decode leave it behind the stream (eager: at its last ids).
                assert state.resyncing
                assert feed._take(SYMBOL) is not None  # the quote passed
                if i == 0:  # the resync brings the book back
                    released[1].set()
                    while state.resyncs < 2:
                        await trio.testing.wait_all_tasks_blocked()
                    assert state.book.book.synced
            nursery.cancel_scope.cancel()
