"""Pre-trade checks of the risk actor, called directly, one reason code each."""

from __future__ import annotations

import math

import pytest
import trio

import fsm
from engine._config import RiskSection
from engine.actors import RiskActor
from engine.ledger import PositionLedger
from engine.messages import Mark, Purpose, Side, SubmitOrder
from engine.testing import quiet_logger

SEC = 1_000_000_000


def make_risk(symbols=("A", "B"), ledger: PositionLedger | None = None, **limits) -> RiskActor:
    tx, rx = trio.open_memory_channel(0)
    return RiskActor(
        config=RiskSection(**limits),
        symbols=list(symbols),
        intents=dict.fromkeys(symbols, rx),
        reports=rx,
        orders=tx,
        log=quiet_logger(),
        ledger=ledger,
    )


def order(symbol: str, side: Side, qty: float, price: float, ts: int = 0, *, exit_=False):
    return SubmitOrder(
        client_order_id=f"{symbol}-{ts}-{qty}",
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


def mark(risk: RiskActor, symbol: str, mid: float) -> None:
    risk.marks[symbol] = Mark(symbol=symbol, ts=0, bid=mid - 0.05, ask=mid + 0.05)


def test_per_symbol_and_total_notional():
    risk = make_risk(max_notional_per_symbol=1000.0, max_notional_total=1500.0)
    assert risk.check(order("A", Side.BUY, 11, 100.0)) == "max_notional_per_symbol"
    assert risk.check(order("A", Side.BUY, 9, 100.0)) is None
    risk.ledger.apply_fill("A", 9.0, 100.0, 0.0)
    assert risk.check(order("B", Side.SELL, 7, 100.0)) == "max_notional_total"
    assert risk.check(order("B", Side.SELL, 5, 100.0)) is None


def test_orders_per_second_window_applies_to_exits_too():
    risk = make_risk(max_orders_per_second=2)
    risk.ledger.apply_fill("A", 10.0, 100.0, 0.0)
    for ts in (0, SEC // 2):
        assert risk.check(order("A", Side.SELL, 1, 100.0, ts, exit_=True)) is None
        risk._recent.append(ts)
    late = order("A", Side.SELL, 1, 100.0, SEC - 1, exit_=True)
    assert risk.check(late) == "max_orders_per_second"
    # One second after the first order, a slot is free again.
    assert risk.check(order("A", Side.SELL, 1, 100.0, SEC + 1, exit_=True)) is None


def test_reduce_only_must_reduce_and_skips_entry_limits():
    risk = make_risk(max_notional_per_symbol=10.0)
    assert risk.check(order("A", Side.SELL, 1, 100.0, exit_=True)) == "not_reducing"
    risk.ledger.apply_fill("A", 3.0, 100.0, 0.0)
    assert risk.check(order("A", Side.SELL, 3, 100.0, exit_=True)) is None
    assert risk.check(order("A", Side.SELL, 4, 100.0, exit_=True)) == "not_reducing"


def test_min_notional_and_price_band():
    risk = make_risk(min_notional=5.0, price_band_bps=50.0)
    assert risk.check(order("A", Side.BUY, 0.04, 100.0)) == "min_notional"
    mark(risk, "A", 100.0)
    assert risk.check(order("A", Side.BUY, 1, 100.4)) is None  # 40 bps
    assert risk.check(order("A", Side.BUY, 1, 100.6)) == "price_band"  # 60 bps fat finger


def test_leverage_uses_capital_plus_pnl():
    risk = make_risk(
        capital=1000.0, max_leverage=2.0, max_notional_per_symbol=1e9, max_notional_total=1e9
    )
    assert risk.check(order("A", Side.BUY, 19, 100.0)) is None
    assert risk.check(order("A", Side.BUY, 21, 100.0)) == "max_leverage"
    risk.equity = 500.0  # profits raise the allowance
    assert risk.check(order("A", Side.BUY, 29, 100.0)) is None


def test_max_open_positions():
    risk = make_risk(symbols=("A", "B", "C"), max_open_positions=2)
    risk.ledger.apply_fill("A", 1.0, 100.0, 0.0)
    risk.ledger.apply_fill("B", -1.0, 100.0, 0.0)
    assert risk.check(order("C", Side.BUY, 1, 100.0)) == "max_open_positions"
    assert risk.check(order("A", Side.BUY, 1, 100.0)) is None  # adding to an open one


def test_correlation_filter():
    risk = make_risk(max_correlation=0.8)
    wave = [math.sin(i / 3.0) * 1e-3 for i in range(60)]
    risk._returns["A"].extend(wave)
    risk._returns["B"].extend(w * 2 for w in wave)
    risk.ledger.apply_fill("B", 1.0, 100.0, 0.0)
    assert risk.correlation("A", "B") == pytest.approx(1.0)
    assert risk.check(order("A", Side.BUY, 1, 100.0)) == "correlation"
    risk._returns["A"].clear()
    risk._returns["A"].extend(math.cos(i * 1.7) * 1e-3 for i in range(60))
    risk._corr = None  # what a new step's report does
    assert risk.check(order("A", Side.BUY, 1, 100.0)) is None


def test_trading_state_gates_orders():
    risk = make_risk()
    risk.ledger.apply_fill("A", 2.0, 100.0, 0.0)
    risk.trading = fsm.new_trading(fsm.TradingState.REDUCING)
    assert risk.check(order("B", Side.BUY, 1, 100.0)) == "trading_reducing"
    assert risk.check(order("A", Side.SELL, 2, 100.0, exit_=True)) is None
    risk.trading = fsm.new_trading(fsm.TradingState.HALTED)
    assert risk.check(order("A", Side.SELL, 2, 100.0, exit_=True)) == "trading_halted"


def test_an_adopted_position_can_be_closed():
    # A live restart adopts the exchange's position into the one ledger; risk reads it,
    # so the exit reduces (it was denied not_reducing when risk kept its own copy).
    ledger = PositionLedger()
    risk = make_risk(ledger=ledger)
    ledger.adopt("A", 0.01, 60_000.0)
    assert risk.check(order("A", Side.SELL, 0.01, 60_000.0, exit_=True)) is None
    assert risk.check(order("A", Side.SELL, 0.02, 60_000.0, exit_=True)) == "not_reducing"
    ledger.apply_fill("A", -0.01, 60_010.0, 0.0)  # the exit filled: flat again
    assert risk.check(order("A", Side.SELL, 0.01, 60_000.0, exit_=True)) == "not_reducing"


def test_a_symbols_own_state_blocks_only_its_entries():
    risk = make_risk()
    risk.ledger.apply_fill("A", 2.0, 100.0, 0.0)
    risk.symbol_trading["A"] = fsm.new_trading(fsm.TradingState.REDUCING)
    assert risk.check(order("A", Side.BUY, 1, 100.0)) == "symbol_reducing"
    assert risk.check(order("A", Side.SELL, 2, 100.0, exit_=True)) is None
    assert risk.check(order("B", Side.BUY, 1, 100.0)) is None


def test_each_order_of_a_step_is_checked_against_the_ones_approved_before_it():
    # Exposures are computed once per check: the second order must still see the
    # first one, approved (open) in the same step.
    risk = make_risk(max_notional_per_symbol=1000.0, max_notional_total=1500.0)
    first, second = order("A", Side.BUY, 6, 100.0, 1), order("A", Side.BUY, 6, 100.0, 2)
    approved, denials = risk.approve([first, second], [])
    assert approved == [first]
    assert [d.reason for d in denials] == ["max_notional_per_symbol"]
    third = order("B", Side.SELL, 9.5, 100.0, 3)
    approved, denials = risk.approve([third], [])
    assert approved == [] and [d.reason for d in denials] == ["max_notional_total"]
