"""The Binance venue's order types: templates, and Binance's own recorded user-data events.

The recorded files (``../shared/data/external/binance_userdata_events``, real
USD-M events of 2026-03: limit, market, stop-limit and stop-market orders through
the algo order API) are replayed, event by event, into a running
:class:`BinanceVenue` whose REST side is an ``httpx.MockTransport`` that places
the order (``NEW``) and nothing more. Each recorded client id is rewritten to the
venue's id of the order submitted for it (the only change to the events). Every
event of every file is accounted for: it produced the expected order events, or
it is counted as skipped with its reason.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import urllib.parse
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing

from engine.feeds._transport import TransportClosedError
from engine.messages import OrderEvent, OrderFilled, OrderRejected, Purpose, Side, SubmitOrder
from engine.testing import quiet_logger
from engine.venues.binance import BinanceVenue, Credentials, FilterError, venue_client_order_id
from engine.venues.binance._templates import OrderTemplate, OrderType, TimeInForce
from engine.venues.binance._userstream import decode_user_event

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT.parent / "shared/data/external/binance_userdata_events"
FILES = sorted(EVENTS.glob("*.json"))

BTC = OrderTemplate.from_symbol_info(
    {
        "symbol": "BTCUSDT",
        "filters": [
            {"filterType": "PRICE_FILTER", "tickSize": "0.10", "minPrice": "556.80",
             "maxPrice": "4529764"},
            {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "1000"},
            {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.001", "minQty": "0.001",
             "maxQty": "120"},
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
        ],
    }
)  # fmt: skip


# -- templates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "price", "sent"),
    [(Side.BUY, "60000.19", "60000.10"), (Side.SELL, "60000.11", "60000.20")],
)
@pytest.mark.parametrize("tif", list(TimeInForce))
def test_limit_price_rounds_to_the_passive_side_with_its_time_in_force(side, price, sent, tif):
    order = BTC.prepare(
        side, "0.0109", client_order_id="a-1", order_type=OrderType.LIMIT, price=price,
        time_in_force=tif, reduce_only=True,
    )  # fmt: skip
    assert order.params == (
        f"symbol=BTCUSDT&side={side.name}&type=LIMIT&timeInForce={tif.value}"
        f"&quantity=0.010&price={sent}&reduceOnly=true&newClientOrderId=a-1"
    )
    assert order.path == "/fapi/v1/order" and order.time_in_force is tif


def test_conditional_orders_go_to_the_algo_api():
    stop = BTC.prepare(
        Side.SELL, 0.0129, client_order_id="s-1", order_type=OrderType.STOP_MARKET,
        trigger_price=59000.03, reduce_only=True,
    )  # fmt: skip
    assert stop.path == "/fapi/v1/algoOrder" and stop.conditional
    assert stop.params == (
        "algoType=CONDITIONAL&symbol=BTCUSDT&side=SELL&type=STOP_MARKET&triggerPrice=59000.10"
        "&quantity=0.012&reduceOnly=true&clientAlgoId=s-1"
    )
    close = BTC.prepare(
        Side.BUY, 0.5, client_order_id="p-1", order_type=OrderType.TAKE_PROFIT_MARKET,
        trigger_price=58000.07, close_position=True,
    )  # fmt: skip
    assert close.params == (
        "algoType=CONDITIONAL&symbol=BTCUSDT&side=BUY&type=TAKE_PROFIT_MARKET"
        "&triggerPrice=58000.00&closePosition=true&clientAlgoId=p-1"
    )
    assert close.reduce_only and close.close_position
    with pytest.raises(FilterError) as info:
        BTC.prepare(Side.BUY, 0.01, client_order_id="p-2", order_type=OrderType.STOP_MARKET)
    assert info.value.reason == "PRICE_INVALID"


def test_amend_rounds_like_a_new_limit_order():
    assert BTC.amend_params(Side.BUY, "0.0209", "60000.19", "a-1") == (
        "symbol=BTCUSDT&origClientOrderId=a-1&side=BUY&quantity=0.020&price=60000.10"
    )
    with pytest.raises(FilterError) as info:
        BTC.amend_params(Side.SELL, "0.0001", "60000", "a-1")
    assert info.value.reason == "QTY_BELOW_MIN"


# -- recorded user-data events ----------------------------------------------------------


def read_events(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of one file (pretty-printed, one after another)."""
    text, decoder, out, i = path.read_text(), json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return out
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)


def client_id(event: dict[str, Any]) -> str | None:
    o = event.get("o", {})
    return o.get("caid") if event["e"] == "ALGO_UPDATE" else o.get("c")


