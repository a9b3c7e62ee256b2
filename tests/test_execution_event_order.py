"""A step's order events reach the symbol in causal order: an order's acceptance and
fills, stamped by the exchange in whole milliseconds, never before its submission,
stamped with the decision's nanoseconds (CI once saw a live run end with "no
transition from IDLE on ExitSubmitted": the exit's fill, in the same step as its
submission and stamped 11 us before it, was applied first)."""

from __future__ import annotations

from engine.actors._execution import _event_order
from engine.messages import OrderAccepted, OrderFilled, OrderSubmitted, Purpose, Side

MS = 1_000_000
T = 1_796_615_225_311 * MS


def _submitted(cid: str, ts: int, seq: int) -> OrderSubmitted:
    return OrderSubmitted(
        client_order_id=cid,
        symbol="BTCUSDT",
        purpose=Purpose.EXIT,
        ts_event=ts,
        ts_init=ts,
        seq=seq,
        correlation_id=cid,
    )


def _accepted(cid: str, ts: int, seq: int) -> OrderAccepted:
    return OrderAccepted(
        client_order_id=cid,
        symbol="BTCUSDT",
        purpose=Purpose.EXIT,
        venue_order_id=1,
        ts_event=ts,
        ts_init=ts + 2 * MS,
        seq=seq,
        correlation_id=cid,
    )


def _filled(cid: str, ts: int, seq: int) -> OrderFilled:
    return OrderFilled(
        client_order_id=cid,
        symbol="BTCUSDT",
        purpose=Purpose.EXIT,
        side=Side.SELL,
        last_qty=0.01,
        last_price=60000.0,
        cum_qty=0.01,
        order_qty=0.01,
        fee=0.0,
        ts_event=ts,
        ts_init=ts + 3 * MS,
        seq=seq,
        correlation_id=cid,
    )


def test_an_orders_events_come_after_its_submission_in_the_same_step() -> None:
    # The journal of that run: submitted at T + 10,951 ns; accepted and filled at T.
    submitted = _submitted("tr-51", T + 10_951, 7)
    accepted, filled = _accepted("tr-51", T, 1), _filled("tr-51", T, 2)
    other = _filled("tr-50", T + 5_000, 3)  # another order's fill, earlier: stays first
    events = [submitted, accepted, filled, other]
    events.sort(key=_event_order(events))
    assert events == [other, submitted, accepted, filled]


def test_without_a_submission_the_order_is_by_time_source_symbol_and_seq() -> None:
    events = [_filled("a", T + MS, 1), _accepted("a", T, 2), _filled("b", T, 0)]
    events.sort(key=_event_order(events))
    assert [(e.client_order_id, type(e).__name__) for e in events] == [
        ("b", "OrderFilled"),
        ("a", "OrderAccepted"),
        ("a", "OrderFilled"),
    ]
