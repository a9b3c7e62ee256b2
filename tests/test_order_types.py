"""Order types: SubmitOrder's validators and the replay venue's resting orders,
queue model, IOC/FOK/GTX, stops, cancel and replace."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.messages import (
    CancelOrder,
    EventKind,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
    Purpose,
    ReplaceOrder,
    Side,
    SubmitOrder,
    Ticks,
)
from engine.venues.sim import SimVenue

Q, T = int(EventKind.QUOTE), int(EventKind.TRADE)
NAN = math.nan


def quote(ts, bid, bid_qty, ask, ask_qty):
    return (ts, Q, bid, bid_qty, ask, ask_qty, NAN, NAN, 0)


def trade(ts, price, qty, buyer_maker):
    """``buyer_maker`` 1: the aggressor sold (hits bids)."""
    return (ts, T, NAN, NAN, NAN, NAN, price, qty, buyer_maker)


def ticks(rows) -> Ticks:
    col = list(zip(*rows, strict=True))
    ts = np.array(col[0], dtype=np.int64)
    return Ticks(
        ts=ts,
        ts_exchange=ts,
        seq=np.arange(len(rows), dtype=np.int64),
        kind=np.array(col[1], dtype=np.int8),
        bid=np.array(col[2]),
        bid_qty=np.array(col[3]),
        ask=np.array(col[4]),
        ask_qty=np.array(col[5]),
        price=np.array(col[6]),
        qty=np.array(col[7]),
        buyer_maker=np.array(col[8], dtype=np.int8),
    )


def order(side=Side.BUY, qty=1.0, ts=0, n=1, **kw) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=f"o{n}",
        symbol="X",
        side=side,
        qty=qty,
        ref_price=100.0,
        purpose=kw.pop("purpose", Purpose.ENTRY),
        reduce_only=kw.pop("reduce_only", False),
        ts_event=ts,
        ts_init=ts,
        seq=n,
        correlation_id=f"c{n}",
        **kw,
    )


def run(venue: SimVenue, rows) -> list:
    batch = ticks(rows)
    out = []
    for row in range(len(batch)):
        out += venue.on_row("X", batch, row)
    return out


def kinds(events):
    return [type(e).__name__ for e in events]


def venue() -> SimVenue:
    return SimVenue(latency_ns=5, taker_fee_rate=0.0005, maker_fee_rate=0.0002)


# -- messages ----------------------------------------------------------------------


def test_defaults_are_a_market_order():
    o = order()
    assert (o.order_type, o.time_in_force) == ("MARKET", "GTC")
    assert math.isnan(o.price) and math.isnan(o.stop_price)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"order_type": "LIMIT"}, "LIMIT order needs a positive finite price"),
        ({"order_type": "LIMIT", "price": -1.0}, "positive finite price"),
        ({"order_type": "LIMIT", "price": math.inf}, "positive finite price"),
        ({"price": 100.0}, "MARKET order takes no price"),
        ({"order_type": "STOP_MARKET"}, "needs a positive finite stop_price"),
        ({"order_type": "LIMIT", "price": 1.0, "stop_price": 2.0}, "takes no stop_price"),
        ({"time_in_force": "IOC"}, "applies to LIMIT orders only"),
        ({"order_type": "STOP_LIMIT"}, "order_type"),
        ({"order_type": "LIMIT", "price": 1.0, "time_in_force": "DAY"}, "time_in_force"),
    ],
)
def test_order_validators(kw, match):
    with pytest.raises(ValueError, match=match):
        order(**kw)


def test_replace_needs_positive_price():
    with pytest.raises(ValueError):
        ReplaceOrder(
            client_order_id="o1",
            symbol="X",
            side=Side.BUY,
            purpose=Purpose.ENTRY,
            qty=1.0,
            price=0.0,
            ts_event=0,
            ts_init=0,
            seq=1,
            correlation_id="c1",
        )


# -- arrival -----------------------------------------------------------------------


def test_limit_ack_waits_for_arrival_and_rests_at_the_back_of_the_best_bid():
    v = venue()
    assert v.submit(order(order_type="LIMIT", price=100.0, time_in_force="GTX", ts=10)) == []
    events = run(v, [quote(12, 100.0, 3.0, 100.5, 1.0), quote(15, 100.0, 3.0, 100.5, 1.0)])
    assert kinds(events) == ["OrderAccepted"] and events[0].ts_event == 15
    # 2 sold at 100: the queue ahead (3) shrinks to 1, nothing fills.
    assert run(v, [trade(16, 100.0, 2.0, 1)]) == []
    # a buy aggressor at 100 does not reach the bids
    assert run(v, [trade(17, 100.0, 5.0, 0)]) == []
    # 1.5 sold: 1 clears the queue, 0.5 fills the order as a maker.
    fills = run(v, [trade(18, 100.0, 1.5, 1)])
    assert kinds(fills) == ["OrderFilled"]
    f = fills[0]
    assert (f.last_qty, f.last_price, f.cum_qty, f.liquidity) == (0.5, 100.0, 0.5, "MAKER")
    assert f.fee == pytest.approx(0.5 * 100.0 * 0.0002)
    # the ask comes down to our price: the rest fills at our price.
    fills = run(v, [quote(19, 99.5, 1.0, 100.0, 2.0)])
    assert [(e.last_qty, e.last_price, e.cum_qty) for e in fills] == [(0.5, 100.0, 1.0)]
    assert v.pending_orders == 0 and not v.has_resting("X")
    assert v.ledger.qty("X") == 1.0


def test_displayed_quantity_cuts_the_queue():
    v = venue()
    v.submit(order(order_type="LIMIT", price=100.0))
    run(v, [quote(5, 100.0, 10.0, 100.5, 1.0), quote(6, 100.0, 2.0, 100.5, 1.0)])
    fills = run(v, [trade(7, 100.0, 3.0, 1)])
    assert [(f.last_qty, f.liquidity) for f in fills] == [(1.0, "MAKER")]


def test_improving_the_bid_has_no_queue_and_behind_the_bid_needs_a_trade_through():
    v = venue()
    v.submit(order(order_type="LIMIT", price=100.25, n=1))
    v.submit(order(order_type="LIMIT", price=99.5, n=2))
    run(v, [quote(5, 100.0, 3.0, 100.5, 1.0)])
    fills = run(v, [trade(6, 100.25, 0.4, 1), trade(7, 99.5, 50.0, 1)])
    # o1 (ahead of everyone) fills 0.4 at its price, then the rest on the trade
    # through it at 99.5; o2 is behind the best bid, so a trade AT its price does
    # not fill it (its queue is unknown)
    assert [(f.client_order_id, f.last_qty, f.last_price) for f in fills] == [
        ("o1", 0.4, 100.25),
        ("o1", 0.6, 100.25),
    ]
    fills = run(v, [trade(8, 99.25, 0.1, 1)])
    assert [(f.client_order_id, f.last_qty, f.last_price) for f in fills] == [("o2", 1.0, 99.5)]


def test_sell_limit_mirrors():
    v = venue()
    v.submit(order(side=Side.SELL, order_type="LIMIT", price=100.5))
    run(v, [quote(5, 100.0, 3.0, 100.5, 2.0)])
    assert run(v, [trade(6, 100.5, 3.0, 1)]) == []  # sellers do not lift asks
    fills = run(v, [trade(7, 100.5, 2.5, 0)])
    assert [(f.last_qty, f.side) for f in fills] == [(0.5, Side.SELL)]
    fills = run(v, [quote(8, 100.5, 1.0, 101.0, 1.0)])
    assert [f.last_qty for f in fills] == [0.5]
    assert v.ledger.qty("X") == -1.0


def test_gtx_that_would_take_is_rejected():
    v = venue()
    v.submit(order(order_type="LIMIT", price=100.5, time_in_force="GTX"))
    events = run(v, [quote(5, 100.0, 3.0, 100.5, 2.0)])
    assert kinds(events) == ["OrderRejected"] and "-5022" in events[0].reason
    assert v.pending_orders == 0


def test_crossing_limit_takes_the_touch_and_rests_the_rest():
    v = venue()
    v.submit(order(order_type="LIMIT", price=101.0, qty=3.0))
    events = run(v, [quote(5, 100.0, 3.0, 100.5, 2.0)])
    assert kinds(events) == ["OrderAccepted", "OrderFilled"]
    f = events[1]
    assert (f.last_qty, f.last_price, f.liquidity) == (2.0, 100.5, "TAKER")
    assert f.fee == pytest.approx(2.0 * 100.5 * 0.0005)
    assert v.has_resting("X")  # 1 rests at 101, ahead of the book
    fills = run(v, [trade(6, 101.0, 0.25, 1)])
    assert [(f.last_qty, f.last_price, f.liquidity) for f in fills] == [(0.25, 101.0, "MAKER")]


def test_ioc_fills_what_it_can_and_expires_the_rest():
    v = venue()
    v.submit(order(order_type="LIMIT", price=101.0, qty=3.0, time_in_force="IOC"))
    events = run(v, [quote(5, 100.0, 3.0, 100.5, 2.0)])
    assert kinds(events) == ["OrderAccepted", "OrderFilled", "OrderExpired"]
    assert events[2].cum_qty == 2.0
    v.submit(order(order_type="LIMIT", price=100.0, time_in_force="IOC", n=2, ts=10))
    events = run(v, [quote(20, 100.0, 3.0, 100.5, 2.0)])
    assert kinds(events) == ["OrderAccepted", "OrderExpired"] and events[1].cum_qty == 0.0


@pytest.mark.parametrize(
    ("qty", "expected"),
    [(2.0, ["OrderAccepted", "OrderFilled"]), (2.5, ["OrderAccepted", "OrderExpired"])],
)
def test_fok_fills_all_or_nothing(qty, expected):
    v = venue()
    v.submit(order(order_type="LIMIT", price=100.5, qty=qty, time_in_force="FOK"))
    events = run(v, [quote(5, 100.0, 3.0, 100.5, 2.0)])
    assert kinds(events) == expected
    assert v.ledger.qty("X") == (qty if expected[-1] == "OrderFilled" else 0.0)


# -- stops -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_type", "side", "stop", "prices", "trigger"),
    [
        ("STOP_MARKET", Side.SELL, 99.0, [99.5, 99.0], 99.0),
        ("STOP_MARKET", Side.BUY, 101.0, [100.5, 101.5], 101.5),
        ("TAKE_PROFIT_MARKET", Side.SELL, 101.0, [100.5, 101.0], 101.0),
        ("TAKE_PROFIT_MARKET", Side.BUY, 99.0, [99.5, 98.0], 98.0),
    ],
)
def test_stops_trigger_on_the_last_trade_and_fill_at_the_next_touch(
    order_type, side, stop, prices, trigger
):
    v = venue()
    v.submit(order(side=side, order_type=order_type, stop_price=stop))
    assert kinds(run(v, [quote(5, 100.0, 1.0, 100.5, 1.0)])) == ["OrderAccepted"]
    assert run(v, [trade(6, prices[0], 1.0, 1)]) == []
    events = run(v, [trade(7, prices[1], 1.0, 1), quote(8, 97.0, 1.0, 103.0, 1.0)])
    assert kinds(events) == ["OrderTriggered", "OrderFilled"]
    assert isinstance(events[0], OrderTriggered) and events[0].trigger_price == trigger
    fill = events[1]
    assert fill.last_price == (103.0 if side > 0 else 97.0) and fill.liquidity == "TAKER"


def test_reduce_only_stop_fills_at_most_the_position():
    v = venue()
    v.ledger.apply_fill("X", 0.4, 100.0, 0.0)
    v.submit(order(side=Side.SELL, order_type="STOP_MARKET", stop_price=99.0, reduce_only=True))
    events = run(v, [quote(5, 100.0, 1, 100.5, 1), trade(6, 98.0, 1, 1), quote(7, 98, 1, 99, 1)])
    assert kinds(events) == ["OrderAccepted", "OrderTriggered", "OrderFilled", "OrderExpired"]
    assert events[2].last_qty == 0.4 and v.ledger.qty("X") == 0.0


# -- cancel and replace ------------------------------------------------------------


def _cancel(n=1, ts=50):
    return CancelOrder(
        client_order_id=f"o{n}",
        symbol="X",
        purpose=Purpose.ENTRY,
        reason="entry_timeout",
        ts_event=ts,
        ts_init=ts,
        seq=99,
        correlation_id=f"c{n}",
    )


def test_cancel_a_partly_filled_resting_order():
    v = venue()
    v.submit(order(order_type="LIMIT", price=100.0, qty=2.0))
    run(v, [quote(5, 99.5, 1.0, 100.5, 1.0), trade(6, 100.0, 0.5, 1)])
    events = v.cancel(_cancel())
    assert kinds(events) == ["OrderCanceled"] and events[0].cum_qty == 0.5
    assert v.cancel(_cancel()) == []  # no longer open
    assert run(v, [trade(7, 99.0, 5.0, 1)]) == []


def test_cancel_before_arrival_and_end_of_replay():
    v = venue()
    v.submit(order(order_type="LIMIT", price=100.0, n=1))
    v.submit(order(order_type="LIMIT", price=100.0, n=2))
    assert kinds(v.cancel(_cancel(1, ts=1))) == ["OrderCanceled"]
    assert run(v, [quote(5, 99.0, 1, 101.0, 1)]) and v.pending_orders == 1
    assert kinds(v.expire_all(9, "replay_ended")) == ["OrderExpired"]
    assert v.pending_orders == 0 and not v.has_resting("X")


def _replace(qty, price, ts=20):
    return ReplaceOrder(
        client_order_id="o1",
        symbol="X",
        side=Side.BUY,
        purpose=Purpose.ENTRY,
        qty=qty,
        price=price,
        ts_event=ts,
        ts_init=ts,
        seq=98,
        correlation_id="c1",
    )


def test_replace_goes_to_the_back_of_the_new_level():
    v = venue()
    v.submit(order(order_type="LIMIT", price=99.5, qty=1.0, time_in_force="GTX"))
    run(v, [quote(5, 100.0, 3.0, 100.5, 1.0)])
    events = v.replace(_replace(2.0, 100.0))
    assert kinds(events) == ["OrderReplaced"]
    assert isinstance(events[0], OrderReplaced) and events[0].price == 100.0
    fills = run(v, [trade(21, 100.0, 4.0, 1)])  # 3 ahead at 100
    assert [(f.last_qty, f.cum_qty, f.order_qty) for f in fills] == [(1.0, 1.0, 2.0)]
    # amending to the filled quantity cancels it
    assert kinds(v.replace(_replace(1.0, 100.0, ts=22))) == ["OrderCanceled"]
    assert isinstance(v.replace(_replace(1.0, 100.0, ts=23))[0], OrderRejected)


def test_replace_gtx_that_would_take_is_cancelled():
    v = venue()
    v.submit(order(order_type="LIMIT", price=99.5, time_in_force="GTX"))
    run(v, [quote(5, 100.0, 3.0, 100.5, 1.0)])
    assert kinds(v.replace(_replace(1.0, 100.5))) == ["OrderCanceled"]


def test_market_orders_are_unchanged_and_batch_path_runs_resting_orders():
    v = venue()
    assert kinds(v.submit(order(n=1))) == ["OrderAccepted"]
    v.submit(order(order_type="LIMIT", price=100.0, n=2))
    batch = ticks([quote(5, 100.0, 1.0, 100.5, 1.0), trade(6, 99.5, 1.0, 1)])
    events = v.on_market({"X": batch})
    assert [(type(e), e.client_order_id) for e in events] == [
        (OrderFilled, "o1"),
        (OrderAccepted, "o2"),
        (OrderFilled, "o2"),
    ]
    assert events[0].liquidity == "TAKER" and events[2].liquidity == "MAKER"
    assert isinstance(events[0], OrderFilled) and not isinstance(events[1], OrderCanceled)
    assert not isinstance(events[1], OrderExpired)


# -- risk and execution ------------------------------------------------------------


def _risk(**cfg):
    from engine._config import RiskSection
    from engine.core._risk import RiskCore
    from engine.ledger import PositionLedger
    from engine.testing import quiet_logger

    ledger = PositionLedger()
    return RiskCore(config=RiskSection(**cfg), symbols=["X"], log=quiet_logger(), ledger=ledger)


def test_resting_limit_counts_at_its_price_until_it_ends():
    risk = _risk(max_notional_per_symbol=1000.0, price_band_bps=1e6)
    # 9 at a 120 limit is 1080 of notional: over the limit, though ref_price says 900
    assert risk.check(order(qty=9.0, order_type="LIMIT", price=120.0)) == "max_notional_per_symbol"
    first = order(qty=5.0, order_type="LIMIT", price=100.0, n=1)
    approved, denials = risk.approve([first], [])
    assert approved == [first] and not denials
    # 5 resting at 100 + 6 more: 1100 > 1000
    assert risk.check(order(qty=6.0, n=2)) == "max_notional_per_symbol"
    fill = OrderFilled(
        client_order_id="o1",
        symbol="X",
        purpose=Purpose.ENTRY,
        side=Side.BUY,
        last_qty=2.0,
        last_price=100.0,
        cum_qty=2.0,
        order_qty=5.0,
        fee=0.0,
        liquidity="MAKER",
        ts_event=1,
        ts_init=1,
        seq=3,
        correlation_id="c1",
    )
    risk.ledger.apply_fill("X", 2.0, 100.0, 0.0)
    risk.on_order_events([fill])
    # a partial fill moves 2 from the order to the position: still 5 in all
    assert risk.check(order(qty=6.0, n=2)) == "max_notional_per_symbol"
    assert risk.check(order(qty=4.0, n=2)) is None
    canceled = OrderCanceled(
        client_order_id="o1", symbol="X", purpose=Purpose.ENTRY, cum_qty=2.0,
        reason="entry_timeout", ts_event=2, ts_init=2, seq=4, correlation_id="c1",
    )  # fmt: skip
    risk.on_order_events([canceled])
    # only the 2 filled count now
    assert risk.check(order(qty=7.0, n=2)) is None


def test_reduce_only_cannot_grow_a_position_whatever_its_type():
    risk = _risk(price_band_bps=1e6)
    risk.ledger.apply_fill("X", 1.0, 100.0, 0.0)
    grow = order(side=Side.BUY, reduce_only=True, order_type="LIMIT", price=99.0)
    assert risk.check(grow) == "not_reducing"
    through = order(
        side=Side.SELL, qty=2.0, reduce_only=True, order_type="STOP_MARKET", stop_price=95.0
    )
    assert risk.check(through) == "not_reducing"
    ok = order(side=Side.SELL, reduce_only=True, order_type="TAKE_PROFIT_MARKET", stop_price=105.0)
    assert risk.check(ok) is None


def test_execution_core_drives_the_order_machine_through_a_stop():
    import fsm
    from engine.core._execution import ExecutionCore
    from engine.testing import quiet_logger

    v = venue()
    core = ExecutionCore(venue=v, log=quiet_logger())
    stop = order(side=Side.SELL, order_type="STOP_MARKET", stop_price=99.0)
    assert kinds(core.submit(stop)) == ["OrderSubmitted"]
    statuses = []
    for event in run(v, [quote(5, 100, 1, 100.5, 1), trade(6, 98.5, 1, 1), quote(7, 98, 1, 99, 1)]):
        core.apply(event)
        statuses.append(core._machines.get("o1", None) and core._machines["o1"].state)
    assert statuses[:2] == [fsm.OrderStatus.NEW, fsm.OrderStatus.TRIGGERED]
    assert "o1" not in core._machines  # FILLED: terminal, forgotten
    assert core.cancel(_cancel()) == []  # no longer open


def test_execution_core_cancels_a_resting_limit():
    from engine.core._execution import ExecutionCore
    from engine.testing import quiet_logger

    v = venue()
    core = ExecutionCore(venue=v, log=quiet_logger())
    core.submit(order(order_type="LIMIT", price=99.0, time_in_force="GTX"))
    for event in run(v, [quote(5, 100, 1, 100.5, 1)]):
        core.apply(event)
    events = core.cancel(_cancel())
    assert kinds(events) == ["OrderCanceled"]
    core.apply(events[0])
    assert "o1" not in core._machines
