"""BinanceVenue against an in-memory fake exchange (httpx.MockTransport + memory websocket).

The fake keeps orders, trades and positions as Binance does, pushes user-data
events, and injects the faults a live venue must survive: timeouts (placed or
not), 503 "unknown", -1021, 429, 418, duplicate ids, a dropped stream.
Everything runs under ``autojump_clock``: the venue's deadlines, grace periods
and retries are Trio sleeps.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import urllib.parse
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import structlog
import structlog.testing
import trio
import trio.testing

from engine.feeds._transport import TransportClosedError
from engine.messages import (
    EventKind,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    Purpose,
    RateLimitBanned,
    ReconciliationFailed,
    Side,
    SubmitOrder,
    Ticks,
)
from engine.testing import quiet_logger
from engine.venues.binance import (
    BinanceVenue,
    Credentials,
    JournalView,
    StartupDeadlineError,
    venue_client_order_id,
)

EPOCH_MS = 1_700_000_000_000
SYMBOL = "BTCUSDT"
EXCHANGE_INFO = {
    "rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
    ],
    "symbols": [
        {
            "symbol": SYMBOL,
            "status": "TRADING",
            "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": "0.10", "minPrice": "0.1",
                 "maxPrice": "1000000"},
                {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001",
                 "maxQty": "1000"},
                {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.001", "minQty": "0.001",
                 "maxQty": "120"},
                {"filterType": "MIN_NOTIONAL", "notional": "100"},
            ],
        }
    ],
}  # fmt: skip


def now_ms() -> int:
    return EPOCH_MS + int(trio.current_time() * 1000)


def error(status: int, code: int, msg: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps({"code": code, "msg": msg}), headers=headers)


class MemoryWs:
    def __init__(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self._receive = receive

    async def get_message(self) -> bytes:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise TransportClosedError("closed by the fake") from None


class FakeBinance:
    """Just enough of Binance USD-M futures for the venue, with faults on demand."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.trades: list[dict[str, Any]] = []
        self.positions: dict[str, Decimal] = {}
        self.order_ids = itertools.count(1000)
        self.trade_ids = itertools.count(1)
        self.price = Decimal("60000.0")
        self.fill_plan: list[Decimal] | None = None  # default: the whole quantity at once
        self.auto_fill = True
        self.faults: list[str] = []  # one per POST /fapi/v1/order, in order
        self.posts: list[dict[str, str]] = []
        self.requests: list[str] = []
        self.socket: trio.MemorySendChannel[bytes] | None = None
        self.stream_up = True
        self.connects = 0
        self.skew_ms = 0  # how far the exchange's clock runs ahead of ours
        # Per path, faults for its next requests, in order: "429" (Retry-After 5),
        # "418" (banned, Retry-After 30), "silent" (no answer), "refused" (no connection).
        self.rest_faults: dict[str, list[str]] = {}
        self.request_times: list[tuple[float, str]] = []

    # -- user stream ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[MemoryWs]:
        self.connects += 1
        send, receive = trio.open_memory_channel[bytes](1000)
        self.socket = send
        self.stream_up = True
        yield MemoryWs(receive)

    def push(self, event: dict[str, Any]) -> None:
        if self.socket is not None and self.stream_up:
            self.socket.send_nowait(orjson.dumps(event))

    def drop_stream(self) -> None:
        """Cut the connection; what is pushed until the venue reconnects is lost."""
        self.stream_up = False
        if self.socket is not None:
            self.socket.close()

    def _push_order(self, order: dict[str, Any], x: str, trade: dict[str, Any] | None) -> None:
        self.push(
            {
                "e": "ORDER_TRADE_UPDATE",
                "E": now_ms(),
                "T": now_ms(),
                "o": {
                    "s": order["symbol"], "c": order["clientOrderId"], "S": order["side"],
                    "o": "MARKET", "q": order["origQty"], "p": "0", "ap": order["avgPrice"],
                    "x": x, "X": order["status"], "i": order["orderId"],
                    "l": trade["qty"] if trade else "0", "z": order["executedQty"],
                    "L": trade["price"] if trade else "0", "T": now_ms(),
                    "t": trade["id"] if trade else 0,
                    "n": trade["commission"] if trade else "0", "N": "USDT",
                    "m": False, "R": order["reduceOnly"],
                },
            }
        )  # fmt: skip

    # -- REST -------------------------------------------------------------------

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        query = dict(urllib.parse.parse_qsl(request.url.query.decode()))
        self.requests.append(f"{request.method} {path}")
        self.request_times.append((trio.current_time(), path))
        faults = self.rest_faults.get(path)
        if faults:
            fault = faults.pop(0)
            if fault == "429":
                return error(429, -1003, "Too many requests.", **{"Retry-After": "5"})
            if fault == "418":
                return error(
                    418, -1003, "Way too many requests; IP banned.", **{"Retry-After": "30"}
                )
            if fault == "silent":
                await trio.sleep(3600)
            if fault == "refused":
                raise httpx.ConnectError("connection refused", request=request)
        if path == "/fapi/v1/time":
            return self._ok({"serverTime": now_ms() + self.skew_ms})
        if path == "/fapi/v1/exchangeInfo":
            return self._ok(EXCHANGE_INFO)
        if path == "/fapi/v1/listenKey":
            return self._ok({"listenKey": "lk"} if request.method == "POST" else {})
        if path == "/fapi/v1/order" and request.method == "POST":
            return await self._new_order(query)
        if path == "/fapi/v1/order" and request.method == "GET":
            order = self.orders.get(query["origClientOrderId"])
            if order is None:
                return error(400, -2013, "Order does not exist.")
            return self._ok(order)
        if path in ("/fapi/v1/openOrders", "/fapi/v2/positionRisk"):
            return self._ok([])
        if path == "/fapi/v1/userTrades":
            return self._ok(
                [
                    t
                    for t in self.trades
                    if t["symbol"] == query["symbol"]
                    and ("orderId" not in query or t["orderId"] == int(query["orderId"]))
                ]
            )
        if path == "/fapi/v1/allOpenOrders":
            for order in self.orders.values():
                if order["symbol"] == query["symbol"] and order["status"] in (
                    "NEW",
                    "PARTIALLY_FILLED",
                ):
                    order["status"] = "CANCELED"
                    order["updateTime"] = now_ms()
                    self._push_order(order, "CANCELED", None)
            return self._ok({"code": 200, "msg": "The operation of cancel all open order is done."})
        return error(404, -1, f"no route {request.method} {path}")

    @staticmethod
    def _ok(body: Any) -> httpx.Response:
        headers = {"X-MBX-USED-WEIGHT-1M": "1"}
        return httpx.Response(200, content=orjson.dumps(body), headers=headers)

    async def _new_order(self, query: dict[str, str]) -> httpx.Response:
        self.posts.append(query)
        fault = self.faults.pop(0) if self.faults else ""
        cid = query["newClientOrderId"]
        if fault == "-1021":
            self.skew_ms += 2000
            return error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        if fault == "429":
            return error(429, -1003, "Too many requests.", **{"Retry-After": "2"})
        if fault == "418":
            return error(418, -1003, "Way too many requests; IP banned.", **{"Retry-After": "120"})
        if fault == "-2019":
            return error(400, -2019, "Margin is insufficient.")
        if fault == "timeout_not_placed":
            await trio.sleep(3600)
        if cid in self.orders:
            return error(400, -4116, "ClientOrderId is duplicated.")
        order = self._place(query)
        if fault == "timeout":
            await trio.sleep(3600)  # placed, but the answer never comes in time
        if fault == "503":
            return error(503, -1000, "Unknown error, please check your request or try again.")
        return self._ok(
            {
                "orderId": order["orderId"], "clientOrderId": cid, "status": "NEW",
                "executedQty": "0", "avgPrice": "0.00", "updateTime": order["updateTime"],
            }
        )  # fmt: skip

    def _place(self, query: dict[str, str]) -> dict[str, Any]:
        order = {
            "orderId": next(self.order_ids), "clientOrderId": query["newClientOrderId"],
            "symbol": query["symbol"], "side": query["side"], "type": query["type"],
            "origQty": query["quantity"], "executedQty": "0", "avgPrice": "0",
            "status": "NEW", "reduceOnly": query.get("reduceOnly") == "true",
            "updateTime": now_ms(),
        }  # fmt: skip
        self.orders[order["clientOrderId"]] = order
        self._push_order(order, "NEW", None)
        if self.auto_fill:
            plan = self.fill_plan or [Decimal(order["origQty"])]
            for qty in plan:
                self.fill(order["clientOrderId"], qty)
        return order

    def fill(self, cid: str, qty: Decimal) -> None:
        order = self.orders[cid]
        executed = Decimal(order["executedQty"]) + qty
        avg = (Decimal(order["avgPrice"]) * Decimal(order["executedQty"]) + self.price * qty) / (
            executed
        )
        order["executedQty"] = str(executed)
        order["avgPrice"] = str(avg)
        order["status"] = "FILLED" if executed >= Decimal(order["origQty"]) else "PARTIALLY_FILLED"
        order["updateTime"] = now_ms()
        sign = 1 if order["side"] == "BUY" else -1
        self.positions[order["symbol"]] = self.positions.get(order["symbol"], Decimal(0)) + (
            sign * qty
        )
        trade = {
            "id": next(self.trade_ids), "orderId": order["orderId"], "symbol": order["symbol"],
            "side": order["side"], "price": str(self.price), "qty": str(qty),
            "commission": str(self.price * qty * Decimal("0.0004")), "commissionAsset": "USDT",
            "time": now_ms(), "maker": False,
        }  # fmt: skip
        self.trades.append(trade)
        self._push_order(order, "TRADE", trade)


