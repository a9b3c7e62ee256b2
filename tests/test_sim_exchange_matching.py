"""The loopback exchange's matching engine and account, on a hand-made book.

No I/O: a fixed book and mark price stand in for the replayed market, so every
fill price, fee, entry price and realized PnL below is worked out by hand.
Fees: maker 2 bps, taker 5 bps; wallet 10,000 USDT; leverage 20.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from engine.venues.sim._algo import AlgoBook, AlgoRequest, would_trigger
from engine.venues.sim._exchange_errors import ExchangeApiError
from engine.venues.sim._trading import (
    AccountSettings,
    MatchingEngine,
    OrderRequest,
    SymbolRules,
)

RULES = SymbolRules(
    symbol="TESTUSDT",
    tick=D("0.1"),
    step=D("0.001"),
    min_qty=D("0.001"),
    market_step=D("0.001"),
    market_min_qty=D("0.001"),
    price_precision=1,
    quantity_precision=3,
)
NOW = 1_700_000_000_000


class FakeMarket:
    def __init__(self) -> None:
        self.book = {
            "bids": [(D(99), D(1)), (D(98), D(2))],
            "asks": [(D(100), D(1)), (D(101), D(2))],
        }
        self.mark = D("99.5")

    def levels(self, symbol, side):
        return list(self.book[side])

    def mark_price(self, symbol):
        return self.mark


def engine(**account) -> tuple[MatchingEngine, FakeMarket]:
    market = FakeMarket()
    settings = AccountSettings(maker_fee_bps=2, taker_fee_bps=5, **account)
    return MatchingEngine({"TESTUSDT": RULES}, market, settings), market


def order(side="BUY", type="MARKET", qty="1", price="0", tif="GTC", **kw) -> OrderRequest:
    return OrderRequest(
        symbol="TESTUSDT",
        side=side,
        type=type,
        quantity=D(qty),
        price=D(price),
        time_in_force=tif,
        **kw,
    )


def kinds(events) -> list[tuple[str, str]]:
    return [(e["o"]["x"], e["o"]["X"]) for e in events if e["e"] == "ORDER_TRADE_UPDATE"]


def test_market_order_walks_levels_one_trade_per_level():
    eng, _ = engine()
    accepted, final, events = eng.new_order(order(qty="2"), NOW)
    assert accepted.status == "NEW" and accepted.executed_qty == 0
    assert final.status == "FILLED" and final.avg_price == D("100.5")
    fills = eng.fills()
    assert [(f.price, f.qty, f.maker) for f in fills] == [
        (D(100), D(1), False),
        (D(101), D(1), False),
    ]
    # Taker fee 5 bps: 100 * 1 * 0.0005 + 101 * 1 * 0.0005 = 0.05 + 0.0505.
    assert [f.commission for f in fills] == [D("0.05"), D("0.0505")]
    assert eng.wallet == D(10_000) - D("0.1005")
    pos = eng.position("TESTUSDT")
    assert pos.amount == 2 and pos.entry_price == D("100.5")
    assert kinds(events) == [("NEW", "NEW"), ("TRADE", "PARTIALLY_FILLED"), ("TRADE", "FILLED")]
    trade = next(e for e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE")
    assert trade["o"]["L"] == "100.0" and trade["o"]["l"] == "1.000" and trade["o"]["n"] == "0.05"
    account = [e for e in events if e["e"] == "ACCOUNT_UPDATE"]
    assert account[-1]["a"]["P"][0]["pa"] == "2" and account[-1]["a"]["P"][0]["ep"] == "100.5"
    # Unrealized at mark 99.5: (99.5 - 100.5) * 2 = -2.
    assert eng.unrealized_pnl("TESTUSDT") == D(-2)


def test_taken_liquidity_is_not_taken_twice_until_the_level_is_rewritten():
    eng, _ = engine()
    eng.new_order(order(qty="2"), NOW)  # 1 @ 100, 1 of 2 @ 101
    _, final, _ = eng.new_order(order(qty="2"), NOW)
    assert final.status == "EXPIRED" and final.executed_qty == 1  # only 1 left at 101
    assert eng.fills()[-1].price == D(101)
    eng.on_levels_changed("TESTUSDT", "asks", [D(100)])  # the recording rewrote 100
    _, final, _ = eng.new_order(order(qty="1"), NOW)
    assert final.status == "FILLED" and eng.fills()[-1].price == D(100)


def test_market_order_larger_than_the_book_fills_what_is_there_and_expires():
    eng, _ = engine()
    _, final, events = eng.new_order(order(qty="5"), NOW)
    assert final.status == "EXPIRED" and final.executed_qty == 3
    assert kinds(events)[-1] == ("EXPIRED", "EXPIRED")
    assert not eng.open_orders()


def test_reducing_and_flipping_realizes_pnl_against_the_entry():
    eng, _ = engine()
    eng.new_order(order(qty="2"), NOW)  # long 2 @ 100.5, fees 0.1005
    _, final, events = eng.new_order(order(side="SELL", qty="3"), NOW)
    assert final.status == "FILLED"
    sells = eng.fills()[-2:]
    # 1 @ 99 closes 1: (99 - 100.5) * 1 = -1.5; 2 @ 98 closes 1: (98 - 100.5) * 1 = -2.5
    # and opens a 1 short at 98.
    assert [(f.price, f.qty, f.realized_pnl) for f in sells] == [
        (D(99), D(1), D("-1.5")),
        (D(98), D(2), D("-2.5")),
    ]
    # Fees: 99 * 0.0005 = 0.0495; 196 * 0.0005 = 0.098.
    assert eng.wallet == D(10_000) - D("0.1005") - D("1.5") - D("0.0495") - D("2.5") - D("0.098")
    pos = eng.position("TESTUSDT")
    assert pos.amount == -1 and pos.entry_price == D(98) and pos.realized_pnl == D(-4)
    trade_events = [
        e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE"
    ]
    assert [t["rp"] for t in trade_events] == ["-1.5", "-2.5"]


def test_limit_order_takes_what_is_marketable_and_rests_the_rest():
    eng, _ = engine()
    _, final, events = eng.new_order(order(type="LIMIT", qty="2", price="100.5"), NOW)
    assert final.status == "PARTIALLY_FILLED" and final.executed_qty == 1
    assert eng.fills()[0].price == D(100) and not eng.fills()[0].maker
    assert [o.order_id for o in eng.open_orders()] == [final.order_id]
    assert kinds(events) == [("NEW", "NEW"), ("TRADE", "PARTIALLY_FILLED")]


def test_resting_limit_fills_as_maker_when_replayed_trades_print_at_or_through_it():
    eng, _ = engine()
    _, resting, _ = eng.new_order(order(type="LIMIT", qty="2", price="99.5"), NOW)
    assert resting.status == "NEW"
    assert eng.on_trade("TESTUSDT", D("99.6"), D(5), NOW + 1) == []  # above a buy: no fill
    events = eng.on_trade("TESTUSDT", D("99.5"), D("0.5"), NOW + 2)  # at: 0.5 available
    assert kinds(events) == [("TRADE", "PARTIALLY_FILLED")]
    events = eng.on_trade("TESTUSDT", D(99), D(10), NOW + 3)  # through: the rest, at our price
    assert kinds(events) == [("TRADE", "FILLED")]
    fills = eng.fills()
    assert [(f.price, f.qty, f.maker) for f in fills] == [
        (D("99.5"), D("0.5"), True),
        (D("99.5"), D("1.5"), True),
    ]
    # Maker fee 2 bps: 99.5 * 0.5 * 0.0002 = 0.00995; 99.5 * 1.5 * 0.0002 = 0.02985.
    assert [f.commission for f in fills] == [D("0.00995"), D("0.02985")]
    assert events[0]["o"]["m"] is True
    assert eng.position("TESTUSDT").amount == 2 and not eng.open_orders()


def test_trade_liquidity_is_shared_best_price_first():
    eng, _ = engine()
    _, low, _ = eng.new_order(order(type="LIMIT", qty="1", price="99.2"), NOW)
    _, high, _ = eng.new_order(order(type="LIMIT", qty="1", price="99.4"), NOW)
    eng.on_trade("TESTUSDT", D("99.1"), D("1.5"), NOW + 1)
    by_id = {o.order_id: o for o in eng.orders()}
    assert by_id[high.order_id].status == "FILLED"
    assert by_id[low.order_id].executed_qty == D("0.5")


def test_ioc_fills_what_it_can_and_expires_the_rest():
    eng, _ = engine()
    _, final, events = eng.new_order(order(type="LIMIT", qty="3", price="100", tif="IOC"), NOW)
    assert final.status == "EXPIRED" and final.executed_qty == 1
    assert kinds(events)[-1] == ("EXPIRED", "EXPIRED")


def test_fok_fills_entirely_or_is_rejected_unrecorded():
    eng, _ = engine()
    with pytest.raises(ExchangeApiError) as exc:
        eng.new_order(order(type="LIMIT", qty="4", price="101", tif="FOK"), NOW)
    assert exc.value.code == -5021 and eng.orders() == []
    _, final, _ = eng.new_order(order(type="LIMIT", qty="3", price="101", tif="FOK"), NOW)
    assert final.status == "FILLED" and final.executed_qty == 3


def test_gtx_that_would_take_is_rejected_and_one_that_would_not_rests():
    eng, _ = engine()
    with pytest.raises(ExchangeApiError) as exc:
        eng.new_order(order(type="LIMIT", qty="1", price="100", tif="GTX"), NOW)
    assert exc.value.code == -5022 and eng.orders() == []
    _, final, _ = eng.new_order(order(type="LIMIT", qty="1", price="99.9", tif="GTX"), NOW)
    assert final.status == "NEW" and eng.fills() == []


def test_cancel_and_unknown_cancel():
    eng, _ = engine()
    _, resting, _ = eng.new_order(
        order(type="LIMIT", qty="1", price="99", client_order_id="keep-1"), NOW
    )
    canceled, events = eng.cancel("TESTUSDT", NOW + 1, client_order_id="keep-1")
    assert canceled.status == "CANCELED" and kinds(events) == [("CANCELED", "CANCELED")]
    with pytest.raises(ExchangeApiError) as exc:
        eng.cancel("TESTUSDT", NOW + 2, order_id=resting.order_id)
    assert exc.value.code == -2011


def test_duplicate_open_client_order_id_is_refused():
    eng, _ = engine()
    eng.new_order(order(type="LIMIT", qty="1", price="99", client_order_id="dup"), NOW)
    with pytest.raises(ExchangeApiError) as exc:
        eng.new_order(order(type="LIMIT", qty="1", price="98", client_order_id="dup"), NOW)
    assert exc.value.code == -4116
    eng.cancel("TESTUSDT", NOW, client_order_id="dup")
    eng.new_order(order(type="LIMIT", qty="1", price="98", client_order_id="dup"), NOW)


def test_reduce_only_needs_an_opposite_position_and_is_capped_by_it():
    eng, _ = engine()
    with pytest.raises(ExchangeApiError) as exc:
        eng.new_order(order(side="SELL", qty="1", reduce_only=True), NOW)
    assert exc.value.code == -2022
    eng.new_order(order(qty="1"), NOW)  # long 1
    _, final, _ = eng.new_order(order(side="SELL", qty="2", reduce_only=True), NOW)
    assert final.executed_qty == 1 and final.status == "EXPIRED"
    assert eng.position("TESTUSDT").amount == 0


def test_margin_check_uses_leverage():
    eng, _ = engine(balance=100, leverage=1)
    # 2 x mark 99.5 at 1x needs 199 > 100 available.
    with pytest.raises(ExchangeApiError) as exc:
        eng.new_order(order(qty="2"), NOW)
    assert exc.value.code == -2019 and eng.orders() == []
    eng.set_leverage("TESTUSDT", 5, NOW)
    _, final, _ = eng.new_order(order(qty="2"), NOW)  # 199 / 5 = 39.8
    assert final.status == "FILLED"
    with pytest.raises(ExchangeApiError) as exc:
        eng.set_leverage("TESTUSDT", 126, NOW)
    assert exc.value.code == -4028


# -- amendment (PUT /fapi/v1/order) ----------------------------------------------------


def test_amend_moves_price_and_quantity_and_goes_to_the_back_of_the_queue():
    eng, _ = engine()
    _, first, _ = eng.new_order(order(type="LIMIT", qty="1", price="99.4"), NOW)
    _, second, _ = eng.new_order(order(type="LIMIT", qty="1", price="99.4"), NOW)
    amended, events = eng.amend(
        "TESTUSDT", NOW + 1, order_id=first.order_id, client_order_id=None,
        side="BUY", quantity=D(2), price=D("99.4"),
    )  # fmt: skip
    assert kinds(events) == [("AMENDMENT", "NEW")]
    assert amended.quantity == 2 and amended.stp_mode == "NONE"
    assert events[0]["o"]["q"] == "2.000" and events[0]["o"]["V"] == "NONE"
    assert [o.order_id for o in eng.open_orders()] == [second.order_id, first.order_id]
    # The same price level: the order that did not move fills first.
    eng.on_trade("TESTUSDT", D("99.4"), D(1), NOW + 2)
    by_id = {o.order_id: o for o in eng.orders()}
    assert by_id[second.order_id].status == "FILLED" and by_id[first.order_id].executed_qty == 0


def test_amend_to_a_marketable_price_takes_liquidity():
    eng, _ = engine()
    _, resting, _ = eng.new_order(order(type="LIMIT", qty="1", price="99"), NOW)
    amended, events = eng.amend(
        "TESTUSDT", NOW + 1, order_id=resting.order_id, client_order_id=None,
        side="BUY", quantity=D(1), price=D(100),
    )  # fmt: skip
    assert kinds(events) == [("AMENDMENT", "NEW"), ("TRADE", "FILLED")]
    assert amended.status == "FILLED" and eng.fills()[0].price == D(100)


def test_amend_cancels_as_binance_documents_and_refuses_the_rest():
    eng, _ = engine()
    _, part, _ = eng.new_order(order(type="LIMIT", qty="2", price="99.5"), NOW)
    eng.on_trade("TESTUSDT", D("99.5"), D(1), NOW + 1)  # 1 of 2 filled
    canceled, events = eng.amend(
        "TESTUSDT", NOW + 2, order_id=part.order_id, client_order_id=None,
        side="BUY", quantity=D(1), price=D("99.5"),
    )  # fmt: skip
    assert canceled.status == "CANCELED" and kinds(events) == [("CANCELED", "CANCELED")]
    _, gtx, _ = eng.new_order(order(type="LIMIT", qty="1", price="99", tif="GTX"), NOW)
    canceled, _ = eng.amend(
        "TESTUSDT", NOW + 3, order_id=gtx.order_id, client_order_id=None,
        side="BUY", quantity=D(1), price=D(100),
    )  # fmt: skip
    assert canceled.status == "CANCELED" and len(eng.fills()) == 1  # it did not take
    _, rest, _ = eng.new_order(order(type="LIMIT", qty="1", price="99", client_order_id="r"), NOW)
    for side, qty, price, code in (
        ("BUY", "1", "99", -5027),
        ("SELL", "1", "98", -1130),
        ("BUY", "10000", "99", -2019),
    ):
        with pytest.raises(ExchangeApiError) as exc:
            eng.amend(
                "TESTUSDT", NOW, order_id=None, client_order_id="r",
                side=side, quantity=D(qty), price=D(price),
            )  # fmt: skip
        assert exc.value.code == code
    with pytest.raises(ExchangeApiError) as exc:
        eng.amend(
            "TESTUSDT", NOW, order_id=part.order_id, client_order_id=None,
            side="BUY", quantity=D(3), price=D(99),
        )  # fmt: skip
    assert exc.value.code == -2013  # no longer open
    assert eng.find_order("TESTUSDT", client_order_id="r") == rest


# -- margin type and income ------------------------------------------------------------


def test_isolated_margin_holds_the_entry_margin_and_keeps_its_pnl_apart():
    eng, market = engine()
    eng.set_margin_type("TESTUSDT", True)
    eng.new_order(order(qty="1"), NOW)  # long 1 @ 100, fee 0.05, leverage 20
    pos = eng.position("TESTUSDT")
    assert pos.isolated and pos.isolated_wallet == D(5)  # 1 * 100 / 20
    market.mark = D(90)  # unrealized -10 stays in the isolated position
    assert eng.available_balance() == D(10_000) - D("0.05") - D(5)
    event = eng.new_order(order(side="SELL", qty="1"), NOW)[2][-1]
    assert event["a"]["P"][0]["mt"] == "isolated"
    for isolated, code in ((True, -4046), (False, None)):
        if code is None:
            eng.set_margin_type("TESTUSDT", isolated)
        else:
            with pytest.raises(ExchangeApiError) as exc:
                eng.set_margin_type("TESTUSDT", isolated)
            assert exc.value.code == code
    eng.new_order(order(qty="1"), NOW)
    with pytest.raises(ExchangeApiError) as exc:
        eng.set_margin_type("TESTUSDT", True)
    assert exc.value.code == -4048
    eng.new_order(order(side="SELL", qty="1"), NOW)
    eng.new_order(order(type="LIMIT", qty="1", price="90"), NOW)
    with pytest.raises(ExchangeApiError) as exc:
        eng.set_margin_type("TESTUSDT", True)
    assert exc.value.code == -4047


def test_income_records_explain_every_wallet_change():
    eng, _ = engine()
    eng.new_order(order(qty="2"), NOW)
    eng.new_order(order(side="SELL", qty="2"), NOW + 1)
    income = eng.income()
    assert [r.income_type for r in income] == [
        "COMMISSION", "COMMISSION", "COMMISSION", "REALIZED_PNL", "COMMISSION", "REALIZED_PNL",
    ]  # fmt: skip
    assert [r.trade_id for r in income[:2]] == [f.trade_id for f in eng.fills()[:2]]
    assert D(10_000) + sum(r.amount for r in income) == eng.wallet
    assert len({r.tran_id for r in income}) == len(income)


# -- algo (conditional) orders ---------------------------------------------------------


def algo_book(**account) -> tuple[AlgoBook, MatchingEngine, FakeMarket]:
    eng, market = engine(**account)
    return AlgoBook(eng, {"TESTUSDT": 2}, {"TESTUSDT": D("0.05")}), eng, market


def stop(side="SELL", type="STOP_MARKET", trigger="95", qty="1", **kw) -> AlgoRequest:
    return AlgoRequest(
        symbol="TESTUSDT", side=side, type=type, quantity=D(qty), trigger_price=D(trigger), **kw
    )


@pytest.mark.parametrize(
    ("type_", "side", "fires_at", "quiet_at"),
    [
        ("STOP_MARKET", "BUY", "101", "99.9"),
        ("STOP_MARKET", "SELL", "99", "100.1"),
        ("TAKE_PROFIT_MARKET", "BUY", "99", "100.1"),
        ("TAKE_PROFIT_MARKET", "SELL", "101", "99.9"),
    ],
)
def test_trigger_direction(type_, side, fires_at, quiet_at):
    assert would_trigger(type_, side, D(100), D(fires_at))
    assert not would_trigger(type_, side, D(100), D(quiet_at))
    assert would_trigger(type_, side, D(100), D(100))  # at the trigger price
    assert not would_trigger(type_, side, D(100), D(0))  # no price yet


def test_stop_market_triggers_a_market_order_with_binances_event_sequence():
    algos, eng, _ = algo_book()
    eng.new_order(order(qty="1"), NOW)  # long 1 @ 100
    placed, events = algos.place(stop(reduce_only=True), D(100), D("99.5"), NOW)
    assert placed.status == "NEW" and events[0]["o"]["X"] == "NEW"
    assert algos.on_price("TESTUSDT", D("95.1"), D("99.5"), NOW + 1) == []
    events = algos.on_price("TESTUSDT", D(95), D("99.5"), NOW + 2)
    sequence = [(e["e"], e["o"]["X"]) for e in events if "o" in e]
    assert sequence == [
        ("ALGO_UPDATE", "TRIGGERING"),
        ("ORDER_TRADE_UPDATE", "NEW"),
        ("ORDER_TRADE_UPDATE", "FILLED"),
        ("ALGO_UPDATE", "TRIGGERED"),
        ("ALGO_UPDATE", "FINISHED"),
    ]
    triggered = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE"]
    assert all(o["si"] == placed.algo_id and o["st"] == "ALGO_CONDITION" for o in triggered)
    assert all(o["c"] == placed.client_algo_id and o["o"] == "MARKET" for o in triggered)
    done = algos.find(algo_id=placed.algo_id, client_algo_id=None)
    assert done.status == "FINISHED" and done.actual_qty == 1 and done.actual_price == D(99)
    assert events[-1]["o"]["ap"] == "99" and events[-1]["o"]["aq"] == "1"
    assert eng.position("TESTUSDT").amount == 0 and algos.open_orders() == []


def test_algo_placement_refusals():
    algos, _, _ = algo_book()
    with pytest.raises(ExchangeApiError) as exc:
        algos.place(stop(trigger="100"), D(99), D("99.5"), NOW)  # last 99 <= 100: now
    assert exc.value.code == -2021
    algos.place(stop(client_algo_id="a"), D(99), D("99.5"), NOW)
    with pytest.raises(ExchangeApiError) as exc:
        algos.place(stop(client_algo_id="a"), D(99), D("99.5"), NOW)
    assert exc.value.code == -4116
    algos.place(stop(), D(99), D("99.5"), NOW)
    with pytest.raises(ExchangeApiError) as exc:
        algos.place(stop(), D(99), D("99.5"), NOW)  # MAX_NUM_ALGO_ORDERS 2
    assert exc.value.code == -4045
    canceled, events = algos.cancel(algo_id=None, client_algo_id="a", now_ms=NOW + 1)
    assert canceled.status == "CANCELED" and events[0]["o"]["X"] == "CANCELED"
    with pytest.raises(ExchangeApiError) as exc:
        algos.cancel(algo_id=canceled.algo_id, client_algo_id=None, now_ms=NOW + 2)
    assert exc.value.code == -2011
    assert [e["o"]["X"] for e in algos.cancel_all("TESTUSDT", NOW + 3)] == ["CANCELED"]


def test_close_position_mark_price_and_price_protect():
    algos, eng, market = algo_book()
    eng.new_order(order(side="SELL", qty="2"), NOW)  # short 2
    closer, _ = algos.place(
        stop(side="BUY", trigger="105", qty="0", close_position=True, working_type="MARK_PRICE"),
        D(99), D("99.5"), NOW,
    )  # fmt: skip
    assert algos.on_price("TESTUSDT", D(200), D("104.9"), NOW + 1) == []  # mark decides
    protected, _ = algos.place(
        stop(side="BUY", trigger="103", price_protect=True), D(99), D("99.5"), NOW
    )
    # last 103 and mark 99.5 differ by 3.5% (< 5%): triggers; mark 105 closes.
    algos.on_price("TESTUSDT", D(103), D("99.5"), NOW + 2)
    assert algos.find(algo_id=protected.algo_id, client_algo_id=None).status == "FINISHED"
    market.mark = D(105)
    algos.on_price("TESTUSDT", D(103), D(105), NOW + 3)
    done = algos.find(algo_id=closer.algo_id, client_algo_id=None)
    assert done.status == "FINISHED" and done.actual_qty == 1  # the position left: short 1
    assert eng.position("TESTUSDT").amount == 0
    flat, _ = algos.place(
        stop(side="BUY", trigger="106", qty="0", close_position=True), D(99), D(105), NOW
    )
    algos.on_price("TESTUSDT", D(106), D(105), NOW + 4)
    assert algos.find(algo_id=flat.algo_id, client_algo_id=None).status == "EXPIRED"
    algos.place(stop(side="BUY", trigger="110", price_protect=True), D(99), D(90), NOW)
    assert algos.on_price("TESTUSDT", D(110), D(90), NOW + 5) == []  # 22% apart: held


def test_a_triggered_order_refused_by_the_engine_rejects_the_algo_order():
    algos, eng, _ = algo_book(balance=10)
    algos.place(stop(side="BUY", trigger="101", qty="50"), D(99), D("99.5"), NOW)
    events = algos.on_price("TESTUSDT", D(101), D("99.5"), NOW + 1)
    assert [e["o"]["X"] for e in events] == ["TRIGGERING", "REJECTED"]
    assert events[-1]["o"]["rm"] == "margin not enough" and eng.orders() == []
