"""The loopback exchange's trading protocol over real HTTP and websockets.

The server plays the bundled BTCUSDT sample with ``autoplay=False``: a test
moves the market with ``server.advance()``, so the book an order meets and the
trades that fill a resting order are the same on every run. Requests are raw
httpx (protocol checks) or our own ``BinanceRestClient``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest
import trio
import trio_websocket

from engine.messages import Side
from engine.testing import quiet_logger
from engine.venues.binance import (
    BinanceRestClient,
    Credentials,
    OrderRejectedError,
    RateLimiter,
    ServerClock,
    UnknownOrderStateError,
    templates_from_exchange_info,
)
from engine.venues.sim._exchange_api import sign, signature_payload
from engine.venues.sim._exchange_faults import RequestFault
from engine.venues.sim._exchange_limits import LimitSettings
from engine.venues.sim._recorded import load_recording
from engine.venues.sim._stream_server import (
    Fault,
    ServerSettings,
    StreamServer,
    TradingSettings,
    split_faults,
)
from engine.venues.sim._trading import AccountSettings

SAMPLE = Path(__file__).resolve().parents[1] / "data/sample/btcusdt_20240808_180s.gz"
KEY = "simkey" + "A" * 58
SECRET = "simsecret" + "b" * 55
QUIET = quiet_logger()


@pytest.fixture(scope="module")
def recording():
    return load_recording([SAMPLE])


class Exchange:
    """A running loopback exchange and a raw signed-request helper."""

    def __init__(self, server: StreamServer, ws_port: int, http: httpx.AsyncClient) -> None:
        self.server = server
        self.ws_port = ws_port
        self.http = http

    def ready(self) -> None:
        while not self.server.book_ready("BTCUSDT"):
            self.server.advance(100)

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str = KEY,
        secret: str = SECRET,
        timestamp: int | None = None,
        **params: str,
    ) -> httpx.Response:
        params = {k: str(v) for k, v in params.items()}
        params["timestamp"] = str(self.server.exchange_ms() if timestamp is None else timestamp)
        query = urllib.parse.urlencode(params)
        query += "&signature=" + sign(secret, query)
        headers = {"X-MBX-APIKEY": key}
        if method in ("GET", "DELETE"):
            return await self.http.request(method, f"{path}?{query}", headers=headers)
        headers["content-type"] = "application/x-www-form-urlencoded"
        return await self.http.request(method, path, content=query, headers=headers)

    async def listen_key(self) -> str:
        r = await self.http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY})
        assert r.status_code == 200
        return r.json()["listenKey"]

    def best(self, side: str) -> Decimal:
        return next(iter(self.server.levels("BTCUSDT", side)))[0]


@pytest.fixture
async def exchange(recording, request):
    trading = getattr(request, "param", TradingSettings())
    server = StreamServer(
        recording, ServerSettings(autoplay=False), QUIET, trading=trading, api_keys={KEY: SECRET}
    )
    async with trio.open_nursery() as nursery:
        ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest_port}") as http:
            with trio.fail_after(30):
                yield Exchange(server, ws_port, http)
        nursery.cancel_scope.cancel()


def error(r: httpx.Response) -> tuple[int, int]:
    return r.status_code, r.json()["code"]


# -- signing and auth -----------------------------------------------------------------


def test_binance_documented_signature_vector():
    secret = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
    payload = (
        "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000"
        "&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943"
    )
    expected = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
    assert sign(secret, payload) == expected
    # The same string whether it came as the query, as the body, or signature included.
    assert signature_payload(payload + "&signature=" + expected, "") == payload
    assert signature_payload("", payload + "&signature=" + expected) == payload
    # Binance's mixed example: query and body concatenated with no separator.
    query, body = (
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC",
        ("quantity=1&price=9000&recvWindow=5000&timestamp=1591702613943"),
    )
    assert signature_payload(query, body) == query + body


async def test_signed_requests_are_accepted_in_query_body_or_both(exchange):
    ex = exchange
    assert (await ex.call("GET", "/fapi/v2/balance")).status_code == 200
    assert (await ex.call("POST", "/fapi/v1/leverage", symbol="BTCUSDT", leverage=7)).json() == {
        "leverage": 7,
        "maxNotionalValue": "1000000000",
        "symbol": "BTCUSDT",
    }
    query = "symbol=BTCUSDT&leverage=9"
    body = f"timestamp={ex.server.exchange_ms()}&recvWindow=5000"
    signature = sign(SECRET, query + body)
    r = await ex.http.post(
        f"/fapi/v1/leverage?{query}",
        content=f"{body}&signature={signature}",
        headers={"X-MBX-APIKEY": KEY, "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and ex.server.engine.leverage("BTCUSDT") == 9


async def test_auth_and_timestamp_errors(exchange):
    ex = exchange
    r = await ex.http.get("/fapi/v2/balance?timestamp=1&signature=00")
    assert error(r) == (401, -2014)
    assert error(await ex.call("GET", "/fapi/v2/balance", key="nobody")) == (401, -2015)
    r = await ex.call("GET", "/fapi/v2/balance", secret="wrong")
    assert error(r) == (400, -1022)
    assert r.json()["msg"] == "Signature for this request is not valid."
    now = ex.server.exchange_ms()
    r = await ex.call("GET", "/fapi/v2/balance", timestamp=now - 6000)
    assert error(r) == (400, -1021)
    assert r.json()["msg"] == "Timestamp for this request is outside of the recvWindow."
    assert (await ex.call("GET", "/fapi/v2/balance", timestamp=now - 4000)).status_code == 200
    r = await ex.call("GET", "/fapi/v2/balance", timestamp=now - 20_000, recvWindow=30_000)
    assert r.status_code == 200
    assert error(await ex.call("GET", "/fapi/v2/balance", timestamp=now + 2000)) == (400, -1021)
    assert error(await ex.call("GET", "/fapi/v2/balance", recvWindow=60_001))[1] == -1131
    unsigned = "symbol=BTCUSDT"
    r = await ex.http.get(
        f"/fapi/v1/openOrders?{unsigned}&signature={sign(SECRET, unsigned)}",
        headers={"X-MBX-APIKEY": KEY},
    )
    assert error(r) == (400, -1102) and "'timestamp'" in r.json()["msg"]


# -- orders over HTTP -------------------------------------------------------------------


async def test_order_parameter_errors_use_binance_codes(exchange):
    ex = exchange
    ex.ready()
    bid = ex.best("bids")

    async def new(**params):
        return await ex.call("POST", "/fapi/v1/order", symbol="BTCUSDT", side="BUY", **params)

    assert error(await new(type="LIMIT", timeInForce="GTC", price=bid)) == (400, -1102)
    assert error(await new(type="LIMIT", quantity="0.0015", timeInForce="GTC", price=bid))[1] == (
        -1111
    )
    r = await new(type="LIMIT", quantity="0.002", timeInForce="GTC", price=f"{bid}5")
    assert error(r)[1] == -1111  # more decimals than pricePrecision
    r = await new(type="LIMIT", quantity="0.001", timeInForce="GTC", price=bid)
    assert error(r) == (400, -4164)
    assert "notional must be no smaller than 100" in r.json()["msg"]
    r = await new(
        type="LIMIT", quantity="0.01", timeInForce="GTC", price=bid, newClientOrderId="bad id!"
    )
    assert error(r)[1] == -4015
    # Conditional types moved to the algo order API: /fapi/v1/order refuses them.
    r = await new(type="STOP_MARKET", quantity="0.01", stopPrice=bid)
    assert error(r) == (400, -4120) and "Algo Order API" in r.json()["msg"]
    assert error(await new(type="ICEBERG", quantity="0.01"))[1] == -1116
    assert error(await new(type="LIMIT", quantity="0.01", timeInForce="GTD", price=bid))[1] == -1115
    r = await new(type="LIMIT", quantity="0.01", timeInForce="GTC", price=str(bid * 2))
    assert error(r)[1] == -4016  # above the PERCENT_PRICE cap
    assert error(await ex.call("GET", "/fapi/v1/order", symbol="BTCUSDT", orderId=1))[1] == -2013
    r = await ex.call("DELETE", "/fapi/v1/order", symbol="BTCUSDT", origClientOrderId="none")
    assert error(r)[1] == -2011
    assert error(await ex.call("GET", "/fapi/v1/order", symbol="BTCUSDT"))[1] == -1102
    assert error(await ex.call("GET", "/fapi/v1/openOrders", symbol="NOPE"))[1] == -1121
    assert ex.server.engine.orders() == []


async def test_market_and_limit_orders_fill_against_the_replayed_book(exchange):
    ex = exchange
    ex.ready()
    asks = list(ex.server.levels("BTCUSDT", "asks"))[:2]
    qty = asks[0][1] + Decimal("0.001")  # the whole first level and a bit of the second
    r = await ex.call(
        "POST",
        "/fapi/v1/order",
        symbol="BTCUSDT",
        side="BUY",
        type="MARKET",
        quantity=qty,
        newClientOrderId="mkt-1",
        newOrderRespType="RESULT",
    )
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "FILLED" and body["executedQty"] == f"{qty:.3f}"
    fills = ex.server.engine.fills()
    assert [(f.price, f.qty) for f in fills] == [asks[0], (asks[1][0], Decimal("0.001"))]
    trades = (await ex.call("GET", "/fapi/v1/userTrades", symbol="BTCUSDT")).json()
    assert [t["price"] for t in trades] == [f"{asks[0][0]:.2f}", f"{asks[1][0]:.2f}"]
    assert all(t["buyer"] and not t["maker"] for t in trades)
    risk = (await ex.call("GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")).json()
    assert Decimal(risk[0]["positionAmt"]) == qty

    # ACK shows the order as accepted; the query shows where it ended.
    price = ex.best("bids") - Decimal(50)
    r = await ex.call(
        "POST",
        "/fapi/v1/order",
        symbol="BTCUSDT",
        side="BUY",
        type="LIMIT",
        quantity="0.01",
        price=price,
        timeInForce="GTC",
        newClientOrderId="rest-1",
    )
    assert r.json()["status"] == "NEW"
    open_orders = (await ex.call("GET", "/fapi/v1/openOrders", symbol="BTCUSDT")).json()
    assert [o["clientOrderId"] for o in open_orders] == ["rest-1"]
    one = await ex.call("GET", "/fapi/v1/openOrder", symbol="BTCUSDT", origClientOrderId="rest-1")
    assert one.json()["price"] == f"{price:.2f}"
    r = await ex.call("DELETE", "/fapi/v1/order", symbol="BTCUSDT", origClientOrderId="rest-1")
    assert r.json()["status"] == "CANCELED"
    assert (await ex.call("GET", "/fapi/v1/openOrders")).json() == []
    every = (await ex.call("GET", "/fapi/v1/allOrders", symbol="BTCUSDT")).json()
    assert [(o["clientOrderId"], o["status"]) for o in every] == [
        ("mkt-1", "FILLED"),
        ("rest-1", "CANCELED"),
    ]


@pytest.mark.parametrize(
    "exchange", [TradingSettings(account=AccountSettings(balance=1_000_000))], indirect=True
)
async def test_resting_order_is_filled_by_replayed_trades(exchange):
    ex = exchange
    ex.ready()
    messages = ex.server.recording.messages
    start = ex.server._index
    # The lowest trade price in the next part of the capture: a buy resting there
    # must fill once playback reaches it (as a maker, at its own price).
    trades = [
        orjson.loads(m.data) for m in messages[start : start + 3000] if m.stream.endswith("@trade")
    ]
    low = min(Decimal(t["p"]) for t in trades)
    at_low = sum(Decimal(t["q"]) for t in trades if Decimal(t["p"]) <= low)
    qty = max(Decimal("0.002"), at_low + Decimal("0.5"))  # more than prints there: partial
    r = await ex.call(
        "POST",
        "/fapi/v1/order",
        symbol="BTCUSDT",
        side="BUY",
        type="LIMIT",
        quantity=qty,
        price=low,
        timeInForce="GTX",
        newClientOrderId="maker-1",
    )
    assert r.status_code == 200, r.text
    ex.server.advance(3000)
    order = ex.server.order_by_client_id("maker-1")
    assert order.status == "PARTIALLY_FILLED" and order.executed_qty == at_low
    fills = ex.server.engine.fills()
    assert fills and all(f.maker and f.price == low for f in fills)
    r = await ex.call("GET", "/fapi/v1/order", symbol="BTCUSDT", origClientOrderId="maker-1")
    assert r.json()["status"] == "PARTIALLY_FILLED" and r.json()["executedQty"] == f"{at_low:.3f}"


async def test_cancel_all_and_the_weight_and_order_count_headers(exchange):
    ex = exchange
    ex.ready()
    price = ex.best("bids") - Decimal(100)
    for n in range(3):
        r = await ex.call(
            "POST",
            "/fapi/v1/order",
            symbol="BTCUSDT",
            side="BUY",
            type="LIMIT",
            quantity="0.01",
            price=price,
            timeInForce="GTC",
        )
        assert r.headers["X-MBX-ORDER-COUNT-10S"] == str(n + 1)
        assert r.headers["X-MBX-ORDER-COUNT-1M"] == str(n + 1)
        assert r.headers["X-MBX-USED-WEIGHT-1M"] == "0"  # new orders weigh 0 on the IP
    r = await ex.call("GET", "/fapi/v1/openOrders")
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "40" and len(r.json()) == 3
    r = await ex.call("DELETE", "/fapi/v1/allOpenOrders", symbol="BTCUSDT")
    assert r.json() == {"code": 200, "msg": "The operation of cancel all open order is done."}
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "41"
    assert ex.server.engine.open_orders() == []
    r = await ex.http.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 1000})
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "61"


@pytest.mark.parametrize(
    "exchange",
    [TradingSettings(limits=LimitSettings(weight_per_minute=5, ban_after=2, ban_s=60))],
    indirect=True,
)
async def test_hammering_after_429_gets_the_ip_banned(exchange):
    ex = exchange
    for n in range(5):
        r = await ex.http.get("/fapi/v1/time")
        assert r.status_code == 200 and r.headers["X-MBX-USED-WEIGHT-1M"] == str(n + 1)
    r = await ex.http.get("/fapi/v1/time")
    assert error(r) == (429, -1003) and int(r.headers["Retry-After"]) > 0
    assert error(await ex.http.get("/fapi/v1/ping")) == (429, -1003)  # strike 1
    r = await ex.http.get("/fapi/v1/ping")  # strike 2: banned
    assert error(r) == (418, -1003) and "banned until" in r.json()["msg"]
    assert 0 < int(r.headers["Retry-After"]) <= 60
    r = await ex.call("GET", "/fapi/v2/balance")  # banned for everything
    assert r.status_code == 418


# -- user-data stream -----------------------------------------------------------------


@asynccontextmanager
async def user_stream(
    ex: Exchange, resource: str
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A websocket client that closes its own TCP stream even when the server
    ended the connection (trio-websocket's client does not then)."""
    async with trio.open_nursery() as nursery:
        stream = await trio.open_tcp_stream("127.0.0.1", ex.ws_port)
        try:
            ws = await trio_websocket.wrap_client_stream(nursery, stream, "127.0.0.1", resource)
            try:
                yield ws
            finally:
                await ws.aclose()
        finally:
            await stream.aclose()


