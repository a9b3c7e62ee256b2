"""Unmodified third-party Binance clients against the loopback exchange.

ccxt ``binanceusdm`` and ccxt.pro, ``binance-futures-connector`` and
``python-binance`` run as their users run them: only their URLs point at the
loopback server (no option changed: they sign with their own clock, which the
re-timed exchange accepts). Each runs in a worker thread (ccxt.pro and
python-binance's sockets in their own asyncio loop) while the server runs in
this Trio run. Where a test must move the market at a chosen moment the server
plays with ``autoplay=False`` and the client thread calls ``server.advance``
through ``trio.from_thread``; websocket tests let the server play by itself
(``start="now"``) and wait for what they expect to receive.

Also here: the protocol details an unmodified client meets (re-timing, playback
start, websocket paths, reason phrases, access log, the bound address) and the
user-data events' key sets checked against events recorded from Binance.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import attrs
import httpx
import orjson
import pytest
import trio
import trio_websocket

from engine._logging import make_logger
from engine.testing import quiet_logger
from engine.venues.sim._algo import AlgoBook, AlgoRequest
from engine.venues.sim._exchange_api import ACCEPTED_ORDER_TYPES, sign
from engine.venues.sim._recorded import load_recording
from engine.venues.sim._retime import retime
from engine.venues.sim._stream_server import ServerSettings, StreamServer, TradingSettings
from engine.venues.sim._trading import AccountSettings, MatchingEngine, OrderRequest, SymbolRules
from engine.venues.sim._ws_routes import parse_ws_target, recorded_name

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
USERDATA_EVENTS = ROOT.parent / "shared/data/external/binance_userdata_events"
KEY = "loopKey" + "L" * 57
SECRET = "loopSecret" + "z" * 54
SYMBOL = "BTC/USDT:USDT"
QUIET = quiet_logger()


@pytest.fixture(scope="module")
def recording():
    return load_recording([SAMPLE])


@attrs.frozen
class Loopback:
    server: StreamServer
    ws_port: int
    rest_port: int

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"


@asynccontextmanager
async def loopback(recording, log=QUIET, **settings) -> AsyncIterator[Loopback]:
    server = StreamServer(
        recording,
        ServerSettings(**settings),
        log,
        trading=TradingSettings(account=AccountSettings(balance=100_000)),
        api_keys={KEY: SECRET},
    )
    async with trio.open_nursery() as nursery:
        ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
        yield Loopback(server, ws_port, rest_port)
        nursery.cancel_scope.cancel()


async def book_ready(server: StreamServer) -> None:
    """Wait until playback has synced the replayed book (playing by itself)."""
    await server.wait_book_ready("BTCUSDT")


def point_ccxt(exchange, ex: Loopback) -> None:
    """ccxt's URL table with Binance's hosts replaced by the loopback's: nothing else."""
    api = exchange.urls["api"]
    hosts = {
        "https://fapi.binance.com": ex.rest,
        "https://api.binance.com": ex.rest,
        "wss://fstream.binance.com": ex.ws,
    }

    def moved(url: str) -> str:
        for old, new in hosts.items():
            url = url.replace(old, new)
        return url

    for name, url in list(api.items()):
        if isinstance(url, str):
            api[name] = moved(url)
    for name, url in list(api.get("ws", {}).items()):  # ccxt.pro only
        if isinstance(url, str):
            api["ws"][name] = moved(url)


def future_low(server: StreamServer, messages: int) -> Decimal:
    """The lowest trade price in the next ``messages`` of the capture."""
    start = server._index
    trades = [
        Decimal(orjson.loads(m.data)["p"])
        for m in server.recording.messages[start : start + messages]
        if m.stream.endswith("@trade")
    ]
    return min(trades)


# -- ccxt binanceusdm (REST) -----------------------------------------------------------


