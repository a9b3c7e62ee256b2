"""The state machines: tables, reachability, invalid events, random sequences."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fsm

POSITION_EVENTS = sorted(fsm.POSITION_TABLE.events(), key=lambda t: t.__name__)
ORDER_EVENT_SAMPLES = [
    fsm.Accepted(),
    fsm.Rejected(reason="x"),
    fsm.Fill(cum_qty=0.5, qty=1.0),
    fsm.Fill(cum_qty=1.0, qty=1.0),
    fsm.Canceled(),
    fsm.Expired(),
    fsm.Triggered(),
    fsm.Replaced(),
]


def test_position_states_are_exactly_the_five():
    assert [s.name for s in fsm.PositionState] == [
        "IDLE",
        "SIGNALED",
        "ORDERING",
        "IN_POSITION",
        "EXITING",
    ]


@pytest.mark.parametrize(
    "table", [fsm.POSITION_TABLE, fsm.ORDER_TABLE, fsm.TRADING_TABLE], ids=lambda t: t.name
)
def test_every_state_reachable_and_no_dead_end(table):
    assert table.reachable() == frozenset(table.states)
    assert table.dead_ends() == frozenset()


def test_order_statuses_are_the_exchanges():
    names = {s.name for s in fsm.OrderStatus}
    assert {"NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED"} <= names
    for status in ("NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED"):
        assert fsm.status_from_exchange(status).name == status
    assert fsm.status_from_exchange("EXPIRED_IN_MATCH") is fsm.OrderStatus.EXPIRED
    with pytest.raises(ValueError, match="unknown exchange order status"):
        fsm.status_from_exchange("BOGUS")


def test_happy_path_round_trip():
    m = fsm.new_position()
    for event, state in [
        (fsm.EntrySignaled(side=1), "SIGNALED"),
        (fsm.EntrySubmitted(), "ORDERING"),
        (fsm.EntryFilled(), "IN_POSITION"),
        (fsm.ExitSignaled(reason="stop_loss"), "EXITING"),
        (fsm.ExitRejected(reason="rate"), "EXITING"),
        (fsm.ExitFilled(), "IDLE"),
    ]:
        t = m.handle(event)
        assert t.target.name == state
    assert m.state is fsm.PositionState.IDLE


def test_denied_and_failed_entries_go_back_to_idle():
    m = fsm.new_position()
    m.handle(fsm.EntrySignaled())
    m.handle(fsm.EntryDenied(reason="max_notional_total"))
    assert m.state is fsm.PositionState.IDLE
    m.handle(fsm.EntrySignaled())
    m.handle(fsm.EntrySubmitted())
    m.handle(fsm.EntryFailed(reason="rejected"))
    assert m.state is fsm.PositionState.IDLE


def test_invalid_event_raises_and_names_state_and_event():
    m = fsm.new_position()
    with pytest.raises(fsm.InvalidTransitionError, match="from IDLE on ExitFilled"):
        m.handle(fsm.ExitFilled())
    assert m.state is fsm.PositionState.IDLE


def test_order_fill_guards():
    m = fsm.new_order()
    m.handle(fsm.Accepted())
    assert m.handle(fsm.Fill(cum_qty=0.4, qty=1.0)).target is fsm.OrderStatus.PARTIALLY_FILLED
    assert m.handle(fsm.Fill(cum_qty=1.0, qty=1.0)).target is fsm.OrderStatus.FILLED
    with pytest.raises(fsm.InvalidTransitionError):
        m.handle(fsm.Canceled())


def test_table_rejects_foreign_states():
    with pytest.raises(fsm.TableError):
        fsm.Table(
            name="bad",
            states=fsm.PositionState,
            initial=fsm.PositionState.IDLE,
            transitions={(fsm.PositionState.IDLE, fsm.EntrySignaled): fsm.OrderStatus.NEW},
        )


def _instance(event_type: type) -> object:
    kwargs = {}
    for field in attrs.fields(event_type):
        if field.default is attrs.NOTHING:
            kwargs[field.name] = 1.0
    return event_type(**kwargs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(POSITION_EVENTS), max_size=40))
def test_random_position_sequences_never_leave_the_table(events):
    m = fsm.new_position()
    for event_type in events:
        before = m.state
        expected = fsm.POSITION_TABLE.transitions.get((before, event_type))
        if expected is None:
            with pytest.raises(fsm.InvalidTransitionError):
                m.handle(_instance(event_type))
            assert m.state is before
        else:
            assert m.handle(_instance(event_type)).target is expected
        assert m.state in fsm.PositionState


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(ORDER_EVENT_SAMPLES), max_size=30))
def test_random_order_sequences_never_leave_the_table(events):
    m = fsm.new_order()
    for event in events:
        before = m.state
        target = fsm.ORDER_TABLE.resolve(before, event)
        if target is None:
            with pytest.raises(fsm.InvalidTransitionError):
                m.handle(event)
            assert m.state is before
        else:
            m.handle(event)
            assert m.state is target
        if before in fsm.TERMINAL_STATUSES:
            assert target is None  # terminal states accept nothing


def test_readme_diagram_is_generated_from_the_table():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```mermaid\n(.*?)```", readme, flags=re.S)
    assert fsm.POSITION_TABLE.mermaid().strip() in [b.strip() for b in blocks]
    assert fsm.ORDER_TABLE.mermaid().strip() in [b.strip() for b in blocks]
    assert fsm.TRADING_TABLE.mermaid().strip() in [b.strip() for b in blocks]