SEQ = itertools.count(1)


def submit_order(
    qty: float = 0.01, *, side: Side = Side.BUY, reduce_only: bool = False, n: int = 1
) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=f"tr-{SYMBOL}-{n}",
        symbol=SYMBOL,
        side=side,
        qty=qty,
        ref_price=60000.0,
        purpose=Purpose.EXIT if reduce_only else Purpose.ENTRY,
        reduce_only=reduce_only,
        ts_event=1_700_000_000_000_000_000 + n,
        ts_init=1_700_000_000_000_000_000 + n,
        seq=next(SEQ),
        correlation_id=f"{SYMBOL}-{n}",
    )


def quotes(bid: float, ask: float) -> dict[str, Ticks]:
    n = 1
    nan = np.full(n, np.nan)
    return {
        SYMBOL: Ticks(
            ts=np.array([1], dtype=np.int64),
            ts_exchange=np.array([1], dtype=np.int64),
            seq=np.array([1], dtype=np.int64),
            kind=np.array([EventKind.QUOTE], dtype=np.int8),
            bid=np.array([bid]),
            bid_qty=np.ones(n),
            ask=np.array([ask]),
            ask_qty=np.ones(n),
            price=nan,
            qty=nan,
            buyer_maker=np.zeros(n, dtype=np.int8),
        )
    }