def ccxt_rest_scenario(ex: Loopback) -> dict:
    import ccxt

    server = ex.server
    exchange = ccxt.binanceusdm({"apiKey": KEY, "secret": SECRET})
    point_ccxt(exchange, ex)
    out: dict = {"markets": exchange.load_markets()}
    out["ticker"] = exchange.fetch_ticker(SYMBOL)
    out["tickers"] = exchange.fetch_tickers()
    out["bids_asks"] = exchange.fetch_bids_asks()
    out["last_prices"] = exchange.fetch_last_prices()
    out["server_views"] = trio.from_thread.run_sync(
        lambda: (server.stats.price_ticker("BTCUSDT"), server.stats.book_ticker("BTCUSDT"))
    )
    out["book"] = exchange.fetch_order_book(SYMBOL, limit=5)
    out["ohlcv"] = exchange.fetch_ohlcv(SYMBOL, "1m", limit=3)
    out["funding"] = exchange.fetch_funding_rate(SYMBOL)
    out["open_interest_flat"] = exchange.fetch_open_interest(SYMBOL)
    out["balance"] = exchange.fetch_balance()["USDT"]
    out["leverage"] = exchange.set_leverage(5, SYMBOL)
    out["margin_mode"] = exchange.set_margin_mode("isolated", SYMBOL)
    bid = out["book"]["bids"][0][0]
    limit = exchange.create_order(SYMBOL, "limit", "buy", 0.01, bid - 100)
    out["edited"] = exchange.edit_order(limit["id"], SYMBOL, "limit", "buy", 0.02, bid - 50)
    out["canceled"] = exchange.cancel_order(limit["id"], SYMBOL)
    out["market"] = exchange.create_order(SYMBOL, "market", "buy", 0.02)
    out["open_interest"] = exchange.fetch_open_interest(SYMBOL)
    last = Decimal(str(exchange.fetch_ticker(SYMBOL)["last"]))
    low = trio.from_thread.run_sync(future_low, server, 3000)
    out["last"], out["low"] = last, low
    stop = exchange.create_order(
        SYMBOL, "market", "sell", 0.02, None, {"stopLossPrice": float(low), "reduceOnly": True}
    )
    out["stop"] = stop
    out["open_stops"] = exchange.fetch_open_orders(SYMBOL, params={"trigger": True})
    out["positions_before"] = exchange.fetch_positions([SYMBOL])
    trio.from_thread.run_sync(server.advance, 3000)  # the market falls through the trigger
    out["stop_after"] = exchange.fetch_order(stop["id"], SYMBOL, {"trigger": True})
    out["positions_after"] = exchange.fetch_positions([SYMBOL])
    out["my_trades"] = exchange.fetch_my_trades(SYMBOL)
    out["ledger"] = exchange.fetch_ledger()
    return out


async def test_ccxt_binanceusdm_with_only_its_urls_changed(recording):
    async with loopback(recording, autoplay=False) as ex:
        server = ex.server
        while not server.book_ready("BTCUSDT"):
            server.advance(100)
        server.advance(2000)  # trades to build tickers and klines from
        with trio.fail_after(120):
            out = await trio.to_thread.run_sync(ccxt_rest_scenario, ex)

    market = out["markets"][SYMBOL]
    assert market["id"] == "BTCUSDT" and market["info"]["orderTypes"] == list(ACCEPTED_ORDER_TYPES)
    price_ticker, book_ticker = out["server_views"]  # nothing played during those calls
    assert out["ticker"]["last"] == float(out["last_prices"][SYMBOL]["price"])
    assert out["ticker"]["last"] == float(price_ticker["price"])
    assert list(out["tickers"]) == [SYMBOL]
    assert out["bids_asks"][SYMBOL]["bid"] == float(book_ticker["bidPrice"])
    assert out["book"]["bids"][0][0] < out["book"]["asks"][0][0]
    assert [row[1:5] for row in out["ohlcv"]][-1][0] > 0 and out["ohlcv"][-1][5] >= 0
    assert out["funding"]["fundingRate"] == 0.0001 and out["funding"]["markPrice"] > 0
    assert out["open_interest_flat"]["openInterestAmount"] == 0
    assert out["balance"]["total"] == 100_000
    assert out["leverage"]["leverage"] == 5
    assert out["margin_mode"]["code"] == 200 and server.engine.isolated("BTCUSDT")

    edited, canceled = out["edited"], out["canceled"]
    assert (edited["amount"], edited["status"]) == (0.02, "open")
    assert canceled["status"] == "canceled"
    amended = [
        e["o"]
        for e in server.user_events
        if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "AMENDMENT"
    ]
    assert [(o["q"], o["X"]) for o in amended] == [("0.020", "NEW")]
    assert out["market"]["status"] == "closed" and out["market"]["filled"] == 0.02
    assert out["open_interest"]["openInterestAmount"] == 0.02

    assert out["low"] < out["last"]  # the capture does fall there next: the stop triggers
    stop = out["stop"]
    assert stop["info"]["orderType"] == "STOP_MARKET" and stop["status"] == "open"
    assert [o["id"] for o in out["open_stops"]] == [stop["id"]]
    (position,) = [p for p in out["positions_before"] if p["contracts"]]
    assert position["marginMode"] == "isolated" and position["contracts"] == 0.02
    assert out["stop_after"]["info"]["algoStatus"] == "FINISHED"
    assert not [p for p in out["positions_after"] if p["contracts"]]
    algo = [e["o"]["X"] for e in server.user_events if e["e"] == "ALGO_UPDATE"]
    assert algo == ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]
    stop_fill = out["my_trades"][-1]
    assert stop_fill["side"] == "sell" and stop_fill["amount"] == 0.02
    assert stop_fill["order"] == out["stop_after"]["info"]["actualOrderId"]
    commissions = [e for e in out["ledger"] if e["type"] == "commission"]
    assert len(commissions) == len(server.engine.fills())
    wallet = Decimal(100_000) + sum(Decimal(e["info"]["income"]) for e in out["ledger"])
    assert wallet == server.engine.wallet  # the ledger explains the wallet to the cent


