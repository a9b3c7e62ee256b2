"""Live protective stops (issue 13, item 4) against the loopback exchange.

The venue rests a STOP_MARKET ``closePosition`` order on the exchange's algo
order API while a position is held (:mod:`engine.venues.binance._protect`):
placed at the ``[exits]`` stop level when the position opens, moved when the
trailing level moves by more than ``protective_move_bps``, cancelled when the
position closes; it triggers and closes the position at the exchange by itself;
a restart adopts the one that still protects a position and cancels orphans.
The exchange plays the bundled BTCUSDT sample only when the test advances it.
"""

from __future__ import annotations

import time
from decimal import Decimal

import attrs
import numpy as np
import pytest
import trio
from test_loopback_order_types import (
    SAMPLE,
    Harness,
    future_trades,
    live,
    new_server,
    serving,
    venue_on,
)

from engine._config import ExitsSection
from engine.messages import EventKind, FillRecovered, Purpose, Side, Ticks
from engine.venues.binance._protect import (
    CancelStop,
    PlaceStop,
    ProtectiveStops,
    is_protective_id,
)
from engine.venues.binance._reconcile import ExchangeSnapshot, JournalView, plan_reconciliation
from engine.venues.binance._templates import OrderType
from engine.venues.sim._algo import AlgoRequest
from engine.venues.sim._recorded import Recording, load_recording

GUARD_S = 120  # a failure guard, not a wait


@pytest.fixture(scope="module")
def recording() -> Recording:
    return load_recording([SAMPLE])


def quote_ticks(bids: list[float], spread: float, symbol: str = "BTCUSDT") -> dict[str, Ticks]:
    """QUOTE rows stamped now (after the entry), for the venue's step."""
    n = len(bids)
    now = time.time_ns()
    bid = np.array(bids)
    nan = np.full(n, np.nan)
    return {
        symbol: Ticks(
            ts=np.arange(now, now + n, dtype=np.int64),
            ts_exchange=np.arange(now, now + n, dtype=np.int64),
            seq=np.arange(n, dtype=np.int64),
            kind=np.full(n, EventKind.QUOTE, dtype=np.int8),
            bid=bid,
            bid_qty=np.ones(n),
            ask=bid + spread,
            ask_qty=np.ones(n),
            price=nan,
            qty=nan,
            buyer_maker=np.zeros(n, dtype=np.int8),
        )
    }


def protective_orders(h: Harness) -> list:
    return [o for o in h.server.algos.open_orders("BTCUSDT") if o.client_algo_id.startswith("ps-")]


async def until(h: Harness, done, ticks: dict[str, Ticks] | None = None) -> None:
    """Step the venue (with ``ticks`` on the first step) until ``done()``."""
    with trio.fail_after(GUARD_S):
        h.events += h.venue.on_market(ticks or {})
        while not done():
            await trio.sleep(0.01)
            h.events += h.venue.on_market({})


async def open_long(h: Harness, qty: float = 0.02) -> None:
    h.submit(h.order(Side.BUY, qty))
    await until(h, lambda: h.venue.ledger.qty("BTCUSDT") > 0 and h.venue.pending_orders == 0)


