"""The REST client on httpx.MockTransport, and the server-time clock."""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing

from engine.messages import Side
from engine.venues.binance import (
    API_KEY_HEADER,
    BinanceRestClient,
    Credentials,
    IpBannedError,
    OrderRejectedError,
    OrderTemplate,
    OrderType,
    RateLimitedError,
    RateLimiter,
    SendDeadlineError,
    ServerClock,
    ServiceUnavailableError,
    TimestampSkewError,
    UnknownOrderStateError,
)

SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
CREDS = Credentials("test-key", SECRET)
BTC = OrderTemplate(
    symbol="BTCUSDT", tick_size=Decimal("0.01"),
    step_size=Decimal("0.001"),
    market_step_size=Decimal("0.001"),
)  # fmt: skip
WALL = 1_700_000_000.0


Handler = Callable[[httpx.Request], Any]


def make_client(
    handler: Handler, **kwargs: Any
) -> tuple[BinanceRestClient, RateLimiter, ServerClock]:
    clock = ServerClock(wall=lambda: WALL)
    limiter = RateLimiter(clock=trio.current_time)
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = BinanceRestClient(
        http, credentials=CREDS, limiter=limiter, clock=clock,
        base_url="https://test.invalid", **kwargs,
    )  # fmt: skip
    return client, limiter, clock


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body), headers=headers)


def split_signed(query: str) -> tuple[str, str]:
    payload, _, signature = query.rpartition("&signature=")
    return payload, signature


async def test_new_order_sends_exactly_the_signed_query(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(
            200,
            {"orderId": 42, "status": "NEW"},
            {"X-MBX-ORDER-COUNT-10S": "7", "X-MBX-USED-WEIGHT-1M": "33"},
        )

    client, limiter, clock = make_client(handler)
    order = BTC.prepare(
        Side.BUY, 0.01, client_order_id="ta.b:c/d_e-1", order_type=OrderType.LIMIT, price=61800.2
    )
    with trio.fail_after(5):
        result = await client.new_order(order)
    assert result == {"orderId": 42, "status": "NEW"}
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == "/fapi/v1/order"
    assert request.headers[API_KEY_HEADER] == "test-key"
    query = request.url.query.decode()
    expected = CREDS.sign_query(order.params, timestamp_ms=clock.now_ms(), recv_window_ms=5000)
    assert query == expected
    payload, signature = split_signed(query)
    assert payload == (
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.010&price=61800.20"
        f"&newClientOrderId=ta.b:c/d_e-1&recvWindow=5000&timestamp={clock.now_ms()}"
    )
    assert signature == CREDS.sign(payload)
    assert limiter.used()["X-MBX-ORDER-COUNT-10S"] == 7  # header sync
    assert limiter.used()["X-MBX-USED-WEIGHT-1M"] == 33


async def test_timestamp_skew_resyncs_once_and_resends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    orders: list[str] = []
    time_calls = 0
    server_ahead_ms = 10_000

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal time_calls
        if request.url.path == "/fapi/v1/time":
            time_calls += 1
            await trio.sleep(0.05)
            now = int((WALL + trio.current_time()) * 1000) + server_ahead_ms
            await trio.sleep(0.05)
            return json_response(200, {"serverTime": now})
        orders.append(request.url.query.decode())
        if len(orders) == 1:
            return json_response(
                400,
                {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."},
            )
        return json_response(200, {"orderId": 1})

    client, _, clock = make_client(handler)
    order = BTC.prepare(Side.SELL, 0.01, client_order_id="tx-1", reduce_only=True)
    with trio.fail_after(5):
        assert await client.new_order(order) == {"orderId": 1}
    assert time_calls == 1
    first = int(split_signed(orders[0])[0].rpartition("timestamp=")[2])
    second = int(split_signed(orders[1])[0].rpartition("timestamp=")[2])
    assert second - first == pytest.approx(server_ahead_ms, abs=150)
    assert clock.offset_s - WALL == pytest.approx(server_ahead_ms / 1000, abs=1e-3)
    assert clock.rtt_s == pytest.approx(0.1)

    orders.clear()
    server_ahead_ms = 0

    def always_skewed(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fapi/v1/time":
            return json_response(200, {"serverTime": 0})
        orders.append(request.url.query.decode())
        return json_response(400, {"code": -1021, "msg": "Timestamp ahead"})

    client, _, _ = make_client(always_skewed)
    with trio.fail_after(5), pytest.raises(TimestampSkewError):
        await client.new_order(order)
    assert len(orders) == 2  # one resend, no more


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            json_response(
                503,
                {
                    "code": -1000,
                    "msg": "Unknown error, please check your request or try again later.",
                },
            ),
            UnknownOrderStateError,
        ),
        (json_response(502, {}), UnknownOrderStateError),
        (
            json_response(503, {"code": -1000, "msg": "Service Unavailable."}),
            ServiceUnavailableError,
        ),
        (json_response(400, {"code": -2019, "msg": "Margin is insufficient."}), OrderRejectedError),
    ],
)
async def test_error_responses_are_translated(
    autojump_clock: trio.testing.MockClock, response: httpx.Response, expected: type
) -> None:
    client, _, _ = make_client(lambda request: response)
    with trio.fail_after(5), pytest.raises(expected):
        await client.new_order(BTC.prepare(Side.BUY, 1, client_order_id="t-1"))