# -- ccxt.pro (websocket) ----------------------------------------------------------------


async def ccxt_pro_scenario(ex: Loopback, token: trio.lowlevel.TrioToken) -> dict:
    import ccxt.pro

    exchange = ccxt.pro.binanceusdm({"apiKey": KEY, "secret": SECRET})
    point_ccxt(exchange, ex)
    out: dict = {}
    try:
        await exchange.load_markets()
        books = [await exchange.watch_order_book(SYMBOL) for _ in range(5)]
        out["book"] = books[-1]
        out["trades"] = list(await exchange.watch_trades(SYMBOL))
        while len(out["trades"]) < 20:
            out["trades"] = list(await exchange.watch_trades(SYMBOL))
        first = asyncio.ensure_future(exchange.watch_orders(SYMBOL))  # connects the stream
        # Wait (off this loop) until the exchange has registered the user stream.
        connected = functools.partial(
            trio.from_thread.run, ex.server.wait_user_connections, 1, trio_token=token
        )
        await asyncio.get_running_loop().run_in_executor(None, connected)
        out["placed"] = await exchange.create_order(SYMBOL, "market", "buy", 0.01)
        out["orders"] = list(await first)
        while out["orders"][-1]["status"] != "closed":
            out["orders"] = list(await exchange.watch_orders(SYMBOL))
    finally:
        await exchange.close()
    return out


async def test_ccxt_pro_watches_book_trades_and_orders(recording):
    async with loopback(recording, speed=5.0, start="now") as ex:
        with trio.fail_after(120):
            await book_ready(ex.server)
            token = trio.lowlevel.current_trio_token()
            out = await trio.to_thread.run_sync(asyncio.run, ccxt_pro_scenario(ex, token))
        offset = ex.server.offset_ms
    book = out["book"]
    assert book["bids"][0][0] < book["asks"][0][0] and book["nonce"] > 0
    recorded = {
        t["t"]: t for t in (orjson.loads(m.data) for m in recording.messages) if t["e"] == "trade"
    }
    ids = [int(t["id"]) for t in out["trades"]]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # a contiguous run of the capture
    for trade in out["trades"]:
        assert trade["timestamp"] == recorded[int(trade["id"])]["T"] + offset  # re-timed
    assert offset > 0 and abs(out["trades"][-1]["timestamp"] - time.time() * 1000) < 3_600_000
    mine = [o for o in out["orders"] if o["id"] == out["placed"]["id"]]
    assert mine and mine[-1]["status"] == "closed"


# -- binance-futures-connector -----------------------------------------------------------


