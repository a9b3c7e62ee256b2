"""The live Binance venue's order types against the loopback exchange.

:class:`~engine.venues.binance.BinanceVenue` talks real HTTP and websockets over
127.0.0.1 to the loopback exchange (:class:`StreamServer`), which plays the bundled
BTCUSDT sample only when the test calls ``advance`` (``autoplay=False``), so each
order meets a known market. Every wait is for a condition (the venue's events),
polled under a failure guard, never a pause.

Covered: LIMIT GTX that rests, a crossing GTX refused with -5022 (an
:class:`OrderRejected`, sent once), an amendment (``PUT /fapi/v1/order``) reported
as :class:`OrderReplaced`, a cancel, IOC expiry, a resting LIMIT filled as maker
when the replayed trades print through it, and a reduce-only STOP_MARKET placed
on the algo order API that triggers and closes the position.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import attrs
import orjson
import pytest
import trio

from engine.messages import (
    CancelOrder,
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
    Purpose,
    ReplaceOrder,
    Side,
    SubmitOrder,
)
from engine.testing import quiet_logger
from engine.venues.binance import (
    BinanceVenue,
    Credentials,
    JournalView,
    journal_view_from_records,
)
from engine.venues.sim._recorded import Recording, load_recording
from engine.venues.sim._stream_server import ServerSettings, StreamServer, TradingSettings
from engine.venues.sim._trading import AccountSettings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
KEY = "typesKey" + "K" * 56
SECRET = "typesSecret" + "s" * 53
QUIET = quiet_logger()
GUARD_S = 120  # a failure guard, not a wait


@pytest.fixture(scope="module")
def recording() -> Recording:
    return load_recording([SAMPLE])


class Harness:
    """The venue, the exchange, and every event the venue handed out so far."""

    def __init__(self, server: StreamServer, venue: BinanceVenue) -> None:
        self.server = server
        self.venue = venue
        self.events: list[OrderEvent] = []
        self.submitted: list[SubmitOrder] = []
        self._seq = itertools.count(1)

    def order(self, side: Side, qty: float, **fields: object) -> SubmitOrder:
        n = next(self._seq)
        return SubmitOrder(
            client_order_id=f"ot-{n}",
            symbol="BTCUSDT",
            side=side,
            qty=qty,
            ref_price=self.mid(),
            purpose=fields.pop("purpose", Purpose.ENTRY),  # type: ignore[arg-type]
            reduce_only=bool(fields.pop("reduce_only", False)),
            ts_event=time.time_ns(),
            ts_init=n,
            seq=n,
            correlation_id=f"c-{n}",
            **fields,  # type: ignore[arg-type]
        )

    def quote(self) -> tuple[Decimal, Decimal]:
        row = self.server.stats.book_ticker("BTCUSDT")
        assert row is not None
        return Decimal(row["bidPrice"]), Decimal(row["askPrice"])

    def mid(self) -> float:
        bid, ask = self.quote()
        return float((bid + ask) / 2)

    def submit(self, order: SubmitOrder) -> None:
        self.submitted.append(order)
        self.events += self.venue.submit(order)

    def journal(self) -> JournalView:
        """What a journal of this venue's orders and events would give reconciliation."""
        records = [("SubmitOrder", attrs.asdict(o, recurse=False)) for o in self.submitted]
        records += [(type(e).__name__, attrs.asdict(e, recurse=False)) for e in self.events]
        return journal_view_from_records(records)

    async def until(self, done: Callable[[list[OrderEvent]], bool]) -> None:
        """Collect the venue's events until ``done(events)``."""
        with trio.fail_after(GUARD_S):
            while not done(self.events):
                await trio.sleep(0.01)
                self.events += self.venue.on_market({})

    def of(self, order: SubmitOrder) -> list[OrderEvent]:
        return [e for e in self.events if e.client_order_id == order.client_order_id]

    def kinds(self, order: SubmitOrder) -> list[str]:
        return [type(e).__name__ for e in self.of(order)]

    def has(self, order: SubmitOrder, cls: type) -> Callable[[list[OrderEvent]], bool]:
        return lambda _events: any(isinstance(e, cls) for e in self.of(order))


def new_server(recording: Recording) -> StreamServer:
    return StreamServer(
        recording,
        ServerSettings(autoplay=False),
        QUIET,
        trading=TradingSettings(account=AccountSettings(balance=100_000)),
        api_keys={KEY: SECRET},
    )


