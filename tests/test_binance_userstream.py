"""The user-data stream: decoding, listen key life cycle, reconnects and gaps."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import msgspec
import orjson
import pytest
import trio
import trio.testing

from engine.feeds._transport import TransportClosedError, TransportConnectError
from engine.testing import quiet_logger
from engine.venues.binance import (
    AccountUpdate,
    BinanceRestClient,
    Credentials,
    ListenKeyExpired,
    OrderTradeUpdate,
    RateLimiter,
    ServerClock,
    StreamConnected,
    StreamGap,
    UserStream,
    decode_user_event,
)

ORDER_UPDATE = {
    "e": "ORDER_TRADE_UPDATE",
    "E": 1700000000100,
    "T": 1700000000099,
    "o": {
        "s": "BTCUSDT", "c": "tabc-1", "S": "BUY", "o": "MARKET", "f": "GTC",
        "q": "0.010", "p": "0", "ap": "61800.5", "sp": "0", "x": "TRADE",
        "X": "PARTIALLY_FILLED", "i": 42, "l": "0.004", "z": "0.004", "L": "61800.5",
        "N": "USDT", "n": "0.0988", "T": 1700000000098, "t": 7, "b": "0", "a": "0",
        "m": False, "R": False, "wt": "CONTRACT_PRICE", "ot": "MARKET", "ps": "BOTH",
        "cp": False, "rp": "0", "pP": False, "si": 0, "ss": 0, "V": "NONE",
        "pm": "NONE", "gtd": 0,
    },
}  # fmt: skip
ACCOUNT = {
    "e": "ACCOUNT_UPDATE",
    "E": 1700000000101,
    "T": 1700000000099,
    "a": {
        "m": "ORDER",
        "B": [{"a": "USDT", "wb": "1000.5", "cw": "1000.5", "bc": "0"}],
        "P": [{"s": "BTCUSDT", "pa": "0.004", "ep": "61800.5", "cr": "0", "up": "0",
               "mt": "cross", "iw": "0", "ps": "BOTH"}],
    },
}  # fmt: skip


def test_decode_order_update_is_exact() -> None:
    event = decode_user_event(orjson.dumps(ORDER_UPDATE))
    assert isinstance(event, OrderTradeUpdate)
    o = event.order
    assert (o.symbol, o.client_order_id, o.status, o.execution_type) == (
        "BTCUSDT",
        "tabc-1",
        "PARTIALLY_FILLED",
        "TRADE",
    )
    assert o.last_qty == Decimal("0.004") and o.cum_qty == Decimal("0.004")
    assert o.last_price == Decimal("61800.5") and o.commission == Decimal("0.0988")
    assert (o.order_id, o.trade_id, o.trade_time_ms) == (42, 7, 1700000000098)


def test_decode_account_update_and_expiry() -> None:
    event = decode_user_event(orjson.dumps(ACCOUNT))
    assert isinstance(event, AccountUpdate)
    (pos,) = event.account.positions
    assert (pos.symbol, pos.position_amount, pos.entry_price) == (
        "BTCUSDT",
        Decimal("0.004"),
        Decimal("61800.5"),
    )
    assert event.account.balances[0].wallet_balance == Decimal("1000.5")
    expired = decode_user_event(b'{"e":"listenKeyExpired","E":1700000000000,"listenKey":"k"}')
    assert expired == ListenKeyExpired(event_time_ms=1700000000000)


def test_unknown_events_are_skipped_but_broken_known_ones_raise() -> None:
    assert decode_user_event(b'{"e":"MARGIN_CALL","E":1,"cw":"3"}') is None
    broken = dict(ORDER_UPDATE, o={"s": "BTCUSDT"})
    with pytest.raises(msgspec.ValidationError):
        decode_user_event(orjson.dumps(broken))
    with pytest.raises(msgspec.DecodeError):
        decode_user_event(b"not json")


class MemoryWs:
    def __init__(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self._receive = receive

    async def get_message(self) -> bytes:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise TransportClosedError("closed by the test") from None


class FakeUserData:
    """Listen key REST endpoints (httpx.MockTransport) and an in-memory websocket."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.keys = 0
        self.urls: list[str] = []
        self.socket: trio.MemorySendChannel[bytes] | None = None
        self.refuse_connects = 0
        self.keepalive_code: int | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.method)
        assert request.headers["X-MBX-APIKEY"] == "key"
        if request.method == "POST":
            self.keys += 1
            return httpx.Response(200, content=orjson.dumps({"listenKey": f"key{self.keys}"}))
        if request.method == "PUT" and self.keepalive_code is not None:
            body = {"code": self.keepalive_code, "msg": "This listenKey does not exist."}
            return httpx.Response(400, content=orjson.dumps(body))
        return httpx.Response(200, content=b"{}")

    @contextlib.asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[MemoryWs]:
        self.urls.append(url)
        if self.refuse_connects:
            self.refuse_connects -= 1
            raise TransportConnectError("refused by the test")
        send, receive = trio.open_memory_channel[bytes](100)
        self.socket = send
        yield MemoryWs(receive)

    def push(self, event: dict) -> None:
        assert self.socket is not None
        self.socket.send_nowait(orjson.dumps(event))

    def drop(self) -> None:
        assert self.socket is not None
        self.socket.close()


