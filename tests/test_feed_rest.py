"""The live feed's REST calls (book snapshots, trade backfill) on the process's one limiter.

The feed runs for real on an in-memory websocket (its ``connect`` seam) and an
``httpx.MockTransport`` exchange, under ``autojump_clock``: Retry-After, bans and
the backfill's patience are Trio sleeps. A second client on the same limiter
plays the venue's order path.
"""

from __future__ import annotations

import contextlib
import gc
import tracemalloc
import urllib.parse
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing

from engine._config import FeedsSection
from engine.feeds._live import LiveFeed, TradeIds, market_data_client
from engine.feeds._transport import TransportClosedError
from engine.messages import MarketBatch, MarketStep, Side
from engine.testing import quiet_logger
from engine.venues.binance import (
    BinanceRestClient,
    Credentials,
    IpBannedError,
    OrderTemplate,
    RateLimiter,
    ServerClock,
)

SYMBOL = "BTCUSDT"
BASE = "https://fake.invalid"
SNAPSHOT = {
    "lastUpdateId": 100,
    "E": 1,
    "T": 1,
    "bids": [["60000.0", "1.000"]],
    "asks": [["60000.1", "1.000"]],
}
BTC = OrderTemplate(
    symbol=SYMBOL,
    tick_size=Decimal("0.1"),
    step_size=Decimal("0.001"),
    market_step_size=Decimal("0.001"),
)


def reply(status: int, body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body), headers=headers)


def too_many(retry_after: int) -> httpx.Response:
    return reply(
        429, {"code": -1003, "msg": "Too many requests."}, **{"Retry-After": str(retry_after)}
    )


def agg_trade(trade_id: int) -> bytes:
    return orjson.dumps(
        {"e": "aggTrade", "E": 0, "s": SYMBOL, "a": trade_id, "p": "60000.0", "q": "0.010",
         "T": 0, "m": False}
    )  # fmt: skip


class FakeExchange:
    """REST answers (with queued faults per path) and one in-memory websocket."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str, dict[str, str]]] = []
        self.faults: dict[str, list[httpx.Response]] = {}
        self.trades: list[int] = []  # aggregate trade ids the REST history knows
        self.ws_send, self._ws_receive = trio.open_memory_channel[bytes](1 << 20)

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        query = dict(urllib.parse.parse_qsl(request.url.query.decode()))
        self.sent.append((trio.current_time(), path, query))
        queued = self.faults.get(path)
        if queued:
            return queued.pop(0)
        if path == "/fapi/v1/depth":
            return reply(200, SNAPSHOT)
        if path == "/fapi/v1/aggTrades":
            start, limit = int(query["fromId"]), int(query["limit"])
            rows = [orjson.loads(agg_trade(i)) for i in self.trades if i >= start][:limit]
            return reply(200, [{k: r[k] for k in ("a", "p", "q", "T", "m")} for r in rows])
        if path == "/fapi/v1/order":
            return reply(200, {"orderId": 1, "status": "NEW"})
        return reply(404, {"code": -1, "msg": f"no route {path}"})

    def times(self, path: str) -> list[float]:
        return [t for t, p, _q in self.sent if p == path]

    @contextlib.asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Any]:
        receive = self._ws_receive

        class Ws:
            async def get_message(self) -> bytes:
                try:
                    return await receive.receive()
                except trio.EndOfChannel:
                    raise TransportClosedError("closed") from None

        yield Ws()


def shared_limiter() -> tuple[RateLimiter, ServerClock]:
    clock = ServerClock(wall=lambda: 1_700_000_000.0)
    return RateLimiter(clock=clock.now), clock


def order_client(fake: FakeExchange, limiter: RateLimiter, clock: ServerClock) -> BinanceRestClient:
    """The venue's side of the one limiter."""
    return BinanceRestClient(
        httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)),
        credentials=Credentials("k", "s"), limiter=limiter, clock=clock, base_url=BASE,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def running_feed(
    fake: FakeExchange,
    limiter: RateLimiter,
    clock: ServerClock,
    record: Callable[[int, bytes], None] | None = None,
) -> AsyncIterator[LiveFeed]:
    settings = FeedsSection(
        ws_url="ws://fake.invalid", rest_url=BASE, streams=("aggTrade", "depth@100ms"),
        stale_ms=86_400_000,
    )  # fmt: skip
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
    market_tx, market_rx = trio.open_memory_channel[MarketBatch](4)
    step_tx, step_rx = trio.open_memory_channel[MarketStep](4)
    feed = LiveFeed(
        settings=settings,
        symbols=[SYMBOL],
        step_ns=250_000_000,
        symbol_channels={SYMBOL: market_tx},
        execution_channel=step_tx,
        rest=market_data_client(http, BASE, limiter=limiter, clock=clock),
        log=quiet_logger(),
        stop=trio.Event(),
        record=record,
        connect=fake.connect,
    )

    async def drain(channel: trio.MemoryReceiveChannel[Any]) -> None:
        async for _ in channel:
            pass

    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, market_rx)
            nursery.start_soon(drain, step_rx)
            await nursery.start(feed.run)
            yield feed
            nursery.cancel_scope.cancel()


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for a condition on the feed's counters (virtual time: no wall-clock guess)."""
    while not predicate():  # noqa: ASYNC110 - counters, not events, are what the feed offers
        await trio.sleep(0.01)