def order_for(event: dict[str, Any], n: int) -> SubmitOrder:
    """The engine order a recorded life cycle starts from (by its first event)."""
    o = event["o"]
    common = {
        "client_order_id": f"rec-{n}", "symbol": o["s"], "side": Side[o["S"]],
        "qty": float(o["q"]), "purpose": Purpose.ENTRY, "reduce_only": bool(o.get("R")),
        "ts_event": 1_772_000_000_000_000_000 + n, "ts_init": n, "seq": n,
        "correlation_id": f"rec-{n}",
    }  # fmt: skip
    if event["e"] == "ALGO_UPDATE":
        # STOP (stop-limit) is placed as its market twin: the events map the same.
        trigger = float(o["tp"])
        return SubmitOrder(**common, ref_price=trigger, order_type="STOP_MARKET",
                           stop_price=trigger)  # fmt: skip
    if o["o"] == "MARKET":
        return SubmitOrder(**common, ref_price=0.0066)
    # LIMIT, and the pre-migration STOP placed on /fapi/v1/order: a resting order.
    price = float(o["p"])
    return SubmitOrder(**common, ref_price=price, order_type="LIMIT", price=price)


class MemoryWs:
    def __init__(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self._receive = receive

    async def get_message(self) -> bytes:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise TransportClosedError("closed") from None


class RecordedExchange:
    """Places orders (``NEW``, at ``placed_ms``) and pushes the recorded events."""

    def __init__(self, symbols: list[str], placed_ms: int) -> None:
        self.symbols = symbols
        self.placed_ms = placed_ms
        self.socket: trio.MemorySendChannel[bytes] | None = None
        self.ids = itertools.count(7000)

    @contextlib.asynccontextmanager
    async def connect(self, _url: str) -> AsyncIterator[MemoryWs]:
        send, receive = trio.open_memory_channel[bytes](100)
        self.socket = send
        yield MemoryWs(receive)

    def info(self) -> dict[str, Any]:
        return {
            "rateLimits": [],
            "symbols": [
                {
                    "symbol": s,
                    "status": "TRADING",
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "tickSize": "0.000001",
                            "minPrice": "0.000001",
                            "maxPrice": "200",
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "stepSize": "1",
                            "minQty": "1",
                            "maxQty": "10000000",
                        },
                    ],
                }
                for s in self.symbols
            ],
        }

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        query = dict(urllib.parse.parse_qsl(request.url.query.decode()))
        body: Any
        if path == "/fapi/v1/time":
            body = {"serverTime": self.placed_ms}
        elif path == "/fapi/v1/exchangeInfo":
            body = self.info()
        elif path == "/fapi/v1/listenKey":
            body = {"listenKey": "recorded"}
        elif path == "/fapi/v1/order" and request.method == "POST":
            body = {
                "orderId": next(self.ids), "clientOrderId": query["newClientOrderId"],
                "status": "NEW", "executedQty": "0", "avgPrice": "0",
                "updateTime": self.placed_ms,
            }  # fmt: skip
        elif path == "/fapi/v1/algoOrder" and request.method == "POST":
            body = {
                "algoId": next(self.ids), "clientAlgoId": query["clientAlgoId"],
                "algoType": "CONDITIONAL", "algoStatus": "NEW", "updateTime": self.placed_ms,
            }  # fmt: skip
        else:
            return httpx.Response(400, content=b'{"code":-2013,"msg":"Order does not exist."}')
        return httpx.Response(200, content=orjson.dumps(body))


# Per file: for each recorded event, what the venue made of it (class names), or
# why it was skipped.
EXPECTED: dict[str, list[list[str] | str]] = {
    "WebSocketFutureLimitSubmittedCancelled.json": [
        "no change: acknowledged by the REST answer",
        ["OrderCanceled"],
    ],
    "WebSocketFutureLimitSubmittedFilled.json": [
        "no change: acknowledged by the REST answer",
        ["OrderFilled"],
    ],
    "WebSocketFutureMarketSubmittedFilled.json": [
        "no change: acknowledged by the REST answer",
        ["OrderFilled"],
    ],
    "WebSocketFutureStopLimitSubmittedExpired.json": [
        "no change: acknowledged by the REST answer",
        ["OrderExpired"],
        "event type not used: CONDITIONAL_ORDER_TRIGGER_REJECT",
    ],
    "WebSocketFutureStopLimitSubmittedFilled.json": [
        "no change: acknowledged by the REST answer",
        ["OrderTriggered"],
        "no change: the triggered order's NEW",
        "no change: triggered already",
        ["OrderTriggered"],
        ["OrderRejected"],
        ["OrderFilled"],
        "no change: the fills ended it",
    ],
    "WebSocketFutureStopMarketSubmitPartiallyFilledFilled.json": [
        "no change: acknowledged by the REST answer",
        ["OrderTriggered"],
        "no change: the triggered order's NEW",
        ["OrderFilled"],
        ["OrderFilled"],
        "no change: triggered already",
        "no change: the fills ended it",
    ],
    "WebSocketFutureStopMarketSubmittedCanceled.json": [
        "no change: acknowledged by the REST answer",
        ["OrderCanceled"],
    ],
}