async def connected(ex: Exchange, n: int) -> None:
    """Wait until the server has registered ``n`` user-data connections."""
    await ex.server.wait_user_connections(n)


async def rejected_status(ex: Exchange, resource: str) -> int:
    """The HTTP status of a refused websocket handshake."""
    stream = await trio.open_tcp_stream("127.0.0.1", ex.ws_port)
    status = 0
    try:
        async with trio.open_nursery() as nursery:
            await trio_websocket.wrap_client_stream(nursery, stream, "127.0.0.1", resource)
    except* trio_websocket.ConnectionRejected as group:
        status = group.exceptions[0].status_code
    finally:
        await stream.aclose()
    return status


async def _events(ws: trio_websocket.WebSocketConnection, n: int) -> list[dict]:
    return [orjson.loads(await ws.get_message()) for _ in range(n)]


async def test_user_stream_sends_order_and_account_updates(exchange):
    ex = exchange
    ex.ready()
    key = await ex.listen_key()
    assert len(key) == 64 and await ex.listen_key() == key  # the active key, extended
    async with (
        user_stream(ex, f"/ws/{key}") as ws,
        user_stream(ex, f"/stream?streams={key}") as ws2,
    ):
        await connected(ex, 2)
        await ex.call(
            "POST",
            "/fapi/v1/order",
            symbol="BTCUSDT",
            side="SELL",
            type="MARKET",
            quantity="0.01",
            newClientOrderId="ws-1",
        )
        n = len(ex.server.user_events)
        got = await _events(ws, n)
        assert got == ex.server.user_events
        new, trade, account = got[0], got[1], got[2]
        assert new["e"] == "ORDER_TRADE_UPDATE" and (new["o"]["x"], new["o"]["X"]) == ("NEW", "NEW")
        o = trade["o"]
        assert (o["s"], o["c"], o["S"], o["o"], o["x"]) == (
            "BTCUSDT",
            "ws-1",
            "SELL",
            "MARKET",
            "TRADE",
        )
        assert o["ps"] == "BOTH" and o["N"] == "USDT" and o["m"] is False and o["t"] > 0
        for field in (
            "f",
            "q",
            "p",
            "ap",
            "sp",
            "X",
            "i",
            "l",
            "z",
            "L",
            "n",
            "T",
            "b",
            "a",
            "R",
            "rp",
        ):
            assert field in o
        assert account["e"] == "ACCOUNT_UPDATE" and account["a"]["m"] == "ORDER"
        assert account["a"]["B"][0]["a"] == "USDT"
        position = account["a"]["P"][0]
        assert position["s"] == "BTCUSDT" and position["ps"] == "BOTH"
        wrapped = await _events(ws2, n)
        assert [w["stream"] for w in wrapped] == [key] * n
        assert [w["data"] for w in wrapped] == got
        assert got[-1]["o"]["X"] == "FILLED" if got[-1]["e"] == "ORDER_TRADE_UPDATE" else True

        ex.server.expire_listen_key()
        expired = orjson.loads(await ws.get_message())
        assert expired["e"] == "listenKeyExpired" and expired["listenKey"] == key
    r = await ex.http.put("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY})
    assert error(r) == (400, -1125)
    assert await rejected_status(ex, f"/ws/{key}") == 400


async def test_listen_key_keepalive_and_close(exchange):
    ex = exchange
    key = await ex.listen_key()
    r = await ex.http.put("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY})
    assert r.json() == {"listenKey": key}
    assert error(await ex.http.put("/fapi/v1/listenKey")) == (401, -2014)
    async with user_stream(ex, f"/ws/{key}") as ws:
        r = await ex.http.delete("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY})
        assert r.status_code == 200 and r.json() == {}
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()


# -- faults -----------------------------------------------------------------------------


async def _market(ex: Exchange, cid: str) -> httpx.Response:
    return await ex.call(
        "POST",
        "/fapi/v1/order",
        symbol="BTCUSDT",
        side="BUY",
        type="MARKET",
        quantity="0.01",
        newClientOrderId=cid,
    )


async def test_503_executed_and_503_lost_look_the_same_to_the_client(exchange):
    ex = exchange
    ex.ready()
    ex.server.arm_fault("503-executed")
    ex.server.arm_fault(RequestFault(kind="503-lost"))
    executed, lost = await _market(ex, "u-1"), await _market(ex, "u-2")
    assert executed.status_code == lost.status_code == 503
    assert (
        executed.json()
        == lost.json()
        == {
            "code": -1000,
            "msg": "Unknown error, please check your request or try again later.",
        }
    )
    # Only a query tells them apart.
    r1 = await ex.call("GET", "/fapi/v1/order", symbol="BTCUSDT", origClientOrderId="u-1")
    assert r1.json()["status"] == "FILLED"
    r2 = await ex.call("GET", "/fapi/v1/order", symbol="BTCUSDT", origClientOrderId="u-2")
    assert error(r2) == (400, -2013)
    assert (await _market(ex, "u-3")).status_code == 200  # one occurrence each
    assert ex.server.api.faults.fired == [
        ("503-executed", "POST", "/fapi/v1/order"),
        ("503-lost", "POST", "/fapi/v1/order"),
    ]


async def test_refusal_faults(exchange):
    ex = exchange
    ex.ready()
    for spec, expected in (
        ("-2019", (400, -2019)),
        ("-4164", (400, -4164)),
        ("-1021", (400, -1021)),
        ("503-unavailable", (503, -1000)),
    ):
        ex.server.arm_fault(spec)
        assert error(await _market(ex, "f-" + spec.strip("-"))) == expected, spec
    assert ex.server.engine.orders() == []
    ex.server.arm_fault("418:300")
    r = await ex.http.get("/fapi/v1/time")
    assert error(r) == (418, -1003) and r.headers["Retry-After"] == "1"
    await trio.sleep(0.35)  # the ban (300 ms) is over
    assert (await ex.http.get("/fapi/v1/time")).status_code == 200
    ex.server.arm_fault("429:7@GET/fapi/v1/depth")
    r = await ex.http.get("/fapi/v1/depth", params={"symbol": "BTCUSDT"})
    assert error(r) == (429, -1003) and r.headers["Retry-After"] == "7"


async def test_slow_fault_holds_the_reply_back(exchange):
    ex = exchange
    ex.ready()
    ex.server.arm_fault("slow:600")
    with trio.move_on_after(0.3) as scope:
        await _market(ex, "slow-1")
    assert scope.cancelled_caught  # no reply within half the delay...
    order = ex.server.order_by_client_id("slow-1")
    assert order.status == "FILLED"  # ...but the order was executed at once


async def test_drop_user_stream_loses_events_that_rest_still_shows(exchange):
    ex = exchange
    ex.ready()
    key = await ex.listen_key()
    async with user_stream(ex, f"/ws/{key}") as ws:
        await connected(ex, 1)
        ex.server.arm_fault("drop_user_stream")
        assert (await _market(ex, "gone-1")).status_code == 200
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()  # closed with nothing sent
    r = await ex.call("GET", "/fapi/v1/order", symbol="BTCUSDT", origClientOrderId="gone-1")
    assert r.json()["status"] == "FILLED"
    async with user_stream(ex, f"/ws/{key}") as ws:
        await connected(ex, 1)
        await _market(ex, "back-1")
        first = orjson.loads(await ws.get_message())
        assert first["o"]["c"] == "back-1"  # nothing of gone-1 is replayed


def test_fault_specs_parse():
    timed, requests = split_faults(
        ["drop@5", "drop_user_stream@2.5", "503-executed*2", "slow:1500@GET/fapi/v1/depth", "418"]
    )
    assert timed == (Fault(kind="drop", at_s=5.0), Fault(kind="drop_user_stream", at_s=2.5))
    assert requests == (
        RequestFault(kind="503-executed", count=2),
        RequestFault(kind="slow", arg=1500.0, method="GET", path="/fapi/v1/depth"),
        RequestFault(kind="418"),
    )
    assert requests[2].value == 2000.0
    with pytest.raises(ValueError):
        split_faults(["explode*2"])


# -- our own client -------------------------------------------------------------------


@pytest.mark.parametrize(
    "exchange", [TradingSettings(account=AccountSettings(balance=1000, leverage=1))], indirect=True
)
async def test_binance_rest_client_against_the_loopback(exchange):
    ex = exchange
    ex.ready()
    info = (await ex.http.get("/fapi/v1/exchangeInfo")).json()
    template = templates_from_exchange_info(info)["BTCUSDT"]
    clock = ServerClock()
    client = BinanceRestClient(
        ex.http,
        credentials=Credentials(KEY, SECRET),
        limiter=RateLimiter(clock=trio.current_time),
        clock=clock,
        base_url=str(ex.http.base_url),
    )
    await client.sync_time()
    order = template.prepare(Side.BUY, "0.01", client_order_id="own-1")
    placed = await client.new_order(order)
    assert placed["clientOrderId"] == "own-1"
    assert (await client.query_order("BTCUSDT", client_order_id="own-1"))["status"] == "FILLED"
    positions = await client.position_risk("BTCUSDT")
    assert Decimal(positions[0]["positionAmt"]) == Decimal("0.01")
    too_big = template.prepare(Side.BUY, "1", client_order_id="own-2")  # 1x: ~61,800 > 1,000
    with pytest.raises(OrderRejectedError) as exc:
        await client.new_order(too_big)
    assert exc.value.code == -2019
    ex.server.arm_fault("503-executed")
    with pytest.raises(UnknownOrderStateError):
        await client.new_order(template.prepare(Side.SELL, "0.01", client_order_id="own-3"))
    found = await client.query_order("BTCUSDT", client_order_id="own-3")
    assert found["status"] == "FILLED"
    assert ex.server.engine.position("BTCUSDT").amount == 0


async def test_depth_diffs_after_a_taker_fill_update_the_taken_levels(exchange):
    """Regression: a depth diff played while taken liquidity was remembered
    crashed the server (``orjson.loads`` given a ``msgspec.Raw``)."""
    ex = exchange
    ex.ready()
    best = ex.best("asks")
    r = await ex.call(
        "POST", "/fapi/v1/order", symbol="BTCUSDT", side="BUY", type="MARKET",
        quantity="0.002", newClientOrderId="mkt-depth-1",
    )  # fmt: skip
    assert r.status_code == 200
    assert ex.server.engine.has_taken
    played = 0
    while ex.server.engine.has_taken and played < 5000:
        played += ex.server.advance(50)  # depth diffs rewrite the levels taken
    assert not ex.server.engine.has_taken  # the diff that rewrote `best` was applied
    assert ex.server.book_ready("BTCUSDT") and best > 0


def test_sim_exchange_cli_times_and_start_options():
    from engine._cli import build_sim_exchange_parser

    parser = build_sim_exchange_parser()
    args = parser.parse_args(["--data", str(SAMPLE)])
    assert (args.original_times, args.start, args.host) == (False, "client", "127.0.0.1")
    args = parser.parse_args(["--data", str(SAMPLE), "--original-times", "--start", "now"])
    assert (args.original_times, args.start) == (True, "now")
    settings = ServerSettings(original_times=args.original_times, start=args.start)
    assert settings.start == "now"
    with pytest.raises(ValueError):
        ServerSettings(start="later")


def test_the_exchange_plays_microsecond_stamps_at_their_recorded_pace() -> None:
    """The 2023 captures stamp receive times in microseconds: 8 min 34 s, not 0.51 s."""
    from engine.venues.sim._recorded import load_recording

    history = Path(__file__).resolve().parents[2] / "shared/data/external/hftbacktest_history"
    files = [history / f"usdm_btcusdt_2023040{d}.dat.gz" for d in (4, 5)]
    if not all(f.exists() for f in files):
        pytest.skip("../shared/data/external/hftbacktest_history is not here")
    messages = load_recording(files).messages
    span_s = (messages[-1].ts - messages[0].ts) / 1e9
    assert 513 < span_s < 515