async def test_a_protective_stop_rests_triggers_and_closes_the_position(recording):
    server = new_server(recording)
    async with serving(server) as ports:
        bid, ask = (
            Decimal(server.stats.book_ticker("BTCUSDT")["bidPrice"]),
            Decimal(server.stats.book_ticker("BTCUSDT")["askPrice"]),
        )
        low = min(future_trades(server, 3000))
        # Halfway down to where the capture goes next: below the market, and reached.
        stop_bps = float((ask - low) / ask * 10_000) / 2
        exits = ExitsSection(stop_bps=stop_bps)
        async with venue_on(server, ports, protective=exits) as h:
            await open_long(h)
            await until(h, lambda: h.venue.protective.resting("BTCUSDT") is not None)
            (stop,) = protective_orders(h)
            entry = h.venue.ledger.avg_price("BTCUSDT")
            tick = server.engine.rules["BTCUSDT"].tick
            level = Decimal(repr(entry * (1 - stop_bps / 10_000)))
            assert stop.type == "STOP_MARKET" and stop.side == "SELL" and stop.close_position
            assert stop.trigger_price == (level / tick).to_integral_value("ROUND_CEILING") * tick
            assert stop.trigger_price < bid
            # Nothing more while the level stands.
            await until(h, lambda: True)
            assert len(protective_orders(h)) == 1

            server.advance(3000)  # the market falls through the stop
            await until(h, lambda: h.venue.ledger.qty("BTCUSDT") == 0.0)
            assert server.engine.position("BTCUSDT").amount == 0
            ops = h.venue.take_ops()
            recovered = [op for op in ops if isinstance(op, FillRecovered)]
            assert sum(op.qty for op in recovered) == pytest.approx(0.02)
            assert {op.side for op in recovered} == {Side.SELL}
            assert all(op.client_order_id == stop.client_algo_id for op in recovered)
            await until(h, lambda: h.venue.protective.resting("BTCUSDT") is None)
            assert not protective_orders(h)
            assert h.venue.pending_orders == 0


async def test_the_stop_trails_then_is_cancelled_when_the_position_closes(recording):
    exits = ExitsSection(trail_bps=30.0)
    async with live(recording, protective=exits, protective_move_bps=5.0) as h:
        await open_long(h)
        await until(h, lambda: h.venue.protective.resting("BTCUSDT") is not None)
        (first,) = protective_orders(h)
        bid, ask = h.quote()
        spread = float(ask - bid)
        # The best bid rises 3 bps: the trail moves 3 bps, under the threshold.
        await until(h, lambda: True, quote_ticks([float(bid) * 1.0003], spread))
        assert [o.client_algo_id for o in protective_orders(h)] == [first.client_algo_id]
        # 10 bps: a new stop, then the old one cancelled.
        await until(
            h,
            lambda: (
                (rest := h.venue.protective.resting("BTCUSDT")) is not None
                and rest[0] != first.client_algo_id
                and len(protective_orders(h)) == 1
            ),
            quote_ticks([float(bid) * 1.001], spread),
        )
        (moved,) = protective_orders(h)
        assert moved.trigger_price > first.trigger_price
        assert float(moved.trigger_price) == pytest.approx(
            float(bid) * 1.001 * (1 - 0.003), abs=0.2
        )

        h.submit(h.order(Side.SELL, 0.02, purpose=Purpose.EXIT, reduce_only=True))
        await until(h, lambda: h.venue.ledger.qty("BTCUSDT") == 0.0 and not protective_orders(h))
        assert h.venue.protective.resting("BTCUSDT") is None


async def test_a_restart_adopts_the_stop_of_a_held_position_and_cancels_orphans(recording):
    exits = ExitsSection(stop_bps=50.0)
    server = new_server(recording)
    async with serving(server) as ports:
        async with venue_on(server, ports, protective=exits) as first:
            await open_long(first)
            await until(first, lambda: first.venue.protective.resting("BTCUSDT") is not None)
            (kept,) = protective_orders(first)
            journal = first.journal()
        # The venue stopped (as on a crash or shutdown): its stop still rests.
        assert [o.client_algo_id for o in protective_orders(first)] == [kept.client_algo_id]
        last = server.engine.mark_price("BTCUSDT")
        orphan, _events = server.algos.place(
            AlgoRequest(symbol="BTCUSDT", side="BUY", type="STOP_MARKET", quantity=Decimal(0),
                        trigger_price=(last * 2).quantize(Decimal("0.1")), close_position=True,
                        client_algo_id="ps-BTCUSDT-orphan"),
            last, last, int(time.time() * 1000),
        )  # fmt: skip
        async with venue_on(server, ports, protective=exits, journal=journal) as second:
            assert second.venue.ledger.qty("BTCUSDT") == pytest.approx(0.02)
            assert second.venue.protective_adopted == [kept.client_algo_id]
            assert second.venue.protective_cancelled == [orphan.client_algo_id]
            assert second.venue.protective.resting("BTCUSDT")[0] == kept.client_algo_id
            await until(second, lambda: True)  # a step: the adopted stop stands
            assert [o.client_algo_id for o in protective_orders(second)] == [kept.client_algo_id]


