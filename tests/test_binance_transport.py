"""The order transport seam: httpx and lean (h11 on raw sockets) send the same bytes of
query and read the same answers, against a real HTTP server on the loopback interface."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import h11
import httpx
import orjson
import pytest
import trio

from engine.messages import Side
from engine.venues.binance import (
    BinanceRestClient,
    Credentials,
    HttpxTransport,
    IpBannedError,
    LeanTransport,
    OrderRejectedError,
    OrderTemplate,
    RateLimitedError,
    RateLimiter,
    ServerClock,
    ServiceUnavailableError,
    UnknownOrderStateError,
)

CREDS = Credentials("test-key", "test-secret")
BTC = OrderTemplate(
    symbol="BTCUSDT", tick_size=Decimal("0.1"), step_size=Decimal("0.001"),
    market_step_size=Decimal("0.001"),
)  # fmt: skip
ACK = orjson.dumps({"orderId": 7, "status": "NEW", "clientOrderId": "tx-1"})


class Server:
    """An HTTP/1.1 server (h11) that records requests and answers as told.

    ``script`` holds one action per request (default ``ok``): ``ok``; ``close``
    (answer, then close: ``Connection: close``); ``hang`` (never answer);
    ``drop`` (answer, then cut the connection while idle); ``status:body``.
    """

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.script: list[str] = []
        self.connections = 0
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._on_connection, listeners, task_status=task_status)

    async def _on_connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    self.targets.append(event.target.decode())
                    self.headers.append({k.decode(): v.decode() for k, v in event.headers})
                elif isinstance(event, h11.EndOfMessage):
                    action = self.script.pop(0) if self.script else "ok"
                    if action == "hang":
                        await trio.sleep_forever()
                    status, body, extra = 200, ACK, []
                    if ":" in action:
                        code, _, text = action.partition(":")
                        status, body = int(code), text.encode()
                        extra = [(b"retry-after", b"3")] if status in (418, 429) else []
                    if action == "close":
                        extra = [(b"connection", b"close")]
                    headers = [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-mbx-order-count-1m", b"5"),
                        *extra,
                    ]
                    await stream.send_all(
                        conn.send(h11.Response(status_code=status, headers=headers))
                    )
                    await stream.send_all(conn.send(h11.Data(data=body)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                    if action == "drop" or conn.our_state is h11.MUST_CLOSE:
                        await stream.aclose()
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Server]:
    server = Server()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def fixed_clock() -> ServerClock:
    return ServerClock(monotonic=lambda: 0.0, wall=lambda: 1_700_000_000.0)


@contextlib.asynccontextmanager
async def client_for(server: Server, kind: str) -> AsyncIterator[BinanceRestClient]:
    base = f"http://127.0.0.1:{server.port}"
    lean = LeanTransport(base, pool_size=2) if kind == "lean" else None
    async with httpx.AsyncClient() as http:
        try:
            yield BinanceRestClient(
                http, credentials=CREDS, limiter=RateLimiter(), clock=fixed_clock(),
                base_url=base, order_transport=lean,
            )  # fmt: skip
        finally:
            if lean is not None:
                await lean.aclose()


KINDS = ["httpx", "lean"]


async def test_both_transports_send_identical_requests() -> None:
    order = BTC.prepare(Side.SELL, "0.25", client_order_id="tq-9", reduce_only=True)
    seen: dict[str, tuple[str, str]] = {}
    with trio.fail_after(10):
        async with serving() as server:
            for kind in KINDS:
                async with client_for(server, kind) as client:
                    assert await client.new_order(order) == orjson.loads(ACK)
                    await client.cancel_order("BTCUSDT", client_order_id="tq-9")
                seen[kind] = (server.targets[-2], server.targets[-1])
                assert server.headers[-1]["x-mbx-apikey"] == "test-key"
    assert seen["httpx"] == seen["lean"]
    target = seen["lean"][0]
    assert target.startswith(
        "/fapi/v1/order?symbol=BTCUSDT&side=SELL&type=MARKET&quantity=0.250&reduceOnly=true"
        "&newClientOrderId=tq-9&recvWindow=5000&timestamp=1700000000000&signature="
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ('400:{"code":-2019,"msg":"Margin is insufficient."}', OrderRejectedError),
        (
            '503:{"code":-1000,"msg":"Unknown error, please check your request"}',
            UnknownOrderStateError,
        ),
        ('503:{"code":-1000,"msg":"Service Unavailable."}', ServiceUnavailableError),
        ('429:{"code":-1003,"msg":"Too many requests."}', RateLimitedError),
        ('418:{"code":-1003,"msg":"Way too many requests; IP banned."}', IpBannedError),
        ("502:<html>bad gateway</html>", UnknownOrderStateError),
    ],
)
async def test_errors_read_the_same(kind: str, answer: str, error: type) -> None:
    order = BTC.prepare(Side.BUY, "0.01", client_order_id="tq-1")
    with trio.fail_after(10):
        async with serving() as server, client_for(server, kind) as client:
            server.script = [answer]
            with pytest.raises(error) as info:
                await client.new_order(order)
    if error is OrderRejectedError:
        assert info.value.code == -2019


async def test_lean_keeps_the_connection_alive_and_reconnects_when_closed() -> None:
    order = BTC.prepare(Side.BUY, "0.01", client_order_id="tq-1")
    with trio.fail_after(10):
        async with serving() as server:
            lean = LeanTransport(f"http://127.0.0.1:{server.port}", pool_size=1)
            client = BinanceRestClient(
                lean, credentials=CREDS, limiter=RateLimiter(), clock=fixed_clock()
            )
            for _ in range(3):
                await client.new_order(order)
            assert (lean.connections_opened, server.connections) == (1, 1)
            server.script = ["close"]  # the server says Connection: close
            await client.new_order(order)
            await client.new_order(order)
            assert lean.connections_opened == 2
            server.script = ["drop"]  # answers, then cuts the idle connection
            await client.new_order(order)
            await trio.sleep(0.05)  # let the FIN arrive: a stale connection must not be used
            await client.new_order(order)
            assert lean.connections_opened == 3
            await lean.aclose()


async def test_lean_timeout_is_unknown_and_the_connection_is_not_reused() -> None:
    order = BTC.prepare(Side.BUY, "0.01", client_order_id="tq-1")
    with trio.fail_after(10):
        async with serving() as server:
            lean = LeanTransport(f"http://127.0.0.1:{server.port}", pool_size=1)
            client = BinanceRestClient(
                lean, credentials=CREDS, limiter=RateLimiter(), clock=fixed_clock(), timeout_s=0.2
            )
            server.script = ["hang"]
            with pytest.raises(UnknownOrderStateError, match="no response"):
                await client.new_order(order)
            assert await client.new_order(order) == orjson.loads(ACK)  # a fresh connection
            assert lean.connections_opened == 2
            await lean.aclose()


async def test_lean_pool_runs_requests_side_by_side() -> None:
    order = BTC.prepare(Side.BUY, "0.01", client_order_id="tq-1")
    with trio.fail_after(10):
        async with serving() as server:
            lean = LeanTransport(f"http://127.0.0.1:{server.port}", pool_size=3)
            client = BinanceRestClient(
                lean, credentials=CREDS, limiter=RateLimiter(), clock=fixed_clock()
            )
            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(client.new_order, order)
            assert len(server.targets) == 6
            assert lean.connections_opened <= 3
            await lean.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_refused_connection_means_nothing_was_sent(kind: str) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            transport = LeanTransport(base) if kind == "lean" else HttpxTransport(http, base)
            with trio.fail_after(10), pytest.raises(ServiceUnavailableError):
                await transport.request("POST", "/fapi/v1/order?x=1", None)