def connector_scenario(ex: Loopback) -> dict:
    from binance.error import ClientError
    from binance.um_futures import UMFutures
    from binance.websocket.um_futures.websocket_client import UMFuturesWebsocketClient

    client = UMFutures(key=KEY, secret=SECRET, base_url=ex.rest)
    out: dict = {
        "info": client.exchange_info(),
        "ticker": client.ticker_24hr_price_change("BTCUSDT"),
        "price": client.ticker_price("BTCUSDT"),
        "book_ticker": client.book_ticker("BTCUSDT"),
        "klines": client.klines("BTCUSDT", "1m", limit=2),
        "premium": client.mark_price("BTCUSDT"),
        "open_interest": client.open_interest("BTCUSDT"),
        "balance": client.balance(),
        "leverage": client.change_leverage("BTCUSDT", 10),
        "risk": client.get_position_risk(symbol="BTCUSDT"),
    }
    try:
        client.change_margin_type("BTCUSDT", "CROSSED")
    except ClientError as exc:
        out["margin_error"] = (exc.status_code, exc.error_code, exc.error_message)
    messages: list[dict] = []
    got = threading.Condition()

    def on_message(_ws, text: str) -> None:
        with got:
            messages.append(json.loads(text))
            got.notify_all()

    def wait_for(check) -> None:
        with got:
            assert got.wait_for(lambda: check(messages), timeout=60), messages[-5:]

    stream = UMFuturesWebsocketClient(stream_url=ex.ws, on_message=on_message)
    try:
        listen_key = client.new_listen_key()["listenKey"]
        stream.user_data(listen_key=listen_key, id=1)
        stream.book_ticker(symbol="btcusdt", id=2)
        wait_for(lambda ms: sum(1 for m in ms if m.get("result", 0) is None) == 2)
        wait_for(lambda ms: any(m.get("e") == "bookTicker" for m in ms))
        bid = Decimal(client.book_ticker("BTCUSDT")["bidPrice"])
        order = client.new_order(
            symbol="BTCUSDT", side="BUY", type="LIMIT", quantity=0.01,
            price=str(bid - 100), timeInForce="GTC",
        )  # fmt: skip
        out["modified"] = client.modify_order(
            symbol="BTCUSDT", side="BUY", orderId=order["orderId"], quantity=0.02,
            price=str(bid - 50),
        )  # fmt: skip
        out["canceled"] = client.cancel_order(symbol="BTCUSDT", orderId=order["orderId"])
        out["market"] = client.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.01)
        try:
            client.new_order(
                symbol="BTCUSDT", side="SELL", type="STOP_MARKET", quantity=0.01,
                stopPrice=str(bid - 500),
            )  # fmt: skip
        except ClientError as exc:
            out["stop_on_order"] = (exc.status_code, exc.error_code)
        out["algo"] = client.sign_request(
            "POST",
            "/fapi/v1/algoOrder",
            {
                "algoType": "CONDITIONAL", "symbol": "BTCUSDT", "side": "SELL",
                "type": "TAKE_PROFIT_MARKET", "quantity": "0.01",
                "triggerPrice": str(bid + 500), "clientAlgoId": "conn-tp-1",
            },
        )  # fmt: skip
        out["algo_canceled"] = client.sign_request(
            "DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "conn-tp-1"}
        )
        out["trades"] = client.get_account_trades(symbol="BTCUSDT")
        out["income"] = client.get_income_history(symbol="BTCUSDT")
        wait_for(
            lambda ms: (
                [m["o"]["X"] for m in ms if m.get("e") == "ALGO_UPDATE"] == ["NEW", "CANCELED"]
            )
        )
    finally:
        stream.stop()
        # The connector answers the close handshake but never closes its socket.
        stream.socket_manager.ws.shutdown()
        client.session.close()
    out["events"] = [m for m in messages if m.get("e") in ("ORDER_TRADE_UPDATE", "ALGO_UPDATE")]
    return out


async def test_binance_futures_connector_with_only_its_urls_changed(recording):
    pytest.importorskip("binance.um_futures")
    async with loopback(recording, speed=5.0, start="now") as ex:
        with trio.fail_after(120):
            await book_ready(ex.server)
            out = await trio.to_thread.run_sync(connector_scenario, ex)
        server = ex.server
    assert out["info"]["symbols"][0]["orderTypes"] == list(ACCEPTED_ORDER_TYPES)
    assert out["ticker"]["symbol"] == "BTCUSDT" and int(out["ticker"]["count"]) > 0
    assert Decimal(out["price"]["price"]) > 0 and Decimal(out["book_ticker"]["bidPrice"]) > 0
    assert len(out["klines"]) >= 1 and len(out["klines"][0]) == 12
    assert out["premium"]["lastFundingRate"] == "0.00010000"
    assert out["open_interest"]["openInterest"] == "0.000"
    assert out["balance"][0]["balance"] == "100000"
    assert out["leverage"]["leverage"] == 10
    assert out["margin_error"] == (400, -4046, "No need to change margin type.")
    assert (out["modified"]["origQty"], out["canceled"]["status"]) == ("0.020", "CANCELED")
    assert out["stop_on_order"] == (400, -4120)
    assert out["algo"]["algoStatus"] == "NEW" and out["algo"]["orderType"] == "TAKE_PROFIT_MARKET"
    assert out["algo_canceled"]["code"] == "200"
    assert len(out["trades"]) == 1 and out["income"][0]["incomeType"] == "COMMISSION"
    executions = [
        (e["o"]["x"], e["o"]["X"]) for e in out["events"] if e["e"] == "ORDER_TRADE_UPDATE"
    ]
    assert executions[:3] == [("NEW", "NEW"), ("AMENDMENT", "NEW"), ("CANCELED", "CANCELED")]
    assert ("TRADE", "FILLED") in executions
    assert out["events"] == [
        e for e in server.user_events if e["e"] in ("ORDER_TRADE_UPDATE", "ALGO_UPDATE")
    ]