class Recorder:
    """The handler: records signals and says when the stream connected again."""

    def __init__(self) -> None:
        self.seen: list[object] = []
        self.reconnected = trio.Event()

    def __call__(self, signal: object) -> None:
        self.seen.append(signal)
        if sum(isinstance(s, StreamConnected) for s in self.seen) >= 2:
            self.reconnected.set()


def make_stream(fake: FakeUserData, **kwargs: object) -> UserStream:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
    client = BinanceRestClient(
        http,
        credentials=Credentials("key", "secret"),
        limiter=RateLimiter(),
        clock=ServerClock(),
        base_url="https://test.invalid",
    )
    return UserStream(
        client, "wss://test.invalid", log=quiet_logger(), connect=fake.connect, **kwargs
    )


async def test_events_flow_and_listen_key_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeUserData()
    stream = make_stream(fake)
    seen: list[object] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(stream.run, seen.append)
            fake.push(ORDER_UPDATE)
            fake.push({"e": "TRADE_LITE", "E": 1})
            fake.push(ACCOUNT)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert fake.urls == ["wss://test.invalid/ws/key1"]
    assert [type(s) for s in seen] == [StreamConnected, OrderTradeUpdate, AccountUpdate]
    assert fake.calls == ["POST", "DELETE"]  # created, then closed on exit


async def test_keepalive_runs_on_schedule(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeUserData()
    stream = make_stream(fake, keepalive_s=60.0)
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            await nursery.start(stream.run, lambda s: None)
            await trio.sleep(60 * 3 + 1)
            nursery.cancel_scope.cancel()
    assert fake.calls == ["POST", "PUT", "PUT", "PUT", "DELETE"]


async def test_drop_reconnects_and_reports_a_gap(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeUserData()
    stream = make_stream(fake)
    rec = Recorder()
    seen = rec.seen
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            await nursery.start(stream.run, rec)
            fake.refuse_connects = 2  # the next two attempts fail: backoff grows
            fake.drop()
            await rec.reconnected.wait()
            fake.push(ORDER_UPDATE)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    kinds = [type(s) for s in seen]
    assert kinds == [StreamConnected, StreamConnected, StreamGap, OrderTradeUpdate]
    gap = seen[2]
    assert isinstance(gap, StreamGap)
    assert "connection lost" in gap.reason and gap.down_s > 0
    assert len(fake.urls) == 4  # first, two refused, the one that held


async def test_expired_key_gets_a_new_one(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeUserData()
    stream = make_stream(fake)
    rec = Recorder()
    seen = rec.seen
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            await nursery.start(stream.run, rec)
            fake.push({"e": "listenKeyExpired", "E": 1700000000000, "listenKey": "key1"})
            await rec.reconnected.wait()
            nursery.cancel_scope.cancel()
    assert fake.urls == ["wss://test.invalid/ws/key1", "wss://test.invalid/ws/key2"]
    connected = [s for s in seen if isinstance(s, StreamConnected)]
    assert connected[1].listen_key_new
    gaps = [s for s in seen if isinstance(s, StreamGap)]
    assert len(gaps) == 1 and gaps[0].reason == "listenKeyExpired"


async def test_refused_keepalive_reconnects(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeUserData()
    fake.keepalive_code = -1125
    stream = make_stream(fake, keepalive_s=60.0)
    rec = Recorder()
    seen = rec.seen
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            await nursery.start(stream.run, rec)
            await rec.reconnected.wait()
            nursery.cancel_scope.cancel()
    assert fake.calls[:3] == ["POST", "PUT", "POST"]
    assert any(isinstance(s, StreamGap) and "keep-alive refused" in s.reason for s in seen)


async def test_first_connect_failure_propagates(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeUserData()
    fake.refuse_connects = 1
    stream = make_stream(fake)
    with trio.fail_after(10), pytest.raises(TransportConnectError):
        await stream.run(lambda s: None)
    assert fake.calls == ["POST", "DELETE"]  # the key made for it is closed
