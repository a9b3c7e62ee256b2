"""Errors raised by the state machines.

Tree::

    FsmError
    ├── InvalidTransitionError   an event with no edge from the current state
    └── TableError               a transition table that is malformed
"""

from __future__ import annotations


class FsmError(Exception):
    """Root of every error raised by :mod:`fsm`."""


class InvalidTransitionError(FsmError):
    """An event arrived for which the current state has no edge.

    Attributes:
        machine: the machine's name.
        state: the state the machine was in (unchanged).
        event: the event type's name.
    """

    def __init__(self, machine: str, state: object, event: object) -> None:
        self.machine = machine
        self.state = state
        self.event = type(event).__name__
        name = getattr(state, "name", state)
        super().__init__(f"{machine}: no transition from {name} on {self.event}")


class TableError(FsmError):
    """A transition table refers to unknown states or has an empty guard list."""