# -- python-binance ----------------------------------------------------------------------


def python_binance_rest(ex: Loopback) -> dict:
    from binance.client import Client
    from binance.exceptions import BinanceAPIException

    client = Client(KEY, SECRET)  # pings the (loopback) API on construction
    out: dict = {
        "time": client.futures_time(),
        "ticker": client.futures_symbol_ticker(symbol="BTCUSDT"),
        "klines": client.futures_klines(symbol="BTCUSDT", interval="1m", limit=2),
        "funding": client.futures_mark_price(symbol="BTCUSDT"),
        "balance": client.futures_account_balance(),
        "leverage": client.futures_change_leverage(symbol="BTCUSDT", leverage=3),
        "market": client.futures_create_order(
            symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.01
        ),
    }
    try:
        client.futures_change_margin_type(symbol="BTCUSDT", marginType="CROSSED")
    except BinanceAPIException as exc:
        out["margin_error"] = exc.code
    bid = Decimal(client.futures_orderbook_ticker(symbol="BTCUSDT")["bidPrice"])
    out["stop"] = client.futures_create_order(
        symbol="BTCUSDT",
        side="SELL",
        type="STOP_MARKET",
        quantity=0.01,
        stopPrice=str(bid - 500),
        reduceOnly="true",
    )  # fmt: skip  (python-binance routes it to the algo order API itself)
    out["positions"] = client.futures_position_information(symbol="BTCUSDT")
    out["trades"] = client.futures_account_trades(symbol="BTCUSDT")
    out["income"] = client.futures_income_history(symbol="BTCUSDT")
    client.close_connection()
    client.loop.close()  # the sync client makes an asyncio loop of its own and leaves it open
    return out


async def python_binance_user_socket(ex: Loopback, placed: threading.Event) -> list[dict]:
    from binance import AsyncClient, BinanceSocketManager

    client = await AsyncClient.create(KEY, SECRET)
    try:
        manager = BinanceSocketManager(client)
        events: list[dict] = []
        async with manager.futures_user_socket() as socket_:
            placed.set()
            while not any(e.get("e") == "ALGO_UPDATE" for e in events):
                events.append(await socket_.recv())
        return events
    finally:
        await client.close_connection()


async def test_python_binance_with_only_its_urls_changed(recording, monkeypatch):
    pytest.importorskip("binance.client")
    from binance.base_client import BaseClient
    from binance.ws.streams import BinanceSocketManager

    async with loopback(recording, speed=5.0, start="now") as ex:
        monkeypatch.setattr(BaseClient, "API_URL", ex.rest + "/api")
        monkeypatch.setattr(BaseClient, "FUTURES_URL", ex.rest + "/fapi")
        monkeypatch.setattr(BinanceSocketManager, "FSTREAM_URL", ex.ws + "/")
        with trio.fail_after(120):
            await book_ready(ex.server)
            listening = threading.Event()
            async with trio.open_nursery() as nursery:
                user_events: list[list[dict]] = []

                async def listen() -> None:
                    user_events.append(
                        await trio.to_thread.run_sync(
                            asyncio.run, python_binance_user_socket(ex, listening)
                        )
                    )

                nursery.start_soon(listen)
                await trio.to_thread.run_sync(listening.wait)
                await ex.server.wait_user_connections(1)
                out = await trio.to_thread.run_sync(python_binance_rest, ex)
    assert out["time"]["serverTime"] > 0 and Decimal(out["ticker"]["price"]) > 0
    assert len(out["klines"]) >= 1 and out["funding"]["lastFundingRate"] == "0.00010000"
    assert out["balance"][0]["asset"] == "USDT" and out["leverage"]["leverage"] == 3
    assert out["market"]["status"] == "NEW" and out["margin_error"] == -4046
    assert out["stop"]["orderType"] == "STOP_MARKET" and out["stop"]["algoStatus"] == "NEW"
    assert Decimal(out["positions"][0]["positionAmt"]) == Decimal("0.01")
    assert len(out["trades"]) == 1 and out["income"][0]["incomeType"] == "COMMISSION"
    (events,) = user_events
    kinds = [(e["e"], e["o"].get("x", e["o"]["X"])) for e in events if "o" in e]
    assert ("ORDER_TRADE_UPDATE", "TRADE") in kinds and kinds[-1] == ("ALGO_UPDATE", "NEW")