@asynccontextmanager
async def serving(server: StreamServer) -> AsyncIterator[tuple[int, int]]:
    """The exchange on two free ports, its book synced and some trades played."""
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(server.serve, "127.0.0.1", 0, 0)
        while not server.book_ready("BTCUSDT"):
            server.advance(100)
        server.advance(500)  # trades and a book ticker to price from
        yield ports
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def venue_on(
    server: StreamServer, ports: tuple[int, int], **kwargs: object
) -> AsyncIterator[Harness]:
    """A started venue on the exchange (stopped, as on a shutdown, at the end).

    The first venue waits until the exchange has registered its user stream (its
    events must reach it); a later one relies on the REST answers alone.
    """
    ws_port, rest_port = ports
    first = server.user_connections == 0
    venue = BinanceVenue(
        base_url=f"http://127.0.0.1:{rest_port}",
        ws_url=f"ws://127.0.0.1:{ws_port}",
        credentials=Credentials(KEY, SECRET),
        symbols=["BTCUSDT"],
        log=QUIET,
        check_interval_s=0.05,
        **kwargs,  # type: ignore[arg-type]
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.run)
        if first:
            await server.wait_user_connections(1)
        yield Harness(server, venue)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def live(recording: Recording, **kwargs: object) -> AsyncIterator[Harness]:
    server = new_server(recording)
    async with serving(server) as ports, venue_on(server, ports, **kwargs) as harness:
        yield harness


def future_trades(server: StreamServer, messages: int) -> list[Decimal]:
    start = server._index
    return [
        Decimal(orjson.loads(m.data)["p"])
        for m in server.recording.messages[start : start + messages]
        if m.stream.endswith("@trade")
    ]


async def test_gtx_rests_crossing_gtx_is_rejected_then_amend_and_cancel(recording):
    async with live(recording) as h:
        bid, ask = h.quote()
        tick = h.server.engine.rules["BTCUSDT"].tick
        off_tick = bid - 50 - tick * Decimal("0.4")  # between two ticks
        resting = h.order(Side.BUY, 0.01, order_type="LIMIT", price=float(off_tick),
                          time_in_force="GTX")  # fmt: skip
        crossing = h.order(Side.BUY, 0.01, order_type="LIMIT", price=float(ask) + 20,
                           time_in_force="GTX")  # fmt: skip
        h.submit(resting)
        h.submit(crossing)
        await h.until(
            lambda _: h.has(resting, OrderAccepted)(_) and h.has(crossing, OrderRejected)(_)
        )
        (rejected,) = [e for e in h.of(crossing) if isinstance(e, OrderRejected)]
        assert rejected.reason.startswith("-5022")
        assert h.kinds(crossing) == ["OrderRejected"]  # refused once, not retried
        (held,) = h.server.engine.open_orders("BTCUSDT")
        # The limit price was rounded to the tick on the passive side (down for a buy).
        assert held.price == bid - 50 - tick
        assert held.time_in_force == "GTX"

        new_price = float(bid - 80 + tick * Decimal("0.6"))  # rounds down to bid - 80
        h.venue.replace(
            ReplaceOrder(client_order_id=resting.client_order_id, symbol="BTCUSDT",
                         side=Side.BUY, purpose=Purpose.ENTRY, qty=0.02, price=new_price,
                         ts_event=1, ts_init=1, seq=90, correlation_id="r")
        )  # fmt: skip
        await h.until(h.has(resting, OrderReplaced))
        (replaced,) = [e for e in h.of(resting) if isinstance(e, OrderReplaced)]
        assert (replaced.qty, replaced.price) == (0.02, float(bid - 80))
        (held,) = h.server.engine.open_orders("BTCUSDT")
        assert (held.quantity, held.price) == (Decimal("0.020"), Decimal(str(replaced.price)))

        h.venue.cancel(
            CancelOrder(client_order_id=resting.client_order_id, symbol="BTCUSDT",
                        purpose=Purpose.ENTRY, reason="test", ts_event=2, ts_init=2, seq=91,
                        correlation_id="x")
        )  # fmt: skip
        await h.until(h.has(resting, OrderCanceled))
        assert h.kinds(resting) == ["OrderAccepted", "OrderReplaced", "OrderCanceled"]
        assert not h.server.engine.open_orders("BTCUSDT")
        assert h.venue.pending_orders == 0


async def test_ioc_expires_and_a_resting_limit_fills_as_maker(recording):
    async with live(recording) as h:
        bid, _ask = h.quote()
        ioc = h.order(Side.BUY, 0.01, order_type="LIMIT", price=float(bid) - 100,
                      time_in_force="IOC")  # fmt: skip
        h.submit(ioc)
        await h.until(h.has(ioc, OrderExpired))
        assert h.kinds(ioc)[-1] == "OrderExpired"
        assert not any(isinstance(e, OrderFilled) for e in h.of(ioc))

        low = min(future_trades(h.server, 3000))
        assert low < bid  # the capture trades down there next
        maker = h.order(Side.BUY, 0.01, order_type="LIMIT", price=float(low) + 0.05,
                        time_in_force="GTC")  # fmt: skip
        h.submit(maker)
        await h.until(h.has(maker, OrderAccepted))
        h.server.advance(3000)
        await h.until(h.has(maker, OrderFilled))
        fills = [e for e in h.of(maker) if isinstance(e, OrderFilled)]
        assert {f.liquidity for f in fills} == {"MAKER"}
        assert sum(f.last_qty for f in fills) == pytest.approx(0.01)
        assert all(f.last_price <= float(low) + 0.05 for f in fills)
        assert h.venue.ledger.qty("BTCUSDT") == pytest.approx(0.01)


