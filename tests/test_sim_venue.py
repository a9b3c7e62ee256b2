"""The simulated venue: fill rule, fees, PnL accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.ledger import PositionLedger
from engine.messages import EventKind, OrderFilled, Purpose, Side, SubmitOrder, Ticks
from engine.venues.sim import SimVenue, SymbolAccount


def ticks(rows: list[tuple[int, int, float, float]]) -> Ticks:
    """Rows of (ts, kind, bid, ask); trades carry NaN quotes."""
    ts = np.array([r[0] for r in rows], dtype=np.int64)
    kind = np.array([r[1] for r in rows], dtype=np.int8)
    nan = np.full(len(rows), np.nan)
    return Ticks(
        ts=ts,
        ts_exchange=ts,
        seq=np.arange(len(rows), dtype=np.int64),
        kind=kind,
        bid=np.array([r[2] for r in rows]),
        bid_qty=nan,
        ask=np.array([r[3] for r in rows]),
        ask_qty=nan,
        price=nan,
        qty=nan,
        buyer_maker=np.zeros(len(rows), dtype=np.int8),
    )


def order(side: Side, qty: float, ts: int, n: int = 1) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=f"o{n}",
        symbol="X",
        side=side,
        qty=qty,
        ref_price=100.0,
        purpose=Purpose.ENTRY,
        reduce_only=False,
        ts_event=ts,
        ts_init=ts,
        seq=n,
        correlation_id=f"c{n}",
    )


Q, T = int(EventKind.QUOTE), int(EventKind.TRADE)


def test_fills_at_first_quote_at_or_after_latency_opposite_side():
    venue = SimVenue(latency_ns=10, taker_fee_rate=0.0005)
    venue.submit(order(Side.BUY, 2.0, ts=100))
    venue.submit(order(Side.SELL, 1.0, ts=100, n=2))
    batch = ticks([(105, Q, 99.0, 101.0), (110, T, math.nan, math.nan), (110, Q, 98.0, 102.0)])
    fills = venue.on_market({"X": batch})
    assert [type(f) for f in fills] == [OrderFilled, OrderFilled]
    buy, sell = fills
    assert (buy.last_price, buy.ts_event, buy.last_qty) == (102.0, 110, 2.0)
    assert (sell.last_price, sell.ts_event) == (98.0, 110)
    assert buy.fee == pytest.approx(2.0 * 102.0 * 0.0005)
    assert venue.pending_orders == 0


def test_order_waits_for_a_later_step_when_no_quote_yet():
    venue = SimVenue(latency_ns=50, taker_fee_rate=0.0)
    venue.submit(order(Side.BUY, 1.0, ts=100))
    assert venue.on_market({"X": ticks([(120, Q, 1.0, 2.0)])}) == []
    assert venue.on_market({}) == []
    fills = venue.on_market({"X": ticks([(150, Q, 3.0, 4.0)])})
    assert fills[0].last_price == 4.0
    expired = SimVenue(latency_ns=1, taker_fee_rate=0.0)
    expired.submit(order(Side.BUY, 1.0, ts=1))
    assert [e.reason for e in expired.expire_all(5, "replay_ended")] == ["replay_ended"]


def test_account_pnl_through_a_flip():
    acct = SymbolAccount()
    acct.apply_fill(2.0, 100.0, 0.1)  # long 2 @ 100
    acct.apply_fill(1.0, 110.0, 0.1)  # long 3 @ 103.33
    assert acct.avg_price == pytest.approx(310.0 / 3.0)
    acct.apply_fill(-4.0, 120.0, 0.2)  # close 3 (+50), open short 1 @ 120
    assert acct.realized == pytest.approx(3 * (120.0 - 310.0 / 3.0))
    assert (acct.qty, acct.avg_price, acct.round_trips) == (-1.0, 120.0, 1)
    acct.apply_fill(1.0, 125.0, 0.0)  # close short at a loss of 5
    assert acct.realized == pytest.approx(50.0 - 5.0)
    assert (acct.qty, acct.round_trips) == (0.0, 2)
    assert acct.fees == pytest.approx(0.4)


def test_drawdown_marks_to_mid():
    venue = SimVenue(latency_ns=0, taker_fee_rate=0.0)
    venue.submit(order(Side.BUY, 1.0, ts=0))
    venue.on_market({"X": ticks([(0, Q, 99.0, 100.0)])})  # long 1 @ 100, mid 99.5
    venue.on_market({"X": ticks([(1, Q, 89.0, 91.0)])})  # mid 90
    venue.on_market({"X": ticks([(2, Q, 94.0, 96.0)])})  # mid 95
    assert venue.max_drawdown == pytest.approx(10.0)
    assert venue.equity == pytest.approx(-5.0)


def test_the_venue_feeds_the_ledger_it_is_given():
    # One ledger: what the venue fills is what every reader (risk, symbol actors, report)
    # sees, with no copy of its own.
    ledger = PositionLedger()
    venue = SimVenue(latency_ns=0, taker_fee_rate=0.0, ledger=ledger)
    venue.submit(order(Side.BUY, 2.0, ts=0))
    venue.on_market({"X": ticks([(0, Q, 99.0, 100.0)])})
    assert venue.accounts is ledger.accounts
    assert (ledger.qty("X"), ledger.avg_price("X")) == (2.0, 100.0)
    assert ledger.equity() == pytest.approx(venue.equity) == pytest.approx(-1.0)


def test_an_adopted_position_is_held_from_its_entry_price():
    # A live start adopts the exchange's position: no fill, no fee; closing it realizes
    # PnL from the adopted entry and counts a round trip.
    ledger = PositionLedger()
    ledger.adopt("X", -0.5, 200.0)
    assert (ledger.qty("X"), ledger.account("X").fills, ledger.adopted) == (
        -0.5,
        0,
        {"X": (-0.5, 200.0)},
    )
    ledger.apply_fill("X", 0.5, 190.0, 0.1)
    acct = ledger.account("X")
    assert (acct.qty, acct.round_trips, acct.realized) == (0.0, 1, pytest.approx(5.0))
    assert ledger.take_closed_trades() == [pytest.approx(4.9)]
    ledger.apply_fill("X", 0.1, 10.0, 0.0)
    ledger.apply_fill("X", 0.2, 10.0, 0.0)
    assert ledger.qty("X") == 0.3  # 0.1 + 0.2, as an order quantity would be