# -- re-timing and playback start --------------------------------------------------------


def test_retime_moves_only_time_digits():
    event = (
        b'{"e":"trade","E":1723161256299,"T":1723161256298,"s":"BTCUSDT","t":5266584533,'
        b'"p":"61800.20"}'
    )
    moved = retime(event, 1000)
    assert moved == event.replace(b"1723161256299", b"1723161257299").replace(
        b"1723161256298", b"1723161257298"
    )
    kline = b'{"e":"kline","E":10,"k":{"t":0,"T":59999,"x":false}}'
    assert retime(kline, 5, kline=True) == b'{"e":"kline","E":15,"k":{"t":5,"T":60004,"x":false}}'
    assert retime(event, 0) is event


async def test_a_client_signing_with_its_own_clock_is_accepted(recording):
    """Regression: the exchange ran on the capture's 2024 clock, so every signed call
    stamped with the client's clock was refused with -1021."""
    async with loopback(recording, autoplay=False) as ex, httpx.AsyncClient() as http:
        query = f"timestamp={int(time.time() * 1000)}&recvWindow=5000"
        url = f"{ex.rest}/fapi/v2/balance?{query}&signature={sign(SECRET, query)}"
        r = await http.get(url, headers={"X-MBX-APIKEY": KEY})
        assert r.status_code == 200, r.text
        server_time = (await http.get(f"{ex.rest}/fapi/v1/time")).json()["serverTime"]
        assert abs(server_time - time.time() * 1000) < 60_000


async def test_original_times_serves_the_recorded_bytes_and_clock(recording):
    async with loopback(recording, autoplay=False, original_times=True) as ex:
        first = recording.messages[0].event_time
        assert ex.server.exchange_ms() - first < 60_000
        ex.server.advance(10)
        assert ex.server.offset_ms == 0


async def test_events_are_retimed_to_the_wall_clock(recording):
    wall = 1_900_000_000_000
    server = StreamServer(recording, ServerSettings(speed=0), QUIET, wall_ms=lambda: wall)
    n = 300
    async with trio.open_nursery() as nursery:
        ws_port, _rest = await nursery.start(server.serve, "127.0.0.1", 0, 0)
        with trio.fail_after(30):
            async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{ws_port}/stream?streams=btcusdt@trade/btcusdt@depth@0ms"
            ) as ws:
                got = [(await ws.get_message()).encode() for _ in range(n)]
        nursery.cancel_scope.cancel()
    offset = server.offset_ms
    first = recording.messages[0].event_time
    assert wall - first <= offset < wall - first + 60_000  # E of the first event ~ now
    sent = [
        retime(m.envelope, offset)
        for m in recording.messages
        if m.stream in ("btcusdt@trade", "btcusdt@depth@0ms")
    ]
    assert got == sent[:n]  # byte for byte the capture, time digits moved


async def test_a_rest_only_client_starts_playback(recording):
    """Regression: playback waited for a websocket client; REST-only clients saw a
    market that never moved."""
    async with loopback(recording, speed=0) as ex, httpx.AsyncClient() as http:
        with trio.fail_after(60):
            r = await http.get(f"{ex.rest}/fapi/v1/time")
            assert r.status_code == 200
            await ex.server.finished.wait()
            trades = (await http.get(f"{ex.rest}/fapi/v1/trades?symbol=BTCUSDT&limit=1")).json()
    last = [orjson.loads(m.data) for m in recording.messages if m.stream == "btcusdt@trade"][-1]
    assert trades[0]["id"] == last["t"] and trades[0]["time"] == last["T"] + ex.server.offset_ms


async def test_start_now_plays_without_any_client(recording):
    async with loopback(recording, speed=0, start="now") as ex:
        with trio.fail_after(60):
            await ex.server.finished.wait()


# -- websocket paths -----------------------------------------------------------------------


