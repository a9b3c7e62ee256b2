"""The entry's way from a signal to an order: the shortcuts keep the same answers.

A running :class:`fsm.Machine` follows each state's edges (kept with the state it is
in) instead of looking up ``(state, event type)`` in its table per event; risk's
:meth:`~engine.core.RiskCore.check` runs a reduce-only order's two checks and any
other order's all but ``not_reducing`` (which passes every order that is not
reduce-only), instead of testing the order at every check.
"""

from __future__ import annotations

import math

import attrs
import pytest

import fsm
from engine import config_from_dict
from engine.core import RiskCore
from engine.messages import Mark, Purpose, Side, SubmitOrder
from engine.testing import quiet_logger

TABLES = [fsm.POSITION_TABLE, fsm.ORDER_TABLE, fsm.TRADING_TABLE]


def _events(table: fsm.Table) -> list[object]:
    """One instance of every event type in ``table`` and, for the order table's
    guarded fill, a partial and a complete one."""
    out: list[object] = []
    for event_type in sorted(table.events(), key=lambda t: t.__name__):
        if event_type is fsm.Fill:
            out += [fsm.Fill(cum_qty=0.5, qty=1.0), fsm.Fill(cum_qty=1.0, qty=1.0)]
        else:
            required = {f.name: "x" for f in attrs.fields(event_type) if f.default is attrs.NOTHING}
            out.append(event_type(**required))
    return out


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_a_machine_in_any_state_takes_its_tables_edges(table: fsm.Table) -> None:
    # Every state a machine can be rebuilt in (a journal's), every event, twice in a
    # row: the second move starts from the state the first one reached.
    events = _events(table)
    for state in table.states:
        for first in events:
            for second in events:
                m = fsm.Machine(table, state)
                for event in (first, second):
                    before = m.state
                    target = table.resolve(before, event)
                    if target is None:
                        with pytest.raises(fsm.InvalidTransitionError):
                            m.handle(event)
                        assert m.state is before
                    else:
                        t = m.handle(event)
                        assert (t.source, t.target, t.event) == (before, target, event)
                        assert m.state is target


def test_a_guarded_edge_no_guard_holds_for_is_refused_and_changes_nothing() -> None:
    S = fsm.PositionState
    table = fsm.Table(
        name="guarded",
        states=S,
        initial=S.IDLE,
        transitions={
            (S.IDLE, fsm.EntrySignaled): [
                (lambda e: e.side > 0, S.SIGNALED),
                (lambda e: e.side < 0, S.ORDERING),
            ],
            (S.SIGNALED, fsm.EntryDenied): S.IDLE,
            (S.ORDERING, fsm.EntryFailed): S.IDLE,
        },
        terminal=[S.IN_POSITION, S.EXITING],
    )
    m = fsm.Machine(table)
    with pytest.raises(fsm.InvalidTransitionError):
        m.handle(fsm.EntrySignaled(side=0))
    assert m.state is S.IDLE
    assert m.handle(fsm.EntrySignaled(side=-1)).target is S.ORDERING
    with pytest.raises(fsm.InvalidTransitionError):
        m.handle(fsm.EntryDenied())  # SIGNALED's edge, not ORDERING's
    assert m.handle(fsm.EntryFailed()).target is S.IDLE
    assert m.handle(fsm.EntrySignaled(side=1)).target is S.SIGNALED


def _risk(**risk: object) -> RiskCore:
    config = config_from_dict({"risk": risk}, source="<test>")
    core = RiskCore(config=config.risk, symbols=["BTCUSDT", "ETHUSDT"], log=quiet_logger())
    core.marks["BTCUSDT"] = Mark(symbol="BTCUSDT", ts=0, bid=99.0, ask=101.0)
    return core


def _order(side: Side, qty: float, *, reduce_only: bool, ts: int = 0, price: float = 100.0):
    return SubmitOrder(
        client_order_id=f"c{ts}",
        symbol="BTCUSDT",
        side=side,
        qty=qty,
        ref_price=price,
        purpose=Purpose.EXIT if reduce_only else Purpose.ENTRY,
        reduce_only=reduce_only,
        price=math.nan,
        ts_event=ts,
        ts_init=ts,
        seq=ts,
        correlation_id=f"c{ts}",
    )


def test_a_reduce_only_order_meets_the_rate_and_not_reducing_only() -> None:
    core = _risk(min_notional=1e9, price_band_bps=1.0)
    core.ledger.apply_fill("BTCUSDT", 1.0, 100.0, 0.0)
    # Min notional and the price band would refuse it; a reduce-only order that
    # reduces skips them.
    assert core.check(_order(Side.SELL, 1.0, reduce_only=True, price=150.0)) is None
    # Through flat: not reducing.
    assert core.check(_order(Side.SELL, 3.0, reduce_only=True)) == "not_reducing"
    # The rate still counts for it.
    core._recent.extend([0] * core._cfg.max_orders_per_second)
    assert core.check(_order(Side.SELL, 1.0, reduce_only=True)) == "max_orders_per_second"


def test_an_opening_order_meets_every_check_in_order() -> None:
    core = _risk(min_notional=5.0, price_band_bps=50.0)
    assert core.check(_order(Side.BUY, 0.01, reduce_only=False)) == "min_notional"
    # Far from the mid: the band, after min notional passed.
    assert core.check(_order(Side.BUY, 1.0, reduce_only=False, price=120.0)) == "price_band"
    assert core.check(_order(Side.BUY, 1.0, reduce_only=False)) is None
    # A reduce-only order with nothing held does not reduce.
    assert core.check(_order(Side.SELL, 1.0, reduce_only=True)) == "not_reducing"


@pytest.mark.parametrize("buffer", [0, 4])
async def test_an_operator_command_waiting_is_applied_at_the_next_evaluation(buffer) -> None:
    # A command in the channel's buffer, or a sender blocked on a channel with none,
    # is taken at risk's next evaluation.
    import trio
    import trio.testing

    from engine.messages import ControlCommand

    send, receive = trio.open_memory_channel[ControlCommand](buffer)
    config = config_from_dict({}, source="<test>")
    core = RiskCore(config=config.risk, symbols=["BTCUSDT"], log=quiet_logger(), control=receive)
    core.update_trading_state(0, [])
    assert core.trading.state is fsm.TradingState.ACTIVE
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send.send, ControlCommand(action="halt", reason="test"))
        await trio.testing.wait_all_tasks_blocked()  # sent (buffered) or blocked sending
        records: list = []
        core.update_trading_state(1, records)
        nursery.cancel_scope.cancel()  # a sender still blocked: the command was not taken
    assert core.trading.state is fsm.TradingState.HALTED
    assert [r.target for r in records] == ["HALTED"]
    send.close()
    core.update_trading_state(2, [])  # closed and empty: nothing to take, no error
