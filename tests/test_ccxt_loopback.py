"""Third-party proof: the real ccxt ``binanceusdm`` client trades on the loopback exchange.

ccxt signs, encodes and parses exactly as it does against Binance; only its
base URLs point at the loopback server (no option is changed: ``load_markets``
asks the spot wallet's coins, and signed calls carry ccxt's own clock, which the
re-timed exchange accepts). It runs synchronously in a worker thread
(``trio.to_thread.run_sync``) while the server runs in this Trio run. More clients
and endpoints: ``test_loopback_clients.py``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import trio

from engine.testing import quiet_logger
from engine.venues.sim._recorded import load_recording
from engine.venues.sim._stream_server import ServerSettings, StreamServer

ccxt = pytest.importorskip("ccxt")

SAMPLE = Path(__file__).resolve().parents[1] / "data/sample/btcusdt_20240808_180s.gz"
KEY = "ccxtkey" + "K" * 57
SECRET = "ccxtsecret" + "s" * 54


def make_exchange(rest_port: int):
    """ccxt as a user configures it (no option), with Binance's hosts replaced."""
    root = f"http://127.0.0.1:{rest_port}"
    exchange = ccxt.binanceusdm({"apiKey": KEY, "secret": SECRET, "timeout": 10_000})
    api = exchange.urls["api"]
    for name, url in list(api.items()):
        if isinstance(url, str):
            url = url.replace("https://fapi.binance.com", root)
            api[name] = url.replace("https://api.binance.com", root)
    return exchange


def scenario(exchange, best_bid: float) -> dict:
    out: dict = {}
    exchange.load_markets()
    market = exchange.market("BTC/USDT:USDT")
    out["market_id"] = market["id"]
    book = exchange.fetch_order_book("BTC/USDT:USDT", limit=5)
    out["book"] = book
    out["balance_before"] = exchange.fetch_balance()["USDT"]["total"]
    limit_price = round(best_bid - 100, 1)
    limit = exchange.create_order("BTC/USDT:USDT", "limit", "buy", 0.01, limit_price)
    out["limit"] = limit
    market_order = exchange.create_order("BTC/USDT:USDT", "market", "buy", 0.02)
    out["market_order"] = market_order
    out["canceled"] = exchange.cancel_order(limit["id"], "BTC/USDT:USDT")
    out["positions"] = exchange.fetch_positions(["BTC/USDT:USDT"])
    out["balance_after"] = exchange.fetch_balance()["USDT"]
    return out


async def test_ccxt_binanceusdm_trades_on_the_loopback_exchange():
    recording = load_recording([SAMPLE])
    server = StreamServer(
        recording, ServerSettings(autoplay=False), quiet_logger(), api_keys={KEY: SECRET}
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            _ws, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
            while not server.book_ready("BTCUSDT"):
                server.advance(100)
            bids = list(server.levels("BTCUSDT", "bids"))
            asks = list(server.levels("BTCUSDT", "asks"))
            exchange = make_exchange(rest_port)
            out = await trio.to_thread.run_sync(scenario, exchange, float(bids[0][0]))
            nursery.cancel_scope.cancel()

    assert out["market_id"] == "BTCUSDT"
    book = out["book"]
    assert book["bids"][0] == [float(bids[0][0]), float(bids[0][1])]
    assert book["asks"][0] == [float(asks[0][0]), float(asks[0][1])]
    assert out["balance_before"] == 10_000

    limit, market_order, canceled = out["limit"], out["market_order"], out["canceled"]
    assert limit["status"] == "open" and limit["amount"] == 0.01
    assert canceled["id"] == limit["id"] and canceled["status"] == "canceled"
    orders = {o.order_id: o for o in server.engine.orders()}
    assert orders[int(limit["id"])].status == "CANCELED"
    assert orders[int(market_order["id"])].status == "FILLED"
    assert orders[int(market_order["id"])].quantity == Decimal("0.02")

    (position,) = [p for p in out["positions"] if p["contracts"]]
    assert position["symbol"] == "BTC/USDT:USDT" and position["side"] == "long"
    assert position["contracts"] == 0.02
    fill = server.engine.fills()[0]
    assert position["entryPrice"] == float(fill.price)
    # The taker fee (5 bps) left the wallet.
    fee = float(fill.price * fill.qty * Decimal("0.0005"))
    assert out["balance_after"]["total"] == pytest.approx(10_000 - fee)
    assert server.engine.wallet == Decimal(10_000) - fill.commission