def test_every_recorded_file_is_covered():
    assert [p.name for p in FILES] == sorted(EXPECTED)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
async def test_recorded_events_map_onto_order_events(path, autojump_clock):
    recorded = read_events(path)
    ids: dict[str, SubmitOrder] = {}
    for event in recorded:
        cid = client_id(event)
        if cid is not None and cid not in ids:
            ids[cid] = order_for(event, len(ids) + 1)
    symbols = sorted({o.symbol for o in ids.values()})
    first_ms = min(int(e["T"]) for e in recorded)
    exchange = RecordedExchange(symbols, first_ms - 1)
    venue = BinanceVenue(
        base_url="https://recorded.invalid", ws_url="wss://recorded.invalid",
        credentials=Credentials("the-key", "the-secret"), symbols=symbols,
        log=quiet_logger(), http=httpx.AsyncClient(transport=httpx.MockTransport(exchange.handler)),
        ws_connect=exchange.connect, open_check_s=1e9, cancel_on_exit=False,
    )  # fmt: skip
    venue_ids = {
        cid: venue_client_order_id(o.symbol, o.client_order_id, o.ts_event, o.seq)
        for cid, o in ids.items()
    }
    outcome: list[list[str] | str] = []
    events: list[OrderEvent] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(venue.run)
            for order in ids.values():
                assert venue.submit(order) == []
            await trio.testing.wait_all_tasks_blocked()
            placed = venue.on_market({})
            assert {type(e).__name__ for e in placed} == {"OrderAccepted"}
            assert len(placed) == len(ids)
            assert exchange.socket is not None
            for event in recorded:
                cid = client_id(event)
                if cid is not None:
                    event = json.loads(json.dumps(event).replace(cid, venue_ids[cid]))
                raw = orjson.dumps(event)
                if decode_user_event(raw) is None:
                    outcome.append(f"event type not used: {event['e']}")
                    continue
                exchange.socket.send_nowait(raw)
                await trio.testing.wait_all_tasks_blocked()
                out = venue.on_market({})
                events += out
                if out:
                    outcome.append([type(e).__name__ for e in out])
                else:
                    outcome.append(skip_reason(event, placed=events))
            nursery.cancel_scope.cancel()
    assert outcome == EXPECTED[path.name]
    assert venue.pending_orders == 0  # every recorded life cycle ended
    # What the events say, checked against the recorded fields.
    for fill in (e for e in events if isinstance(e, OrderFilled)):
        (src,) = [
            r["o"] for r in recorded
            if r["e"] == "ORDER_TRADE_UPDATE" and r["o"]["x"] == "TRADE"
            and Decimal(r["o"]["z"]) == Decimal(str(fill.cum_qty))
        ]  # fmt: skip
        assert fill.last_qty == float(src["l"]) and fill.last_price == float(src["L"])
        assert fill.fee == float(src["n"])
        assert fill.liquidity == ("MAKER" if src["m"] else "TAKER")
        assert fill.order_qty == float(src["q"])
    for rejected in (e for e in events if isinstance(e, OrderRejected)):
        assert rejected.reason == "margin not enough"  # the algo update's ``rm``
    filled = sum(
        float(r["o"]["l"]) * (1 if r["o"]["S"] == "BUY" else -1)
        for r in recorded
        if r["e"] == "ORDER_TRADE_UPDATE" and r["o"]["x"] == "TRADE"
    )
    assert sum(venue.ledger.qty(s) for s in symbols) == pytest.approx(filled)


def skip_reason(event: dict[str, Any], *, placed: list[OrderEvent]) -> str:
    """Why a recorded event changed nothing (the test's own reading of it)."""
    o = event["o"]
    if event["e"] == "ALGO_UPDATE":
        status = o["X"]
        if status == "NEW":
            return "no change: acknowledged by the REST answer"
        if status == "TRIGGERED":
            return "no change: triggered already"
        if status == "FINISHED":
            return "no change: the fills ended it"
        return f"unexpected: algo {status}"
    if o["x"] == "NEW" and o.get("st") == "ALGO_CONDITION":
        return "no change: the triggered order's NEW"
    if o["x"] == "NEW":
        return "no change: acknowledged by the REST answer"
    return f"unexpected: {o['x']}"