async def test_snapshot_429_waits_for_retry_after_and_holds_the_orders_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeExchange()
    fake.faults["/fapi/v1/depth"] = [too_many(30)]
    limiter, clock = shared_limiter()
    orders = order_client(fake, limiter, clock)
    async with running_feed(fake, limiter, clock) as feed:
        await until(lambda: len(fake.times("/fapi/v1/depth")) == 1)
        refused_at = fake.times("/fapi/v1/depth")[0]
        # An order decided just after the feed's 429 waits for the same Retry-After.
        await orders.new_order(BTC.prepare(Side.BUY, 0.01, client_order_id="tfeed-1"))
        await until(lambda: feed.state[SYMBOL].resyncs == 1)
    (order_at,) = fake.times("/fapi/v1/order")
    assert order_at >= refused_at + 30
    depth = fake.times("/fapi/v1/depth")
    assert len(depth) == 2 and depth[1] >= refused_at + 30  # not every second, into a ban
    assert fake.sent[-1][2] == {"symbol": SYMBOL, "limit": "1000"}
    assert limiter.used()["X-MBX-USED-WEIGHT-1M"] >= 40  # two snapshots at weight 20


async def test_a_ban_on_an_order_stops_the_snapshots_until_it_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeExchange()
    limiter, clock = shared_limiter()
    orders = order_client(fake, limiter, clock)
    fake.faults["/fapi/v1/order"] = [
        reply(
            418,
            {"code": -1003, "msg": "Way too many requests; IP banned."},
            **{"Retry-After": "120"},
        )
    ]
    with pytest.raises(IpBannedError):
        await orders.new_order(BTC.prepare(Side.BUY, 0.01, client_order_id="tban-1"))
    async with running_feed(fake, limiter, clock) as feed:
        await until(lambda: feed.state[SYMBOL].resyncs == 1)
    (first,) = fake.times("/fapi/v1/depth")  # the one that succeeded, after the ban
    assert first >= 120


