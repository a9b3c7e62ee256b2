"""The per-symbol position machine.

``IDLE -> SIGNALED -> ORDERING -> IN_POSITION -> EXITING -> IDLE``, plus the failure
edges: a denied, rejected, cancelled or expired entry goes back to IDLE; a denied or
rejected exit stays in EXITING so the actor retries it. Partial fills keep the
machine where it is until the order is complete. A partial take-profit (an exit
policy's reduce-only exit of part of the position) goes through EXITING like any
exit and, once its order is complete with the rest still held, back to IN_POSITION
(:class:`ExitReduced`): the rest is managed as before, and a crash meanwhile finds
the machine in a state every restart path already knows.
"""

from __future__ import annotations

import enum

import attrs

from ._machine import Machine, Table


class PositionState(enum.Enum):
    """Where a symbol's position is in its life cycle."""

    IDLE = "IDLE"
    SIGNALED = "SIGNALED"
    ORDERING = "ORDERING"
    IN_POSITION = "IN_POSITION"
    EXITING = "EXITING"


@attrs.frozen(kw_only=True)
class EntrySignaled:
    """The strategy asked to open a position; the intent is with risk."""

    side: int = 0


@attrs.frozen(kw_only=True)
class EntrySubmitted:
    """Risk approved the entry and it was sent to the venue."""


@attrs.frozen(kw_only=True)
class EntryDenied:
    """Risk refused the entry."""

    reason: str = ""


@attrs.frozen(kw_only=True)
class EntryFailed:
    """The venue rejected, cancelled or expired the entry with nothing filled."""

    reason: str = ""


@attrs.frozen(kw_only=True)
class EntryPartiallyFilled:
    """Part of the entry filled; more is to come."""


@attrs.frozen(kw_only=True)
class EntryFilled:
    """The entry is complete (or closed with a partial quantity held)."""


@attrs.frozen(kw_only=True)
class ExitSignaled:
    """The strategy asked to close the position."""

    reason: str = ""


@attrs.frozen(kw_only=True)
class ExitSubmitted:
    """The exit order was sent to the venue."""


@attrs.frozen(kw_only=True)
class ExitRejected:
    """Risk or the venue refused the exit; the actor will retry."""

    reason: str = ""


@attrs.frozen(kw_only=True)
class ExitPartiallyFilled:
    """Part of the exit filled."""


@attrs.frozen(kw_only=True)
class ExitReduced:
    """A partial exit is complete and part of the position is still held."""


@attrs.frozen(kw_only=True)
class ExitFilled:
    """The position is flat."""


_S = PositionState

POSITION_TABLE: Table[PositionState] = Table(
    name="position",
    states=PositionState,
    initial=_S.IDLE,
    transitions={
        (_S.IDLE, EntrySignaled): _S.SIGNALED,
        (_S.SIGNALED, EntrySubmitted): _S.ORDERING,
        (_S.SIGNALED, EntryDenied): _S.IDLE,
        (_S.ORDERING, EntryPartiallyFilled): _S.ORDERING,
        (_S.ORDERING, EntryFilled): _S.IN_POSITION,
        (_S.ORDERING, EntryFailed): _S.IDLE,
        (_S.IN_POSITION, ExitSignaled): _S.EXITING,
        (_S.EXITING, ExitSubmitted): _S.EXITING,
        (_S.EXITING, ExitPartiallyFilled): _S.EXITING,
        (_S.EXITING, ExitRejected): _S.EXITING,
        (_S.EXITING, ExitReduced): _S.IN_POSITION,
        (_S.EXITING, ExitFilled): _S.IDLE,
    },
)


def new_position(state: PositionState | None = None) -> Machine[PositionState]:
    """A position machine, in IDLE unless ``state`` is given (journal rebuild)."""
    return Machine(POSITION_TABLE, state)