# -- the synchronous core -------------------------------------------------------------------


def core(**exits: float) -> ProtectiveStops:
    clock = iter(range(1_000, 10_000))
    return ProtectiveStops(ExitsSection(**exits), move_bps=5.0, now_ns=lambda: next(clock))


def test_core_places_on_open_moves_past_the_threshold_and_cancels_on_close():
    stops = core(trail_bps=20.0)
    (place,) = stops.on_step("BTCUSDT", 0.5, 100.0, None, now=1)
    assert isinstance(place, PlaceStop) and place.side is Side.SELL
    assert place.trigger == pytest.approx(99.8) and place.client_algo_id.startswith("ps-BTCUSDT-")
    assert stops.on_placed("BTCUSDT", place.client_algo_id) == []
    assert stops.resting("BTCUSDT") == (place.client_algo_id, place.trigger)
    # 3 bps higher: under the 5 bps threshold.
    assert stops.on_step("BTCUSDT", 0.5, 100.0, quote_ticks([100.03], 0.01)["BTCUSDT"], 2) == []
    # 10 bps: a new stop first; the old one is cancelled once the new one is placed.
    (moved,) = stops.on_step("BTCUSDT", 0.5, 100.0, quote_ticks([100.1], 0.01)["BTCUSDT"], 3)
    assert isinstance(moved, PlaceStop) and moved.trigger == pytest.approx(
        100.1 - 0.2
    )  # the distance set at entry
    (cancel,) = stops.on_placed("BTCUSDT", moved.client_algo_id)
    assert isinstance(cancel, CancelStop) and cancel.client_algo_id == place.client_algo_id
    # Falling prices never loosen it.
    assert stops.on_step("BTCUSDT", 0.5, 100.0, quote_ticks([99.9], 0.01)["BTCUSDT"], 4) == []
    (gone,) = stops.on_step("BTCUSDT", 0.0, 0.0, None, now=5)
    assert isinstance(gone, CancelStop) and gone.client_algo_id == moved.client_algo_id
    assert stops.resting("BTCUSDT") is None and stops.on_step("BTCUSDT", 0.0, 0.0, None, 6) == []


def test_core_flip_short_refusal_and_levels_that_would_trigger_at_once():
    stops = core(stop_bps=50.0)
    (place,) = stops.on_step("ETHUSDT", -2.0, 2000.0, None, now=1)
    assert place.side is Side.BUY and place.trigger == pytest.approx(2010.0)
    stops.on_refused("ETHUSDT", place.client_algo_id)
    assert stops.on_step("ETHUSDT", -2.0, 2000.0, None, now=2) == []  # not retried as is
    # Flipped long: a new stop on the other side.
    (long_stop,) = stops.on_step("ETHUSDT", 1.0, 2005.0, None, now=3)
    assert long_stop.side is Side.SELL and long_stop.trigger == pytest.approx(2005 * 0.995)
    # A bid already under the level: the engine's own exit is due, no stop is placed.
    fresh = core(stop_bps=50.0)
    assert (
        fresh.on_step("ETHUSDT", 1.0, 2000.0, quote_ticks([1980.0], 0.1, "ETHUSDT")["ETHUSDT"], 1)
        == []
    )
    # Only ATR stops: no level without the strategy's ATR.
    assert core(atr_stop=2.0).on_step("ETHUSDT", 1.0, 2000.0, None, now=1) == []