def test_websocket_paths_of_the_clients_are_routed():
    key = "k" * 64
    assert parse_ws_target("/public/ws/0") == parse_ws_target("/ws")  # ccxt.pro's numbering
    route = parse_ws_target(f"/private/ws?listenKey={key}")
    assert route is not None and route.listen_keys == (key,) and not route.combined
    route = parse_ws_target("/market/stream?streams=btcusdt@aggTrade/btcusdt@markPrice")
    assert route is not None and route.combined
    assert route.streams == ("btcusdt@aggTrade", "btcusdt@markPrice")
    assert parse_ws_target(f"/ws/{key}").listen_keys == (key,)
    assert parse_ws_target("/nowhere") is None
    recorded = frozenset({"btcusdt@depth@0ms", "btcusdt@trade"})
    assert recorded_name("btcusdt@depth@100ms", recorded) == "btcusdt@depth@0ms"
    assert recorded_name("btcusdt@depth", recorded) == "btcusdt@depth@0ms"
    assert recorded_name("ethusdt@depth", recorded) == "ethusdt@depth"


async def test_an_alias_stream_gets_envelopes_under_its_own_name(recording):
    async with loopback(recording, speed=0) as ex:
        with trio.fail_after(30):
            async with trio_websocket.open_websocket_url(
                f"{ex.ws}/public/stream?streams=btcusdt@depth@100ms"
            ) as ws:
                first = orjson.loads(await ws.get_message())
                await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":7}')
                while "result" not in (reply := orjson.loads(await ws.get_message())):
                    pass
    assert first["stream"] == "btcusdt@depth@100ms" and first["data"]["e"] == "depthUpdate"
    assert reply == {"result": ["btcusdt@depth@100ms"], "id": 7}


# -- HTTP details -------------------------------------------------------------------------


def flat(obj: dict, prefix: str = "") -> dict:
    """A JSON log line with nested ECS objects as dotted keys (``url.path``)."""
    out: dict = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


async def test_reason_phrases_binance_errors_and_an_access_log_line_per_request(
    recording, tmp_path
):
    path = tmp_path / "exchange.jsonl"
    log, log_file = make_logger(path)
    try:
        async with loopback(recording, log=log, autoplay=False) as ex, httpx.AsyncClient() as h:
            ok = await h.get(f"{ex.rest}/fapi/v1/time", headers={"user-agent": "probe/1"})
            bad = await h.get(f"{ex.rest}/fapi/v1/openInterest?symbol=NOPE")
            missing = await h.get(f"{ex.rest}/fapi/v9/nothing")
            unauth = await h.get(f"{ex.rest}/fapi/v2/balance?timestamp=1&signature=00")
    finally:
        assert log_file is not None
        log_file.close()
    assert (ok.status_code, ok.reason_phrase) == (200, "OK")
    assert (bad.status_code, bad.reason_phrase) == (400, "Bad Request")
    assert bad.json() == {"code": -1121, "msg": "Invalid symbol."}
    assert (missing.status_code, missing.reason_phrase) == (404, "Not Found")
    assert set(missing.json()) == {"code", "msg"}
    assert (unauth.status_code, unauth.reason_phrase) == (401, "Unauthorized")
    lines = [flat(orjson.loads(line)) for line in path.read_bytes().splitlines()]
    access = [line for line in lines if line["message"] == "http request"]
    assert [(a["url.path"], a["http.response.status_code"]) for a in access] == [
        ("/fapi/v1/time", 200),
        ("/fapi/v1/openInterest", 400),
        ("/fapi/v9/nothing", 404),
        ("/fapi/v2/balance", 401),
    ]
    assert access[0]["user_agent.original"] == "probe/1" and "error.code" not in access[0]
    assert access[1]["error.code"] == "-1121" and access[3]["error.code"] == "-2014"
    assert all(a["event.duration"] >= 0 and a["client.address"] == "127.0.0.1" for a in access)
    assert all("signature" not in orjson.dumps(a).decode() for a in access)


async def test_the_rest_port_listens_only_on_the_requested_host(recording):
    """Regression (issue 11 item 17): the REST port listened on every interface."""
    async with loopback(recording, autoplay=False) as ex:
        for port in (ex.rest_port, ex.ws_port):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                # Another loopback address, same port: free only if the server did
                # not take the port on every interface (0.0.0.0).
                probe.bind(("127.0.0.2", port))
            except OSError as exc:
                assert exc.errno != errno.EADDRINUSE, f"port {port} is bound on all interfaces"
                raise
            finally:
                probe.close()


# -- user-data events: key sets of Binance's own -----------------------------------------


def _recorded_events() -> list[dict]:
    if not USERDATA_EVENTS.exists():
        pytest.skip("../shared/data/external is not beside the repository")
    decoder = json.JSONDecoder()
    events = []
    for path in sorted(USERDATA_EVENTS.glob("*.json")):
        text = path.read_text()
        at = 0
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                break
            event, at = decoder.raw_decode(text, at)
            events.append(event)
    return events