async def test_timeout_and_transport_failures_are_unknown_or_unavailable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await trio.sleep(10)
        return json_response(200, {})

    client, _, _ = make_client(slow, timeout_s=2.0)
    with trio.fail_after(5), pytest.raises(UnknownOrderStateError) as info:
        await client.new_order(BTC.prepare(Side.BUY, 1, client_order_id="t-1"))
    assert isinstance(info.value.__cause__, trio.TooSlowError)
    assert trio.current_time() == pytest.approx(2.0)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client, _, _ = make_client(refused)
    with pytest.raises(ServiceUnavailableError) as unavailable:
        await client.server_time()
    assert isinstance(unavailable.value.__cause__, httpx.ConnectError)

    def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("reset", request=request)

    client, _, _ = make_client(reset)
    with pytest.raises(UnknownOrderStateError):
        await client.new_order(BTC.prepare(Side.BUY, 1, client_order_id="t-1"))


async def test_429_and_418_reach_the_limiter(autojump_clock: trio.testing.MockClock) -> None:
    client, limiter, _ = make_client(
        lambda r: json_response(
            429, {"code": -1003, "msg": "Too many requests"}, {"Retry-After": "30"}
        )
    )
    with pytest.raises(RateLimitedError):
        await client.server_time()
    assert limiter.blocked_until == pytest.approx(trio.current_time() + 30)

    until_ms = int((WALL + trio.current_time() + 300) * 1000)
    client, limiter, _ = make_client(
        lambda r: json_response(
            418, {"code": -1003, "msg": f"Way too many requests; IP banned until {until_ms}."}
        )
    )
    with pytest.raises(IpBannedError):
        await client.server_time()
    assert limiter.banned_until == pytest.approx(trio.current_time() + 300, abs=0.01)
    with pytest.raises(IpBannedError):
        await client.exchange_info()  # refused locally: nothing more is sent


async def test_order_held_by_the_limiter_past_its_deadline_is_not_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return json_response(200, {"orderId": 1, "status": "NEW"})

    client, limiter, _ = make_client(handler)
    limiter.on_rate_limited(30.0)  # nothing may be sent for 30 s
    order = BTC.prepare(Side.BUY, 0.01, client_order_id="tdeadline-1")
    start = trio.current_time()
    with pytest.raises(SendDeadlineError):
        await client.new_order(order, send_by=start + 5.0)
    assert trio.current_time() == pytest.approx(start + 5.0)
    assert sent == [] and limiter.waiting == 0
    await client.new_order(order, send_by=trio.current_time() + 60.0)  # waits, then goes
    assert sent == ["/fapi/v1/order"]


