"""A user strategy file that places every order type the engine has.

Two strategies in one file, written from README ("Your own strategy", "Order types
live") alone; ``tests/test_user_strategy_e2e.py`` copies this file outside the
repository and runs each through the real CLI.

``OrderTour`` (directional) enters every ``every`` quotes, long then short in turn,
each entry with the next order type of the tour (:meth:`OrderTour.entry_order`):

    1. MARKET
    2. LIMIT GTC resting ``rest_bps`` behind its own touch (below the bid for a buy):
       it rests, and ``[strategy] entry_timeout_ms`` later the engine cancels it
    3. LIMIT IOC ``through_bps`` through the opposite touch (fills at once)
    4. LIMIT FOK the same
    5. LIMIT GTX (post-only) ``maker_bps`` behind its own touch: rests; fills as
       maker, or is cancelled at ``entry_timeout_ms`` (or is refused, -5022, when the
       market moved through its price before it arrived)
    6. LIMIT GTX ``cross_bps`` through the opposite touch: a post-only order that
       would take, refused by the exchange (Binance -5022) and the simulated venue alike

Every price stays within risk's ``price_band_bps`` (50) of the mid, or risk would deny
the order before it is sent. The tour exits ``hold`` quotes after each fill
(``Signal.EXIT_TIME``: the engine closes with a reduce-only MARKET order). After
``max_entries`` entries it stops. Stops resting on the exchange come from config, not
from the strategy: ``venue.protective_stop`` rests a STOP_MARKET at the ``[exits]``
``stop_bps`` level, and ``venue.protective_target`` a TAKE_PROFIT_MARKET at its
``target_bps`` level (when set), while each live position is held.

``Quoter`` (a ``QuotingStrategy``) keeps a post-only bid and ask ``offset_ticks``
behind the touch; when the touch moves ``refresh_ticks`` away the engine amends the
order in place (cancel-replace, ``PUT /fapi/v1/order``); at the first requote after
``pull_after`` requotes with an ask working it stops quoting the ask for good, and the
engine cancels that order. A post-only quote the market crossed on its way to the
exchange is refused (-5022); the side is quoted again after ``exit_retry_ms``.

    [strategy]
    path = "order_types.py"     # relative to the config file
    name = "OrderTour"          # or "Quoter"

    [strategy.params]
    every = 300
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
from attrs import validators as v
from numba import njit

from engine.strategy import Mode, OrderSpec, QuotingStrategy, Strategy

# -- OrderTour ----------------------------------------------------------------------

LAST_BID, LAST_ASK, COUNT, ENTRIES, MAX_ENTRIES = range(5)
TOUR = ("MARKET", "GTC", "IOC", "FOK", "GTX", "GTX_CROSS")


@njit(cache=True)
def tour_scan(kind, bid, ask, start, stop, mode, state, every, hold):
    """Advance over ticks ``start..stop``; ``(index, signal)`` at a signal, else ``(stop, 0)``."""
    for i in range(start, stop):
        if kind[i] != 1:  # quotes only
            continue
        state[LAST_BID] = bid[i]
        state[LAST_ASK] = ask[i]
        state[COUNT] += 1.0
        signal = 0
        if mode == 0 and state[COUNT] >= every and state[ENTRIES] < state[MAX_ENTRIES]:
            signal = 1 if int(state[ENTRIES]) % 2 == 0 else 2  # long, short, long...
        elif mode == 1 and state[COUNT] >= hold:
            signal = 6  # Signal.EXIT_TIME
        if signal != 0:
            state[COUNT] = 0.0
            return i, signal
    return stop, 0


class OrderTour(Strategy):
    """Enters with each order type in turn; exits by time."""

    kind = "order_tour"

    @attrs.frozen
    class Params:
        every: int = attrs.field(default=300, validator=v.ge(1))
        hold: int = attrs.field(default=300, validator=v.ge(1))
        max_entries: int = attrs.field(default=6, validator=v.ge(0))
        through_bps: float = attrs.field(default=20.0, validator=v.ge(0))
        cross_bps: float = attrs.field(default=30.0, validator=v.ge(0))
        rest_bps: float = attrs.field(default=30.0, validator=v.ge(0))
        maker_bps: float = attrs.field(default=1.0, validator=v.ge(0))

    def __init__(self, config: Any, sizing: Any, params: Params) -> None:
        self.p = params
        self.state = np.zeros(5)
        self.state[MAX_ENTRIES] = params.max_entries

    def scan(self, ticks, start, stop, mode):
        return tour_scan(
            ticks.kind, ticks.bid, ticks.ask, start, stop, int(mode), self.state,
            self.p.every, self.p.hold,
        )  # fmt: skip

    def entry_order(self, side: int, bid: float, ask: float) -> OrderSpec:
        step = TOUR[int(self.state[ENTRIES]) % len(TOUR)]
        self.state[ENTRIES] += 1.0
        if step == "MARKET":
            return OrderSpec()
        own, opposite = (bid, ask) if side > 0 else (ask, bid)
        if step == "GTC":  # resting well behind the touch
            price = own * (1.0 - side * self.p.rest_bps * 1e-4)
            return OrderSpec(order_type="LIMIT", price=price, time_in_force="GTC")
        if step == "GTX":  # post-only just behind the touch: a maker order
            price = own * (1.0 - side * self.p.maker_bps * 1e-4)
            return OrderSpec(order_type="LIMIT", price=price, time_in_force="GTX")
        if step == "GTX_CROSS":  # post-only at a price that would take: refused
            price = opposite * (1.0 + side * self.p.cross_bps * 1e-4)
            return OrderSpec(order_type="LIMIT", price=price, time_in_force="GTX")
        price = opposite * (1.0 + side * self.p.through_bps * 1e-4)
        return OrderSpec(order_type="LIMIT", price=price, time_in_force=step)

    @property
    def last_bid(self) -> float:
        return float(self.state[LAST_BID])

    @property
    def last_ask(self) -> float:
        return float(self.state[LAST_ASK])

    def on_entry_filled(self, side: int, entry_price: float, ts: int) -> None:
        self.state[COUNT] = 0.0

    @classmethod
    def warm_up(cls) -> None:
        kind = np.ones(3, dtype=np.int8)
        px = np.full(3, 100.0)
        for column in (kind, px):
            column.flags.writeable = False  # the engine's columns are read-only
        tour_scan(kind, px, px, 0, 3, int(Mode.FLAT), np.zeros(5), 2, 2)


# -- Quoter -------------------------------------------------------------------------

Q_BID, Q_ASK, WORK_BID, WORK_ASK, WORK_BID_TS, WORK_ASK_TS, QUIET, INV, REQUOTES, PULLED = range(10)
Q_STATE = 10


@njit(cache=True)
def wanted(state, tick, offset, qty, cap):
    """The wanted bid and ask prices (NaN: no quote on that side)."""
    b = state[Q_BID] - offset * tick
    a = state[Q_ASK] + offset * tick
    if not (b > 0.0) or state[INV] + qty > cap + 1e-12:
        b = np.nan
    if state[PULLED] > 0.0 or state[INV] - qty < -cap - 1e-12:
        a = np.nan
    return b, a


@njit(cache=True)
def _moves(want, work, age, tick, refresh, min_life):
    if want != want:
        return work == work  # a side no longer wanted: cancel it
    if work != work:
        return True  # a side wanted and not working: place it
    return age >= min_life and abs(want - work) >= refresh * tick - 1e-9


@njit(cache=True)
def quote_scan(ts, kind, bid, ask, start, stop, mode, state, p):
    """Stop at the first quote where a side should be placed, amended or cancelled."""
    tick, offset, qty, cap, pull_after, refresh, min_life = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
    for i in range(start, stop):
        if kind[i] != 1:
            continue
        state[Q_BID] = bid[i]
        state[Q_ASK] = ask[i]
        if mode != 3 or ts[i] < state[QUIET]:  # not QUOTING: only follow the touch
            continue
        if state[REQUOTES] >= pull_after and state[WORK_ASK] == state[WORK_ASK]:
            state[PULLED] = 1.0  # pull the working ask: the core cancels it
        b, a = wanted(state, tick, offset, qty, cap)
        now = float(ts[i])
        if _moves(b, state[WORK_BID], now - state[WORK_BID_TS], tick, refresh, min_life) or (
            _moves(a, state[WORK_ASK], now - state[WORK_ASK_TS], tick, refresh, min_life)
        ):
            state[REQUOTES] += 1.0
            return i, 7  # Signal.REQUOTE
    return stop, 0


class Quoter(QuotingStrategy):
    """A post-only bid and ask behind the touch, amended as it moves; the ask pulled
    after ``pull_after`` requotes."""

    kind = "quoter"

    @attrs.frozen
    class Params:
        qty: float = attrs.field(default=0.002, validator=v.gt(0))
        max_inventory: float = attrs.field(default=0.006, validator=v.gt(0))
        tick_size: float = attrs.field(default=0.1, validator=v.gt(0))
        offset_ticks: int = attrs.field(default=2, validator=v.ge(1))
        refresh_ticks: int = attrs.field(default=3, validator=v.ge(1))
        min_life_ms: float = attrs.field(default=200.0, validator=v.ge(0))
        pull_after: int = attrs.field(default=6, validator=v.ge(1))

        def __attrs_post_init__(self) -> None:
            if self.qty > self.max_inventory:
                raise ValueError(f"'qty' must be at most max_inventory ({self.max_inventory})")

    def __init__(self, config: Any, sizing: Any, params: Params) -> None:
        self.p = params
        self.state = np.full(Q_STATE, np.nan)
        self.state[[WORK_BID_TS, WORK_ASK_TS, QUIET, INV, REQUOTES, PULLED]] = 0.0
        self.packed = np.array(
            [
                params.tick_size, params.offset_ticks, params.qty, params.max_inventory,
                params.pull_after, params.refresh_ticks, params.min_life_ms * 1e6,
            ]
        )  # fmt: skip
        self.decimals = max(0, -math.floor(math.log10(params.tick_size)) + 2)

    def scan(self, ticks, start, stop, mode):
        return quote_scan(
            ticks.ts, ticks.kind, ticks.bid, ticks.ask, start, stop, int(mode), self.state,
            self.packed,
        )  # fmt: skip

    def quotes(self) -> tuple[float, float, float, float]:
        p = self.p
        b, a = wanted(self.state, p.tick_size, p.offset_ticks, p.qty, p.max_inventory)
        bid = round(b, self.decimals) if b == b else math.nan
        ask = round(a, self.decimals) if a == a else math.nan
        return bid, p.qty, ask, p.qty

    def on_working(
        self, bid_px: float, ask_px: float, bid_ts: int, ask_ts: int, quiet_until: int
    ) -> None:
        s = self.state
        s[WORK_BID], s[WORK_ASK] = bid_px, ask_px
        s[WORK_BID_TS], s[WORK_ASK_TS], s[QUIET] = bid_ts, ask_ts, quiet_until

    def on_inventory(self, qty: float, since_ts: int) -> None:
        self.state[INV] = qty

    @property
    def last_bid(self) -> float:
        return float(self.state[Q_BID])

    @property
    def last_ask(self) -> float:
        return float(self.state[Q_ASK])

    @classmethod
    def warm_up(cls) -> None:
        ts = np.arange(3, dtype=np.int64)
        kind = np.ones(3, dtype=np.int8)
        px = np.full(3, 100.0)
        for column in (ts, kind, px):
            column.flags.writeable = False
        state = np.zeros(Q_STATE)
        quote_scan(ts, kind, px, px, 0, 3, int(Mode.QUOTING), state, np.ones(7))