def test_core_without_an_exits_stop_rests_the_fallback_stop():
    clock = iter(range(1_000, 10_000))
    stops = ProtectiveStops(
        ExitsSection(atr_stop=2.0), move_bps=5.0, now_ns=lambda: next(clock), fallback_bps=100.0
    )
    # No level the venue can use ([exits] off, or ATR only): 100 bps from the entry.
    (place,) = stops.on_step("ETHUSDT", 1.0, 2000.0, None, now=1)
    assert place.side is Side.SELL and place.trigger == pytest.approx(1980.0)
    assert stops.on_placed("ETHUSDT", place.client_algo_id) == []
    # It does not trail.
    assert (
        stops.on_step("ETHUSDT", 1.0, 2000.0, quote_ticks([2100.0], 0.1, "ETHUSDT")["ETHUSDT"], 2)
        == []
    )
    (gone,) = stops.on_step("ETHUSDT", 0.0, 0.0, None, now=3)
    assert isinstance(gone, CancelStop)
    # Short: above the entry.
    (short,) = stops.on_step("ETHUSDT", -1.0, 2000.0, None, now=4)
    assert short.side is Side.BUY and short.trigger == pytest.approx(2020.0)
    # An [exits] stop wins over the fallback.
    clock2 = iter(range(1_000, 10_000))
    with_stop = ProtectiveStops(
        ExitsSection(stop_bps=20.0), move_bps=5.0, now_ns=lambda: next(clock2), fallback_bps=100.0
    )
    (own,) = with_stop.on_step("ETHUSDT", 1.0, 2000.0, None, now=1)
    assert own.trigger == pytest.approx(1996.0)


def test_reconciliation_recovers_a_protective_stops_fills_not_a_hand_trade():
    # The journal: a long of 0.016 filled at t=1000 ms; the stop then closed it while no
    # engine ran (its trade at t=2000 ms, of an order the journal never saw).
    view = JournalView(positions={"BTCUSDT": (0.016, 61_800.0)}, last_ts=1_000 * 1_000_000)
    trade = {"id": 7, "orderId": 55, "side": "SELL", "qty": "0.016", "price": "61740.1",
             "commission": "0.49", "time": 2_000}  # fmt: skip
    risk = ({"symbol": "BTCUSDT", "positionAmt": "0", "entryPrice": "0", "positionSide": "BOTH"},)
    by_hand = ExchangeSnapshot(position_risk=risk, trades={"BTCUSDT": (trade,)})
    plan = plan_reconciliation(view, by_hand, symbols=["BTCUSDT"], policy="cancel")
    assert plan.fills == () and len(plan.notes) == 1  # unknown order: a trade by hand
    stop = attrs.evolve(by_hand, protective={55: "ps-BTCUSDT-abc"})
    plan = plan_reconciliation(view, stop, symbols=["BTCUSDT"], policy="cancel")
    assert plan.notes == ()
    (fill,) = plan.fills
    assert (fill.client_order_id, fill.side, fill.qty, fill.trade_id) == (
        "ps-BTCUSDT-abc", Side.SELL, Decimal("0.016"), 7,
    )  # fmt: skip
    # Already journaled (at or before the journal's last record): not recovered again.
    later = attrs.evolve(view, last_ts=2_000 * 1_000_000, positions={"BTCUSDT": (0.0, 0.0)})
    assert plan_reconciliation(later, stop, symbols=["BTCUSDT"], policy="cancel").fills == ()


