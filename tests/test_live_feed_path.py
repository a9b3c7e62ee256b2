"""The live feed's way from a socket read to its step (``feeds.inline``): what waits
until after the step, and what the step's columns look like.

The read loop runs a read's step before it records the read's latency samples
(:meth:`LatencyStats.defer`): they are exactly :meth:`LatencyStats.record_many` of
each read, in order, once flushed. The feed runs against the loopback exchange
(:class:`StreamServer`) over a real websocket; every wait is for a count.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio

from engine._config import FeedsSection
from engine.feeds._capture import BookTicker
from engine.feeds._columns import Columns, append_message
from engine.feeds._live import LatencyStats, LiveFeed, market_data_client
from engine.messages import MarketBatch, MarketStep
from engine.testing import quiet_logger
from engine.venues.sim._recorded import load_recording
from engine.venues.sim._stream_server import ServerSettings, StreamServer

SAMPLE = Path(__file__).resolve().parents[1] / "data/sample/btcusdt_20240808_180s.gz"
SYMBOL = "BTCUSDT"
NOW_NS = 1_723_136_400_100 * 1_000_000


@pytest.mark.parametrize("batches", [[1] * 30, [3, 1, 9, 2, 15], [30], [2, 28], [13, 17]])
def test_deferred_latency_samples_are_record_many_of_each_read(batches: list[int]) -> None:
    rng = random.Random(sum(batches) * 7 + len(batches))
    now, later = LatencyStats(window=7), LatencyStats(window=7)
    for n in batches:
        ts = NOW_NS + rng.randrange(10**9)
        events = [NOW_NS // 1_000_000 - rng.randrange(-50, 5000) for _ in range(n)]
        now.record_many(ts, events)
        later.defer(ts, events)
        assert later.count == 0  # held until flushed
    later.defer(NOW_NS, [])  # nothing to hold
    assert later.summary() == now.summary()  # the summary takes what is held
    assert later.count == now.count and later.max_ms == now.max_ms
    assert later._next == now._next
    np.testing.assert_array_equal(later._ring, now._ring)


def test_deferred_latency_samples_wait_in_bounded_memory() -> None:
    stats = LatencyStats(window=100)
    hold = LatencyStats._HOLD
    for i in range(hold - 1):
        stats.defer(NOW_NS, [NOW_NS // 1_000_000 - i])
    assert stats.count == 0
    stats.defer(NOW_NS, [NOW_NS // 1_000_000])  # the bound: everything is recorded
    assert stats.count == hold
    stats.flush()
    assert stats.count == hold


@pytest.mark.parametrize("n", [1, 2, 5])
def test_no_column_of_a_step_can_be_made_writeable_but_kind_and_buyer_maker(n: int) -> None:
    cols = Columns()
    quote = BookTicker(symbol="X", bid=10.0, bid_qty=1.5, ask=10.5, ask_qty=2.0, event_time=7)
    for i in range(n):
        append_message(cols, 100 + i, i, quote)
    ticks = cols.take()
    assert ticks is not None
    for name in ("ts", "ts_exchange", "seq", "bid", "bid_qty", "ask", "ask_qty", "price", "qty"):
        col = getattr(ticks, name)
        assert col.shape == (n,) and col.flags.c_contiguous, name
        with pytest.raises(ValueError):
            col.flags.writeable = True
    assert list(ticks.ts) == [100 + i for i in range(n)] and list(ticks.seq) == list(range(n))
    assert ticks.kind.flags.writeable and ticks.buyer_maker.flags.writeable


async def test_the_read_loop_steps_before_it_records_the_reads_latency() -> None:
    recording = load_recording([SAMPLE])
    server = StreamServer(recording, ServerSettings(speed=20.0), quiet_logger())
    seen: list[tuple[int, int, int, bool]] = []  # (rows, latency count, messages, data set)
    enough = trio.Event()
    stop = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
            settings = FeedsSection(
                ws_url=f"ws://127.0.0.1:{ws_port}",
                rest_url=f"http://127.0.0.1:{rest_port}",
                streams=("bookTicker", "trade"),
                transport="wsproto",
            )
            market_tx, _market_rx = trio.open_memory_channel[MarketBatch](math.inf)
            step_tx, _step_rx = trio.open_memory_channel[MarketStep](math.inf)
            feed: LiveFeed

            async def inline(batches: dict[str, MarketBatch], market: MarketStep) -> None:
                rows = sum(len(t) for t in market.ticks.values())
                if rows:
                    stats = feed.stats
                    seen.append((rows, feed.latency.count, stats.messages, feed._data.is_set()))
                    if len(seen) >= 40:
                        enough.set()

            async with httpx.AsyncClient() as http:
                feed = LiveFeed(
                    settings=settings,
                    symbols=[SYMBOL],
                    step_ns=50_000_000,
                    symbol_channels={SYMBOL: market_tx},
                    execution_channel=step_tx,
                    rest=market_data_client(http, settings.rest_url),
                    log=quiet_logger(),
                    stop=stop,
                    inline=inline,
                )
                async with trio.open_nursery() as feeding:
                    feeding.start_soon(feed.run)
                    await enough.wait()
                    stop.set()  # the feed sends its final step and returns
            nursery.cancel_scope.cancel()
    # Every message of the sample carries an event time: one sample each. At each
    # step the read's own samples are still held; everything before it is recorded.
    for rows, count, messages, data_set in seen:
        assert count <= messages - rows
        assert not data_set  # the step loop was not woken for what the read loop steps
    assert feed.summary()["latency"]["count"] == feed.stats.messages
