"""The account-wide trading machine: ACTIVE, REDUCING, HALTED.

ACTIVE allows every order that passes the pre-trade checks; REDUCING allows only
orders that reduce exposure; HALTED allows none and cancels open orders. Risk
triggers and the operator move the machine; every transition carries a reason.
"""

from __future__ import annotations

import enum

import attrs

from ._machine import Machine, Table


class TradingState(enum.Enum):
    """What kind of orders the engine may send."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


@attrs.frozen(kw_only=True)
class ReduceRequested:
    """Only exposure-reducing orders from now on."""

    reason: str


@attrs.frozen(kw_only=True)
class HaltRequested:
    """No new orders; cancel open orders."""

    reason: str


@attrs.frozen(kw_only=True)
class ResumeRequested:
    """Back to normal trading."""

    reason: str


_T = TradingState

TRADING_TABLE: Table[TradingState] = Table(
    name="trading",
    states=TradingState,
    initial=_T.ACTIVE,
    transitions={
        (_T.ACTIVE, ReduceRequested): _T.REDUCING,
        (_T.ACTIVE, HaltRequested): _T.HALTED,
        (_T.REDUCING, ReduceRequested): _T.REDUCING,
        (_T.REDUCING, HaltRequested): _T.HALTED,
        (_T.REDUCING, ResumeRequested): _T.ACTIVE,
        (_T.HALTED, HaltRequested): _T.HALTED,
        (_T.HALTED, ReduceRequested): _T.REDUCING,
        (_T.HALTED, ResumeRequested): _T.ACTIVE,
    },
)


def new_trading(state: TradingState | None = None) -> Machine[TradingState]:
    """A trading machine, ACTIVE unless ``state`` is given (journal rebuild)."""
    return Machine(TRADING_TABLE, state)