def test_core_a_move_before_the_first_stop_is_confirmed_leaves_no_gap():
    # What the end-to-end trailing test found: the first stop, superseded before its
    # placement was answered, was cancelled at once, and nothing rested until the
    # second one was placed.
    for second_first in (False, True):
        stops = core(trail_bps=20.0)
        (a,) = stops.on_step("BTCUSDT", 0.5, 100.0, None, now=1)
        (b,) = stops.on_step("BTCUSDT", 0.5, 100.0, quote_ticks([100.1], 0.01)["BTCUSDT"], 2)
        assert isinstance(b, PlaceStop) and b.trigger > a.trigger  # and A is not cancelled
        if second_first:
            assert stops.on_placed("BTCUSDT", b.client_algo_id) == []  # nothing rested
            (stale,) = stops.on_placed("BTCUSDT", a.client_algo_id)
            assert stale.client_algo_id == a.client_algo_id
        else:
            assert stops.on_placed("BTCUSDT", a.client_algo_id) == []  # it rests till B
            assert stops.resting("BTCUSDT") == (a.client_algo_id, a.trigger)
            (moved,) = stops.on_placed("BTCUSDT", b.client_algo_id)
            assert moved.client_algo_id == a.client_algo_id and moved.reason == "moved"
        assert stops.resting("BTCUSDT") == (b.client_algo_id, b.trigger)


# -- protective targets (TAKE_PROFIT_MARKET) ------------------------------------------------


def targets(h: Harness) -> list:
    return [o for o in h.server.algos.open_orders("BTCUSDT") if o.client_algo_id.startswith("pt-")]


def test_core_rests_a_target_beside_the_stop_and_cancels_both_on_close():
    stops = core(stop_bps=50.0, target_bps=100.0)
    stop, target = stops.on_step("BTCUSDT", 0.5, 100.0, None, now=1)
    assert isinstance(stop, PlaceStop) and stop.kind == "stop"
    assert stop.order_type is OrderType.STOP_MARKET and stop.client_algo_id.startswith("ps-")
    assert isinstance(target, PlaceStop) and target.kind == "target"
    assert target.order_type is OrderType.TAKE_PROFIT_MARKET
    assert target.client_algo_id.startswith("pt-BTCUSDT-") and is_protective_id(
        target.client_algo_id
    )
    assert target.side is Side.SELL and target.trigger == pytest.approx(101.0)
    assert stops.on_placed("BTCUSDT", stop.client_algo_id) == []
    assert stops.on_placed("BTCUSDT", target.client_algo_id) == []
    assert stops.resting("BTCUSDT", "target") == (target.client_algo_id, target.trigger)
    assert stops.resting("BTCUSDT") == (stop.client_algo_id, stop.trigger)
    # Prices move (the target's level does not): nothing to do.
    assert stops.on_step("BTCUSDT", 0.5, 100.0, quote_ticks([100.5], 0.01)["BTCUSDT"], 2) == []
    # The stop fired at the exchange (or the target, or the engine's exit): both go.
    stops.on_gone("BTCUSDT", stop.client_algo_id)
    (cancel,) = stops.on_step("BTCUSDT", 0.0, 0.0, None, now=3)
    assert cancel == CancelStop(
        symbol="BTCUSDT", client_algo_id=target.client_algo_id, reason="position closed"
    )
    # Short: the target below the entry, a BUY.
    stop, target = stops.on_step("BTCUSDT", -0.5, 100.0, None, now=4)
    assert (target.side, target.kind) == (Side.BUY, "target")
    assert target.trigger == pytest.approx(99.0)
    stops.on_placed("BTCUSDT", stop.client_algo_id)
    stops.on_placed("BTCUSDT", target.client_algo_id)
    # The target filled: the stop is cancelled.
    stops.on_gone("BTCUSDT", target.client_algo_id)
    assert stops.on_step("BTCUSDT", 0.0, 0.0, None, now=5) == [
        CancelStop(symbol="BTCUSDT", client_algo_id=stop.client_algo_id, reason="position closed")
    ]


