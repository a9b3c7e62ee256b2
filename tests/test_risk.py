"""Pre-trade checks of the risk actor, called directly."""

from __future__ import annotations

import structlog
import trio

from engine._config import RiskSection
from engine.actors import RiskActor
from engine.messages import Purpose, Side, SubmitOrder


def make_risk(**limits) -> RiskActor:
    _tx, rx = trio.open_memory_channel(0)
    tx2, _rx2 = trio.open_memory_channel(0)
    return RiskActor(
        config=RiskSection(**limits),
        symbols=["A", "B"],
        intents={"A": rx, "B": rx},
        reports=rx,
        orders=tx2,
        log=structlog.wrap_logger(structlog.ReturnLogger()),
    )


def order(symbol: str, side: Side, qty: float, price: float, ts: int, *, exit_: bool = False):
    return SubmitOrder(
        client_order_id=f"{symbol}-{ts}",
        symbol=symbol,
        side=side,
        qty=qty,
        ref_price=price,
        purpose=Purpose.EXIT if exit_ else Purpose.ENTRY,
        reduce_only=exit_,
        ts_event=ts,
        ts_init=ts,
        seq=ts,
        correlation_id="c",
    )


def test_per_symbol_and_total_notional():
    risk = make_risk(max_notional_per_symbol=1000.0, max_notional_total=1500.0)
    assert risk.check(order("A", Side.BUY, 11, 100.0, 1)) == "max_notional_per_symbol"
    assert risk.check(order("A", Side.BUY, 9, 100.0, 2)) is None
    risk.positions["A"] = 9.0
    assert risk.check(order("B", Side.SELL, 7, 100.0, 3)) == "max_notional_total"
    assert risk.check(order("B", Side.SELL, 5, 100.0, 4)) is None


def test_orders_per_second_window_and_exits_bypass_notional():
    risk = make_risk(max_orders_per_second=2, max_notional_per_symbol=10.0)
    sec = 1_000_000_000
    for ts in (0, sec // 2):
        assert risk.check(order("A", Side.SELL, 1, 100.0, ts, exit_=True)) is None
        risk._recent.append(ts)
    assert risk.check(order("A", Side.SELL, 1, 100.0, sec - 1, exit_=True)) == (
        "max_orders_per_second"
    )
    # One second after the first order, a slot is free again.
    assert risk.check(order("A", Side.SELL, 1, 100.0, sec + 1, exit_=True)) is None
