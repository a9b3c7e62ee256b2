"""The order machine walks each order type's life as Binance (and the replay venue) runs it."""

from __future__ import annotations

import pytest

import fsm

S = fsm.OrderStatus
FULL = fsm.Fill(cum_qty=1.0, qty=1.0)
HALF = fsm.Fill(cum_qty=0.5, qty=1.0)


def _walk(*events: object) -> list[fsm.OrderStatus]:
    m = fsm.new_order()
    return [m.handle(event).target for event in events]


@pytest.mark.parametrize(
    ("events", "statuses"),
    [
        # LIMIT GTC resting, partly filled by trades at its price, then the rest.
        ((fsm.Accepted(), HALF, FULL), [S.NEW, S.PARTIALLY_FILLED, S.FILLED]),
        # LIMIT GTC amended twice while resting, then cancelled.
        (
            (fsm.Accepted(), fsm.Replaced(), HALF, fsm.Replaced(), fsm.Canceled()),
            [S.NEW, S.NEW, S.PARTIALLY_FILLED, S.PARTIALLY_FILLED, S.CANCELED],
        ),
        # IOC: fills what it can at arrival, the rest expires.
        ((fsm.Accepted(), HALF, fsm.Expired()), [S.NEW, S.PARTIALLY_FILLED, S.EXPIRED]),
        # FOK that cannot fill completely: expired with nothing filled.
        ((fsm.Accepted(), fsm.Expired()), [S.NEW, S.EXPIRED]),
        # GTX that would take: refused before it rests (Binance -5022).
        ((fsm.Rejected(reason="GTX_WOULD_TAKE"),), [S.REJECTED]),
        # STOP_MARKET: rests untriggered, triggers on a trade, fills as a market order.
        (
            (fsm.Accepted(), fsm.Triggered(), HALF, FULL),
            [S.NEW, S.TRIGGERED, S.PARTIALLY_FILLED, S.FILLED],
        ),
        # A triggered reduce-only stop with no position left to reduce.
        ((fsm.Accepted(), fsm.Triggered(), fsm.Expired()), [S.NEW, S.TRIGGERED, S.EXPIRED]),
    ],
    ids=["gtc", "replace-cancel", "ioc", "fok", "gtx", "stop", "stop-expired"],
)
def test_order_type_lives(events, statuses):
    assert _walk(*events) == statuses


@pytest.mark.parametrize(
    ("state", "event"),
    [
        # A triggered stop is a market order now: it can no longer be cancelled or amended.
        (S.TRIGGERED, fsm.Canceled()),
        (S.TRIGGERED, fsm.Replaced()),
        (S.TRIGGERED, fsm.Triggered()),
        # Only an open order can be amended.
        (S.SUBMITTED, fsm.Replaced()),
        (S.FILLED, fsm.Replaced()),
        (S.CANCELED, fsm.Triggered()),
        # A resting order is never rejected; a partly filled order is not a stop waiting to trigger.
        (S.NEW, fsm.Rejected()),
        (S.PARTIALLY_FILLED, fsm.Triggered()),
    ],
)
def test_invalid_order_type_events_raise(state, event):
    m = fsm.new_order(state)
    with pytest.raises(fsm.InvalidTransitionError):
        m.handle(event)
    assert m.state is state


def test_local_statuses_are_not_exchange_statuses():
    for local in ("SUBMITTED", "TRIGGERED"):
        with pytest.raises(ValueError, match="is local"):
            fsm.status_from_exchange(local)