def test_core_target_is_the_final_one_of_a_ladder_and_off_when_asked():
    # A ladder that closes everything: its last rung (2R, R = the 50 bps stop) is the
    # final target, nearer than target_bps; a rung's closePosition would close the rest.
    stops = core(stop_bps=50.0, target_bps=300.0, partial_r=(1.0, 2.0), partial_fraction=(0.5, 0.5))
    _stop, target = stops.on_step("ETHUSDT", 1.0, 2000.0, None, now=1)
    assert target.trigger == pytest.approx(2000.0 + 2 * 10.0)
    assert stops.final_target("ETHUSDT") == pytest.approx(2020.0)
    # A ladder that leaves a rest (0.5 in all) to the other policies: target_bps only.
    rest = core(stop_bps=50.0, target_bps=300.0, partial_r=(1.0,), partial_fraction=(0.5,))
    _stop, target = rest.on_step("ETHUSDT", 1.0, 2000.0, None, now=1)
    assert target.trigger == pytest.approx(2060.0)
    # ... and without target_bps: no target at all.
    (stop,) = core(stop_bps=50.0, partial_r=(1.0,), partial_fraction=(0.5,)).on_step(
        "ETHUSDT", 1.0, 2000.0, None, now=1
    )
    assert stop.kind == "stop"
    # No target configured, or targets off (venue.protective_target = false).
    assert [a.kind for a in core(stop_bps=50.0).on_step("ETHUSDT", 1.0, 2000.0, None, 1)] == [
        "stop"
    ]
    clock = iter(range(1_000, 10_000))
    off = ProtectiveStops(ExitsSection(stop_bps=50.0, target_bps=100.0), move_bps=5.0,
                          now_ns=lambda: next(clock), target=False)  # fmt: skip
    assert [a.kind for a in off.on_step("ETHUSDT", 1.0, 2000.0, None, 1)] == ["stop"]
    assert not off.adopts("target") and off.adopts("stop")
    # Targets only: no stop.
    clock2 = iter(range(1_000, 10_000))
    only = ProtectiveStops(ExitsSection(target_bps=100.0), move_bps=5.0,
                           now_ns=lambda: next(clock2), stop=False)  # fmt: skip
    assert [a.kind for a in only.on_step("ETHUSDT", 1.0, 2000.0, None, 1)] == ["target"]
    assert only.adopts("stop")  # one found at a start still protects till the close
    assert ProtectiveStops.wanted(ExitsSection(target_bps=1.0), stop=False)
    assert not ProtectiveStops.wanted(ExitsSection(target_bps=1.0), target=False)


def test_core_target_already_reached_adopted_and_moved():
    # A bid at or past the target: it would trigger at once (the engine's exit is due).
    stops = core(stop_bps=50.0, target_bps=100.0)
    (stop,) = stops.on_step("BTCUSDT", 1.0, 100.0, quote_ticks([101.0], 0.01)["BTCUSDT"], 1)
    assert stop.kind == "stop"
    # Adopted at a restart at the level it would be placed at: kept, nothing placed.
    adopted = core(stop_bps=50.0, target_bps=100.0)
    adopted.adopt("BTCUSDT", "ps-BTCUSDT-a", Side.SELL, 99.5)
    adopted.adopt("BTCUSDT", "pt-BTCUSDT-b", Side.SELL, 101.0)
    assert adopted.on_step("BTCUSDT", 1.0, 100.0, None, now=1) == []
    assert adopted.resting("BTCUSDT", "target") == ("pt-BTCUSDT-b", 101.0)
    # Adopted at a level the entry no longer gives (by more than move_bps): a new
    # target first, then the old one cancelled; a farther one moves back too.
    for old in (101.5, 100.5):
        moved = core(stop_bps=50.0, target_bps=100.0)
        moved.adopt("BTCUSDT", "ps-BTCUSDT-a", Side.SELL, 99.5)
        moved.adopt("BTCUSDT", "pt-BTCUSDT-b", Side.SELL, old)
        (new,) = moved.on_step("BTCUSDT", 1.0, 100.0, None, now=1)
        assert new.kind == "target" and new.trigger == pytest.approx(101.0)
        (cancel,) = moved.on_placed("BTCUSDT", new.client_algo_id)
        assert cancel.client_algo_id == "pt-BTCUSDT-b" and cancel.reason == "moved"
    # A refused target is not retried at its level; the stop is unaffected.
    refused = core(stop_bps=50.0, target_bps=100.0)
    stop, target = refused.on_step("BTCUSDT", 1.0, 100.0, None, now=1)
    refused.on_refused("BTCUSDT", target.client_algo_id)
    assert refused.on_placed("BTCUSDT", stop.client_algo_id) == []
    assert refused.on_step("BTCUSDT", 1.0, 100.0, None, now=2) == []
    assert refused.resting("BTCUSDT") == (stop.client_algo_id, stop.trigger)