async def test_reduce_only_stop_market_triggers_through_the_algo_api(recording):
    async with live(recording) as h:
        entry = h.order(Side.BUY, 0.02, purpose=Purpose.ENTRY)
        h.submit(entry)
        await h.until(lambda _: h.venue.ledger.qty("BTCUSDT") > 0 and h.venue.pending_orders == 0)
        low = min(future_trades(h.server, 3000))
        stop = h.order(Side.SELL, 0.02, purpose=Purpose.EXIT, reduce_only=True,
                       order_type="STOP_MARKET", stop_price=float(low) + 0.05)  # fmt: skip
        h.submit(stop)
        await h.until(h.has(stop, OrderAccepted))
        (algo,) = h.server.algos.open_orders("BTCUSDT")
        assert algo.type == "STOP_MARKET" and algo.reduce_only and algo.quantity == Decimal("0.020")
        h.server.advance(3000)
        await h.until(h.has(stop, OrderFilled))
        await h.until(lambda _: h.venue.pending_orders == 0)
        kinds = h.kinds(stop)
        assert kinds[:2] == ["OrderAccepted", "OrderTriggered"] and kinds[-1] == "OrderFilled"
        (trig,) = [e for e in h.of(stop) if isinstance(e, OrderTriggered)]
        assert trig.trigger_price == float(algo.trigger_price)
        assert h.venue.ledger.qty("BTCUSDT") == pytest.approx(0.0)
        assert h.server.engine.position("BTCUSDT").amount == 0


# -- ccxt, unchanged, on the same endpoints ------------------------------------------------


def ccxt_order_types(rest: str, bid: float, ask: float) -> dict:
    import ccxt

    exchange = ccxt.binanceusdm({"apiKey": KEY, "secret": SECRET})
    api = exchange.urls["api"]
    for name, url in list(api.items()):  # only the host changes
        if isinstance(url, str):
            api[name] = url.replace("https://fapi.binance.com", rest).replace(
                "https://api.binance.com", rest
            )
    out: dict = {}
    exchange.load_markets()
    symbol = "BTC/USDT:USDT"
    try:
        exchange.create_order(symbol, "limit", "buy", 0.01, ask + 20, {"postOnly": True})
    except ccxt.BaseError as exc:
        out["post_only_error"] = exc
    out["ioc"] = exchange.create_order(
        symbol, "limit", "buy", 0.01, bid - 100, {"timeInForce": "IOC"}
    )
    out["gtx"] = exchange.create_order(symbol, "limit", "sell", 0.01, ask + 100, {"postOnly": True})
    out["take_profit"] = exchange.create_order(
        symbol, "market", "sell", 0.01, None,
        {"takeProfitPrice": ask * 1.5, "reduceOnly": True},
    )  # fmt: skip
    out["tp_canceled"] = exchange.cancel_order(out["take_profit"]["id"], symbol, {"trigger": True})
    out["gtx_canceled"] = exchange.cancel_order(out["gtx"]["id"], symbol)
    return out


async def test_ccxt_post_only_ioc_take_profit_and_cancels(recording):
    import ccxt

    server = new_server(recording)
    async with serving(server) as (_ws_port, rest_port):
        row = server.stats.book_ticker("BTCUSDT")
        bid, ask = float(row["bidPrice"]), float(row["askPrice"])
        with trio.fail_after(GUARD_S):
            out = await trio.to_thread.run_sync(
                ccxt_order_types, f"http://127.0.0.1:{rest_port}", bid, ask
            )
    error = out["post_only_error"]  # ccxt's mapping of -5022
    assert isinstance(error, ccxt.InvalidOrder) and '"code":-5022' in str(error)
    assert out["ioc"]["status"] in ("expired", "canceled") and out["ioc"]["filled"] == 0
    assert out["gtx"]["timeInForce"] == "PO" and out["gtx"]["status"] == "open"
    tp = out["take_profit"]
    assert tp["info"]["orderType"] == "TAKE_PROFIT_MARKET" and tp["status"] == "open"
    assert out["tp_canceled"]["info"]["msg"] == "success"
    assert out["gtx_canceled"]["status"] == "canceled"
    (algo,) = server.algos.orders("BTCUSDT")
    assert (algo.type, algo.status) == ("TAKE_PROFIT_MARKET", "CANCELED")