def _shape(event: dict) -> tuple:
    """What identifies an event's kind: type, status, and whether an algo triggered it."""
    o = event.get("o", {})
    return event["e"], o.get("X"), "st" in o


class _Market:
    def __init__(self) -> None:
        self.book = {
            "bids": [(Decimal(99), Decimal("0.5")), (Decimal(98), Decimal(5))],
            "asks": [(Decimal(100), Decimal(5))],
        }

    def levels(self, symbol, side):
        return list(self.book[side])

    def mark_price(self, symbol):
        return Decimal("99.5")


def _our_events() -> list[dict]:
    rules = SymbolRules(
        symbol="TESTUSDT", tick=Decimal("0.1"), step=Decimal("0.001"), min_qty=Decimal("0.001"),
        market_step=Decimal("0.001"), market_min_qty=Decimal("0.001"),
        price_precision=1, quantity_precision=3,
    )  # fmt: skip
    engine = MatchingEngine({"TESTUSDT": rules}, _Market(), AccountSettings(balance=1000))
    algos = AlgoBook(engine, {}, {})
    events: list[dict] = []

    def limit(side: str, qty: str, price: str, cid: str) -> None:
        req = OrderRequest(
            symbol="TESTUSDT", side=side, type="LIMIT", quantity=Decimal(qty),
            price=Decimal(price), client_order_id=cid,
        )  # fmt: skip
        events.extend(engine.new_order(req, 1)[2])

    limit("BUY", "1", "90", "rest")
    events.extend(engine.cancel("TESTUSDT", 2, client_order_id="rest")[1])
    limit("BUY", "2", "90", "part")
    events.extend(engine.on_trade("TESTUSDT", Decimal(90), Decimal(1), 3))  # PARTIALLY_FILLED
    events.extend(engine.on_trade("TESTUSDT", Decimal(90), Decimal(1), 4))  # FILLED
    stop = AlgoRequest(
        symbol="TESTUSDT", side="SELL", type="STOP_MARKET", quantity=Decimal("1"),
        trigger_price=Decimal(95), reduce_only=True,
    )  # fmt: skip
    events.extend(algos.place(stop, Decimal(99), Decimal("99.5"), 5)[1])
    events.extend(algos.on_price("TESTUSDT", Decimal(95), Decimal("99.5"), 6))  # triggers
    take = attrs.evolve(stop, type="TAKE_PROFIT_MARKET", trigger_price=Decimal(105))
    events.extend(algos.place(take, Decimal(99), Decimal("99.5"), 7)[1])
    events.extend(algos.cancel(algo_id=None, client_algo_id=events[-1]["o"]["caid"], now_ms=8)[1])
    big = attrs.evolve(stop, side="BUY", quantity=Decimal(1000), reduce_only=False)
    big = attrs.evolve(big, type="STOP_MARKET", trigger_price=Decimal(101))
    events.extend(algos.place(big, Decimal(99), Decimal("99.5"), 9)[1])
    events.extend(algos.on_price("TESTUSDT", Decimal(101), Decimal("99.5"), 10))  # no margin
    return events


def test_user_data_events_have_the_keys_binance_sends():
    recorded = _recorded_events()
    ours = _our_events()
    checked = 0
    for theirs in recorded:
        if theirs["e"] == "CONDITIONAL_ORDER_TRIGGER_REJECT" or theirs["o"].get("o") == "STOP":
            continue  # STOP (limit) orders: not accepted by this exchange
        same = [e for e in ours if _shape(e) == _shape(theirs)]
        assert same, f"no event of shape {_shape(theirs)}"
        for mine in same:
            assert set(mine) == set(theirs), _shape(theirs)
            assert set(mine["o"]) == set(theirs["o"]), (
                _shape(theirs),
                set(mine["o"]) ^ set(theirs["o"]),
            )
        checked += 1
    shapes = {_shape(e) for e in recorded}
    assert ("ALGO_UPDATE", "FINISHED", False) in shapes and (
        "ORDER_TRADE_UPDATE",
        "FILLED",
        True,
    ) in shapes
    assert checked >= 15
    assert [e["o"]["X"] for e in ours if e["e"] == "ALGO_UPDATE"] == [
        "NEW", "TRIGGERING", "TRIGGERED", "FINISHED", "NEW", "CANCELED", "NEW", "TRIGGERING",
        "REJECTED",
    ]  # fmt: skip