def test_reconciliation_recovers_a_protective_targets_fills():
    view = JournalView(positions={"BTCUSDT": (0.016, 61_800.0)}, last_ts=1_000 * 1_000_000)
    trade = {"id": 8, "orderId": 56, "side": "SELL", "qty": "0.016", "price": "61862.0",
             "commission": "0.49", "time": 2_000}  # fmt: skip
    risk = ({"symbol": "BTCUSDT", "positionAmt": "0", "entryPrice": "0", "positionSide": "BOTH"},)
    snapshot = ExchangeSnapshot(
        position_risk=risk, trades={"BTCUSDT": (trade,)}, protective={56: "pt-BTCUSDT-abc"}
    )
    plan = plan_reconciliation(view, snapshot, symbols=["BTCUSDT"], policy="cancel")
    assert plan.notes == ()
    (fill,) = plan.fills
    assert (fill.client_order_id, fill.side, fill.qty) == ("pt-BTCUSDT-abc", Side.SELL,
                                                           Decimal("0.016"))  # fmt: skip


async def test_a_protective_target_rests_triggers_closes_and_the_stop_is_cancelled(recording):
    server = new_server(recording)
    async with serving(server) as ports:
        ask = Decimal(server.stats.book_ticker("BTCUSDT")["askPrice"])
        high = max(future_trades(server, 6000))
        assert high > ask
        # Halfway up to where the capture goes next: above the market, and reached.
        target_bps = float((high - ask) / ask * 10_000) / 2
        exits = ExitsSection(stop_bps=100.0, target_bps=target_bps)
        async with venue_on(server, ports, protective=exits) as h:
            await open_long(h)
            await until(
                h,
                lambda: (
                    h.venue.protective.resting("BTCUSDT") is not None
                    and h.venue.protective.resting("BTCUSDT", "target") is not None
                ),
            )
            (stop,) = protective_orders(h)
            (target,) = targets(h)
            entry = h.venue.ledger.avg_price("BTCUSDT")
            tick = server.engine.rules["BTCUSDT"].tick
            level = Decimal(repr(entry * (1 + target_bps / 10_000)))
            assert target.type == "TAKE_PROFIT_MARKET" and target.side == "SELL"
            assert target.close_position
            assert target.trigger_price == (level / tick).to_integral_value("ROUND_CEILING") * tick
            assert stop.type == "STOP_MARKET"
            await until(h, lambda: True)  # a step: nothing more while the levels stand
            assert len(protective_orders(h)) == len(targets(h)) == 1

            server.advance(6000)  # the market rises through the target
            await until(h, lambda: h.venue.ledger.qty("BTCUSDT") == 0.0)
            assert server.engine.position("BTCUSDT").amount == 0
            (done,) = [o for o in server.algos.orders("BTCUSDT") if o.algo_id == target.algo_id]
            assert done.status == "FINISHED" and done.actual_qty == Decimal("0.02")
            recovered = [op for op in h.venue.take_ops() if isinstance(op, FillRecovered)]
            assert sum(op.qty for op in recovered) == pytest.approx(0.02)
            assert {(op.side, op.client_order_id, op.correlation_id) for op in recovered} == {
                (Side.SELL, target.client_algo_id, "protective_target")
            }
            # The stop is cancelled now that the position is closed.
            await until(h, lambda: not protective_orders(h) and not targets(h))
            (gone,) = [o for o in server.algos.orders("BTCUSDT") if o.algo_id == stop.algo_id]
            assert gone.status == "CANCELED"
            assert h.venue.protective.resting("BTCUSDT") is None
            assert h.venue.protective.resting("BTCUSDT", "target") is None