async def test_endpoints_methods_and_parameters(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[tuple[str, str, str, bool]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        query = request.url.query.decode()
        payload, signature = split_signed(query)
        if signature:
            assert signature == CREDS.sign(payload)
            query = payload.rpartition("&recvWindow=")[0]
        seen.append((request.method, request.url.path, query, API_KEY_HEADER in request.headers))
        if request.url.path == "/fapi/v1/listenKey" and request.method == "POST":
            return json_response(200, {"listenKey": "abc"})
        if request.url.path == "/fapi/v1/time":
            return json_response(200, {"serverTime": 123})
        return json_response(200, [] if request.method == "GET" else {})

    client, _, _ = make_client(handler)
    with trio.fail_after(5):
        assert await client.server_time() == 123
        await client.exchange_info()
        await client.cancel_order("BTCUSDT", client_order_id="t-1")
        await client.cancel_order("BTCUSDT", order_id=99)
        await client.cancel_all("BTCUSDT")
        await client.query_order("BTCUSDT", client_order_id="t-1")
        await client.open_orders()
        await client.open_orders("ETHUSDT")
        await client.position_risk()
        assert await client.create_listen_key() == "abc"
        await client.keepalive_listen_key()
        await client.close_listen_key()
    assert seen == [
        ("GET", "/fapi/v1/time", "", False),
        ("GET", "/fapi/v1/exchangeInfo", "", False),
        ("DELETE", "/fapi/v1/order", "symbol=BTCUSDT&origClientOrderId=t-1", True),
        ("DELETE", "/fapi/v1/order", "symbol=BTCUSDT&orderId=99", True),
        ("DELETE", "/fapi/v1/allOpenOrders", "symbol=BTCUSDT", True),
        ("GET", "/fapi/v1/order", "symbol=BTCUSDT&origClientOrderId=t-1", True),
        ("GET", "/fapi/v1/openOrders", "", True),
        ("GET", "/fapi/v1/openOrders", "symbol=ETHUSDT", True),
        ("GET", "/fapi/v2/positionRisk", "", True),
        ("POST", "/fapi/v1/listenKey", "", True),
        ("PUT", "/fapi/v1/listenKey", "", True),
        ("DELETE", "/fapi/v1/listenKey", "", True),
    ]


async def test_clock_keeps_the_lowest_rtt_sample_and_runs_in_the_background(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rtts = iter([0.4, 0.1, 0.3, 0.2, 0.2, 0.2])
    calls = 0

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        half = next(rtts, 0.2) / 2
        await trio.sleep(half)
        server = int((trio.current_time() + 5000.0) * 1000)  # server = monotonic + 5000 s
        await trio.sleep(half)
        return server

    clock = ServerClock(wall=lambda: 0.0)
    assert clock.is_stale(1.0)
    await clock.sync(fetch, samples=3)
    assert clock.rtt_s == pytest.approx(0.1)
    assert clock.offset_s == pytest.approx(5000.0, abs=1e-3)
    assert clock.now_ms() == pytest.approx((trio.current_time() + 5000.0) * 1000, abs=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(clock.run, fetch, interval_s=60.0))
        assert calls == 6
        await trio.sleep(61.0)
        assert calls == 9
        assert not clock.is_stale(60.0)
        nursery.cancel_scope.cancel()
    generation = clock.generation
    await clock.resync_after_skew(fetch, generation - 1)  # someone already re-synced
    assert calls == 9
    await clock.resync_after_skew(fetch, generation)
    assert calls == 10


async def test_market_data_endpoints_weigh_what_binance_documents(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[str, str, bool]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(
            (request.url.path, request.url.query.decode(), API_KEY_HEADER in request.headers)
        )
        if request.url.path == "/fapi/v1/depth":
            return json_response(200, {"lastUpdateId": 1, "bids": [], "asks": []})
        return json_response(200, [])

    client, limiter, _ = make_client(handler)

    async def weight_of(call: Any) -> int:
        before = limiter.used()["X-MBX-USED-WEIGHT-1M"]
        await call
        return limiter.used()["X-MBX-USED-WEIGHT-1M"] - before

    with trio.fail_after(5):
        weights = {
            limit: await weight_of(client.depth("BTCUSDT", limit))
            for limit in (5, 10, 20, 50, 100, 500, 1000)
        }
        assert weights == {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
        body = await client.depth("BTCUSDT", 5)
        assert orjson.loads(body)["lastUpdateId"] == 1  # the raw body, for the book decoder
        assert await weight_of(client.agg_trades("BTCUSDT", from_id=7)) == 20
        assert await weight_of(client.historical_trades("BTCUSDT", from_id=7, limit=1000)) == 20
    with pytest.raises(ValueError, match="depth limit"):
        await client.depth("BTCUSDT", 200)
    assert seen[-2:] == [
        ("/fapi/v1/aggTrades", "symbol=BTCUSDT&fromId=7&limit=1000", False),
        # USD-M serves 500 at most; the key goes along (MARKET_DATA security).
        ("/fapi/v1/historicalTrades", "symbol=BTCUSDT&fromId=7&limit=500", True),
    ]


async def test_one_limiter_a_429_or_418_on_market_data_holds_orders_and_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The feed's client and the venue's share one limiter: what one is told, both obey."""
    sent: list[tuple[float, str]] = []
    replies: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append((trio.current_time(), request.url.path))
        if replies:
            return replies.pop(0)
        if request.url.path == "/fapi/v1/depth":
            return json_response(200, {"lastUpdateId": 1, "bids": [], "asks": []})
        return json_response(200, {"orderId": 1, "status": "NEW"})

    orders, limiter, clock = make_client(handler)
    feed = BinanceRestClient(
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        credentials=None, limiter=limiter, clock=clock, base_url="https://test.invalid",
    )  # fmt: skip
    order = BTC.prepare(Side.BUY, 0.01, client_order_id="tshared-1")
    with trio.fail_after(600):
        replies.append(
            json_response(429, {"code": -1003, "msg": "Too many"}, {"Retry-After": "30"})
        )
        with pytest.raises(RateLimitedError):
            await feed.depth("BTCUSDT", 1000)
        await orders.new_order(order)  # waits for the feed's Retry-After
        assert sent[-1] == (pytest.approx(30.0, abs=0.01), "/fapi/v1/order")

        replies.append(json_response(418, {"code": -1003, "msg": "banned"}, {"Retry-After": "120"}))
        with pytest.raises(IpBannedError):
            await orders.new_order(order)
        with pytest.raises(IpBannedError):
            await feed.depth("BTCUSDT", 1000)  # refused here: nothing sent during the ban
        assert [path for _t, path in sent].count("/fapi/v1/depth") == 1
        await trio.sleep(limiter.banned_for())
        await feed.depth("BTCUSDT", 1000)
    assert sent[-1] == (pytest.approx(150.0, abs=0.01), "/fapi/v1/depth")