@contextlib.asynccontextmanager
async def running(fake: FakeBinance, **kwargs: Any) -> AsyncIterator[BinanceVenue]:
    venue = BinanceVenue(
        base_url="https://fake.invalid",
        ws_url="wss://fake.invalid",
        credentials=Credentials("the-key", "the-secret"),
        symbols=[SYMBOL],
        http=httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)),
        ws_connect=fake.connect,
        timeout_s=1.0,
        **({"log": quiet_logger()} | kwargs),
    )
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(venue.run)
            yield venue
            nursery.cancel_scope.cancel()


async def settle(seconds: float = 0.0) -> None:
    if seconds:
        await trio.sleep(seconds)
    await trio.testing.wait_all_tasks_blocked()


async def test_market_order_accepted_then_filled(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance()
    async with running(fake) as venue:
        order = submit_order(0.01)
        assert venue.submit(order) == []
        await settle()
        events = venue.on_market(quotes(60010.0, 60012.0))
    accepted, filled = events
    assert isinstance(accepted, OrderAccepted) and accepted.venue_order_id == 1000
    assert isinstance(filled, OrderFilled)
    assert (filled.last_qty, filled.cum_qty, filled.order_qty) == (0.01, 0.01, 0.01)
    assert filled.last_price == 60000.0 and filled.fee == pytest.approx(0.24)
    assert filled.client_order_id == order.client_order_id  # the engine's id, not the venue's
    assert accepted.seq < filled.seq and accepted.ts_event <= filled.ts_event
    (post,) = fake.posts
    assert post["newClientOrderId"] == venue_client_order_id(
        SYMBOL, order.client_order_id, order.ts_event, order.seq
    )
    assert post["type"] == "MARKET" and post["quantity"] == "0.010"
    assert venue.account(SYMBOL).qty == pytest.approx(0.01)
    assert venue.step_quotes == {SYMBOL: (1, 60010.0, 60012.0)}
    assert venue.equity == pytest.approx(0.01 * (60011.0 - 60000.0) - 0.24)


async def test_partial_fills_carry_cum_qty(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance()
    fake.fill_plan = [Decimal("0.004"), Decimal("0.006")]
    async with running(fake) as venue:
        venue.submit(submit_order(0.01))
        await settle()
        events = venue.on_market({})
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert [(f.last_qty, f.cum_qty, f.order_qty) for f in fills] == [
        (0.004, 0.004, 0.01),
        (0.006, 0.01, 0.01),
    ]


async def test_filter_refusal_is_rejected_before_sending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBinance()
    async with running(fake) as venue:
        (rejected,) = venue.submit(submit_order(0.0005))
        (too_small,) = venue.submit(submit_order(0.001, n=2))  # 60 USDT < 100 notional
        await settle()
    assert isinstance(rejected, OrderRejected) and rejected.reason == "filter:QTY_BELOW_MIN"
    assert isinstance(too_small, OrderRejected)
    assert too_small.reason == "filter:NOTIONAL_BELOW_MIN"
    assert fake.posts == []


async def test_timeout_leaves_order_unknown_until_a_query_finds_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBinance()
    fake.faults = ["timeout"]
    async with running(fake) as venue:
        fake.stream_up = False  # the stream misses it too
        order = submit_order(0.01)
        venue.submit(order)
        await settle(1.5)  # past the 1 s deadline, before the grace period
        assert venue.unknown_orders() == [order.client_order_id]
        assert venue.on_market({}) == []  # never assumed failed
        await settle(10)  # grace (recvWindow 5 s + 1 s) passed: queried
        events = venue.on_market({})
        assert venue.unknown_orders() == []
    assert [type(e) for e in events] == [OrderAccepted, OrderFilled]
    filled = events[1]
    assert isinstance(filled, OrderFilled)
    assert filled.last_price == 60000.0 and filled.fee == pytest.approx(0.24)  # the real trade
    assert "GET /fapi/v1/userTrades" in fake.requests


async def test_unknown_order_not_found_after_grace_is_rejected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBinance()
    fake.faults = ["timeout_not_placed"]
    async with running(fake) as venue:
        venue.submit(submit_order(0.01))
        await settle(10)
        (event,) = venue.on_market({})
    assert isinstance(event, OrderRejected) and event.reason.startswith("not_placed")


async def test_503_unknown_is_resolved_by_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBinance()
    fake.faults = ["503"]
    async with running(fake) as venue:
        venue.submit(submit_order(0.01))
        await settle()
        events = venue.on_market({})
    assert [type(e) for e in events] == [OrderAccepted, OrderFilled]
    assert "GET /fapi/v1/order" not in fake.requests  # the stream told us first


async def test_timestamp_skew_resends_once_with_the_same_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBinance()
    fake.faults = ["-1021"]
    async with running(fake) as venue:
        venue.submit(submit_order(0.01))
        await settle()
        events = venue.on_market({})
    first, second = fake.posts
    assert first["newClientOrderId"] == second["newClientOrderId"]
    assert int(second["timestamp"]) - int(first["timestamp"]) == pytest.approx(2000, abs=50)
    assert fake.requests.count("GET /fapi/v1/time") >= 2  # the start-up sync and the re-sync
    assert [type(e) for e in events] == [OrderAccepted, OrderFilled]


async def test_duplicate_id_answer_means_placed(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance()
    async with running(fake) as venue:
        order = submit_order(0.01)
        fake.stream_up = False
        # An earlier attempt of this order reached the exchange; its answer was lost.
        vid = venue_client_order_id(SYMBOL, order.client_order_id, order.ts_event, order.seq)
        fake._place({"newClientOrderId": vid, "symbol": SYMBOL, "side": "BUY",
                     "type": "MARKET", "quantity": "0.010"})  # fmt: skip
        venue.submit(order)
        await settle(1)
        events = venue.on_market({})
    assert [type(e) for e in events] == [OrderAccepted, OrderFilled]
    assert len(fake.orders) == 1  # no second order


async def test_ban_rejects_and_emits_one_op(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance()
    fake.faults = ["418"]
    async with running(fake) as venue:
        venue.submit(submit_order(0.01, n=1))
        await settle()
        venue.submit(submit_order(0.01, n=2))  # during the ban: refused without sending
        await settle()
        events = venue.on_market({})
        ops = venue.take_ops()
        assert venue.take_ops() == []
    assert [type(e) for e in events] == [OrderRejected, OrderRejected]
    assert all(isinstance(e, OrderRejected) and e.reason == "418 ip banned" for e in events)
    (op,) = ops
    assert isinstance(op, RateLimitBanned) and op.symbol == SYMBOL
    assert op.until_ts > op.ts_event
    assert len(fake.posts) == 1


async def test_429_waits_and_resends(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance()
    fake.faults = ["429"]
    async with running(fake) as venue:
        venue.submit(submit_order(0.01))
        await settle(3)
        events = venue.on_market({})
    assert len(fake.posts) == 2
    assert fake.posts[0]["newClientOrderId"] == fake.posts[1]["newClientOrderId"]
    assert [type(e) for e in events] == [OrderAccepted, OrderFilled]


async def test_closing_orders_go_first_when_waiting(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance()
    fake.faults = ["429"]
    async with running(fake) as venue:
        venue.submit(submit_order(0.01, n=1))
        await settle()  # refused: nothing is sent for 2 s
        venue.submit(submit_order(0.01, n=2))
        venue.submit(submit_order(0.01, n=3, side=Side.SELL, reduce_only=True))
        await settle(3)
    order = [(p["side"], p.get("reduceOnly", "false")) for p in fake.posts[1:]]
    assert order[0] == ("SELL", "true")


async def test_stream_drop_recovers_the_missed_fill(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBinance()
    fake.auto_fill = False
    async with running(fake) as venue:
        order = submit_order(0.01)
        venue.submit(order)
        await settle()
        assert [type(e) for e in venue.on_market({})] == [OrderAccepted]
        fake.drop_stream()
        (cid,) = fake.orders
        fake.fill(cid, Decimal("0.01"))  # pushed while down: lost
        await settle(5)  # the stream is back; the gap made the venue query
        events = venue.on_market({})
    assert fake.connects == 2
    (filled,) = events
    assert isinstance(filled, OrderFilled) and filled.cum_qty == 0.01
    assert filled.fee == pytest.approx(0.24)


async def test_cancel_all_cancels_at_the_exchange(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance()
    fake.auto_fill = False
    async with running(fake) as venue:
        venue.submit(submit_order(0.01))
        await settle()
        venue.on_market({})
        assert venue.cancel_all(0, "halt") == []
        await settle()
        events = venue.on_market({})
    (canceled,) = events
    assert isinstance(canceled, OrderCanceled) and canceled.cum_qty == 0.0
    assert "DELETE /fapi/v1/allOpenOrders" in fake.requests


async def test_position_drift_is_reported(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBinance()
    async with running(fake) as venue:
        fake.push(
            {"e": "ACCOUNT_UPDATE", "E": now_ms(), "T": now_ms(),
             "a": {"m": "ORDER", "B": [], "P": [{"s": SYMBOL, "pa": "0.5", "ep": "1.0",
                                                  "ps": "BOTH"}]}}
        )  # fmt: skip
        await settle()
        venue.on_market({})
        assert venue.take_ops() == []  # the fill's report may still be on its way
        await trio.sleep(1.0)  # drift_grace_s
        venue.on_market({})
        (op,) = venue.take_ops()
        venue.on_market({})
        assert venue.take_ops() == []  # said once
    assert isinstance(op, ReconciliationFailed) and "0.5" in op.reason


async def test_credentials_never_shown() -> None:
    venue = BinanceVenue(
        base_url="https://fake.invalid",
        ws_url="wss://fake.invalid",
        credentials=Credentials("the-key", "the-secret"),
        symbols=[SYMBOL],
        log=quiet_logger(),
    )
    assert "the-key" not in repr(venue) and "the-secret" not in repr(venue)
    assert "the-secret" not in repr(vars(venue))


def capturing_logger() -> tuple[Any, structlog.testing.CapturingLogger]:
    captured = structlog.testing.CapturingLogger()
    log = structlog.wrap_logger(
        captured, processors=[], wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
    )
    return log, captured


def logged(captured: structlog.testing.CapturingLogger, prefix: str) -> list[dict[str, Any]]:
    return [c.kwargs for c in captured.calls if str(c.kwargs.get("event", "")).startswith(prefix)]


def sent_at(fake: FakeBinance, path: str) -> list[float]:
    return [t for t, p in fake.request_times if p == path]


async def test_startup_waits_out_429_ban_silence_and_refusal_then_trades(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBinance()
    fake.rest_faults = {
        "/fapi/v1/time": ["429"],  # Retry-After 5
        "/fapi/v1/exchangeInfo": ["418"],  # banned for 30 s
        "/fapi/v1/listenKey": ["silent"],  # no answer within timeout_s (1 s)
        "/fapi/v1/openOrders": ["refused"],  # reconciliation: no connection
    }
    log, captured = capturing_logger()
    async with running(fake, log=log, journal=JournalView(), startup_deadline_s=300) as venue:
        assert venue.submit(submit_order(0.01)) == []  # started: it takes orders
        await settle()
        assert [type(e) for e in venue.on_market({})] == [OrderAccepted, OrderFilled]
    time_ = sent_at(fake, "/fapi/v1/time")
    assert time_[1] >= time_[0] + 5  # nothing sent before Retry-After
    info = sent_at(fake, "/fapi/v1/exchangeInfo")
    assert len(info) == 2 and info[1] >= info[0] + 30  # nor during the ban
    assert len(sent_at(fake, "/fapi/v1/openOrders")) == 2
    waits = logged(captured, "start-up")
    assert [w["step"] for w in waits] == [
        "server time",
        "exchangeInfo",
        "user stream",
        "reconciliation",
    ]
    assert waits[0]["event"] == "start-up rate limited (429); waiting for Retry-After"
    assert waits[1]["event"] == "start-up IP banned (418); waiting for the ban to end"
    assert waits[1]["wait_s"] == pytest.approx(30.0, abs=0.01)
    assert all(w["deadline_in_s"] > 0 for w in waits)


async def test_startup_gives_up_at_its_deadline_in_one_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBinance()
    fake.rest_faults = {"/fapi/v1/exchangeInfo": ["silent"] * 1000}
    log, captured = capturing_logger()
    venue = BinanceVenue(
        base_url="https://fake.invalid",
        ws_url="wss://fake.invalid",
        credentials=Credentials("the-key", "the-secret"),
        symbols=[SYMBOL],
        log=log,
        http=httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)),
        ws_connect=fake.connect,
        timeout_s=1.0,
        startup_deadline_s=20.0,
    )
    with trio.fail_after(600), pytest.raises(StartupDeadlineError) as info:
        await venue.run()
    assert trio.current_time() == pytest.approx(20.0, abs=0.01)  # waited, then no longer
    message = str(info.value)
    assert "\n" not in message
    assert "venue.startup_deadline_s = 20 s" in message and "exchangeInfo" in message
    assert len(logged(captured, "start-up request failed; retrying")) >= 3
    assert fake.connects == 0 and not fake.posts  # nothing traded, no stream opened


async def test_startup_refuses_at_once_when_the_ban_outlasts_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBinance()
    fake.rest_faults = {"/fapi/v1/time": ["418"]}  # banned for 30 s
    venue = BinanceVenue(
        base_url="https://fake.invalid",
        ws_url="wss://fake.invalid",
        credentials=Credentials("the-key", "the-secret"),
        symbols=[SYMBOL],
        log=quiet_logger(),
        http=httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)),
        ws_connect=fake.connect,
        startup_deadline_s=10.0,
    )
    with trio.fail_after(600), pytest.raises(StartupDeadlineError, match="418"):
        await venue.run()
    assert trio.current_time() < 1.0  # no point waiting for a ban that ends too late