async def test_a_restart_adopts_stop_and_target_and_cancels_orphan_targets(recording):
    exits = ExitsSection(stop_bps=50.0, target_bps=50.0)
    server = new_server(recording)
    async with serving(server) as ports:
        async with venue_on(server, ports, protective=exits) as first:
            await open_long(first)
            await until(first, lambda: len(protective_orders(first)) == len(targets(first)) == 1)
            (stop,) = protective_orders(first)
            (target,) = targets(first)
            journal = first.journal()
        last = server.engine.mark_price("BTCUSDT")
        # A target on the wrong side (a short's) and a second one on the right side.
        orphans = []
        for side, trigger, name in (("BUY", last / 2, "a"), ("SELL", last * 2, "b")):
            orphan, _events = server.algos.place(
                AlgoRequest(symbol="BTCUSDT", side=side, type="TAKE_PROFIT_MARKET",
                            quantity=Decimal(0), trigger_price=trigger.quantize(Decimal("0.1")),
                            close_position=True, client_algo_id=f"pt-BTCUSDT-orphan{name}"),
                last, last, int(time.time() * 1000),
            )  # fmt: skip
            orphans.append(orphan.client_algo_id)
        async with venue_on(server, ports, protective=exits, journal=journal) as second:
            # The newest of each kind on the closing side is kept: the second orphan
            # ("b", placed last) outranks the engine's own target by algo id.
            assert sorted(second.venue.protective_adopted) == sorted(
                [stop.client_algo_id, orphans[1]]
            )
            assert sorted(second.venue.protective_cancelled) == sorted(
                [orphans[0], target.client_algo_id]
            )
            # Its level is not the entry's target: replaced (new first, then cancelled).
            await until(
                second,
                lambda: (
                    [o.client_algo_id for o in targets(second)] not in ([], [orphans[1]])
                    and len(targets(second)) == 1
                ),
            )
            (moved,) = targets(second)
            assert moved.trigger_price == target.trigger_price
            assert [o.client_algo_id for o in protective_orders(second)] == [stop.client_algo_id]
        # Targets off: a start cancels the targets it finds and places none.
        async with venue_on(
            server, ports, protective=exits, journal=journal, protective_target=False
        ) as third:
            assert third.venue.protective_adopted == [stop.client_algo_id]
            assert third.venue.protective_cancelled == [moved.client_algo_id]
            await until(third, lambda: True)
            assert targets(third) == []


async def test_a_target_that_fired_while_no_venue_ran_is_recovered_and_the_stop_cancelled(
    recording,
):
    server = new_server(recording)
    async with serving(server) as ports:
        ask = Decimal(server.stats.book_ticker("BTCUSDT")["askPrice"])
        high = max(future_trades(server, 6000))
        exits = ExitsSection(stop_bps=100.0, target_bps=float((high - ask) / ask * 10_000) / 2)
        async with venue_on(server, ports, protective=exits) as first:
            await open_long(first)
            await until(first, lambda: len(protective_orders(first)) == len(targets(first)) == 1)
            (stop,) = protective_orders(first)
            (target,) = targets(first)
            journal = first.journal()
        server.advance(6000)  # no venue runs: the target closes the position
        assert server.engine.position("BTCUSDT").amount == 0
        async with venue_on(server, ports, protective=exits, journal=journal) as second:
            plan = second.venue.reconciliation
            assert plan.notes == ()  # the engine's own order, not a trade by hand
            assert {f.client_order_id for f in plan.fills} == {target.client_algo_id}
            assert sum(f.qty for f in plan.fills) == Decimal("0.02")
            assert second.venue.ledger.qty("BTCUSDT") == 0.0
            # Flat: the stop left behind is an orphan, cancelled.
            assert second.venue.protective_cancelled == [stop.client_algo_id]
            assert protective_orders(second) == [] and targets(second) == []