async def test_backfill_waits_out_a_429_and_delivers_every_trade_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeExchange()
    fake.trades = [1, 2, 3, 4, 5]
    fake.faults["/fapi/v1/aggTrades"] = [too_many(3)]
    limiter, clock = shared_limiter()
    passed: list[int] = []

    def record(_ts: int, raw: bytes) -> None:
        data = orjson.loads(raw)
        data = data.get("data", data)
        if data.get("e") == "aggTrade":
            passed.append(data["a"])

    async with running_feed(fake, limiter, clock, record) as feed:
        fake.ws_send.send_nowait(agg_trade(1))
        fake.ws_send.send_nowait(agg_trade(5))  # 2..4 missed: fetched over REST
        await until(lambda: feed.state[SYMBOL].trades == 5)
        summary = feed.summary()["symbols"][SYMBOL]
    first, second = fake.times("/fapi/v1/aggTrades")
    assert second >= first + 3
    assert passed == [1, 2, 3, 4, 5]
    assert summary["backfilled"] == 3
    assert summary["trade_id_gaps"] == summary["trade_id_duplicates"] == 0


async def test_backfill_rate_limited_past_its_patience_lets_the_newer_trades_go(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeExchange()
    fake.trades = [1, 2, 3, 4, 5]
    fake.faults["/fapi/v1/aggTrades"] = [too_many(600)]
    limiter, clock = shared_limiter()
    async with running_feed(fake, limiter, clock) as feed:
        fake.ws_send.send_nowait(agg_trade(1))
        fake.ws_send.send_nowait(agg_trade(5))
        await until(lambda: feed.state[SYMBOL].trades == 2)
        held_for = trio.current_time()
        summary = feed.summary()["symbols"][SYMBOL]
    assert held_for < 15  # the patience (10 s), not Retry-After (600 s)
    assert len(fake.times("/fapi/v1/aggTrades")) == 1  # nothing sent during the block
    assert summary["backfilled"] == 0 and summary["trade_id_gaps"] == 1


async def test_trade_ids_are_remembered_in_constant_memory(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeExchange()
    limiter, clock = shared_limiter()
    per_round = 12_000
    sizes: list[int] = []
    async with running_feed(fake, limiter, clock) as feed:
        await until(lambda: feed.state[SYMBOL].resyncs == 1)
        for rnd in range(3):
            for trade_id in range(rnd * per_round + 1, (rnd + 1) * per_round + 1):
                fake.ws_send.send_nowait(agg_trade(trade_id))
                fake.ws_send.send_nowait(agg_trade(trade_id))  # and a duplicate of each
            await until(lambda n=(rnd + 1) * per_round: feed.state[SYMBOL].trades == n)
            steps = feed.stats.steps
            await until(lambda s=steps: feed.stats.steps >= s + 2)  # the columns went out
            gc.collect()
            if not tracemalloc.is_tracing():
                tracemalloc.start()  # from here on: what later rounds leave behind
            sizes.append(tracemalloc.get_traced_memory()[0])
        tracemalloc.stop()
        summary = feed.summary()["symbols"][SYMBOL]
    assert summary["trades"] == 3 * per_round and summary["duplicates_dropped"] == 3 * per_round
    assert summary["trade_id_gaps"] == summary["trade_id_duplicates"] == 0
    # Round 2 leaves Trio's lazily pruned deadline heap at its working size (~100 kB);
    # round 3 adds nothing. A list of every id would grow by 12,000 * 36 bytes (432 kB).
    assert sizes[2] - sizes[1] < 250_000, sizes


def test_trade_ids_tell_duplicates_late_and_too_old_apart() -> None:
    ids = TradeIds(window=8)
    assert ids.verdict(10) == "new"
    for trade_id in (10, 11, 13):
        ids.mark(trade_id)
    assert ids.high == 13
    assert [ids.verdict(i) for i in (14, 13, 12, 11, 10, 6, 5)] == [
        "new", "duplicate", "late", "duplicate", "duplicate", "late", "too_old",
    ]  # fmt: skip
    ids.mark(12)  # a late one, once passed, is a duplicate after
    assert ids.verdict(12) == "duplicate"
    ids.mark(100)  # a jump past the window forgets everything below
    assert ids.verdict(99) == "late" and ids.verdict(13) == "too_old"
    assert ids.seen.bit_length() <= 8  # bounded whatever the ids
